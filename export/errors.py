"""The errors of export, in a module that imports nothing from export (so any module may raise
them without a cycle). ``san-export`` catches these base classes only, and exits with their
``status``."""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export that produced a file we refuse to write, or failed its check (exit 1)."""

    status = 1


class ExportInputError(ExportError, ValueError):
    """An input the export cannot use: nothing was written (exit 2)."""

    status = 2


class TargetUnavailable(ExportError):
    """A target whose runtime is missing here (no GPU, no TensorRT): the ONNX file was written
    and verified; build the rest on the target machine (exit 3)."""

    status = 3
