"""A float graph as an FP16 TensorRT engine built with the FP16 builder flag may compute it:
every tensor between two layers in float16.

DeepStream builds its FP16 engines from the float ONNX with TensorRT's FP16 flag, which lets
the builder pick half precision for any layer. Nothing pins a layer to float32 there: the
tracker's ``ReID:`` section has no precision key, and nvinfer's ``layer-device-precision`` only
calls ``ILayer::setPrecision``, which TensorRT treats as a hint unless a precision-constraint
builder flag is set, and nvinfer sets none (``nvdsinfer_model_builder.cpp`` in NVIDIA's
DeepStream sources keeps ``kSTRICT_TYPES`` commented out). So a graph for DeepStream must hold
with every layer in half precision, and this module shows what that computes:

- the graph is first split where TensorRT's parser splits it: ``ReduceL2`` and
  ``ReduceSumSquare`` become an element-wise square, a ``ReduceSum`` and (for L2) a ``Sqrt``,
  three layers (the importers of onnx-tensorrt 10.1-GA), so the squares are float16 tensors
  that overflow above 256;
- then every float initializer is rounded to float16, and every float tensor a layer writes
  is rounded to float16 and back (a Cast pair) before any other layer reads it: storage between
  layers in half precision, arithmetic inside a layer in float32, as TensorRT's half-precision
  kernels accumulate in float32. A value beyond float16's range becomes infinite there.

(onnxruntime's own float16 conversion does not show this: where it lacks a float16 kernel it
runs a whole chain of such ops in float32 between two Casts, the L2 normalisation included.)
Run the result with graph optimisations off (:func:`rounding_session`), so that no Cast pair is
removed.

It imports neither torch nor tensorrt.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

#: Reductions TensorRT's parser imports as an element-wise square followed by a ReduceSum.
_SQUARED_SUMS = {"ReduceL2": True, "ReduceSumSquare": False}  # op -> followed by a Sqrt


def as_tensorrt_layers(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every ReduceL2 / ReduceSumSquare split into the layers TensorRT makes of it
    (square, ReduceSum, and Sqrt for L2); the same function in float32."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type not in _SQUARED_SUMS or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        base = node.name or node.output[0]
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = node.input[1] if len(node.input) > 1 and node.input[1] else None
        if axes is None and "axes" in attributes:  # opset 17: axes as an attribute; ReduceSum takes an input
            axes = f"{base}/axes"
            graph.initializer.append(numpy_helper.from_array(np.asarray(attributes.pop("axes"), np.int64), axes))
        attributes.pop("axes", None)
        square, total = f"{base}/square", f"{base}/sum" if _SQUARED_SUMS[node.op_type] else node.output[0]
        nodes.append(helper.make_node("Mul", [node.input[0], node.input[0]], [square], name=square))
        nodes.append(helper.make_node("ReduceSum", [square, *([axes] if axes else [])], [total],
                                      name=f"{base}/reduce", **attributes))
        if _SQUARED_SUMS[node.op_type]:
            nodes.append(helper.make_node("Sqrt", [total], [node.output[0]], name=f"{base}/sqrt"))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # shapes inferred for the graph as written; the runtime infers its own
    return model


def in_fp16_everywhere(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (a float32 graph) as TensorRT layers, with its float initializers rounded to
    float16 and every float tensor a node writes rounded to float16 before it is read; the
    types stay float32."""
    model = onnx.shape_inference.infer_shapes(as_tensorrt_layers(model))
    graph = model.graph
    floats = {v.name for v in (*graph.value_info, *graph.output) if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            rounded = numpy_helper.to_array(tensor).astype(np.float16).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(rounded, tensor.name))
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        for index, name in enumerate(node.output):
            if name not in floats:
                continue
            node.output[index] = f"{name}/fp32"
            nodes.append(helper.make_node("Cast", [f"{name}/fp32"], [f"{name}/fp16"], name=f"{name}/to_fp16",
                                          to=TensorProto.FLOAT16))
            nodes.append(helper.make_node("Cast", [f"{name}/fp16"], [name], name=f"{name}/from_fp16",
                                          to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return model


def rounding_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """An onnxruntime CPU session of ``model`` with graph optimisations off, which keeps every
    Cast pair of :func:`in_fp16_everywhere`."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
