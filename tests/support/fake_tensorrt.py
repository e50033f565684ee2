"""A stand-in for the ``tensorrt`` module with the surface ``export.tensorrt_build`` calls
(TensorRT 10/11 Python API names), recording what the build asked of it; no GPU needed.

It checks what our code decides (which builder flags, what happens when the timing cache is
refused or cannot be serialized, when CUDA cannot initialise), not TensorRT itself.
"""

from __future__ import annotations

import enum
import types
from dataclasses import dataclass, field


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 2
    TF32 = 6
    VERSION_COMPATIBLE = 13


class BuilderFlagBefore86(enum.IntEnum):  # TensorRT before 8.6 had no version compatibility
    FP16 = 0
    INT8 = 2
    TF32 = 6


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class NetworkDefinitionCreationFlagBefore9(enum.IntEnum):  # TensorRT 8.6: no strongly typed networks
    EXPLICIT_BATCH = 0


@dataclass
class Behaviour:
    """What the fake does: refuse CUDA, refuse or fail to read the timing cache, fail to serialize it."""

    cuda_fails: bool = False
    cache_mismatch: bool = False
    cache_unreadable: bool = False  # create_timing_cache returns None for data it cannot read
    cache_serialize_fails: bool = False
    calls: list[tuple] = field(default_factory=list)


class _Cache:
    def __init__(self, data: bytes, behaviour: Behaviour) -> None:
        self.data, self.behaviour = data, behaviour

    def serialize(self) -> bytes:
        if self.behaviour.cache_serialize_fails:
            raise RuntimeError("timing cache serialization failed")
        return b"fake timing cache"


class _Config:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.flags = {BuilderFlag.TF32}  # TensorRT's default
        self.cache: _Cache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self.behaviour.calls.append(("set_memory_pool_limit", pool, size))

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag: BuilderFlag) -> None:
        self.flags.discard(flag)

    def create_timing_cache(self, data: bytes) -> _Cache | None:
        if data and self.behaviour.cache_unreadable:
            return None
        return _Cache(data, self.behaviour)

    def set_timing_cache(self, cache: _Cache, ignore_mismatch: bool) -> bool:
        if cache is None:  # what the bindings do with None
            raise TypeError("set_timing_cache(): incompatible function arguments")
        return self._set_timing_cache(cache, ignore_mismatch)

    def _set_timing_cache(self, cache: _Cache, ignore_mismatch: bool) -> bool:
        refused = bool(cache.data) and self.behaviour.cache_mismatch
        self.behaviour.calls.append(("set_timing_cache", cache.data, not refused))
        if not refused:
            self.cache = cache
        return not refused

    def get_timing_cache(self) -> _Cache:
        return self.cache

    def add_optimization_profile(self, profile: object) -> None:
        self.behaviour.calls.append(("add_optimization_profile", profile.shapes))


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, low: tuple, opt: tuple, high: tuple) -> None:
        self.shapes[name] = (low, opt, high)


def module(behaviour: Behaviour, version: str = "10.13.0.35") -> types.ModuleType:
    """A fake ``tensorrt`` module acting as ``behaviour`` says."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    release = tuple(int(p) for p in version.split(".")[:2])
    trt.BuilderFlag = BuilderFlag if release >= (8, 6) else BuilderFlagBefore86
    trt.MemoryPoolType = MemoryPoolType
    trt.NetworkDefinitionCreationFlag = (NetworkDefinitionCreationFlag if release >= (9, 0)
                                         else NetworkDefinitionCreationFlagBefore9)

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            pass

    class Builder:
        def __init__(self, logger: Logger) -> None:
            if behaviour.cuda_fails:
                raise TypeError("pybind11::init(): factory function returned nullptr")
            self.config: _Config | None = None

        def create_network(self, flags: int) -> object:
            behaviour.calls.append(("create_network", flags))
            return object()

        def create_builder_config(self) -> _Config:
            self.config = _Config(behaviour)
            return self.config

        def create_optimization_profile(self) -> _Profile:
            return _Profile()

        def build_serialized_network(self, network: object, config: _Config) -> bytes:
            behaviour.calls.append(("build", frozenset(config.flags)))
            return b"fake engine"

    class OnnxParser:
        def __init__(self, network: object, logger: Logger) -> None:
            self.num_errors = 0

        def parse_from_file(self, path: str) -> bool:
            return True

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    return trt
