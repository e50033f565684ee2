"""What a TensorRT engine is bound to (TensorRT version, GPU) and the check that refuses it
elsewhere. Imports neither torch nor (until :meth:`TargetEnvironment.detect`) tensorrt."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from san.io.errors import ToolkitError
from san.io.extras import missing_extra

#: CUDA driver attribute ids (cuda.h): compute capability major / minor.
_CC_MAJOR, _CC_MINOR = 75, 76


class TensorRTUnavailable(ToolkitError, RuntimeError):
    """No TensorRT or no usable CUDA GPU on this machine."""


class EngineCompatibilityError(ToolkitError, RuntimeError):
    """An engine built for another GPU or TensorRT version."""


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
            raise TensorRTUnavailable(f"{missing_extra(exc) or exc}, on a machine with an NVIDIA GPU (the extra of "
                                      "its driver's CUDA major version)") from exc
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


def check_engine_compatible(built: TargetEnvironment, version_compatible: bool,
                            current: TargetEnvironment | None = None) -> None:
    """Refuse an engine built for another GPU (name or compute capability) or TensorRT version
    (a version-compatible engine: a release this machine's TensorRT runs, :func:`_runs_later`).

    ``current`` defaults to :meth:`TargetEnvironment.detect`. Raises
    :class:`EngineCompatibilityError` saying what differs and how to rebuild.
    """
    current = current or TargetEnvironment.detect()
    mismatches = [
        f"{label}: engine {getattr(built, key)!r}, this machine {getattr(current, key)!r}"
        for key, label in (
            ("tensorrt_version", "TensorRT version"),
            ("gpu_name", "GPU"),
            ("compute_capability", "compute capability"),
        )
        if getattr(built, key) != getattr(current, key)
        and not (key == "tensorrt_version" and version_compatible
                 and _runs_later(built.tensorrt_version, current.tensorrt_version))
    ]
    if mismatches:
        raise EngineCompatibilityError(
            "this TensorRT engine was built for another machine ("
            + "; ".join(mismatches)
            + "). Engines are tied to the GPU and TensorRT version that built them: rebuild it on "
            "this machine with `san-export --ckpt MODEL.pt --trt` (add --fp16 / --int8 QDQ.onnx as before)"
        )


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


#: Major version that built a version-compatible engine -> the later majors whose runtimes run
#: it. TensorRT 10.16 "Version Compatibility": engines built with TensorRT 8 (8.6 and later) work
#: with TensorRT 9 and 10 runtimes, and TensorRT 9 engines with 10; TensorRT 11.4 support matrix:
#: TensorRT 10 engines run with a TensorRT 11 runtime, and no other combination across majors
#: (a TensorRT 8 engine does not run on 11).
LATER_MAJORS = {8: (9, 10), 9: (10,), 10: (11,), 11: ()}
#: The first release that builds version-compatible engines.
FIRST_VERSION_COMPATIBLE = (8, 6)


def _runs_later(built: str, here: str) -> bool:
    """Whether a version-compatible engine built by TensorRT ``built`` runs on ``here``: not an
    earlier release, and the same major version or one :data:`LATER_MAJORS` names."""
    b, h = _release(built), _release(here)
    if len(b) < 2 or len(h) < 2 or b[:2] < FIRST_VERSION_COMPATIBLE or h < b:
        return False
    return h[0] == b[0] or h[0] in LATER_MAJORS.get(b[0], ())
