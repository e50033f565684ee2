"""Which runtime and precision to embed with on this machine: measured, judged, and kept as a profile.

:func:`tune` runs every backend x precision this machine has on the user's own images (onnxruntime
fp32 and INT8; OpenVINO f32, bf16 where the CPU has it, and INT8; onnxruntime's CUDA provider and
TensorRT engines where present). Each row is

- timed model-only at the batch sizes asked for, and end to end (decoded from the files by
  ``san-embed``'s decode workers, then embedded) at the largest;
- judged against onnxruntime fp32 by its precision's rule (:data:`san.contract.rules.RULES`): the
  paired cosine of the images' embeddings, the hard masks read from inside the graph where the
  runtime can expose them (a flip far from the threshold with none upstream is *unexplained*,
  :func:`san.evaluation.retrieval.sort_flips`), and, given a labelled split, its retrieval as
  ``san-parity`` scores it (mAP and rank-1 deltas, top-10 overlap).

The profile it writes names the fastest row that passes at one batch size (``--choose-at``), with the machine it
was measured on (CPU, instruction sets, runtime versions); ``san-embed --profile`` runs that row and
refuses a profile made on another kind of machine (:func:`check_profile`). A row that fails its rule
is never chosen.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from runtime.base import Backend
from runtime.embed import EmbedOptions, LocalRunner
from runtime.machine import cpu_name, instruction_sets
from runtime.registry import open_backend
from san.contract.artifact import contract_of, hard_mask_stages, load_onnx, pi_name, read_provenance
from san.contract.json_record import read_record
from san.contract.onnx_graph import mask_tensors
from san.contract.rules import RULES, Rule
from san.data.records import ReidDataset
from san.evaluation.metrics import paired_cosine
from san.evaluation.retrieval import (
    MaskFlips,
    Retrieval,
    SplitEmbeddings,
    compare,
    default_workers,
    embed_split,
    score,
    sort_flips,
)
from san.io.atomic import atomic_write_json
from san.io.errors import ToolkitError
from san.io.hashing import file_sha256
from san.io.preprocess import load_image

#: The runtimes a profile records, and the distributions each may be installed as.
RUNTIMES = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "openvino": ("openvino",),
            "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")}
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


@dataclass(frozen=True)
class MaskAgreement:
    """A row's hard masks against the reference's on the judged images."""

    images: int
    images_flipped: int  # images with at least one mask element flipped
    flip_rate: float  # flipped share of all hard-mask elements
    unexplained: int | None  # flips far from the threshold with none upstream; None: the rule does not sort flips


@dataclass(frozen=True)
class SplitAgreement:
    """A row's retrieval on the labelled split, and its change against the reference's (points)."""

    dataset: str
    queries: int
    mAP: float
    rank1: float
    delta_map: float
    delta_rank1: float
    top10_overlap: float


@dataclass
class Row:
    """What one candidate measured: images per second per batch size (model only), end to end at
    the largest, and its fidelity against the reference."""

    name: str
    artifact: str
    backend: str
    options: dict[str, Any]
    kind: str
    images_per_second: dict[int, float] = field(default_factory=dict)
    end_to_end: float | None = None
    cosine_min: float = 1.0
    cosine_mean: float = 1.0
    masks: MaskAgreement | None = None
    split: SplitAgreement | None = None
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


def candidates(model: Path, int8: Path | None, threads: int | None, engines: Sequence[Path] = ()) -> list[Candidate]:
    """Every backend x precision this machine has, onnxruntime fp32 (the reference) first; each
    TensorRT engine of ``engines`` at the precision its sidecar records."""
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
    for engine in engines:
        precision = read_provenance(engine).precision
        rows.append(Candidate(f"TensorRT {precision} ({engine.name})", engine, "tensorrt", {}, precision))
    return rows


@dataclass(frozen=True)
class Images:
    """The user's images: their folder, the paths under it, and the same decoded at the contract size."""

    root: Path
    paths: list[str]
    decoded: np.ndarray


