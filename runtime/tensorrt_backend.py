"""Native TensorRT backend: a serialized engine plus its ``<engine>.json`` sidecar.

The sidecar (contract, TensorRT version, GPU) is read and checked with
:mod:`san.contract.artifact` and :mod:`san.contract.tensorrt_target`; the batch range comes from the engine's
own optimization profile.

TensorRT 10+ tensor API. tensorrt and pycuda are imported only here. Buffers are
allocated once for the profile's largest batch: pinned host memory, device memory and
one stream; each batch is copied in asynchronously, its input shape is set, the engine
runs with ``execute_async_v3`` and the output is copied back on the same stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycuda.driver as cuda
import tensorrt as trt

from runtime.base import Backend, BackendError, as_model_dtype
from san.contract.engine_sidecar import EngineSidecar
from san.contract.spec import ContractError, InputSpec
from san.contract.tensorrt_target import (
    EngineCompatibilityError,
    TargetEnvironment,
    TensorRTUnavailable,
    check_engine_compatible,
)


class TensorRTBackend(Backend):
    """Run a ``.engine`` built by ``san-export --trt`` on ``device`` (``cuda``, the default,
    or ``cuda:N``); CPU threads and onnxruntime providers do not apply and are noted."""

    name = "tensorrt"
    default_device = "cuda"

    def __init__(self, artifact: str | Path, device: str | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        super().__init__(artifact, device, threads)
        if self.device.kind != "cuda":
            raise BackendError(f"--device {self.device}: a TensorRT engine runs on an NVIDIA GPU; use --device cuda[:N]")
        if threads is not None:
            self._note_ignored("--threads", threads, "a TensorRT engine computes on the GPU")
        if providers:
            self._note_ignored("--providers", ",".join(providers), "execution providers are onnxruntime's")
        self._logger = trt.Logger(trt.Logger.WARNING)

    def _activate(self) -> InputSpec:
        sidecar = EngineSidecar.read(self.artifact)
        try:
            check_engine_compatible(sidecar.built_for, sidecar.version_compatible,
                                    TargetEnvironment.detect(self.device.index))
        except (EngineCompatibilityError, TensorRTUnavailable) as exc:
            raise BackendError(f"{self.artifact}: refused: {exc}") from exc
        spec, self.convention = sidecar.spec, sidecar.convention
        try:
            cuda.init()
            self._cuda_context = cuda.Device(self.device.index).retain_primary_context()
        except cuda.Error as exc:
            raise BackendError(f"--device {self.device}: CUDA cannot be initialised ({exc}); check the driver "
                               "with `nvidia-smi` and the device index") from exc
        self._cuda_context.push()
        try:
            self._load_engine(sidecar)
        except BaseException:
            self._cuda_context.pop()
            self._cuda_context.detach()
            raise
        self._cuda_context.pop()
        return spec

    def _load_engine(self, sidecar: EngineSidecar) -> None:
        spec = sidecar.spec
        try:
            self._runtime = trt.Runtime(self._logger)
        except (TypeError, RuntimeError) as exc:  # pybind11: "factory function returned nullptr"
            raise BackendError(f"TensorRT {trt.__version__} could not initialise CUDA ({exc}); check the driver "
                               "with `nvidia-smi`") from exc
        # A version-compatible engine carries its lean runtime as host code, which TensorRT
        # runs only when allowed.
        self._runtime.engine_host_code_allowed = sidecar.version_compatible
        self._engine = self._runtime.deserialize_cuda_engine(self.artifact.read_bytes())
        if self._engine is None:
            raise BackendError(f"{self.artifact}: TensorRT {trt.__version__} cannot deserialize this engine; "
                               "rebuild it here with `san-export --ckpt MODEL.pt --trt`")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ContractError(f"{self.artifact}: expected one input and one output tensor, got {inputs} -> {outputs}")
        self._input, self._output = inputs[0], outputs[0]
        low, _, high = self._engine.get_tensor_profile_shape(self._input, 0)
        expected = sidecar.input_dims()
        if list(high[1:]) != expected:
            raise ContractError(
                f"{self.artifact}: engine input shape {tuple(high)} contradicts its contract "
                f"(N x {' x '.join(map(str, expected))})"
            )
        self._limits = (int(low[0]), int(high[0]))
        self._input_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._input)))
        out_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._output)))
        self._context = self._engine.create_execution_context()
        self._stream = cuda.Stream()
        self._host_in = cuda.pagelocked_empty(tuple(high), self._input_dtype)
        self._host_out = cuda.pagelocked_empty((self._limits[1], spec.embedding_dim), out_dtype)
        self._device_in = cuda.mem_alloc(self._host_in.nbytes)
        self._device_out = cuda.mem_alloc(self._host_out.nbytes)
        self._context.set_tensor_address(self._input, int(self._device_in))
        self._context.set_tensor_address(self._output, int(self._device_out))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        host_in, host_out = self._host_in[:n], self._host_out[:n]
        host_in[...] = as_model_dtype(batch, self._input_dtype, self.artifact)
        self._cuda_context.push()
        try:
            cuda.memcpy_htod_async(self._device_in, host_in, self._stream)
            if not self._context.set_input_shape(self._input, batch.shape):
                raise ContractError(f"{self.artifact}: TensorRT refused input shape {batch.shape}")
            if not self._context.execute_async_v3(self._stream.handle):
                raise BackendError(f"{self.artifact}: TensorRT execution failed (see the TensorRT log above)")
            cuda.memcpy_dtoh_async(host_out, self._device_out, self._stream)
            self._stream.synchronize()
        finally:
            self._cuda_context.pop()
        return host_out.astype(np.float32)  # a copy: the pinned buffer is reused

    def _deactivate(self) -> None:
        self._cuda_context.push()
        try:
            self._device_in.free()
            self._device_out.free()
            del self._context, self._engine, self._runtime, self._stream, self._host_in, self._host_out
        finally:
            self._cuda_context.pop()
            self._cuda_context.detach()

    def batch_limits(self) -> tuple[int, int]:
        return self._limits

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "tensorrt": trt.__version__}
