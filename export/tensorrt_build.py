"""ONNX -> TensorRT engine plus a JSON sidecar that says what it is and where it runs.

Current APIs only (TensorRT 10 and 11): a strongly typed network parsed from the ONNX
file, so precision comes from the graph, not from builder flags (``BuilderFlag.FP16`` and
``INT8`` and the implicit calibrator are gone in TensorRT 11). FP16 engines are built from
a half-precision ONNX export (``export_onnx(..., precision="fp16")``), INT8 engines from
an explicit Q/DQ ONNX made by calibration.

A serialized engine only runs with the TensorRT version that built it and is tuned for
one GPU; :func:`san.contract.tensorrt_target.check_engine_compatible` refuses it elsewhere, reading
the sidecar this module writes (:class:`san.contract.engine_sidecar.EngineSidecar`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from export.errors import ExportInputError, TargetUnavailable
from san.contract.artifact import INPUT_NAME, PRECISION_KEY, read_contract, read_input_convention, read_metadata
from san.contract.engine_sidecar import BatchProfile, EngineSidecar
from san.contract.spec import METADATA_KEY
from san.contract.tensorrt_target import TargetEnvironment, TensorRTUnavailable
from san.io.atomic import atomic_write
from san.io.hashing import file_sha256

log = logging.getLogger(__name__)


class CudaUnavailable(TargetUnavailable, TensorRTUnavailable):
    """TensorRT is installed but cannot reach a GPU (exit 3, like any missing target runtime)."""


class EngineBuildError(ExportInputError):
    """TensorRT could not parse the ONNX file or build an engine from it."""


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    profile: BatchProfile = BatchProfile(),
    workspace_mb: int = 4096,
    timing_cache: str | Path | None = None,
    environment: TargetEnvironment | None = None,
    tf32: bool = False,
    version_compatible: bool = False,
) -> EngineSidecar:
    """Build ``engine_path`` from ``onnx_path`` and write its sidecar; return the sidecar.

    The precision is the ONNX file's (``san.precision`` metadata; ``int8`` when the graph
    has QuantizeLinear nodes). TF32 is off unless ``tf32``: TensorRT enables it by
    default, and its 10-bit mantissa would make an "fp32" engine round like fp16 (the
    sidecar then says ``tf32``). ``timing_cache`` is read if it exists and rewritten after
    the engine is written, so later builds on the same GPU and TensorRT version are faster;
    a cache from another GPU or version is set aside (a warning says so) and replaced.
    ``version_compatible`` sets TensorRT's version-compatible flag (8.6 and later): the engine
    embeds its lean runtime and later releases can run it (:func:`san.contract.tensorrt_target.check_engine_compatible`).
    """
    import tensorrt as trt

    environment = environment or TargetEnvironment.detect()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    spec = read_contract(onnx_path)
    metadata = read_metadata(onnx_path)
    precision = _precision(onnx_path, metadata)
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:  # pybind11: "factory function returned nullptr"
        raise CudaUnavailable(
            f"TensorRT {trt.__version__} could not initialise CUDA ({exc}); check the driver with `nvidia-smi` "
            "and that this TensorRT supports its CUDA version"
        ) from exc
    network = builder.create_network(network_flags(trt, precision))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT cannot parse the ONNX file: {errors}")
    config = builder.create_builder_config()
    configure_builder(trt, config, tf32=tf32, workspace_mb=workspace_mb)
    if version_compatible:
        flag = getattr(trt.BuilderFlag, "VERSION_COMPATIBLE", None)
        if flag is None:
            raise EngineBuildError(f"TensorRT {trt.__version__} cannot build version-compatible engines "
                                   "(TensorRT 8.6 and later can)")
        config.set_flag(flag)
    optimization = builder.create_optimization_profile()
    convention = read_input_convention(onnx_path)
    shape = convention.dims(spec)  # (3, H, W), or (H, W, 3) for an NHWC graph
    optimization.set_shape(INPUT_NAME, (profile.min, *shape), (profile.opt, *shape), (profile.max, *shape))
    config.add_optimization_profile(optimization)
    cache_path = Path(timing_cache) if timing_cache else None
    cached = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cached)  # None for bytes it cannot read
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning(f"--timing-cache {cache_path}: made by another GPU or TensorRT version, or not a timing cache; "
            "building without it, and it will be replaced by this build's")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT log above)")
    atomic_write(engine_path, lambda tmp: tmp.write_bytes(bytes(serialized)))
    if cache_path:
        try:
            atomic_write(cache_path, lambda tmp: tmp.write_bytes(bytes(config.get_timing_cache().serialize())))
        except (OSError, RuntimeError) as exc:
            log.warning(f"--timing-cache {cache_path}: not updated ({exc}); the engine was written")
    sidecar = EngineSidecar(
        spec, convention, "tf32" if precision == "fp32" and tf32 else precision, tf32, version_compatible, profile,
        environment, file_sha256(onnx_path), file_sha256(engine_path),
        {k: v for k, v in metadata.items() if k != METADATA_KEY},
    )
    sidecar.write(engine_path)
    return sidecar


def network_flags(trt: Any, precision: str) -> int:
    """The network creation flags: strongly typed, so that precision comes from the graph.

    TensorRT 11 is always strongly typed (the flag is deprecated there); 9 and 10 need the
    flag. TensorRT 8.6 (JetPack 6.0) has no strongly typed networks: it builds fp32 engines only
    here (explicit batch, which its ONNX parser needs), and :class:`EngineBuildError` says so for
    any other precision.
    """
    flag = trt.NetworkDefinitionCreationFlag
    if int(trt.__version__.split(".")[0]) >= 11:
        return 0
    if hasattr(flag, "STRONGLY_TYPED"):
        return 1 << int(flag.STRONGLY_TYPED)
    if precision != "fp32":
        raise EngineBuildError(f"TensorRT {trt.__version__} has no strongly typed networks, which {precision} engines "
                               "built from a typed graph need: build an fp32 engine (--trt without --fp16/--int8), use "
                               "TensorRT 10 or later (JetPack 6.1+), or let DeepStream build its engine (--deepstream)")
    return 1 << int(flag.EXPLICIT_BATCH)


def configure_builder(trt: Any, config: Any, *, tf32: bool, workspace_mb: int) -> None:
    """Builder settings every engine gets: the workspace limit, and TF32 cleared unless asked for.

    The network is strongly typed, so precision comes from the graph and no FP16/INT8 flag
    is set; TF32 is the one flag that still changes how FP32 layers compute.
    """
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)


def _precision(onnx_path: Path, metadata: dict[str, str]) -> str:
    import onnx

    graph = onnx.load(onnx_path, load_external_data=False).graph
    if any(node.op_type == "QuantizeLinear" for node in graph.node):
        return "int8"
    return metadata.get(PRECISION_KEY, "fp32")
