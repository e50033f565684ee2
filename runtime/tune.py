"""Which runtime and precision to embed with on this machine: measured, judged, and kept as a profile.

:func:`tune` runs every backend x precision this machine has on the user's own images (onnxruntime
fp32 and INT8; OpenVINO f32, bf16 where the CPU has it, and INT8; onnxruntime's CUDA provider where
it has one), times each model-only at the batch sizes asked for, and judges each row's embeddings
against onnxruntime fp32's by its precision's rule (:data:`san.contract.rules.RULES`: paired cosine,
min and mean). The profile it writes names the fastest row that passes at the largest batch, with
the machine it was measured on (CPU, instruction sets, runtime versions); ``san-embed --profile``
runs that row and refuses a profile made on another kind of machine (:func:`check_profile`).
A row that fails its rule is never chosen.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.base import Backend
from runtime.machine import cpu_name, instruction_sets
from runtime.registry import open_backend
from san.contract.artifact import read_contract
from san.contract.json_record import read_record
from san.contract.rules import RULES
from san.evaluation.metrics import paired_cosine
from san.io.atomic import atomic_write_json
from san.io.errors import ToolkitError
from san.io.hashing import file_sha256
from san.io.preprocess import load_image

#: The runtimes a profile records, and the distributions each may be installed as.
RUNTIMES = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "openvino": ("openvino",)}
PROFILE_FORMAT = "san-tune-profile"
PROFILE_VERSION = 1


#: The backend options a profile may hold, with their types (what :func:`candidates` writes).
OPTION_TYPES: dict[str, type | tuple[type, ...]] = {"threads": int, "providers": list, "precision": str}


class ProfileError(ToolkitError, ValueError):
    """A profile that cannot be used here; the message names the file and what differs."""


@dataclass(frozen=True)
class Candidate:
    """One row: ``artifact`` run by ``backend`` with ``options``, judged by the rule of ``kind``."""

    name: str
    artifact: Path
    backend: str
    options: dict[str, Any]
    kind: str


@dataclass
class Row:
    """What one candidate measured: images per second per batch size, and its fidelity."""

    name: str
    artifact: str
    backend: str
    options: dict[str, Any]
    kind: str
    images_per_second: dict[int, float] = field(default_factory=dict)
    cosine_min: float = 1.0
    cosine_mean: float = 1.0
    breaches: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.breaches


def machine() -> dict[str, Any]:
    """The facts a profile is valid for: the CPU's instruction sets and the runtimes' versions, read
    from their installed distributions without importing them (the CPU's name is recorded, not
    compared: one model runs the same kernels under any name)."""
    versions = {}
    for runtime, distributions in RUNTIMES.items():
        for distribution in distributions:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                versions[runtime] = importlib.metadata.version(distribution)
                break
    return {"cpu": cpu_name(), "instruction_sets": list(instruction_sets()), "versions": versions}


def candidates(model: Path, int8: Path | None, threads: int | None) -> list[Candidate]:
    """Every backend x precision this machine has, onnxruntime fp32 (the reference) first."""
    cpu: dict[str, Any] = {} if threads is None else {"threads": threads}
    rows = [Candidate("onnxruntime fp32", model, "onnxruntime", {**cpu, "providers": ["cpu"]}, "fp32")]
    if int8 is not None:
        rows.append(Candidate("onnxruntime INT8", int8, "onnxruntime", {**cpu, "providers": ["cpu"]}, "int8"))
    if importlib.util.find_spec("openvino") is not None:
        rows.append(Candidate("OpenVINO f32", model, "openvino", {**cpu, "precision": "f32"}, "fp32"))
        if {"avx512_bf16", "amx_bf16"} & set(instruction_sets()):
            rows.append(Candidate("OpenVINO bf16", model, "openvino", {**cpu, "precision": "bf16"}, "bf16"))
        if int8 is not None:
            rows.append(Candidate("OpenVINO INT8", int8, "openvino", {**cpu, "precision": "f32"}, "int8"))
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            rows.append(Candidate("onnxruntime CUDA fp32", model, "onnxruntime", {"providers": ["cuda"]}, "fp32"))
    return rows


def tune(rows: Sequence[Candidate], images: Sequence[Path], batches: Sequence[int], seconds: float,
         progress: Callable[[str], None] = lambda _: None) -> list[Row]:
    """Measure each of ``rows`` (the first is the reference) on ``images``: model-only speed at
    each batch size, about ``seconds`` per row and batch, and fidelity against the reference."""
    spec = read_contract(rows[0].artifact)
    decoded = np.stack([load_image(path, spec) for path in images])
    measured: list[Row] = []
    reference: np.ndarray | None = None
    for candidate in rows:
        progress(candidate.name)
        row = Row(candidate.name, str(candidate.artifact.resolve()), candidate.backend, candidate.options, candidate.kind)
        with open_backend(candidate.artifact, candidate.backend, **candidate.options) as backend:
            embeddings = np.concatenate([backend.infer(decoded[i : i + max(batches)])
                                         for i in range(0, len(decoded), max(batches))])
            for size in batches:
                row.images_per_second[size] = _rate(backend, np.resize(decoded, (size, *decoded.shape[1:])), seconds)
        if reference is None:
            reference = embeddings
        cosines = paired_cosine(reference, embeddings)
        row.cosine_min, row.cosine_mean = float(cosines.min()), float(cosines.mean())
        row.breaches = RULES[candidate.kind].breaches(
            candidate.kind, {"min_cosine_min": row.cosine_min, "min_cosine_mean": row.cosine_mean})
        measured.append(row)
    return measured


def _rate(backend: Backend, batch: np.ndarray, seconds: float) -> float:
    """Images per second of ``backend`` on ``batch``, after one warm-up call, over about ``seconds``."""
    backend.infer(batch)
    calls, started = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - started < seconds:
        backend.infer(batch)
        calls += 1
    return calls * len(batch) / (time.perf_counter() - started)


def choose(rows: Sequence[Row], batch: int) -> Row:
    """The fastest row at ``batch`` that passes its rule (the reference always does)."""
    return max((row for row in rows if row.passed), key=lambda row: row.images_per_second[batch])


def write_profile(path: Path, model: Path, rows: Sequence[Row], batch: int) -> Row:
    """Write the profile of ``rows`` to ``path``; the chosen row."""
    chosen = choose(rows, batch)
    atomic_write_json(path, {
        "format": PROFILE_FORMAT, "version": PROFILE_VERSION, "machine": machine(), "model_sha256": file_sha256(model),
        "batch": batch, "choice": {"artifact": chosen.artifact, "backend": chosen.backend, "options": chosen.options},
        "rows": [{**asdict(row), "passed": row.passed} for row in rows],
    })
    return chosen


def _valid_option(name: str, value: object) -> bool:
    """Whether ``name`` = ``value`` is a backend option of :data:`OPTION_TYPES`, of its type."""
    if isinstance(value, bool) or not isinstance(value, OPTION_TYPES.get(name, ())):
        return False
    if isinstance(value, int):
        return value >= 1
    return not isinstance(value, list) or all(isinstance(item, str) for item in value)


def check_profile(path: Path) -> dict[str, Any]:
    """The choice of the profile at ``path`` (artifact, backend, options); :class:`ProfileError`
    in one line when the file is not a profile or was made on another kind of machine."""
    profile = read_record(path, format=PROFILE_FORMAT, limit="MAX_PROFILE_BYTES", what="san-tune profile",
                          written_by="san-tune writes it", error=ProfileError)
    choice, made_on = profile.get("choice"), profile.get("machine")
    if not isinstance(choice, dict) or not isinstance(made_on, dict) or not isinstance(choice.get("options"), dict):
        raise ProfileError(f"{path}: its choice or machine record is missing")
    for name, value in choice["options"].items():
        if not _valid_option(name, value):
            raise ProfileError(f"{path}: backend option {name!r} = {value!r} is not one san-tune writes")
    here = machine()
    for key, what in (("instruction_sets", "instruction sets"), ("versions", "runtime versions")):
        if made_on.get(key) != here[key]:
            raise ProfileError(f"{path}: made on a machine with other {what} ({made_on.get(key)} there, {here[key]} "
                               "here); run san-tune on this machine")
    return choice
