"""The argument layer every ``san-*`` command shares (torch-free): a parser whose errors are one
line, argument types that check ranges, finiteness and path kinds while parsing, before any
work starts, and argument groups (:class:`ArgumentGroup`) that add a set of flags and are the one
reader of them, into a typed value.

A bad value ends the command with exit status 2 and one line on stderr naming the argument,
``san-export: error: argument --batch-size: must be >= 1, got 0``, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, NoReturn, TypeVar

from san.contract.artifact import MODEL_KINDS, sniff_model_kind
from san.contract.device import DEVICES, Device
from san.contract.rules import RULES, Rule, override_rules
from san.evaluation.rerank import RerankParams


class BadArguments(SystemExit):
    """Bad arguments, already reported in one line; the command's exit status is 2."""


class CommandParser(argparse.ArgumentParser):
    """``argparse`` with one-line errors: ``prog: error: message`` (``--help`` shows the usage),
    and options that only mean something beside another one (:meth:`only_with`) or never beside
    it (:meth:`never_with`) refused instead of silently ignored."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._needs: list[tuple[str, str]] = []
        self._excludes: list[tuple[str, str, str]] = []

    def only_with(self, needs: str, *options: str) -> None:
        """Refuse each of ``options``, given a value other than its default, without ``needs``."""
        self._needs += [(option, needs) for option in options]

    def never_with(self, option: str, other: str, why: str) -> None:
        """Refuse ``option`` and ``other`` given together; ``why`` says what each does."""
        self._excludes.append((option, other, why))

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        for option, needs in self._needs:
            if self._given(parsed, option) and not self._given(parsed, needs):
                self.error(f"{option} only applies with {needs}; give {needs}, or leave {option} out")
        for option, other, why in self._excludes:
            if self._given(parsed, option) and self._given(parsed, other):
                self.error(f"{option} and {other} contradict each other: {why}; give one of them")
        return parsed, extras

    def _given(self, parsed: argparse.Namespace, option: str) -> bool:
        action = self._option_string_actions[option]
        value = getattr(parsed, action.dest, action.default)
        return value is not None and value is not False and value != action.default

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise BadArguments(2)


def device_name(text: str) -> str:
    """``--device``'s argument type (:meth:`san.contract.device.Device.parse`)."""
    try:
        Device.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip().lower()


class _DeprecatedAlias(argparse._AppendAction):
    """An old spelling of an appending option: works as the new one, and says so once, in one line."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if not getattr(namespace, "_warned_" + self.dest, False):
            print(f"{parser.prog}: note: {option_string} is deprecated and will be removed in the next release; "
                  f"use --{self.dest.replace('_', '-')}", file=sys.stderr)
            setattr(namespace, "_warned_" + self.dest, True)
        super().__call__(parser, namespace, values, option_string)


class _DeprecatedSwitch(argparse._StoreFalseAction):
    """An old spelling of an off switch: works as the new one (``replacement``), and says so in one line."""

    def __init__(self, *args: Any, replacement: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replacement = replacement

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: note: {option_string} is deprecated and will be removed in the next release; "
              f"use {self.replacement}", file=sys.stderr)
        super().__call__(parser, namespace, values, option_string)


class _JsonOrFormerPath(argparse.Action):
    """``--json`` alone: print JSON; ``--json PATH``, its former meaning, still writes the report
    to PATH as ``replacement PATH`` does, and says so in one line."""

    def __init__(self, *args: Any, replacement: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replacement = replacement

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if values is True:
            setattr(namespace, self.dest, True)
            return
        print(f"{parser.prog}: note: {option_string} PATH is deprecated and will be removed in the next release; "
              f"use {self.replacement} PATH ({option_string} alone prints JSON)", file=sys.stderr)
        try:
            path = output_file(values)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"argument {option_string}: {exc}")
        setattr(namespace, self.replacement.lstrip("-").replace("-", "_"), path)


def add_overwrite_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    """``--overwrite``: replace ``what`` (an output that exists) instead of refusing."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what} (default: refuse)")


