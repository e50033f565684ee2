"""Export targets behind one registry: name -> the module and class that write it.

``san-export`` always writes the verified ONNX (the ``onnx`` target); every other target
builds on that file and is asked for by its own flag (``--trt``). A target is one module
with one :class:`ExportTarget` subclass; adding one is a new file plus one row in
:data:`TARGETS`. Target modules import nothing heavy at module level, so ``--help`` and
``--check-tensorrt`` stay fast and torch-free.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from san.artifact import CHECKPOINT_SHA_KEY
from san.input_convention import InputConvention
from san.rules import Rule
from san.spec import InputSpec

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import numpy as np

    from san.checkpoint import CheckpointMeta
    from san.model.network import SAN


@dataclass
class ExportJob:
    """What every target reads: the parsed arguments, the model, its verified ONNX export."""

    args: argparse.Namespace
    model: SAN
    meta: CheckpointMeta
    images: np.ndarray  # uint8 N x 3 x H x W: what each written ONNX is verified on
    rules: dict[str, Rule]
    onnx: Path  # the verified fp32 ONNX, once the onnx target has written it
    convention: InputConvention = InputConvention()  # what --input asks of the ONNX file
    written: dict[str, Path] = field(default_factory=dict)  # what targets wrote so far: "onnx", "engine", ...

    def export_verified(self, path: Path, precision: str, convention: InputConvention | None = None) -> bool:
        """Export ``model`` to ``path`` at ``precision`` with ``convention`` (default: the one
        ``--input`` asks for) and verify it under its rule; log the report."""
        from export.verify import export_and_verify

        report = export_and_verify(self.model, path, self.images, opset=self.args.opset,
                                   provenance={CHECKPOINT_SHA_KEY: self.meta.sha256}, precision=precision,
                                   rule=self.rules[precision], convention=convention or self.convention)
        log.info(f"{path}: {report.render()}")
        return report.passed


class ExportTarget(ABC):
    """One thing ``san-export`` can write."""

    #: The ``args`` attribute that asks for this target; None: always written.
    flag: ClassVar[str | None] = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this target's options to ``san-export``'s parser."""

    @classmethod
    def requested(cls, args: argparse.Namespace) -> bool:
        return cls.flag is None or bool(getattr(args, cls.flag))

    @classmethod
    def check_arguments(cls, args: argparse.Namespace) -> None:
        """Refuse bad values of this target's options, asked for or not, before anything is
        exported (raise ``ValueError``/``OSError``)."""

    @abstractmethod
    def write(self, job: ExportJob) -> int:
        """Write this target's files; the exit status (0 ok, 1 a written file failed its check)."""


def require_bilinear(spec: InputSpec, option: str, consumer: str) -> None:
    """Refuse a contract whose resize a consumer that resizes crops itself, bilinearly, cannot
    reproduce; ``consumer`` says how it resizes."""
    if spec.interpolation != "bilinear":
        raise ValueError(f"{option}: the model's contract resizes with {spec.interpolation}, but {consumer}; "
                         "the features would not match the model's")


def prepare_folder(folder: Path, option: str, overwrite: bool, check_only: bool = False) -> Path:
    """An empty output folder for a target: refused when it exists and holds anything, unless
    ``overwrite`` (then emptied, after the export succeeded: not with ``check_only``)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise ValueError(f"{option} {folder}: exists and is not empty; pass --overwrite to replace its contents")
        if not check_only:
            shutil.rmtree(folder)
    if not check_only:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class TargetEntry:
    """Where a target class lives."""

    module: str
    cls: str

    def load(self) -> type[ExportTarget]:
        return getattr(import_module(self.module), self.cls)


#: In the order they are written: later targets read what earlier ones wrote.
TARGETS: dict[str, TargetEntry] = {
    "onnx": TargetEntry("export.target_onnx", "OnnxTarget"),
    "tensorrt": TargetEntry("export.target_tensorrt", "TensorRTTarget"),
    "triton": TargetEntry("export.target_triton", "TritonTarget"),
    "deepstream": TargetEntry("export.target_deepstream", "DeepStreamTarget"),
    "boxmot": TargetEntry("export.target_boxmot", "BoxMOTTarget"),
    "openvino": TargetEntry("export.target_openvino", "OpenVINOTarget"),
}


def target_classes() -> list[type[ExportTarget]]:
    """Every registered target class, in writing order."""
    return [entry.load() for entry in TARGETS.values()]


def requested_targets(args: argparse.Namespace) -> list[ExportTarget]:
    """The targets ``args`` ask for, in writing order, each instantiated."""
    return [cls() for cls in target_classes() if cls.requested(args)]
