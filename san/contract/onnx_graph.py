"""Reading an exported SAN graph without torch: its hard masks, what its output depends on,
and onnxruntime sessions that expose inner tensors (``pi_<stage>``, masks) for comparison."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import onnx

from san.contract.artifact import pi_name
from san.io.error_reason import reason
from san.io.errors import ToolkitError

if TYPE_CHECKING:
    import onnxruntime as ort

#: Comparisons that turn pi into a hard mask (sharp: Greater; Table III thresholding: >=).
COMPARE_OPS = frozenset({"Greater", "GreaterOrEqual", "Less", "LessOrEqual"})


def mask_tensors(proto: onnx.ModelProto, stages: Sequence[int]) -> dict[int, str]:
    """Stage -> the graph's hard mask: the output of the comparison that consumes ``pi_<stage>``."""
    found = {}
    for node in proto.graph.node:
        if node.op_type in COMPARE_OPS:
            for stage in stages:
                if pi_name(stage) in node.input:
                    found[stage] = node.output[0]
    return found


class GraphIndex:
    """Producer/consumer lookups over one ONNX graph."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.order = {id(n): i for i, n in enumerate(self.nodes)}
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)
        self.constants = {t.name for t in graph.initializer} | {
            out for n in self.nodes if n.op_type == "Constant" for out in n.output
        }

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def ancestors(self, name: str) -> list[onnx.NodeProto]:
        """Every node that ``name`` depends on, its producer included."""
        found: dict[int, onnx.NodeProto] = {}
        stack = [name]
        while stack:
            node = self.producer.get(stack.pop())
            if node is not None and id(node) not in found:
                found[id(node)] = node
                stack.extend(i for i in node.input if i)
        return list(found.values())

    def descendants(self, name: str) -> list[onnx.NodeProto]:
        """Every node that depends on ``name``."""
        found: dict[int, onnx.NodeProto] = {}
        stack = [name]
        while stack:
            for node in self.consumers.get(stack.pop(), []):
                if id(node) not in found:
                    found[id(node)] = node
                    stack.extend(node.output)
        return list(found.values())

    def names(self, nodes: Iterable[onnx.NodeProto]) -> tuple[str, ...]:
        """Names of ``nodes`` in graph order."""
        return tuple(n.name for n in sorted(nodes, key=lambda n: self.order[id(n)]))


def drop_unread(model: onnx.ModelProto, op_types: Iterable[str]) -> None:
    """Remove nodes of ``op_types`` whose outputs nothing reads (repeat until none is left)."""
    kinds = frozenset(op_types)
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {name for n in model.graph.node for name in n.input} | outputs
        orphans = [n for n in model.graph.node if n.op_type in kinds and not used & set(n.output)]
        if not orphans:
            return
        for node in orphans:
            model.graph.node.remove(node)


def unused_tensors(proto: onnx.ModelProto, names: Sequence[str], output: str) -> set[str]:
    """Those of ``names`` that the graph output ``output`` does not depend on."""
    needed = {out for node in GraphIndex(proto.graph).ancestors(output) for out in node.output}
    return set(names) - needed


def with_outputs(proto: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``proto`` whose outputs also include the tensors ``names``."""
    proto = copy.deepcopy(proto)
    listed = {o.name for o in proto.graph.output}
    hidden = [name for name in names if name not in listed]
    if hidden:
        infos = {v.name: v for v in onnx.shape_inference.infer_shapes(proto).graph.value_info}
        proto.graph.output.extend(
            infos.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)
            for name in hidden
        )
    return proto


def session_exposing(proto: onnx.ModelProto, names: Sequence[str]) -> ort.InferenceSession:
    """An onnxruntime CPU session of ``proto`` whose outputs also include the tensors ``names``."""
    import onnxruntime as ort

    return ort.InferenceSession(with_outputs(proto, names).SerializeToString(), providers=["CPUExecutionProvider"])


#: The opset whose Reduce ops take ``axes`` as an attribute: what TensorRT 8.6's parser reads.
ATTRIBUTE_AXES_OPSET = 17
#: Reduce ops whose ``axes`` became an input at opset 18 (ReduceSum's did at 13).
REDUCE_AXES_INPUT_AT_18 = frozenset(
    "ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSumSquare".split()
)


class GraphConversionError(ToolkitError, ValueError):
    """A graph that cannot be written at a lower opset; the message keeps the converter's reason."""


def with_attribute_axes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` converted to opset 17 by ONNX's version converter, so every Reduce op carries its
    ``axes`` as an attribute (the opset-18 ``noop_with_empty_axes``, which the converter keeps and
    opset 17 does not know, is dropped when it is 0, its default; the checker refuses any other).
    Metadata is kept. :class:`GraphConversionError` when an op has no opset-17 form (Split-18,
    Pad-18 with ``axes``)."""
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(proto, ATTRIBUTE_AXES_OPSET)
    except RuntimeError as exc:  # "...BaseConverter.h:66: adapter_lookup: Assertion `false` failed: No Adapter ..."
        raise GraphConversionError(f"ONNX's version converter cannot write this graph at opset {ATTRIBUTE_AXES_OPSET} "
                                   f"({reason(exc).split('failed: ')[-1]}): one of its ops has no "
                                   f"opset-{ATTRIBUTE_AXES_OPSET} form") from exc
    for node in converted.graph.node:
        if node.op_type in REDUCE_AXES_INPUT_AT_18:
            kept = [a for a in node.attribute if not (a.name == "noop_with_empty_axes" and a.i == 0)]
            del node.attribute[:]
            node.attribute.extend(kept)
    del converted.metadata_props[:]
    converted.metadata_props.extend(proto.metadata_props)
    onnx.checker.check_model(converted, full_check=True)
    return converted
