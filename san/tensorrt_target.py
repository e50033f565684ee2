"""What a TensorRT engine is bound to (TensorRT version, GPU) and the check that refuses it
elsewhere. Imports neither torch nor (until :meth:`TargetEnvironment.detect`) tensorrt."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from san.extras import missing_extra

#: CUDA driver attribute ids (cuda.h): compute capability major / minor.
_CC_MAJOR, _CC_MINOR = 75, 76


class TensorRTUnavailable(RuntimeError):
    """No TensorRT or no usable CUDA GPU on this machine."""


class EngineCompatibilityError(RuntimeError):
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


def check_engine_compatible(sidecar: dict[str, Any], current: TargetEnvironment | None = None) -> None:
    """Refuse an engine built for another GPU (name or compute capability) or TensorRT version
    (a version-compatible engine: an earlier release of this machine's major version).

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
        and not (key == "tensorrt_version" and sidecar.get("version_compatible")
                 and _runs_later(str(sidecar.get(key)), current.tensorrt_version))
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


def _runs_later(built: str, here: str) -> bool:
    """Whether a version-compatible engine built by TensorRT ``built`` runs on ``here``: the same
    major version, and not an earlier release."""
    b, h = _release(built), _release(here)
    return bool(b) and bool(h) and b[0] == h[0] and h >= b
