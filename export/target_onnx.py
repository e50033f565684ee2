"""The ``onnx`` export target: the fp32 graph with deterministic masks, verified against
PyTorch (:mod:`export.verify`); every other target builds on it. Its path (``--out``) and input
convention (``--input``) are shared options, defined by ``san-export``."""

from __future__ import annotations

import argparse

from export.targets import ExportJob, ExportTarget, NoOptions, Written


class OnnxTarget(ExportTarget[NoOptions]):
    """``model.onnx`` (or ``--out``): always written, and refused (renamed ``*.rejected``) when
    verification fails."""

    name = "onnx"
    option = "--out"
    after = ()

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> NoOptions:
        return NoOptions()

    def write(self, job: ExportJob, options: NoOptions) -> Written:
        onnx = job.shared.onnx
        return Written(self.name, onnx, (onnx,), passed=job.export_verified(onnx, "fp32"))