def count(minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """An integer of at least ``minimum`` and at most ``maximum`` (batch sizes, workers, counts)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    parse.__name__ = "count"  # argparse names the type in its own messages
    return parse


def finite(text: str) -> float:
    """A finite float (no NaN, no infinity)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def finite_list(size: int) -> Callable[[str], tuple[float, ...]]:
    """``size`` finite floats separated by commas (``0.485,0.456,0.406``)."""
    def parse(text: str) -> tuple[float, ...]:
        values = tuple(finite(part) for part in text.split(","))
        if len(values) != size:
            raise argparse.ArgumentTypeError(f"expected {size} comma-separated numbers, got {text!r}")
        return values

    parse.__name__ = "numbers"
    return parse


def _path(text: str) -> Path:
    """``text`` as a path; an empty one (``--out ""``, which would mean the current folder) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    return Path(text)


def existing_file(text: str) -> Path:
    """A path that exists and is a file."""
    return _existing(_path(text), folder=False)


def existing_folder(text: str) -> Path:
    """A path that exists and is a folder."""
    return _existing(_path(text), folder=True)


def _existing(path: Path, folder: bool) -> Path:
    kind, other = ("folder", "file") if folder else ("file", "folder")
    if path.exists() and path.is_dir() != folder:
        raise argparse.ArgumentTypeError(f"{path} is a {other}, not a {kind}")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{path}: {kind} not found")
    return path


def model_file(*kinds: str) -> Callable[[str], Path]:
    """An existing file whose content is one of ``kinds`` (``checkpoint``, ``onnx``, ``engine``,
    ``openvino``): a file of another kind is named as what it is."""
    label = {"checkpoint": "checkpoint", "onnx": "ONNX"}.get(kinds[0], "model") if len(kinds) == 1 else "model"

    def parse(text: str) -> Path:
        path = _path(text)
        if not path.exists():
            raise argparse.ArgumentTypeError(f"{path}: {label} file not found")
        path = existing_file(text)
        kind = sniff_model_kind(path)
        if kind == "unknown":
            raise argparse.ArgumentTypeError(f"{path}: not a readable {label} file")
        if kind not in kinds:
            raise argparse.ArgumentTypeError(f"{path} is {MODEL_KINDS.get(kind, kind)}; this option takes "
                                             f"{' or '.join(MODEL_KINDS[k] for k in kinds)}")
        return path

    parse.__name__ = "model"
    return parse


def output_file(text: str) -> Path:
    """A file to write: not a folder, in a folder that exists or can be made, and is writable."""
    path = _path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file path")
    _require_writable(path.parent)
    return path


def output_folder(text: str) -> Path:
    """A folder to write into: not a file, and writable (or creatable)."""
    path = _path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
    _require_writable(path)
    return path


def _require_writable(folder: Path) -> None:
    """``folder``, or the nearest folder above it that exists, is writable."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is a file, so nothing can be written under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{existing}: no permission to write there (read-only)")


# -- argument groups ------------------------------------------------------------------------
Read = TypeVar("Read")
Adder = argparse.ArgumentParser | argparse._ArgumentGroup


class ArgumentGroup(ABC, Generic[Read]):
    """Options that commands add as one group and read back as one typed value (in the style of
    Polygraphy's argument groups): each group adds its flags and is the only reader of them, so a
    flag added is a flag read, and a flag means one thing in every command that has it."""

    #: The group's heading in ``--help`` (None: the options join the command's own).
    title: ClassVar[str | None] = None

    def add_to(self, parser: CommandParser) -> None:
        """Add the group's options to ``parser``, with the rules that tie them together."""
        self.add(parser.add_argument_group(self.title) if self.title else parser)
        self.tie(parser)

    def tie(self, parser: CommandParser) -> None:
        """Declare which options only apply beside another (:meth:`CommandParser.only_with`)."""

    @abstractmethod
    def add(self, parser: Adder) -> None:
        """Add the options to ``parser`` (a parser or one of its groups)."""

    @abstractmethod
    def read(self, args: argparse.Namespace) -> Read:
        """The options' value, from the parsed ``args``."""


@dataclass(frozen=True)
class DeviceGroup(ArgumentGroup[Device | None]):
    """``--device``: where the model runs (:class:`san.contract.device.Device`); ``default`` None: the
    backend's own."""

    default: str | None
    note: str = ""

    def add(self, parser: Adder) -> None:
        shown = self.default or "cpu, or cuda for a TensorRT engine"
        parser.add_argument("--device", type=device_name, default=self.default, metavar="DEVICE",
                            help=f"{DEVICES}{self.note} (default {shown})")

    def read(self, args: argparse.Namespace) -> Device | None:
        return None if args.device is None else Device.parse(args.device)


@dataclass(frozen=True)
class Run:
    """How a command runs: decode workers (None: :func:`san.evaluation.retrieval.default_workers`), whether
    it shows progress, and whether it prints one JSON object instead of its tables."""

    workers: int | None = None
    progress: bool = True
    json: bool = False


#: What ``--workers`` means in every command that has it.
WORKERS_HELP = "decode workers (default: half the CPUs, 1..8; 0: decode in the main thread)"