@dataclass
class _Reference:
    """What the reference row gives every other row to be judged against."""

    embeddings: np.ndarray
    pi: dict[int, np.ndarray]
    masks: dict[int, np.ndarray]
    split: SplitEmbeddings | None = None
    retrieval: Retrieval | None = None


def timings_per_row(batches: Sequence[int]) -> int:
    """Timed measurements of one row: each batch size model-only, and end to end."""
    return len(batches) + 1


def steps_per_row(batches: Sequence[int], dataset: ReidDataset | None) -> int:
    """Progress steps of one row: judging, its timings, the split."""
    return 1 + timings_per_row(batches) + (dataset is not None)


def tune(rows: Sequence[Candidate], root: Path, paths: Sequence[str], batches: Sequence[int], seconds: float, *,
         workers: int | None = None, dataset: ReidDataset | None = None, progress: Callable[[str], None] = lambda _: None
         ) -> list[Row]:
    """Measure each of ``rows`` (the first is the reference) on the images ``paths`` under ``root``:
    model-only speed at each batch size and end-to-end speed at the largest (``workers`` decode
    processes; None: ``san-embed``'s default), about ``seconds`` each, and fidelity against the
    reference, on ``dataset`` too when given. ``progress`` hears each step (:func:`steps_per_row`
    per row)."""
    model = load_onnx(rows[0].artifact)
    spec = contract_of(model, rows[0].artifact)
    images = Images(root, list(paths), np.stack([load_image(root / path, spec) for path in paths]))
    stages = hard_mask_stages(model, rows[0].artifact)
    mask_names = {rows[0].artifact: _mask_names(model, stages)}  # each ONNX file parsed once, whatever runs it
    largest = max(batches)
    measured: list[Row] = []
    reference: _Reference | None = None
    for candidate in rows:
        row = Row(candidate.name, str(candidate.artifact.resolve()), candidate.backend, candidate.options, candidate.kind)
        if candidate.artifact not in mask_names:
            graph = load_onnx(candidate.artifact) if candidate.artifact.suffix == ".onnx" else None
            mask_names[candidate.artifact] = {} if graph is None else _mask_names(graph, stages)
        with open_backend(candidate.artifact, candidate.backend, **candidate.options) as backend:
            progress(f"{candidate.name}: judging")
            embeddings, pi, masks = _run(backend, images.decoded, largest, mask_names[candidate.artifact])
            for size in batches:
                progress(f"{candidate.name}: batch {size}")
                batch = np.resize(images.decoded, (size, *images.decoded.shape[1:]))
                row.images_per_second[size] = _rate(backend, batch, seconds)
            progress(f"{candidate.name}: end to end")
            row.end_to_end = _end_to_end(backend, images, largest, workers, row.images_per_second[largest] * seconds)
            split = None
            if dataset is not None:
                progress(f"{candidate.name}: {dataset.name}")
                split = embed_split(backend, dataset, batch_size=largest, workers=workers)
        if reference is None:
            reference = _Reference(embeddings, pi, masks, split, None if split is None else score(split))
        _judge(row, RULES[candidate.kind], reference, embeddings, masks, spec.mask_threshold, split)
        measured.append(row)
    return measured


def _mask_names(model: onnx.ModelProto, stages: Sequence[int]) -> dict[int, tuple[str, str]]:
    """Stage -> (its pi, its hard mask) in the ONNX graph ``model``."""
    masks = mask_tensors(model, stages)
    return {stage: (pi_name(stage), masks[stage]) for stage in stages if stage in masks}


