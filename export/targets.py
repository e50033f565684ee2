"""Export targets: library calls with typed options, behind one registry.

A target is one module with one :class:`ExportTarget` subclass, its options a small frozen
dataclass, and ``write`` returns a :class:`Written` record (a :class:`FolderTarget` implements
``write_into``, and its folder appears complete or not at all). ``san-export`` always writes the
verified ONNX (the ``onnx`` target); every other target builds on that file and is asked for by
its own option (``--trt``). Adding a target is a new file plus one row in :data:`TARGETS`: the
writing order comes from each target's ``after`` (the targets whose files it reads), not from
the table's order. Target modules import nothing heavy at module level, so ``--help`` and
``--check-tensorrt`` stay fast and torch-free.

From Python, without the command line::

    job = ExportJob(model, meta, images, RULES, SharedOptions(onnx=Path("model.onnx")))
    written = write_targets(job, {"triton": TritonOptions(folder=Path("repo"))})
"""

from __future__ import annotations

import argparse
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

from san.cli.arguments import CommandParser
from san.contract.artifact import CHECKPOINT_SHA_KEY
from san.contract.input_convention import InputConvention
from san.contract.rules import Rule
from san.contract.spec import InputSpec
from san.io.atomic import staged_folder

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import numpy as np

    from san.model.network import SAN
    from san.training.checkpoint import CheckpointMeta


@dataclass(frozen=True)
class SharedOptions:
    """What every target may read; each defined once by ``san-export``."""

    onnx: Path  # the verified fp32 ONNX (--out)
    convention: InputConvention = InputConvention()  # what --input asks of the ONNX files
    opset: int = 17
    overwrite: bool = False  # replace what an output folder holds
    int8: Path | None = None  # calibration's Q/DQ file (--int8): built by TensorRT, converted by OpenVINO


@dataclass(frozen=True)
class NoOptions:
    """The options of a target that has none of its own."""


@dataclass(frozen=True)
class Written:
    """What one target wrote: ``main`` is the file later targets read (an engine, a folder)."""

    target: str
    main: Path
    files: tuple[Path, ...] = ()
    passed: bool = True  # False: a written file failed its check (renamed *.rejected)


@dataclass
class ExportJob:
    """What every target reads: the model, the images each written ONNX is verified on, the
    rules, the shared options, and what earlier targets wrote."""

    model: SAN
    meta: CheckpointMeta
    images: np.ndarray  # uint8 N x 3 x H x W
    rules: Mapping[str, Rule]
    shared: SharedOptions
    written: dict[str, Written] = field(default_factory=dict)

    def export_verified(self, path: Path, precision: str, convention: InputConvention | None = None,
                        shown: Path | None = None) -> bool:
        """Export ``model`` to ``path`` at ``precision`` with ``convention`` (default: the shared
        one) and verify it under its rule; log the report, under ``shown`` (default ``path``)."""
        from export.verify import export_and_verify

        report = export_and_verify(self.model, path, self.images, opset=self.shared.opset,
                                   provenance={CHECKPOINT_SHA_KEY: self.meta.sha256}, precision=precision,
                                   rule=self.rules[precision], convention=convention or self.shared.convention)
        log.info(f"{shown or path}: {report.render()}")
        return report.passed


Options = TypeVar("Options")


class HasFolder(Protocol):
    """Options of a target that writes into a folder of its own."""

    @property
    def folder(self) -> Path: ...


FolderOptions = TypeVar("FolderOptions", bound=HasFolder)


class ExportTarget(ABC, Generic[Options]):
    """One thing ``san-export`` can write."""

    #: The registry name; ``Written.target`` and ``after`` use it.
    name: ClassVar[str]
    #: The option that asks for it on the command line (for messages).
    option: ClassVar[str]
    #: Targets whose files this one reads, when they are written too.
    after: ClassVar[tuple[str, ...]] = ("onnx",)
    #: Whether it reads the shared ``--int8`` file.
    reads_int8: ClassVar[bool] = False

    @classmethod
    def add_arguments(cls, parser: CommandParser) -> None:
        """Add this target's options to ``san-export``'s parser."""

    @classmethod
    @abstractmethod
    def options_from(cls, args: argparse.Namespace) -> Options | None:
        """This target's options from parsed arguments; None when not asked for. Raises
        ``ValueError`` for values that cannot be right."""

    @classmethod
    def outputs(cls, options: Options) -> dict[str, Path]:
        """Option -> path of what it writes that a user named (checked against the inputs)."""
        return {}

    @classmethod
    def check(cls, options: Options, shared: SharedOptions, requested: Mapping[str, object]) -> None:
        """Refuse, before anything is exported, what would fail later (``ValueError``/``OSError``);
        ``requested`` holds every requested target's options by name."""

    @abstractmethod
    def write(self, job: ExportJob, options: Options) -> Written:
        """Write this target's files."""


