"""The ``onnx`` export target: the fp32 graph with deterministic masks, verified against
PyTorch (:mod:`export.verify`); every other target builds on it."""

from __future__ import annotations

import argparse

from export.targets import ExportJob, ExportTarget
from san.arguments import count, finite_list, output_file
from san.input_convention import KINDS, InputConvention


def convention(args: argparse.Namespace) -> InputConvention:
    """The input convention ``--input``, ``--input-mean/-std``, ``--bgr`` and ``--nhwc`` ask for."""
    return InputConvention.named(args.input, mean=args.input_mean, std=args.input_std, bgr=args.bgr, nhwc=args.nhwc)


class OnnxTarget(ExportTarget):
    """``model.onnx`` (or ``--out``): always written, and refused (renamed ``*.rejected``) when
    verification fails."""

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", type=output_file, metavar="PATH",
                            help="ONNX path (default: the checkpoint's path with .onnx)")
        parser.add_argument("--opset", type=count(17), default=17, metavar="N",
                            help="lowest opset (>= 17; the exporter writes >= 18)")
        group = parser.add_argument_group("input convention of the ONNX file (the model inside is unchanged)")
        group.add_argument("--input", default="uint8", metavar="KIND",
                           help=f"{' | '.join(KINDS)}: uint8 pixels (default), float32 pixels 0..255, or float32 "
                           "(pixel / 255 - mean) / std")
        group.add_argument("--input-mean", type=finite_list(3), metavar="R,G,B", help="with --input normalized")
        group.add_argument("--input-std", type=finite_list(3), metavar="R,G,B", help="with --input normalized")
        group.add_argument("--bgr", action="store_true", help="channels in BGR order (mean/std in that order too)")
        group.add_argument("--nhwc", action="store_true", help="N x H x W x 3 instead of N x 3 x H x W")

    @classmethod
    def check_arguments(cls, args: argparse.Namespace) -> None:
        convention(args)

    def write(self, job: ExportJob) -> int:
        if not job.export_verified(job.onnx, "fp32"):
            return 1
        job.written["onnx"] = job.onnx
        return 0
