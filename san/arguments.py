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
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from san.artifact import sniff_model_kind

#: Options that take a device, in every command: one vocabulary.
DEVICE_HELP = "cpu, cuda, cuda:N or auto (a CUDA GPU when there is one)"


class CommandParser(argparse.ArgumentParser):
    """``argparse`` with one-line errors: ``prog: error: message`` (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


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


def existing_file(text: str) -> Path:
    """A path that exists and is a file."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder, not a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{path}: file not found")
    return path


def existing_folder(text: str) -> Path:
    """A path that exists and is a folder."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: folder not found")
    return path


_KINDS = {"checkpoint": "a PyTorch checkpoint", "onnx": "an ONNX model", "engine": "a TensorRT engine",
          "openvino": "an OpenVINO IR"}


def model_file(*kinds: str) -> Callable[[str], Path]:
    """An existing file whose content is one of ``kinds`` (``checkpoint``, ``onnx``, ``engine``,
    ``openvino``): a file of another kind is named as what it is."""
    def parse(text: str) -> Path:
        path = existing_file(text)
        kind = sniff_model_kind(path)
        if kind not in kinds:
            what = _KINDS.get(kind, "empty" if kind == "empty" else "not a model file")
            raise argparse.ArgumentTypeError(f"{path} is {what}; this option takes {' or '.join(_KINDS[k] for k in kinds)}")
        return path

    parse.__name__ = "model"
    return parse


def output_file(text: str) -> Path:
    """A file to write: not a folder, in a folder that exists or can be made, and is writable."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file path")
    _require_writable(path.parent)
    return path


def output_folder(text: str) -> Path:
    """A folder to write into: not a file, and writable (or creatable)."""
    path = Path(text)
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
