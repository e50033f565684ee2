"""The backend interface (Polygraphy's runner pattern), torch-free.

A backend wraps one model artifact. It is a context manager: :meth:`Backend.activate`
loads the artifact and reads its input contract, :meth:`Backend.deactivate` frees it.
:meth:`Backend.infer` checks a batch against the contract, hands it to the subclass's
``_infer`` and checks what comes back::

    with open_backend(Path("model.onnx")) as backend:
        embeddings = backend.infer(batch)  # uint8 N x 3 x H x W -> float32 N x D
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeVar

import numpy as np

from san.contract.device import Device
from san.contract.input_convention import InputConvention
from san.contract.spec import ContractError, InputSpec
from san.evaluation.embedding import ANY_BATCH
from san.io.errors import ToolkitError
from san.io.hashing import file_sha256

Loaded = TypeVar("Loaded")


class BackendError(ToolkitError, RuntimeError):
    """A backend that cannot load its artifact or run; the message says why."""


class Backend(ABC):
    """Base class of every backend: subclasses implement ``_activate``, ``_infer``, ``_deactivate``."""

    #: Registry name, e.g. ``"onnxruntime"``.
    name: ClassVar[str]
    #: Where it runs when no device is asked for.
    default_device: ClassVar[str] = "cpu"
    #: The :class:`Device` kinds it can run on.
    device_kinds: ClassVar[frozenset[str]] = frozenset({"cpu", "cuda"})

    def __init__(self, artifact: str | Path, device: str | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        """The option vocabulary every backend takes: ``device`` (cpu, cuda, cuda:N; default
        :attr:`default_device`), ``threads`` (CPU intra-op threads; default: physical cores)
        and ``providers`` (onnxruntime execution providers). Each backend maps them to its
        own settings; one it cannot honour goes into :attr:`notes`, one line each."""
        self.artifact = Path(artifact)
        try:
            requested = Device.parse(device or self.default_device)
        except ValueError as exc:
            raise ValueError(f"--device {exc}") from None
        self.device = requested.resolved(self.auto_device)
        if self.device.kind not in self.device_kinds:
            raise ValueError(f"--device {self.device}: the {self.name} backend runs on "
                             f"{', '.join(sorted(self.device_kinds))}")
        if threads is not None and threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        self.threads = threads or physical_cores()
        self.notes: list[str] = []
        #: How the artifact's input is encoded; subclasses read it from the artifact on activation.
        self.convention = InputConvention()
        self._spec: InputSpec | None = None
        self._sha256: str | None = None

    def auto_device(self) -> str:
        """What ``--device auto`` means for this backend: a CUDA GPU when it can use one here."""
        return self.default_device

    def _note_ignored(self, option: str, value: object, why: str) -> None:
        self.notes.append(f"{self.name} backend: {option} {value} ignored: {why}")

    # -- lifecycle -------------------------------------------------------------------
    def activate(self) -> Backend:
        """Load the artifact (idempotent) and read its contract; returns ``self``."""
        if self._spec is None:
            if not self.artifact.is_file():
                raise BackendError(f"{self.artifact}: model file not found")
            self._spec = self._activate()
        return self

    def deactivate(self) -> None:
        """Free what :meth:`activate` loaded (idempotent)."""
        if self._spec is not None:
            self._deactivate()
            self._spec = None

    def __enter__(self) -> Backend:
        return self.activate()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()

    @property
    def is_active(self) -> bool:
        """Whether the artifact is loaded."""
        return self._spec is not None

    # -- what the artifact says ------------------------------------------------------
    @property
    def spec(self) -> InputSpec:
        """The input contract read from the artifact (needs an active backend)."""
        return self.loaded(self._spec)

    def loaded(self, resource: Loaded | None) -> Loaded:
        """``resource`` (a session, a compiled model, the contract) of the active backend; a
        :class:`BackendError` when the backend is not active."""
        if resource is None:
            raise BackendError(f"{self.name} backend for {self.artifact} is not active; use `with backend:` first")
        return resource

    @property
    def sha256(self) -> str:
        """SHA-256 of the artifact file (computed once)."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.artifact)
        return self._sha256

    def describe(self) -> dict[str, Any]:
        """What determines this backend's numbers (name, device or providers); JSON-safe.

        Goes into ``meta.json`` and the resume plan, so it must not name a device index.
        """
        return {"name": self.name}

    def batch_limits(self) -> tuple[int, int]:
        """Smallest and largest batch the artifact accepts (inclusive)."""
        return ANY_BATCH

    # -- inference -------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Embed ``batch`` (uint8 or float32 on 0..255, N x 3 x H x W): float32 N x D.

        Raises :class:`~san.contract.spec.ContractError` when the batch or the output disagrees
        with the contract.
        """
        spec = self.spec
        out = self._infer(self._prepared(batch))
        expected = (batch.shape[0], spec.embedding_dim)
        if out.shape != expected:
            raise ContractError(
                f"{self.artifact}: {self.name} backend returned shape {out.shape}; the contract expects {expected}"
            )
        return out.astype(np.float32, copy=False)

    def inner_tensors(self, batch: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray] | None:
        """The graph's tensors ``names`` (e.g. each block's ``pi`` and hard mask) for ``batch``, as
        :meth:`infer` takes it, computed by the same runtime and settings with those tensors made
        outputs too; None where this backend cannot read inner tensors."""
        return self._inner(self._prepared(batch), tuple(names))

    def _inner(self, batch: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        """Subclasses that can read inner tensors return them; by default they cannot."""
        return None

    def _prepared(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` checked against the contract and the artifact's batch limits, in the artifact's encoding."""
        spec = self.spec
        if not isinstance(batch, np.ndarray) or batch.dtype not in (np.uint8, np.float32):
            got = batch.dtype if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ContractError(f"input batch must be a uint8 or float32 numpy array (0..255 scale), got {got}")
        spec.check_batch_shape(batch.shape)
        low, high = self.batch_limits()
        if not low <= batch.shape[0] <= high:
            raise ContractError(
                f"{self.artifact}: batch of {batch.shape[0]} images is outside what this "
                f"{self.name} artifact accepts ({low}..{high}); split or pad the batch"
            )
        return np.ascontiguousarray(batch) if self.convention.is_default else self.convention.encode(batch)

    @abstractmethod
    def _activate(self) -> InputSpec:
        """Load the artifact; return the contract it carries."""

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Run a validated, C-contiguous batch (uint8 or float32); return N x D."""

    @abstractmethod
    def _deactivate(self) -> None:
        """Release the artifact."""


def as_model_dtype(batch: np.ndarray, dtype: np.dtype | type, artifact: Path) -> np.ndarray:
    """Convert a validated batch to the dtype the artifact's input takes, losslessly.

    uint8 -> float32 is exact; float32 -> uint8 is accepted only for whole numbers in
    0..255 (anything else would be silently rounded).
    """
    dtype = np.dtype(dtype)
    if batch.dtype == dtype:
        return batch
    if dtype == np.uint8:
        if not (np.all((batch >= 0) & (batch <= 255)) and np.array_equal(batch, np.round(batch))):
            raise ContractError(
                f"{artifact}: the model takes uint8 images; a float batch is accepted only with "
                "whole numbers in 0..255 (decode with san.io.preprocess.load_image)"
            )
    return batch.astype(dtype)


def physical_cores() -> int:
    """Physical CPU cores this process may run on (hyper-threads counted once)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            cores.add(f"{package}:{(topology / 'core_id').read_text().strip()}")
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))