@dataclass(frozen=True)
class RunGroup(ArgumentGroup[Run]):
    """``--no-progress`` (commands that show progress), ``--workers`` (commands that decode
    images) and ``--json`` (commands that print a report); ``quiet_alias``: ``--quiet``, a former
    name of ``--no-progress``, still works for one release."""

    workers: bool = False
    json: bool = False
    progress: bool = True
    quiet_alias: bool = False
    #: The option that now writes the report file that ``--json PATH``, a former meaning, wrote.
    json_path_alias: str | None = None

    def add(self, parser: Adder) -> None:
        if self.workers:
            parser.add_argument("--workers", type=count(0), metavar="N", help=WORKERS_HELP)
        if self.json and self.json_path_alias:
            parser.add_argument("--json", action=_JsonOrFormerPath, nargs="?", const=True, default=False,
                                replacement=self.json_path_alias, help="print one JSON object instead of tables")
        elif self.json:
            parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
        if self.progress:
            parser.add_argument("--no-progress", dest="progress", action="store_false", default=True,
                                help="no progress bar on a terminal, no progress lines in a log")
        if self.quiet_alias:
            parser.add_argument("--quiet", dest="progress", action=_DeprecatedSwitch, replacement="--no-progress",
                                help=argparse.SUPPRESS)

    def read(self, args: argparse.Namespace) -> Run:
        return Run(args.workers if self.workers else None, self.progress and args.progress, self.json and args.json)


@dataclass(frozen=True)
class LimitGroup(ArgumentGroup[dict[str, Rule]]):
    """``--limit KIND.FIELD=VALUE`` (repeatable): the rule table with this run's changes;
    ``--threshold``, its former name, still works for one release."""

    example: str

    def add(self, parser: Adder) -> None:
        parser.add_argument("--limit", action="append", default=[], metavar="KIND.FIELD=VALUE",
                            help=f"change one limit of the rule table, repeatable (e.g. {self.example}; 'none' "
                            "drops it)")
        parser.add_argument("--threshold", action=_DeprecatedAlias, dest="limit", metavar="KIND.FIELD=VALUE",
                            help=argparse.SUPPRESS)

    def read(self, args: argparse.Namespace) -> dict[str, Rule]:
        return override_rules(RULES, args.limit)


class RerankGroup(ArgumentGroup[RerankParams | None]):
    """``--rerank`` and its ``--k1``, ``--k2``, ``--lambda`` (k-reciprocal re-ranking)."""

    title = "k-reciprocal re-ranking (Zhong et al., CVPR 2017)"

    def add(self, parser: Adder) -> None:
        parser.add_argument("--rerank", action="store_true", help="rank by re-ranked distances")
        parser.add_argument("--k1", type=count(1), default=RerankParams.k1, help="k1 (default %(default)s)")
        parser.add_argument("--k2", type=count(1), default=RerankParams.k2, help="k2 (default %(default)s)")
        parser.add_argument("--lambda", dest="lam", type=finite, default=RerankParams.lam,
                            help="weight of the original distance (default %(default)s)")

    def tie(self, parser: CommandParser) -> None:
        parser.only_with("--rerank", "--k1", "--k2", "--lambda")

    def read(self, args: argparse.Namespace) -> RerankParams | None:
        return RerankParams(args.k1, args.k2, args.lam) if args.rerank else None


@dataclass(frozen=True)
class DatasetRequest:
    """The data set a command was asked for: its name and folder (None: what the checkpoint
    records) and its loader options from ``--dataset-arg`` (None: none given)."""

    name: str | None
    root: Path | None
    options: dict[str, Any] | None


@dataclass(frozen=True)
class DatasetGroup(ArgumentGroup[DatasetRequest]):
    """``--dataset NAME``, ``--root DIR`` and ``--dataset-arg KEY=VALUE`` (repeatable)."""

    default: str | None
    root: Callable[[str], Path]
    root_help: str
    required: bool = False
    default_help: str = "the one the checkpoint was trained on"

    def add(self, parser: Adder) -> None:
        from san.data.registry import DATASETS

        names = ", ".join(sorted(DATASETS))
        parser.add_argument("--dataset", choices=sorted(DATASETS), default=self.default, required=self.required,
                            metavar="NAME", help=f"{names} (default {self.default or self.default_help})")
        parser.add_argument("--root", type=self.root, required=self.required, metavar="DIR", help=self.root_help)
        parser.add_argument("--dataset-arg", action="append", default=[], metavar="KEY=VALUE",
                            help="loader option, repeatable (cuhk03: variant=labeled|detected, protocol=classic|new, "
                            "split=0..19; synthetic: ids=, cameras=, seed=)")

    def read(self, args: argparse.Namespace) -> DatasetRequest:
        from san.data.registry import parse_dataset_args

        return DatasetRequest(args.dataset, args.root, parse_dataset_args(args.dataset_arg) if args.dataset_arg else None)
