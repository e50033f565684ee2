"""The ``tensorrt`` export target (``--trt``): a TensorRT engine plus its sidecar, built from
the verified ONNX (fp32), a verified half-precision export (``--fp16``) or calibration's
Q/DQ file (``--int8``), after the graph passes the TensorRT parser check."""

from __future__ import annotations

import argparse
import logging

from export.errors import TargetUnavailable
from export.targets import ExportJob, ExportTarget
from san.arguments import count, model_file, output_file

log = logging.getLogger(__name__)


class TensorRTTarget(ExportTarget):
    """``model.engine`` + ``model.engine.json`` (or ``--engine``)."""

    flag = "trt"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        trt = parser.add_argument_group(
            "TensorRT (needs an NVIDIA GPU and `pip install -e '.[gpu-cu12]'` or '.[gpu-cu13]')")
        trt.add_argument("--trt", action="store_true", help="also build a TensorRT engine")
        precision = trt.add_mutually_exclusive_group()
        precision.add_argument("--fp16", action="store_true", help="FP16 engine from a half-precision export")
        precision.add_argument("--int8", type=model_file("onnx"), metavar="QDQ.onnx",
                               help="calibration's Q/DQ ONNX: an INT8 engine with --trt, an INT8 IR with --openvino")
        trt.add_argument("--engine", type=output_file, metavar="PATH", help="engine path (default: the ONNX path with .engine)")
        trt.add_argument("--min-batch", type=count(1), default=1, metavar="N", help="smallest batch the engine takes (default 1)")
        trt.add_argument("--opt-batch", type=count(1), default=32, metavar="N", help="batch it is tuned for (default 32)")
        trt.add_argument("--max-batch", type=count(1), default=128, metavar="N", help="largest batch it takes (default 128)")
        trt.add_argument("--workspace-mb", type=count(16), default=4096, help="builder workspace limit (MiB)")
        trt.add_argument("--timing-cache", type=output_file, metavar="PATH", help="reusable timing cache file (read and updated)")
        trt.add_argument("--trt-version-compatible", action="store_true",
                         help="build a version-compatible engine (TensorRT 8.6 and later): later TensorRT releases of "
                         "the same major version can run it")
        trt.add_argument("--tf32", action="store_true",
                         help="let fp32 layers use TF32 tensor cores (off by default: 10-bit mantissa products; "
                         "the sidecar then says precision tf32, judged like fp16 by san-parity)")

    @classmethod
    def check_arguments(cls, args: argparse.Namespace) -> None:
        from export.tensorrt_build import BatchProfile

        BatchProfile(args.min_batch, args.opt_batch, args.max_batch)
        if args.int8 is not None and not (args.trt or args.openvino):
            raise ValueError(f"--int8 {args.int8}: it is built by --trt or converted by --openvino; give one of them")

    def write(self, job: ExportJob) -> int:
        from export.tensorrt_build import BatchProfile, build_engine
        from export.tensorrt_lint import installed_parser, require_tensorrt_compatible
        from san.artifact import read_contract
        from san.spec import ContractError
        from san.tensorrt_target import TargetEnvironment, TensorRTUnavailable

        args = job.args
        profile = BatchProfile(args.min_batch, args.opt_batch, args.max_batch)
        if args.int8 and read_contract(args.int8) != job.meta.spec:
            raise ContractError(f"--int8 {args.int8}: its input contract differs from the checkpoint's ({args.ckpt})")
        parser = installed_parser()
        if not args.fp16:
            require_tensorrt_compatible(args.int8 or job.onnx, parser)  # before looking for a GPU
        try:
            environment = TargetEnvironment.detect()  # fails early, before any FP16 export
        except TensorRTUnavailable as exc:
            raise TargetUnavailable(f"--trt: {exc}. The ONNX file was written and verified; build the engine on "
                                    "the target GPU machine with the same command.") from exc
        source = args.int8 or job.onnx
        if args.fp16:
            source = job.onnx.with_suffix(".fp16.onnx")
            if not job.export_verified(source, "fp16"):
                return 1
            require_tensorrt_compatible(source, parser)
        engine = args.engine or job.onnx.with_suffix(".engine")
        sidecar = build_engine(source, engine, profile=profile, workspace_mb=args.workspace_mb,
                               timing_cache=args.timing_cache, environment=environment, tf32=args.tf32,
                               version_compatible=args.trt_version_compatible)
        job.written["engine"] = engine
        log.info(
            f"{engine}: {sidecar['precision']} engine for {sidecar['gpu_name']} (compute capability "
            f"{sidecar['compute_capability']}), TensorRT {sidecar['tensorrt_version']}, batch {profile.min}..{profile.max}"
        )
        return 0
