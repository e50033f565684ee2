"""The argument layer every ``san-*`` command shares (torch-free): a parser whose errors are one
line, and argument types that check ranges, finiteness and path kinds while parsing, before any
work starts.

A bad value ends the command with exit status 2 and one line on stderr naming the argument,
``san-export: error: argument --batch-size: must be >= 1, got 0``, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from san.artifact import MODEL_KINDS, sniff_model_kind
from san.device import DEVICES, Device
from san.rerank import RerankParams


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
    """``--device``'s argument type (:meth:`san.device.Device.parse`)."""
    try:
        Device.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip().lower()


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str | None,
                        note: str = "") -> None:
    """The ``--device`` option, the same in every command (``default`` None: the backend's own)."""
    shown = default or "cpu, or cuda for a TensorRT engine"
    parser.add_argument("--device", type=device_name, default=default, metavar="DEVICE",
                        help=f"{DEVICES}{note} (default {shown})")


class _DeprecatedAlias(argparse._AppendAction):
    """An old spelling of an appending option: works as the new one, and says so once, in one line."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if not getattr(namespace, "_warned_" + self.dest, False):
            print(f"{parser.prog}: note: {option_string} is deprecated and will be removed in the next release; "
                  f"use --{self.dest.replace('_', '-')}", file=sys.stderr)
            setattr(namespace, "_warned_" + self.dest, True)
        super().__call__(parser, namespace, values, option_string)


def add_limit_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, example: str) -> None:
    """``--limit KIND.FIELD=VALUE`` (repeatable): change one limit of the rule table for this run;
    ``--threshold``, its former name, still works for one release."""
    parser.add_argument("--limit", action="append", default=[], metavar="KIND.FIELD=VALUE",
                        help=f"change one limit of the rule table, repeatable (e.g. {example}; 'none' drops it)")
    parser.add_argument("--threshold", action=_DeprecatedAlias, dest="limit", metavar="KIND.FIELD=VALUE",
                        help=argparse.SUPPRESS)


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


def add_progress_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                          quiet_alias: bool = False) -> None:
    """``--no-progress`` (``args.progress`` False): no progress bar on a terminal and no progress
    lines in a log (:mod:`san.progress`). ``quiet_alias``: ``--quiet``, a former name, still works."""
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=True,
                        help="no progress bar on a terminal, no progress lines in a log")
    if quiet_alias:
        parser.add_argument("--quiet", dest="progress", action=_DeprecatedSwitch, replacement="--no-progress",
                            help=argparse.SUPPRESS)


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


# -- argument groups that several commands share --------------------------------------------
def add_rerank_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rerank`` and its ``--k1``, ``--k2``, ``--lambda`` for a command that scores a split."""
    group = parser.add_argument_group("k-reciprocal re-ranking (Zhong et al., CVPR 2017)")
    group.add_argument("--rerank", action="store_true", help="rank by re-ranked distances")
    group.add_argument("--k1", type=count(1), default=RerankParams.k1, help="k1 (default %(default)s)")
    group.add_argument("--k2", type=count(1), default=RerankParams.k2, help="k2 (default %(default)s)")
    group.add_argument("--lambda", dest="lam", type=finite, default=RerankParams.lam,
                       help="weight of the original distance (default %(default)s)")


def rerank_params(args: argparse.Namespace) -> RerankParams | None:
    """The re-ranking ``args`` ask for, or None."""
    return RerankParams(args.k1, args.k2, args.lam) if args.rerank else None


def add_dataset_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, default: str | None,
                          root: Callable[[str], Path], root_help: str, required: bool = False) -> None:
    """``--dataset NAME``, ``--root DIR`` and ``--dataset-arg KEY=VALUE`` (repeatable)."""
    from san.data.registry import DATASETS

    names = ", ".join(sorted(DATASETS))
    parser.add_argument("--dataset", choices=sorted(DATASETS), default=default, required=required, metavar="NAME",
                        help=f"{names} (default {default or 'the one the checkpoint was trained on'})")
    parser.add_argument("--root", type=root, required=required, metavar="DIR", help=root_help)
    parser.add_argument("--dataset-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="loader option, repeatable (cuhk03: variant=labeled|detected, protocol=classic|new, "
                        "split=0..19; synthetic: ids=, cameras=, seed=)")


def dataset_options(args: argparse.Namespace) -> dict[str, object] | None:
    """The ``--dataset-arg`` options given, or None."""
    from san.data.registry import parse_dataset_args

    return parse_dataset_args(args.dataset_arg) if args.dataset_arg else None
