"""The precision-sensitive part of a SAN graph, named once for every runtime (torch-free).

Hard masks amplify rounding: an element of pi near the threshold flips when X, the tensor its
block min-max normalises (Eq. 3), is rounded, and a flipped element doubles or removes a feature
(F = (1 + M) T) that every later block inherits. So whatever runs the float parts in reduced
precision keeps these nodes in float:

- each block's mask path (:func:`find_mask_paths`): the producer of X, the min-max
  normalisation, the comparison with the threshold, the Cast of its result and the Mul applying it;
- the L2 normalisation after the embedding head (:func:`l2_tail`), a few element-wise ops whose
  float32 costs nothing.

:func:`precision_sensitive_nodes` names both. INT8 calibration keeps the mask paths in float
(:mod:`calibration.quantize`), the TensorRT half-float rewrite keeps the L2 tail in float32
(:mod:`calibration.half_floats`), and OpenVINO's bf16/fp16 keeps both in f32
(:mod:`san.contract.openvino_precision`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from san.contract.artifact import OUTPUT_NAME
from san.contract.onnx_graph import COMPARE_OPS, GraphIndex

#: Ops the exporter may emit for Eq. 3 (flatten, min/max over H x W, subtract, guard, divide).
NORMALISE_OPS = frozenset(
    {"Reshape", "Flatten", "ReduceMin", "ReduceMax", "Sub", "Div", "Clip", "Max", "Min", "Shape",
     "Gather", "Concat", "Unsqueeze", "Squeeze", "Slice", "Expand", "Identity", "Cast", "Constant"}
)
_HEAD_OPS = frozenset({"Gemm", "MatMul"})


@dataclass(frozen=True)
class MaskPath:
    """One attention block's hard-mask computation, kept in float.

    ``source`` is X (the tensor min-max normalised), ``mask`` the float 0/1 mask tensor,
    ``entry`` the producers of X and of the masked feature (kept in float, but they may
    read quantized inputs), ``nodes`` every node name of the path in graph order, the
    entry nodes included; ``features`` the producers of the masked feature T alone.
    """

    compare: str
    source: str
    mask: str
    entry: tuple[str, ...]
    nodes: tuple[str, ...]
    output: str = ""  # the block's output F (the Add of Eq. 2, else the Mul)
    features: tuple[str, ...] = ()


def find_mask_paths(model: onnx.ModelProto) -> list[MaskPath]:
    """Every hard-mask path of the graph: a comparison of a min-max-normalised tensor with
    a constant, its Cast to float and the Mul applying it.

    Walks back from each comparison through :data:`NORMALISE_OPS` until the first other
    op (the producer of X: the context unit's ConvTranspose or the stage's ReLU); a walk
    that meets no ReduceMin and ReduceMax is not a mask path and is skipped.
    """
    g = GraphIndex(model.graph)
    paths = []
    for compare in (n for n in g.nodes if n.op_type in COMPARE_OPS):
        variable = [name for name in compare.input if not g.is_constant(name)]
        if len(variable) != 1:
            continue
        normalise, source = _walk_normalisation(g, variable[0])
        if not {"ReduceMin", "ReduceMax"} <= {n.op_type for n in normalise}:
            continue
        applied, mask = _walk_application(g, compare)
        if not any(n.op_type == "Mul" for n in applied):  # e.g. logit's clamp of pi: no mask is applied
            continue
        features = [name for n in applied if n.op_type == "Mul" for name in n.input if name != mask]
        producers = {id(p): p for name in (source, *features) if (p := g.producer.get(name)) is not None}
        members = {id(n): n for n in (*normalise, compare, *applied, *producers.values())}
        entry = tuple(n.name for n in producers.values())
        of_features = tuple(p.name for name in features if (p := g.producer.get(name)) is not None)
        paths.append(MaskPath(compare.name, source, mask, entry, g.names(members.values()), _block_output(g, applied),
                              of_features))
    return paths


def _walk_normalisation(g: GraphIndex, start: str) -> tuple[list[onnx.NodeProto], str]:
    """Nodes of Eq. 3 feeding ``start``, and X: the one non-constant tensor entering them."""
    found: dict[int, onnx.NodeProto] = {}
    entering: set[str] = set()
    stack = [start]
    while stack:
        name = stack.pop()
        node = g.producer.get(name)
        if node is None or node.op_type not in NORMALISE_OPS:
            if not g.is_constant(name):
                entering.add(name)
            continue
        if id(node) not in found:
            found[id(node)] = node
            stack.extend(node.input)
    source = next(iter(entering)) if len(entering) == 1 else ""
    return (list(found.values()) if source else []), source


def _walk_application(g: GraphIndex, compare: onnx.NodeProto) -> tuple[list[onnx.NodeProto], str]:
    """The Cast of the comparison to float and the Mul(s) by that mask; the mask tensor."""
    applied: list[onnx.NodeProto] = []
    mask = compare.output[0]
    for node in g.consumers.get(mask, []):
        if node.op_type == "Cast":
            applied.append(node)
            mask = node.output[0]
            applied += [m for m in g.consumers.get(mask, []) if m.op_type == "Mul"]
    return applied, mask


def _block_output(g: GraphIndex, applied: Sequence[onnx.NodeProto]) -> str:
    """The block's output F: the Add of Eq. 2 reading A = M * T, else A itself."""
    mul = next((n for n in applied if n.op_type == "Mul"), None)
    if mul is None:
        return ""
    return next((c.output[0] for c in g.consumers.get(mul.output[0], []) if c.op_type == "Add"), mul.output[0])


def l2_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes between the head's last Gemm/MatMul and the ``embeddings`` output
    (the L2 normalisation, if the contract has one; else none)."""
    g = GraphIndex(model.graph)
    name = OUTPUT_NAME
    while (node := g.producer.get(name)) is not None and node.op_type not in _HEAD_OPS:
        name = node.input[0]
    if node is None:
        return []
    before = {id(n) for n in g.ancestors(node.output[0])}
    return [n.name for n in g.ancestors(OUTPUT_NAME) if id(n) not in before]



def precision_sensitive_nodes(model: onnx.ModelProto) -> list[str]:
    """Every node a runtime computing in bf16 or fp16 keeps in float, in graph order: each mask
    path (pi from the features: X's producer where it is not the stage's own, the min-max
    normalisation, the comparison, the mask applied) and the L2 tail. The producers of the
    masked features T are the stage's and run at the stage's precision; the path reads T."""
    paths = find_mask_paths(model)
    features = {name for path in paths for name in path.features}
    names = {name for path in paths for name in path.nodes if name not in features} | set(l2_tail(model))
    return [n.name for n in model.graph.node if n.name in names]
