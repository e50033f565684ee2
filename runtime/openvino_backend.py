"""OpenVINO backend: ``.onnx`` files (fp32, fp16 or the toolkit's INT8 Q/DQ) and OpenVINO IR
(``.xml`` + ``.bin`` from ``san-export --openvino``), on Intel CPUs, GPUs and NPUs.

The contract and input convention come from :func:`san.contract.artifact.read_model_contract`, like
every backend's. Precision is explicit: OpenVINO's default on CPUs with BF16 runs float parts
in bf16, so ``precision`` (``f32`` unless asked) pins the inference precision hint; ``bf16``
and ``fp16`` are opt-in and judged by the fp16 rule. At ``bf16`` and ``fp16`` the mask paths and
the L2 tail (:func:`san.contract.precision.precision_sensitive_nodes`) stay in f32
(:func:`san.contract.openvino_precision.keep_in_f32`): an ONNX file is marked when it is read,
an IR from ``san-export --openvino`` carries the marks. Small batches run on a model compiled
for LATENCY; larger ones are split over the asynchronous requests of a model compiled for
THROUGHPUT (CPU streams), which measured faster from :data:`THROUGHPUT_FROM` images on
(``benchmarks/embed.py``).

Compiling is most of a start (seconds for a ResNet-50 SAN), so compiled models go to OpenVINO's
model cache (``ov::cache_dir``): in ``compile_cache`` (default :func:`default_compile_cache`,
the platform's cache folder; ``none``: off). OpenVINO keys each entry by the model's content,
the device, the options that change the compiled graph and its own version, so a changed model
or OpenVINO compiles afresh; the CPU plugin applies the inference precision after the cache
(one entry serves f32 and bf16, each computing in its own precision). :meth:`describe` says
whether the model came from the cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import openvino.properties as props
import openvino.properties.hint as hints

from runtime.base import Backend, BackendError, as_model_dtype
from san.contract.artifact import OUTPUT_NAME, kind_for, load_onnx, read_model_contract
from san.contract.openvino_precision import keep_in_f32
from san.contract.precision import precision_sensitive_nodes
from san.contract.spec import ContractError, InputSpec
from san.io.error_reason import reason

#: ``--precision`` -> OpenVINO's inference precision hint.
PRECISIONS = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "fp16": ov.Type.f16}
#: Batches of at least this many images run on the THROUGHPUT-compiled model.
THROUGHPUT_FROM = 8
_DTYPES = {ov.Type.u8: np.uint8, ov.Type.f32: np.float32}


def default_compile_cache() -> Path:
    """Where compiled models are kept unless told: ``$XDG_CACHE_HOME/san/openvino`` (Linux's
    cache folder; ``~/.cache`` when the variable is unset)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "san" / "openvino"