class FolderTarget(ExportTarget[FolderOptions]):
    """A target that writes into ``options.folder``: refused when it holds anything, unless
    ``--overwrite``. Its files are written into a temporary folder beside it that replaces it once
    they are complete (:func:`san.io.atomic.staged_folder`): a kill leaves the old output or none."""

    _staging: tuple[Path, Path]  # (the staging folder, options.folder) while write_into runs

    @classmethod
    def outputs(cls, options: FolderOptions) -> dict[str, Path]:
        return {cls.option: options.folder}

    @classmethod
    def check(cls, options: FolderOptions, shared: SharedOptions, requested: Mapping[str, object]) -> None:
        check_folder(options.folder, cls.option, shared.overwrite)

    def write(self, job: ExportJob, options: FolderOptions) -> Written:
        check_folder(options.folder, self.option, job.shared.overwrite)
        with staged_folder(options.folder) as staging:
            self._staging = (staging, options.folder)
            written = self.write_into(job, options, staging)
        return Written(written.target, self.final(written.main), tuple(map(self.final, written.files)),
                       written.passed)

    @abstractmethod
    def write_into(self, job: ExportJob, options: FolderOptions, folder: Path) -> Written:
        """Write this target's files into the empty folder ``folder`` (the staging folder: name
        paths in messages with :meth:`final`)."""

    def final(self, path: Path) -> Path:
        """Where ``path``, written into the staging folder, lies once that folder is in place."""
        staging, folder = self._staging
        return folder / path.relative_to(staging) if path.is_relative_to(staging) else path

    def export_for_consumer(self, job: ExportJob, folder: Path, name: str, convention: InputConvention,
                            resizes: str) -> Path | None:
        """Into ``folder``, the graph ``name`` taking ``convention``: the input of a consumer that
        crops and resizes itself (``resizes`` says how, bilinearly) and feeds that convention; None
        when it fails verification."""
        require_bilinear(job.meta.spec, self.option, resizes)
        path = folder / name
        return path if job.export_verified(path, "fp32", convention, shown=self.final(path)) else None


def require_bilinear(spec: InputSpec, option: str, consumer: str) -> None:
    """Refuse a contract whose resize a consumer that resizes crops itself, bilinearly, cannot
    reproduce; ``consumer`` says how it resizes."""
    if spec.interpolation != "bilinear":
        raise ValueError(f"{option}: the model's contract resizes with {spec.interpolation}, but {consumer}; "
                         "the features would not match the model's")


def check_folder(folder: Path, option: str, overwrite: bool) -> None:
    """Refuse an output folder that is not a folder, or holds anything without ``overwrite``."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {folder}: exists and is not a folder")
    if not overwrite and folder.is_dir() and any(folder.iterdir()):
        raise ValueError(f"{option} {folder}: exists and is not empty; pass --overwrite to replace its contents")


@dataclass(frozen=True)
class TargetEntry:
    """Where a target class lives."""

    module: str
    cls: str

    def load(self) -> type[ExportTarget]:
        return getattr(import_module(self.module), self.cls)


TARGETS: dict[str, TargetEntry] = {
    "onnx": TargetEntry("export.target_onnx", "OnnxTarget"),
    "tensorrt": TargetEntry("export.target_tensorrt", "TensorRTTarget"),
    "triton": TargetEntry("export.target_triton", "TritonTarget"),
    "deepstream": TargetEntry("export.target_deepstream", "DeepStreamTarget"),
    "boxmot": TargetEntry("export.target_boxmot", "BoxMOTTarget"),
    "openvino": TargetEntry("export.target_openvino", "OpenVINOTarget"),
}


def target_classes() -> dict[str, type[ExportTarget]]:
    """Every registered target class by name."""
    return {name: entry.load() for name, entry in TARGETS.items()}


def writing_order(names: set[str] | Mapping[str, object]) -> list[str]:
    """``names`` ordered so that each target comes after the ones it reads (``after``)."""
    classes = target_classes()
    graph = {name: [n for n in classes[name].after if n in names] for name in TARGETS if name in names}
    return list(TopologicalSorter(graph).static_order())


def write_targets(job: ExportJob, requested: Mapping[str, object]) -> list[Written]:
    """Write the ``onnx`` target and each requested one (name -> its options) in writing order;
    stop after the first whose file fails its check. What each wrote is also in ``job.written``."""
    classes = target_classes()
    requested = {"onnx": NoOptions(), **requested}
    done = []
    for name in writing_order(requested):
        written = classes[name]().write(job, requested[name])
        job.written[name] = written
        done.append(written)
        if not written.passed:
            break
    return done