def _run(backend: Backend, decoded: np.ndarray, batch: int, names: dict[int, tuple[str, str]]
         ) -> tuple[np.ndarray, dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Embeddings of ``decoded``, with each stage's pi and hard mask where ``backend`` can read them
    (empty dicts where it cannot)."""
    embeddings, inner = [], []
    wanted = [name for pair in names.values() for name in pair]
    for start in range(0, len(decoded), batch):
        chunk = decoded[start : start + batch]
        embeddings.append(backend.infer(chunk))
        if wanted:
            inner.append(backend.inner_tensors(chunk, wanted))
    if not inner or any(part is None for part in inner):
        return np.concatenate(embeddings), {}, {}
    joined = {name: np.concatenate([part[name] for part in inner if part is not None]) for name in wanted}
    return (np.concatenate(embeddings), {stage: joined[pi].astype(np.float32) for stage, (pi, _) in names.items()},
            {stage: joined[mask].astype(bool) for stage, (_, mask) in names.items()})


def _judge(row: Row, rule: Rule, reference: _Reference, embeddings: np.ndarray, masks: dict[int, np.ndarray],
           threshold: float, split: SplitEmbeddings | None) -> None:
    """Fill ``row``'s fidelity from its outputs against the reference's, and what breaches ``rule``."""
    cosines = paired_cosine(reference.embeddings, embeddings)
    row.cosine_min, row.cosine_mean = float(cosines.min()), float(cosines.mean())
    measured = {"min_cosine_min": row.cosine_min, "min_cosine_mean": row.cosine_mean}
    if reference.masks and reference.masks.keys() <= masks.keys():
        flips = MaskFlips(sorted(reference.masks))
        upstream = np.zeros((len(embeddings), 1, 1, 1), dtype=bool)
        unexplained = 0
        for stage in sorted(reference.masks):
            flipped = flips.add(stage, reference.masks[stage], masks[stage])
            _, far, upstream = sort_flips(flipped, reference.pi[stage], threshold, rule.flip_margin, upstream)
            unexplained += far
        flipped_images = upstream.reshape(-1)
        total = sum(n for _, n in flips.counts.values())
        sorted_flips = rule.flip_margin is not None
        row.masks = MaskAgreement(len(embeddings), int(flipped_images.sum()),
                                  sum(f for f, _ in flips.counts.values()) / total if total else 0.0,
                                  unexplained if sorted_flips else None)
        if sorted_flips:
            measured["max_unexplained_flips"] = unexplained
            if (~flipped_images).any():
                measured["min_cosine_unflipped"] = float(cosines[~flipped_images].min())
    row.breaches = rule.breaches(row.kind, measured)
    if split is not None and reference.split is not None and reference.retrieval is not None:
        retrieval = score(split)
        comparison = compare(reference.split, reference.retrieval, split, retrieval)
        row.split = SplitAgreement(split.dataset, comparison.queries, 100 * retrieval.mAP, 100 * retrieval.rank(1),
                                   comparison.delta_map, comparison.delta_rank[1], comparison.top10_overlap)
        row.breaches += [f"{breach} on {split.dataset}" for breach in rule.breaches(row.kind, comparison.measured())]


def _rate(backend: Backend, batch: np.ndarray, seconds: float) -> float:
    """Images per second of ``backend`` on ``batch``, after one warm-up call, over about ``seconds``."""
    backend.infer(batch)
    calls, started = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - started < seconds:
        backend.infer(batch)
        calls += 1
    return calls * len(batch) / (time.perf_counter() - started)


def _end_to_end(backend: Backend, images: Images, batch: int, workers: int | None, target: float) -> float:
    """Images per second decoded from ``images``' files (``workers`` processes, as ``san-embed``)
    and embedded in batches of ``batch``; the files are cycled to about ``target`` images."""
    count = max(len(images.paths), math.ceil(target))
    paths = [images.paths[i % len(images.paths)] for i in range(count)]
    options = EmbedOptions(batch)
    spans = [(start, min(start + options.chunk_size, count)) for start in range(0, count, options.chunk_size)]
    runner = LocalRunner(default_workers() if workers is None else workers)
    started = time.perf_counter()
    done = sum(1 for _ in runner.results(images.root, paths, spans, backend, options))
    return done / (time.perf_counter() - started)


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
