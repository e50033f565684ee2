"""The float parts of a TensorRT Q/DQ graph in half precision.

A strongly typed TensorRT network takes every layer's precision from the graph's tensor
types, so an INT8 engine built from an fp32 Q/DQ file runs its float parts (stem, first
stages, mask paths, context-unit ConvTranspose, head) in strict FP32. Writing those parts in
float16 lets the engine run them on tensor cores, as ``--fp16`` does for a whole model.

onnxruntime's float16 converter does the rewrite: every float initializer (weights, biases,
Q/DQ scales) and every float tensor becomes float16, with Casts at the borders it keeps in
float32. Kept in float32: the graph's input and outputs, and the L2 normalisation between the
embedding head's last layer and ``embeddings`` (when the contract has one): it holds in float16
too (:func:`san.model.network.l2_normalize`), and it is a few element-wise ops at the very end,
so float32 there costs nothing and saves the final rounding. QuantizeLinear and
DequantizeLinear take a float16 input and scale from opset 19 on, so the graph is raised to
19 (none of its ops changed meaning between 18 and 19): TensorRT 10 and later parse it; 8.6
(opset 17) cannot.

What it costs is the model's to say, and the int8 rule judges it like any INT8 file: on a
small SAN trained 4 epochs, the TensorRT-target file scored a mean cosine of 0.968 against
fp32 with fp32 float parts and 0.927 with fp16 ones (the fp16 export alone: 0.988), below
the rule's 0.95; its hard masks amplify fp16 rounding as they do INT8's.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel

from san.contract.onnx_graph import GraphIndex, drop_unread
from san.contract.precision import l2_tail

#: Lowest opset whose QuantizeLinear/DequantizeLinear take float16 inputs and scales.
HALF_QDQ_OPSET = 19


def with_half_float_parts(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (a Q/DQ graph) with its float parts in float16; input, outputs and the L2 tail
    stay float32 (see the module docstring)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, HALF_QDQ_OPSET)
    tail = l2_tail(model)
    half = OnnxModel(convert_float_to_float16(model, keep_io_types=True, op_block_list=[], node_block_list=tail))
    _without_round_trips(half.model, set(tail))
    half.topological_sort()  # the converter appends the Casts it adds at the graph's end
    onnx.checker.check_model(half.model)
    return half.model


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def _without_round_trips(model: onnx.ModelProto, tail: set[str]) -> None:
    """Undo the converter's float32 -> float16 -> float32 round trips after the ``tail`` nodes
    (it casts every kept node's output down to float16): readers of the float32 Cast read the
    tail's float32 tensor instead; the graph's outputs keep their (now exact) Cast."""
    g = GraphIndex(model.graph)
    exact = {out for node in g.nodes if node.name in tail for out in node.output}
    outputs = {o.name for o in model.graph.output}
    for node in g.nodes:
        down = g.producer.get(node.input[0]) if _cast_to(node) == TensorProto.FLOAT else None
        if down is None or _cast_to(down) != TensorProto.FLOAT16 or down.input[0] not in exact:
            continue
        node.input[0] = down.input[0]
        if node.output[0] not in outputs:
            for reader in g.consumers.get(node.output[0], []):
                reader.input[:] = [down.input[0] if i == node.output[0] else i for i in reader.input]
    drop_unread(model, {"Cast"})