class OpenVINOBackend(Backend):
    """Run an ONNX file or OpenVINO IR with OpenVINO.

    ``device``: ``cpu`` (default), ``gpu[:N]`` or ``npu`` (OpenVINO's CPU, GPU.N, NPU).
    ``threads``: the CPU's inference threads. ``precision``: ``f32`` (default), ``bf16`` or
    ``fp16`` (the inference precision hint; INT8 layers of a Q/DQ file stay INT8).
    ``keep_sensitive_f32``: at ``bf16``/``fp16``, keep the precision-sensitive nodes of an ONNX
    file in f32 (default; off only to measure what that costs).
    """

    name = "openvino"
    device_kinds = frozenset({"cpu", "gpu", "npu"})

    def __init__(self, artifact: str | Path, device: str | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None, precision: str | None = None,
                 compile_cache: str | None = None, keep_sensitive_f32: bool = True) -> None:
        super().__init__(artifact, device, threads)
        cache = compile_cache or str(default_compile_cache())
        self.compile_cache = None if cache == "none" else Path(cache)
        if providers:
            self._note_ignored("--providers", ",".join(providers), "execution providers are onnxruntime's")
        self.precision = precision or "f32"
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision {self.precision!r}: OpenVINO takes {', '.join(PRECISIONS)}")
        self.keep_sensitive_f32 = keep_sensitive_f32 and self.precision != "f32"
        self._target = {"cpu": "CPU", "npu": "NPU"}.get(self.device.kind, f"GPU.{self.device.index}")
        self._compiled: dict[str, Any] = {}
        self._exposing: dict[tuple[str, ...], Any] = {}

    def _activate(self) -> InputSpec:
        spec, self.convention = read_model_contract(self.artifact)
        core = ov.Core()
        if self.compile_cache is not None:
            try:
                self.compile_cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendError(f"--compile-cache {self.compile_cache}: cannot be created ({exc.strerror}); give "
                                   "another folder, or --compile-cache none") from exc
            core.set_property({props.cache_dir: str(self.compile_cache)})
        self._core = core
        model = self._read_model()
        if len(model.inputs) != 1 or model.input(0).get_element_type() not in _DTYPES:
            raise ContractError(f"{self.artifact}: expected one uint8 or float input, got "
                                f"{[(i.get_any_name(), str(i.get_element_type())) for i in model.inputs]}")
        output = next((o for o in model.outputs if OUTPUT_NAME in o.get_names()), model.output(0))
        if output.get_partial_shape().rank.get_length() != 2:
            raise ContractError(f"{self.artifact}: the output {output.get_any_name()!r} is not N x D")
        self._dtype = _DTYPES[model.input(0).get_element_type()]
        self._output = output.get_any_name()
        self._model = model
        self._request = self._compile("LATENCY").create_infer_request()
        self._queue: ov.AsyncInferQueue | None = None  # compiled on the first large batch
        return spec

    def _read_model(self) -> ov.Model:
        """The artifact as OpenVINO reads it, an ONNX file's precision-sensitive nodes marked f32
        when they are to be kept so."""
        try:
            model = self._core.read_model(str(self.artifact))
        except RuntimeError as exc:
            raise BackendError(f"{self.artifact}: OpenVINO cannot read this model: {reason(exc)}") from exc
        if self.keep_sensitive_f32 and kind_for(self.artifact).name == "onnx":
            model = keep_in_f32(model, precision_sensitive_nodes(load_onnx(self.artifact)))
        return model

    def _compile(self, mode: str, model: ov.Model | None = None) -> ov.CompiledModel:
        """The model (default: the artifact's) compiled for ``mode`` with this backend's settings."""
        config = {hints.inference_precision: PRECISIONS[self.precision],
                  hints.performance_mode: getattr(hints.PerformanceMode, mode)}
        if self.device.kind == "cpu":
            config[props.inference_num_threads] = self.threads
        try:
            compiled = self._core.compile_model(model or self._model, self._target, config)
        except RuntimeError as exc:
            raise BackendError(f"{self.artifact}: OpenVINO cannot compile it for {self._target}: "
                               f"{reason(exc)}") from exc
        if model is None:
            self._compiled[mode] = compiled
        return compiled

    def _inner(self, batch: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """A second compilation of the same file and settings, with ``names`` as outputs too."""
        if names not in self._exposing:
            model = self._read_model()
            model.add_outputs(list(names))
            self._exposing[names] = self._compile("LATENCY", model)
        compiled = self._exposing[names]
        result = compiled(as_model_dtype(batch, self._dtype, self.artifact))
        return {name: np.asarray(result[compiled.output(name)]) for name in names}

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        batch = as_model_dtype(batch, self._dtype, self.artifact)
        if len(batch) < THROUGHPUT_FROM:
            return self.loaded(self._request).infer({0: batch})[self._output].copy()
        if self._queue is None:
            compiled = self._compile("THROUGHPUT")
            jobs = int(compiled.get_property(props.optimal_number_of_infer_requests))
            self._queue = ov.AsyncInferQueue(compiled, max(1, jobs))
        queue = self._queue
        if len(queue) == 1:
            return self.loaded(self._request).infer({0: batch})[self._output].copy()
        chunks = np.array_split(batch, min(len(queue), len(batch) // (THROUGHPUT_FROM // 2)))
        results: list[np.ndarray] = [np.empty(0)] * len(chunks)

        def done(request: ov.InferRequest, index: int) -> None:
            results[index] = request.get_tensor(self._output).data.copy()

        queue.set_callback(done)
        for index, chunk in enumerate(chunks):
            queue.start_async({0: np.ascontiguousarray(chunk)}, index)
        queue.wait_all()
        return np.concatenate(results)

    def kernel_precisions(self) -> dict[str, str]:
        """Each layer of the model read -> the precision its kernel runs in on this device, from
        OpenVINO's runtime model of the LATENCY compilation (a layer fused into another reports
        the fused kernel's)."""
        compiled = self._compiled.get("LATENCY") or self._compile("LATENCY")
        precisions: dict[str, str] = {}
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            for layer in info["originalLayersNames"].astype(str).split(","):
                precisions[layer] = info["runtimePrecision"].astype(str)
        return precisions

    def _deactivate(self) -> None:
        self._compiled, self._request, self._queue, self._model, self._core = {}, None, None, None, None
        self._exposing = {}

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"name": self.name, "device": self._target.split(".")[0], "precision": self.precision,
                                     "sensitive_nodes_f32": self.keep_sensitive_f32}
        if "LATENCY" in self._compiled:  # what OpenVINO actually runs (a CPU without bf16 falls back to f32)
            compiled = self._compiled["LATENCY"]
            described["inference_precision"] = compiled.get_property(hints.inference_precision).get_type_name()
            described["compile_cache"] = None if self.compile_cache is None else {
                "folder": str(self.compile_cache), "loaded_from_cache": bool(compiled.get_property(props.loaded_from_cache))}
        return described
