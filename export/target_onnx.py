"""The ``onnx`` export target: the fp32 graph with deterministic masks, verified against
PyTorch (:mod:`export.verify`); every other target builds on it."""

from __future__ import annotations

import argparse
from pathlib import Path

from export.targets import ExportJob, ExportTarget


class OnnxTarget(ExportTarget):
    """``model.onnx`` (or ``--out``): always written, and refused (renamed ``*.rejected``) when
    verification fails."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", type=Path, metavar="PATH",
                            help="ONNX path (default: the checkpoint's path with .onnx)")
        parser.add_argument("--opset", type=int, default=17, metavar="N",
                            help="lowest opset (>= 17; the exporter writes >= 18)")

    def write(self, job: ExportJob) -> int:
        return 0 if job.export_verified(job.onnx, "fp32") else 1
