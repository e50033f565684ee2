"""The errors of export, in a module that imports nothing from export (so any module may raise
them without a cycle). Each ends ``san-export`` with its :attr:`~san.io.errors.ToolkitError.exit_status`."""

from __future__ import annotations

from san.io.errors import ToolkitError


class ExportError(ToolkitError, RuntimeError):
    """An export that produced a file we refuse to write, or failed its check (exit 1)."""

    exit_status = 1


class ExportInputError(ExportError, ValueError):
    """An input the export cannot use: nothing was written (exit 2)."""

    exit_status = 2


class TargetUnavailable(ExportError):
    """A target whose runtime is missing here (no GPU, no TensorRT): the ONNX file was written
    and verified; build the rest on the target machine (exit 3)."""

    exit_status = 3
