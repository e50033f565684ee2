"""The ``tensorrt`` export target (``--trt``): a TensorRT engine plus its sidecar, built from
the verified ONNX (fp32), a verified half-precision export (``--fp16``) or calibration's
Q/DQ file (``--int8``), after the graph passes the TensorRT parser check."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from export.errors import TargetUnavailable
from export.targets import ExportJob, ExportTarget, Written
from export.tensorrt_build import BatchProfile
from san.cli.arguments import CommandParser, count, output_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorRTOptions:
    """How the engine is built; its source is the shared ONNX, or the shared ``--int8`` file."""

    engine: Path | None = None  # default: the ONNX path with .engine
    fp16: bool = False
    profile: BatchProfile = BatchProfile()
    workspace_mb: int = 4096
    timing_cache: Path | None = None
    version_compatible: bool = False
    tf32: bool = False


class TensorRTTarget(ExportTarget[TensorRTOptions]):
    """``model.engine`` + ``model.engine.json`` (or ``--engine``)."""

    name = "tensorrt"
    option = "--trt"
    reads_int8 = True

    @classmethod
    def add_arguments(cls, parser: CommandParser) -> None:
        trt = parser.add_argument_group(
            "TensorRT (needs an NVIDIA GPU and `pip install -e '.[gpu-cu12]'` or '.[gpu-cu13]')")
        trt.add_argument("--trt", action="store_true", help="also build a TensorRT engine (INT8 with --int8)")
        trt.add_argument("--fp16", action="store_true", help="FP16 engine from a half-precision export")
        trt.add_argument("--engine", type=output_file, metavar="PATH", help="engine path (default: the ONNX path with .engine)")
        trt.add_argument("--min-batch", type=count(1), default=1, metavar="N", help="smallest batch the engine takes (default 1)")
        trt.add_argument("--opt-batch", type=count(1), default=32, metavar="N", help="batch it is tuned for (default 32)")
        trt.add_argument("--max-batch", type=count(1), default=128, metavar="N", help="largest batch it takes (default 128)")
        trt.add_argument("--workspace-mb", type=count(16), default=4096, help="builder workspace limit (MiB)")
        trt.add_argument("--timing-cache", type=output_file, metavar="PATH", help="reusable timing cache file (read and updated)")
        trt.add_argument("--trt-version-compatible", "--triton-trt-version-compatible", dest="trt_version_compatible",
                         action="store_true",
                         help="build a version-compatible engine (TensorRT 8.6 and later): later TensorRT releases of "
                         "the same major version, and of the next major where TensorRT supports it (10 on 11), can "
                         "run it; as --triton-trt-version-compatible, the Triton plan is that engine (start "
                         "tritonserver with --backend-config=tensorrt,version-compatible=true)")
        trt.add_argument("--tf32", action="store_true",
                         help="let fp32 layers use TF32 tensor cores (off by default: 10-bit mantissa products; "
                         "the sidecar then says precision tf32, judged like fp16 by san-parity)")
        parser.only_with("--trt", "--fp16", "--engine", "--min-batch", "--opt-batch", "--max-batch", "--workspace-mb",
                         "--timing-cache", "--trt-version-compatible", "--tf32")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> TensorRTOptions | None:
        if args.fp16 and args.int8 is not None:
            raise ValueError(f"--fp16 and --int8 {args.int8}: an engine has one precision; give one of them")
        options = TensorRTOptions(args.engine, args.fp16, BatchProfile(args.min_batch, args.opt_batch, args.max_batch),
                                  args.workspace_mb, args.timing_cache, args.trt_version_compatible, args.tf32)
        return options if args.trt else None

    @classmethod
    def outputs(cls, options: TensorRTOptions) -> dict[str, Path]:
        return {"--engine": options.engine} if options.engine else {}

    def write(self, job: ExportJob, options: TensorRTOptions) -> Written:
        from export.tensorrt_build import build_engine
        from export.tensorrt_lint import installed_parser, require_tensorrt_compatible
        from san.contract.artifact import read_contract
        from san.contract.engine_sidecar import sidecar_path
        from san.contract.spec import ContractError
        from san.contract.tensorrt_target import TargetEnvironment, TensorRTUnavailable

        shared, profile = job.shared, options.profile
        if shared.int8 and read_contract(shared.int8) != job.meta.spec:
            raise ContractError(f"--int8 {shared.int8}: its input contract differs from the checkpoint's")
        parser = installed_parser()
        if not options.fp16:
            require_tensorrt_compatible(shared.int8 or shared.onnx, parser)  # before looking for a GPU
        try:
            environment = TargetEnvironment.detect()  # fails early, before any FP16 export
        except TensorRTUnavailable as exc:
            raise TargetUnavailable(f"--trt: {exc}. The ONNX file was written and verified; build the engine on "
                                    "the target GPU machine with the same command.") from exc
        source = shared.int8 or shared.onnx
        if options.fp16:
            source = shared.onnx.with_suffix(".fp16.onnx")
            if not job.export_verified(source, "fp16"):
                return Written(self.name, source, (source,), passed=False)
            require_tensorrt_compatible(source, parser)
        engine = options.engine or shared.onnx.with_suffix(".engine")
        sidecar = build_engine(source, engine, profile=profile, workspace_mb=options.workspace_mb,
                               timing_cache=options.timing_cache, environment=environment, tf32=options.tf32,
                               version_compatible=options.version_compatible)
        log.info(
            f"{engine}: {sidecar.precision} engine for {sidecar.built_for.gpu_name} (compute capability "
            f"{sidecar.built_for.compute_capability}), TensorRT {sidecar.built_for.tensorrt_version}, batch "
            f"{profile.min}..{profile.max}"
        )
        return Written(self.name, engine, (engine, sidecar_path(engine)))
