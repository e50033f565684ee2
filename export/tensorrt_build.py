"""ONNX -> TensorRT engine plus a JSON sidecar that says what it is and where it runs.

Current APIs only (TensorRT 10 and 11): a strongly typed network parsed from the ONNX
file, so precision comes from the graph, not from builder flags (``BuilderFlag.FP16`` and
``INT8`` and the implicit calibrator are gone in TensorRT 11). FP16 engines are built from
a half-precision ONNX export (``export_onnx(..., precision="fp16")``), INT8 engines from
an explicit Q/DQ ONNX made by calibration.

A serialized engine only runs with the TensorRT version that built it and is tuned for
one GPU; :func:`check_engine_compatible` refuses it elsewhere. This module imports neither
torch nor (until a build) tensorrt, so runtimes on edge boxes can use the check.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from san.atomic import atomic_write, atomic_write_text
from san.hashing import file_sha256
from san.spec import METADATA_KEY

from export.onnx_export import INPUT_NAME, PRECISION_KEY, read_contract, read_metadata

SIDECAR_FORMAT = "san-tensorrt-engine"
SIDECAR_VERSION = 1
#: CUDA driver attribute ids (cuda.h): compute capability major / minor.
_CC_MAJOR, _CC_MINOR = 75, 76


class TensorRTUnavailable(RuntimeError):
    """No TensorRT or no usable CUDA GPU on this machine."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX file or build an engine from it."""


class EngineCompatibilityError(RuntimeError):
    """An engine built for another GPU or TensorRT version."""


@dataclass(frozen=True)
class BatchProfile:
    """The optimization profile: batch sizes the engine accepts (min..max), tuned for opt."""

    min: int = 1
    opt: int = 32
    max: int = 128

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"batch profile needs 1 <= min <= opt <= max, got min={self.min} opt={self.opt} max={self.max}"
            )


@dataclass(frozen=True)
class TargetEnvironment:
    """What an engine is bound to: TensorRT version and GPU."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "9.0"

    @classmethod
    def detect(cls, device: int = 0) -> TargetEnvironment:
        """This machine's TensorRT version and CUDA device ``device``.

        Raises :class:`TensorRTUnavailable` naming what is missing.
        """
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise TensorRTUnavailable(
                "TensorRT is not installed (import tensorrt failed); on a machine with an NVIDIA GPU "
                "run `pip install -e '.[gpu-cu12]'` or `'.[gpu-cu13]'` (the CUDA major version of its driver)"
            ) from exc
        name, capability = _cuda_device(device)
        return cls(trt.__version__, name, capability)


def _cuda_device(device: int) -> tuple[str, str]:
    """(name, "major.minor") of a CUDA device, read from the driver library directly."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise TensorRTUnavailable("no NVIDIA driver found (libcuda.so.1 cannot be loaded): TensorRT needs a GPU") from exc
    handle, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    status = cuda.cuInit(0) or cuda.cuDeviceGet(ctypes.byref(handle), device)
    status = status or cuda.cuDeviceGetName(name, len(name), handle)
    status = status or cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, handle)
    status = status or cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, handle)
    if status:
        raise TensorRTUnavailable(f"no usable CUDA device {device} (CUDA driver error {status})")
    return name.value.decode(), f"{major.value}.{minor.value}"


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    profile: BatchProfile = BatchProfile(),
    workspace_mb: int = 4096,
    timing_cache: str | Path | None = None,
    environment: TargetEnvironment | None = None,
    tf32: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Build ``engine_path`` from ``onnx_path`` and write its sidecar; return the sidecar.

    The precision is the ONNX file's (``san.precision`` metadata; ``int8`` when the graph
    has QuantizeLinear nodes). TF32 is off unless ``tf32``: TensorRT enables it by
    default, and its 10-bit mantissa would make an "fp32" engine round like fp16 (the
    sidecar then says ``tf32``). ``timing_cache`` is read if it exists and rewritten after
    the engine is written, so later builds on the same GPU and TensorRT version are faster;
    a cache from another GPU or version is set aside (``log`` says so) and replaced.
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
        raise TensorRTUnavailable(
            f"TensorRT {trt.__version__} could not initialise CUDA ({exc}); check the driver with `nvidia-smi` "
            "and that this TensorRT supports its CUDA version"
        ) from exc
    # TensorRT 11 is always strongly typed (the flag is deprecated there); 10 needs it.
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(0 if int(trt.__version__.split(".")[0]) >= 11 else strongly_typed)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT cannot parse the ONNX file: {errors}")
    config = builder.create_builder_config()
    configure_builder(trt, config, tf32=tf32, workspace_mb=workspace_mb)
    optimization = builder.create_optimization_profile()
    shape = (3, spec.height, spec.width)
    optimization.set_shape(INPUT_NAME, (profile.min, *shape), (profile.opt, *shape), (profile.max, *shape))
    config.add_optimization_profile(optimization)
    cache_path = Path(timing_cache) if timing_cache else None
    cached = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(cached), ignore_mismatch=False):
        log(f"--timing-cache {cache_path}: made by another GPU or TensorRT version; building without it, "
            "and it will be replaced by this build's")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT log above)")
    atomic_write(engine_path, lambda tmp: tmp.write_bytes(bytes(serialized)))
    if cache_path:
        try:
            atomic_write(cache_path, lambda tmp: tmp.write_bytes(bytes(config.get_timing_cache().serialize())))
        except (OSError, RuntimeError) as exc:
            log(f"--timing-cache {cache_path}: not updated ({exc}); the engine was written")
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        METADATA_KEY: spec.to_dict(),
        "precision": "tf32" if precision == "fp32" and tf32 else precision,
        "tf32": tf32,
        "profile": asdict(profile),
        **asdict(environment),
        "onnx_sha256": file_sha256(onnx_path),
        "engine_sha256": file_sha256(engine_path),
        "provenance": {k: v for k, v in metadata.items() if k != METADATA_KEY},
    }
    atomic_write_text(sidecar_path(engine_path), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return sidecar


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


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar of ``engine_path``; raises ``FileNotFoundError``/``ValueError`` naming it."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: engine sidecar not found (written by `san-export --trt` beside the engine)")
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{path}: not a SAN engine sidecar (expected format {SIDECAR_FORMAT!r})")
    return sidecar


def check_engine_compatible(sidecar: dict[str, Any], current: TargetEnvironment | None = None) -> None:
    """Refuse an engine built for another GPU (name or compute capability) or TensorRT version.

    ``current`` defaults to :meth:`TargetEnvironment.detect`. Raises
    :class:`EngineCompatibilityError` saying what differs and how to rebuild.
    """
    current = current or TargetEnvironment.detect()
    mismatches = [
        f"{label}: engine {sidecar.get(key)!r}, this machine {getattr(current, key)!r}"
        for key, label in (
            ("tensorrt_version", "TensorRT version"),
            ("gpu_name", "GPU"),
            ("compute_capability", "compute capability"),
        )
        if sidecar.get(key) != getattr(current, key)
    ]
    if mismatches:
        raise EngineCompatibilityError(
            "this TensorRT engine was built for another machine ("
            + "; ".join(mismatches)
            + "). Engines are tied to the GPU and TensorRT version that built them: rebuild it on "
            "this machine with `san-export --ckpt MODEL.pt --trt` (add --fp16 / --int8 QDQ.onnx as before)"
        )
