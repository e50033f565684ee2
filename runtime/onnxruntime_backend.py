"""ONNX Runtime backend: CPU by default, CUDA / TensorRT execution providers on request.

The contract and input convention are read by :func:`san.contract.artifact.contract_from`, like every
backend's, from what the session already holds (its metadata and input shape), so the file is
parsed once; this module opens the session and checks its output against them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime.base import Backend, BackendError, as_model_dtype
from san.contract.artifact import contract_from, load_onnx, load_onnx_with_data
from san.contract.onnx_graph import with_outputs
from san.contract.spec import ContractError, InputSpec
from san.io.error_reason import reason

#: Short provider names accepted by ``providers=``; the order is the preference order.
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_ORT_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}


class OnnxRuntimeBackend(Backend):
    """Run a ``.onnx`` export with onnxruntime.

    ``device`` picks the execution providers: ``cpu`` (the default) the CPU provider,
    ``cuda:N`` the CUDA provider on device N with the CPU as fallback (onnxruntime-gpu).
    ``providers`` (short names from :data:`PROVIDERS`, in preference order) overrides
    that; the TensorRT provider is used only when asked for, since it builds an engine per
    new input shape (minutes): or use the native ``tensorrt`` backend. ``threads``:
    intra-op threads.
    """

    name = "onnxruntime"

    def __init__(self, artifact: str | Path, device: str | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        super().__init__(artifact, device, threads)
        requested = list(providers) if providers else ["cuda", "cpu"] if self.device.kind == "cuda" else ["cpu"]
        self.providers = self._resolve_providers(requested)
        self._session: ort.InferenceSession | None = None
        self._fixed_batch: int | None = None
        self._exposing: dict[tuple[str, ...], ort.InferenceSession] = {}

    def auto_device(self) -> str:
        return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"

    def _resolve_providers(self, requested: Sequence[str]) -> list[str | tuple[str, dict[str, Any]]]:
        available = ort.get_available_providers()
        unknown = [p for p in requested if p not in PROVIDERS]
        if unknown:
            raise ValueError(f"--providers: unknown onnxruntime provider(s) {unknown}; choose from {list(PROVIDERS)}")
        missing = [p for p in requested if PROVIDERS[p] not in available]
        if missing:
            raise BackendError(
                f"onnxruntime provider(s) {missing} (--device {self.device}) are not available in this install "
                f"(available: {available}); GPU providers need `pip install onnxruntime-gpu` instead of onnxruntime"
            )
        on_gpu = {"cuda", "tensorrt"}
        return [(PROVIDERS[p], {"device_id": self.device.index}) if p in on_gpu else PROVIDERS[p] for p in requested]

    def _session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return options

    def _activate(self) -> InputSpec:
        load_onnx(self.artifact)  # refuses external data outside the model's folder before onnxruntime opens it
        try:
            session = ort.InferenceSession(str(self.artifact), sess_options=self._session_options(),
                                           providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendError(f"{self.artifact}: onnxruntime cannot load this file: {reason(exc)}") from exc
        inputs, outputs = session.get_inputs(), session.get_outputs()
        dims = {i.name: [d if isinstance(d, int) else None for d in i.shape] for i in inputs}
        spec, self.convention = contract_from(session.get_modelmeta().custom_metadata_map, dims, self.artifact)
        if len(inputs) != 1 or inputs[0].type not in _ORT_DTYPES:
            raise ContractError(
                f"{self.artifact}: expected one uint8 or float input, got "
                f"{[(i.name, i.type) for i in inputs]}"
            )
        self._fixed_batch = dims[inputs[0].name][0]
        self._input_name, self._input_dtype = inputs[0].name, _ORT_DTYPES[inputs[0].type]
        output = next((o for o in outputs if o.name == "embeddings"), outputs[0])
        if len(output.shape) != 2 or (isinstance(output.shape[1], int) and output.shape[1] != spec.embedding_dim):
            raise ContractError(
                f"{self.artifact}: the graph output {output.name!r} has shape {output.shape}, which contradicts "
                f"its own contract (N x {spec.embedding_dim})"
            )
        self._output_name = output.name
        self._session = session
        return spec

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        feed = {self._input_name: as_model_dtype(batch, self._input_dtype, self.artifact)}
        (out,) = self.loaded(self._session).run([self._output_name], feed)
        return out

    def _inner(self, batch: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """A second session of the same file, options and providers, with ``names`` as outputs too."""
        if names not in self._exposing:
            proto = with_outputs(load_onnx_with_data(self.artifact), names)
            self._exposing[names] = ort.InferenceSession(proto.SerializeToString(), sess_options=self._session_options(),
                                                         providers=self.providers)
        feed = {self._input_name: as_model_dtype(batch, self._input_dtype, self.artifact)}
        return dict(zip(names, self._exposing[names].run(list(names), feed), strict=True))

    def _deactivate(self) -> None:
        self._session, self._exposing = None, {}

    def batch_limits(self) -> tuple[int, int]:
        if self._fixed_batch is not None:
            return self._fixed_batch, self._fixed_batch
        return super().batch_limits()

    def describe(self) -> dict[str, Any]:
        providers = self._session.get_providers() if self._session is not None else [
            p if isinstance(p, str) else p[0] for p in self.providers]
        return {"name": self.name, "providers": list(providers)}
