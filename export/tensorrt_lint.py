"""Will TensorRT's ONNX parser take this graph? A check that needs neither a GPU nor TensorRT.

The rules come from the parser's documentation and importers (onnx-tensorrt 10.15 and
8.6-GA: ``docs/operators.md`` and the Q/DQ importer), checked node by node:

- the op type is one the parser imports (default ONNX domain only; custom domains such as
  onnxruntime's ``com.microsoft`` are not), and its data input has a type the op supports;
- quantized types (INT8, FP8, INT4) appear only between QuantizeLinear and
  DequantizeLinear; a DequantizeLinear of INT32 (onnxruntime's quantized Conv bias) is
  refused ("the quantized datatype is INT32 which TRT does not support");
- QuantizeLinear/DequantizeLinear: an int8, fp8 or int4 zero point that is a constant of
  zeros (TensorRT quantizes symmetrically only; a uint8 zero point is read as int8, which
  wraps every value above 127), a constant scale whose coefficients are all positive, and
  for a per-axis scale a valid axis whose dimension equals the scale's length, on constant
  weights only (any axis: NVIDIA's own quantizer puts ConvTranspose weights on axis 1;
  activations are quantized per tensor). A missing zero point is not refused: the parser
  then quantizes to INT8 with zero point 0;
- UINT8 only as a network input (or output), and an input only feeds a Cast;
- inputs the parser reads at build time are known then (:attr:`ParserVersion.build_time`):
  ``axes`` of the Reduce ops are initializers in every release; TensorRT 8.6 and 10.0-10.6
  also want initializers for the ``axes`` of Slice, Pad (10.x) and Squeeze and the ``axis`` of
  CumSum (onnx-tensorrt 10.1-GA ``docs/operators.md``), while 10.7 and later take any Slice and
  Pad ``axes`` and need Squeeze/Unsqueeze ``axes``, CumSum's ``axis`` and OneHot's ``depth``
  only to resolve to a constant (folded from constants and static shapes; 10.15 matrix);
- a per-axis Q/DQ scale names its ``axis``: without one, TensorRT's parser quantizes along
  axis 0 (``attrs.get("axis", nbDims)``, then 0 for a per-channel scale, in the Q/DQ importer
  of onnx-tensorrt 8.6-GA and 10.1-GA) where ONNX, and so onnxruntime, default to axis 1; a
  square weight (C_out == C_in) would then be scaled along the wrong axis without any error;
- MaxPool without its ``Indices`` output and with unit dilations; Resize without
  antialiasing.

Clip's ``min``/``max`` may be tensors (the parser switches to element-wise max/min), so
they are not flagged.

Rules that differ between TensorRT releases live in :data:`PARSERS`, one row per supported
release: the highest ONNX opset its parser imports, which inputs it reads at build time, and
whether its Reduce importers read the ``axes`` *input* of the opset-18 form. TensorRT 8.6 and 9.x do not (onnx-tensorrt 8.6-GA calls
``reduceTensor`` without axes; 10.0-GA is the first to pass them): they reduce over every axis,
which for SAN makes Eq. 3's per-channel min/max batch-wide without any error. This module
imports neither torch nor tensorrt (tensorrt only to read the installed version where no
package metadata names it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from export.errors import ExportError
from san.contract.artifact import load_onnx_with_data
from san.contract.onnx_graph import REDUCE_AXES_INPUT_AT_18, GraphIndex

_FLOATS = frozenset({"FLOAT", "FLOAT16", "BFLOAT16"})
_NUMBERS = _FLOATS | {"INT32", "INT64"}
_ANY = _NUMBERS | {"BOOL"}
_QUANTIZED = frozenset({"INT8", "FLOAT8E4M3FN", "INT4", "FLOAT4E2M1"})

#: Op type -> types its data input may have (the parser's operator matrix, TensorRT 10.15; ops
#: of later opsets than a release imports are refused by its opset limit).
SUPPORTED: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose Cos "
        "Cosh CumSum Dropout Einsum Elu Erf Exp Floor GRU Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool "
        "GroupNormalization HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization IsInf LRN LSTM "
        "LayerNormalization LeakyRelu Log LogSoftmax LpNormalization LpPool MatMul MaxPool "
        "MeanVarianceNormalization PRelu ParametricSoftplus QuantizeLinear RNN RandomNormal "
        "RandomNormalLike RandomUniform RandomUniformLike Reciprocal Resize Round ScaledTanh Scan Selu Sigmoid "
        "Sin Sinh Softmax Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample Attention RMSNormalization "
        "RotaryEmbedding".split(),
        _FLOATS,
    ),
    **dict.fromkeys(
        "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Min Mod "
        "Mul Neg Pad Pow Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
        "ReduceProd ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth "
        "Sub Sum TopK Mean Gelu".split(),
        _NUMBERS,
    ),
    **dict.fromkeys(
        "Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements GatherND Identity If Loop "
        "OneHot Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze "
        "Where".split(),
        _ANY,
    ),
    **dict.fromkeys("DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign BlackmanWindow HammingWindow "
                    "HannWindow".split(), frozenset({"FLOAT", "FLOAT16"})),
    "STFT": frozenset({"FLOAT"}),
    "TensorScatter": _FLOATS | {"INT32"},
    **dict.fromkeys("And Not Or Xor".split(), frozenset({"BOOL"})),
    "Cast": _ANY | {"UINT8"},
    "CastLike": _ANY | {"UINT8"},
    "DequantizeLinear": _QUANTIZED,
}

_REDUCE_OPS = ("ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum "
               "ReduceSumSquare").split()


@dataclass(frozen=True)
class BuildTimeInput:
    """An input the parser reads while building: an initializer, or (``folded``) anything that
    resolves to a constant from constants and static shapes."""

    index: int
    name: str
    folded: bool = False


#: Build-time inputs of TensorRT 10.7 and later (10.15 matrix; 11 keeps them).
_BUILD_TIME_10_7 = {
    **dict.fromkeys(_REDUCE_OPS, BuildTimeInput(1, "axes")),
    **dict.fromkeys(("Squeeze", "Unsqueeze"), BuildTimeInput(1, "axes", folded=True)),
    "CumSum": BuildTimeInput(1, "axis", folded=True),
    "OneHot": BuildTimeInput(1, "depth", folded=True),
}
#: Build-time inputs of TensorRT 10.0-10.6 (10.1-GA matrix: Slice, Pad, Squeeze and CumSum want
#: initializers; Unsqueeze "a constant tensor"). DeepStream 7.1 and JetPack 6.1/6.2 ship 10.3.
_BUILD_TIME_10_0 = {
    **dict.fromkeys(_REDUCE_OPS, BuildTimeInput(1, "axes")),
    **dict.fromkeys(("Slice", "Pad"), BuildTimeInput(3, "axes")),
    "Squeeze": BuildTimeInput(1, "axes"),
    "Unsqueeze": BuildTimeInput(1, "axes", folded=True),
    "CumSum": BuildTimeInput(1, "axis"),
    "OneHot": BuildTimeInput(1, "depth", folded=True),
}
#: Build-time inputs of TensorRT 8.6's parser (8.6-GA matrix; its Reduce ops take attribute axes).
_BUILD_TIME_8_6 = {
    **dict.fromkeys(("Slice",), BuildTimeInput(3, "axes")),
    **dict.fromkeys(("Squeeze", "Unsqueeze", "CumSum"), BuildTimeInput(1, "axes")),
    "OneHot": BuildTimeInput(1, "depth", folded=True),
}


@dataclass(frozen=True)
class ParserVersion:
    """What one range of TensorRT releases' ONNX parser takes, where releases differ."""

    name: str  # the releases it covers, as messages name them
    first: tuple[int, int]  # the first (major, minor) release of the row
    max_opset: int  # highest default-domain opset it imports
    reduce_axes_input: bool  # ReduceMax/Min/Mean/L2/... read ``axes`` given as an input (opset 18)
    build_time: dict[str, BuildTimeInput]  # op type -> the input it reads while building


#: The TensorRT releases a supported platform ships, one row each: 8.6 (JetPack 6.0, DeepStream
#: 6.4 and 7.0; 9.x behaves alike), 10.0-10.6 (JetPack 6.1/6.2 and DeepStream 7.1 ship 10.3),
#: 10.7 and later 10.x (DeepStream 8.0, 9.0 with 10.14, 9.2 with 10.16) and 11. Opset limits from
#: each release's support matrix; every 10.x row keeps 10.0's opset limit of 20, the one every
#: 10.x imports.
PARSERS = {
    "8.6": ParserVersion("8.6", (8, 6), 17, reduce_axes_input=False, build_time=_BUILD_TIME_8_6),
    "10.0": ParserVersion("10.0-10.6", (10, 0), 20, reduce_axes_input=True, build_time=_BUILD_TIME_10_0),
    "10.7": ParserVersion("10.7+", (10, 7), 20, reduce_axes_input=True, build_time=_BUILD_TIME_10_7),
    "11": ParserVersion("11", (11, 0), 25, reduce_axes_input=True, build_time=_BUILD_TIME_10_7),
}
#: The row checked against without an installed TensorRT: the strictest 10.x, which every 10.x takes.
DEFAULT_PARSER = "10.0"


def parser_of(version: str) -> ParserVersion:
    """The :data:`PARSERS` row of a TensorRT version: "8.6.1" and "9.2" -> 8.6, "10.3" and "10" ->
    10.0-10.6, "10.13" -> 10.7+, "11.1" -> 11."""
    parts = version.strip().split(".")
    try:
        release = (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
    except ValueError:
        release = None
    if release is not None and (8, 6) <= release < (12, 0):
        return max((row for row in PARSERS.values() if row.first <= release), key=lambda row: row.first)
    raise ValueError(f"TensorRT {version!r} is not a supported release (supported: 8.6 and 9.x, 10.x, 11.x)")


def installed_parser() -> ParserVersion:
    """The parser of the TensorRT installed here, else :data:`DEFAULT_PARSER`: its pip package's
    metadata, or (JetPack and the Debian packages install no pip metadata) the module's
    ``__version__`` when it can be imported. ``ValueError`` for an unsupported release."""
    from importlib import metadata

    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_cu12", "tensorrt_cu13"):
        try:
            return parser_of(metadata.version(dist))
        except metadata.PackageNotFoundError:
            continue
    try:
        import tensorrt
    except ImportError:
        return PARSERS[DEFAULT_PARSER]
    return parser_of(str(getattr(tensorrt, "__version__", "")))


class TensorRTIncompatible(ExportError, ValueError):
    """A graph TensorRT's ONNX parser would refuse; the message lists each violation."""


_QUANTIZE_FOR_TENSORRT = "quantize the fp32 model with `san-calibrate --target tensorrt` (int8 symmetric Q/DQ, float biases)"
_EXPORT_AT_17 = "export at opset 17 (`san-export --opset 17`; DeepStream 6.4/7.0 targets get it by themselves)"

#: Each kind of rule: what it is about, and the one change that fixes every node that breaks it.
RULE_KINDS: dict[str, tuple[str, str]] = {
    "opset": ("opset newer than the parser imports", _EXPORT_AT_17),
    "build-time-input": ("input the parser reads at build time is not constant", "export with static shapes "
                         "(`san-export` folds every such input of the toolkit's graphs)"),
    "reduce-axes-input": ("Reduce axes given as an input, which this parser ignores", _EXPORT_AT_17),
    "custom-domain": ("op of a custom domain", "export standard ONNX ops only (a file made by onnxruntime's "
                      "optimiser or quantizer for the CPU holds com.microsoft ops: " + _QUANTIZE_FOR_TENSORRT + ")"),
    "unsupported-op": ("op type the parser has no importer for", "replace the op in the model before export"),
    "input-type": ("data input of a type the op does not take", "cast the input before the op in the model"),
    "uint8-inside": ("UINT8 tensor inside the graph", "export with `san-export --input uint8` (the graph casts its "
                     "input first)"),
    "quantized-outside-qdq": ("quantized tensor made outside QuantizeLinear (QLinear ops)", _QUANTIZE_FOR_TENSORRT),
    "pool-or-resize": ("MaxPool indices or dilations, or Resize antialiasing", "export without them"),
    "scale": ("Q/DQ scale not a positive constant", _QUANTIZE_FOR_TENSORRT),
    "zero-point-type": ("zero point of a type other than INT8, FP8 or INT4", _QUANTIZE_FOR_TENSORRT),
    "zero-point-value": ("zero point not a constant 0 (asymmetric quantization)", _QUANTIZE_FOR_TENSORRT),
    "int32-dequantize": ("DequantizeLinear of INT32 (a quantized bias)", _QUANTIZE_FOR_TENSORRT),
    "axis": ("per-axis scale without an axis, or that does not fit its axis", _QUANTIZE_FOR_TENSORRT),
    "per-channel-activations": ("activations quantized per channel", _QUANTIZE_FOR_TENSORRT),
    "uint8-input": ("UINT8 network input feeding other ops than a Cast", "export with `san-export --input uint8`"),
}


@dataclass(frozen=True)
class Violation:
    """One node that TensorRT's parser would refuse, the kind of rule it breaks
    (:data:`RULE_KINDS`), and the rule in words."""

    node: str
    op_type: str
    kind: str
    rule: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): {self.rule}"


def summarize(violations: list[Violation]) -> list[str]:
    """Lines that sum ``violations`` up: a count per kind of rule, per op type, and each change
    that fixes them with the number of violations it fixes."""
    kinds = Counter(v.kind for v in violations)
    width = max(len(str(n)) for n in kinds.values())
    lines = ["by rule:", *(f"  {n:>{width}}  {RULE_KINDS[kind][0]}" for kind, n in kinds.most_common())]
    lines.append("by node kind: " + ", ".join(f"{op} {n}" for op, n in Counter(v.op_type for v in violations).most_common()))
    fixes: dict[str, list[str]] = {}
    for kind, _ in kinds.most_common():
        fixes.setdefault(RULE_KINDS[kind][1], []).append(kind)
    for fix, fixed in fixes.items():
        n = sum(kinds[kind] for kind in fixed)
        which = f"all {n}" if len(fixes) == 1 else f"{n} ({'; '.join(RULE_KINDS[kind][0] for kind in fixed)})"
        lines.append(f"to fix {which}: {fix}")
    return lines


class _Graph:
    """Types, constants and consumers of one inferred graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
        infos = (*graph.input, *graph.output, *graph.value_info)
        self.types = {v.name: v.type.tensor_type.elem_type for v in infos}
        self.shapes = {v.name: tuple(d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim)
                       for v in infos if v.type.tensor_type.HasField("shape")}
        self.constants: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.types.update({t.name: t.data_type for t in graph.initializer})
        self.shapes.update({name: array.shape for name, array in self.constants.items()})
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                value = node.attribute[0].t
                self.constants[node.output[0]] = numpy_helper.to_array(value)
                self.types[node.output[0]] = value.data_type
        for node in graph.node:  # constants passed through Identity, as the parser follows them
            if node.op_type == "Identity" and node.input[0] in self.constants:
                self.constants[node.output[0]] = self.constants[node.input[0]]
        index = GraphIndex(graph)
        self.consumers, self.producer = index.consumers, index.producer
        self._folded: dict[str, bool] = {}

    def folded(self, tensor: str) -> bool:
        """Whether ``tensor`` resolves to a constant at build time: a constant, the Shape of a
        static tensor, or an op on such tensors only."""
        if tensor in self.constants:
            return True
        if tensor not in self._folded:
            self._folded[tensor] = False  # a cycle never folds
            node = self.producer.get(tensor)
            if node is not None and node.op_type == "Shape":
                self._folded[tensor] = None not in self.shapes.get(node.input[0], (None,))
            elif node is not None:
                self._folded[tensor] = all(self.folded(i) for i in node.input if i)
        return self._folded[tensor]

    def type_name(self, tensor: str) -> str | None:
        code = self.types.get(tensor, TensorProto.UNDEFINED)
        return None if code == TensorProto.UNDEFINED else TensorProto.DataType.Name(code)


def lint_tensorrt(model: onnx.ModelProto, parser: ParserVersion = PARSERS[DEFAULT_PARSER]) -> list[Violation]:
    """Every violation of ``parser``'s ONNX import rules in ``model`` (empty: compatible)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except onnx.shape_inference.InferenceError:  # e.g. a custom domain: lint with the declared types
        inferred = model
    g = _Graph(inferred)
    found = [Violation("(model)", "opset", kind, rule) for kind, rule in _opset_rules(model, parser)]
    for node in inferred.graph.node:
        name = node.name or (node.output[0] if node.output else node.op_type)
        found += [Violation(name, node.op_type, kind, rule)
                  for kind, rule in (*_node_rules(node, g), *_version_rules(node, g, parser))]
    found += [Violation(name, "input", kind, rule) for name, kind, rule in _input_rules(g)]
    return found


#: What the rule generators yield: the kind of rule (a key of :data:`RULE_KINDS`) and the rule in words.
Broken = tuple[str, str]


def _opset_rules(model: onnx.ModelProto, parser: ParserVersion) -> Iterator[Broken]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset > parser.max_opset:
        yield "opset", f"ONNX opset {opset}: TensorRT {parser.name}'s parser imports opsets up to {parser.max_opset}"


def _version_rules(node: onnx.NodeProto, g: _Graph, parser: ParserVersion) -> Iterator[Broken]:
    wanted = parser.build_time.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    if wanted is not None and len(node.input) > wanted.index and node.input[wanted.index]:
        tensor = node.input[wanted.index]
        if not (g.folded(tensor) if wanted.folded else tensor in g.constants):
            kind = "resolve to a constant at build time" if wanted.folded else "be a constant (initializer)"
            yield "build-time-input", f"input {wanted.name} ({tensor!r}) must {kind} for TensorRT {parser.name}'s parser"
    if (not parser.reduce_axes_input and node.op_type in REDUCE_AXES_INPUT_AT_18 and len(node.input) > 1
            and node.input[1]):
        yield "reduce-axes-input", (f"axes given as an input (the opset-18 form): TensorRT {parser.name}'s parser "
                                    "ignores it and reduces over every axis, batch included; give axes as an "
                                    "attribute (opset 17)")


def lint_tensorrt_file(path: str | Path, parser: ParserVersion = PARSERS[DEFAULT_PARSER]) -> list[Violation]:
    """:func:`lint_tensorrt` of an ONNX file; ``ValueError`` naming the file when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX file not found")
    return lint_tensorrt(load_onnx_with_data(path), parser)


def require_tensorrt_compatible(path: str | Path, parser: ParserVersion = PARSERS[DEFAULT_PARSER], shown: int = 10) -> None:
    """Raise :class:`TensorRTIncompatible` listing the first ``shown`` violations of ``path``."""
    violations = lint_tensorrt_file(path, parser)
    if violations:
        listed = "; ".join(map(str, violations[:shown])) + (f"; and {len(violations) - shown} more" if len(violations) > shown else "")
        raise TensorRTIncompatible(
            f"{path}: TensorRT {parser.name}'s ONNX parser would refuse it ({len(violations)} violation(s), all "
            f"listed by `san-export --check-tensorrt {path} --tensorrt {parser.name}`): {listed}"
        )


def _node_rules(node: onnx.NodeProto, g: _Graph) -> Iterator[Broken]:
    if node.domain not in ("", "ai.onnx"):
        yield "custom-domain", f"custom domain {node.domain!r}: TensorRT's parser imports standard ONNX ops only"
        return
    if node.op_type not in SUPPORTED:
        yield "unsupported-op", "op type not supported by TensorRT's ONNX parser"
        return
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):  # their types are the zero point's
        yield from _qdq_rules(node, g)
        return
    data = g.type_name(node.input[0]) if node.input and node.input[0] else None
    if data is not None and data not in SUPPORTED[node.op_type] and not (data == "UINT8" and node.op_type.startswith("Cast")):
        takes = ", ".join(sorted(SUPPORTED[node.op_type]))
        yield "input-type", f"input {node.input[0]!r} is {data}; TensorRT's {node.op_type} takes {takes}"
    if data == "UINT8" and node.input[0] not in g.inputs:
        yield "uint8-inside", f"input {node.input[0]!r} is UINT8 inside the graph; TensorRT takes UINT8 only as a network input or output"
    if any(g.type_name(o) in _QUANTIZED for o in node.output):
        yield "quantized-outside-qdq", "produces a quantized tensor outside QuantizeLinear; TensorRT quantizes only through Q/DQ"
    if node.op_type == "MaxPool":
        if len(node.output) > 1 and node.output[1]:
            yield "pool-or-resize", "the Indices output is not supported"
        dilations = next((list(a.ints) for a in node.attribute if a.name == "dilations"), [])
        if any(d != 1 for d in dilations):
            yield "pool-or-resize", f"dilations {dilations}: TensorRT pools with unit dilations only"
    if node.op_type == "Resize" and any(a.name == "antialias" and a.i for a in node.attribute):
        yield "pool-or-resize", "antialiasing is not supported"


def _qdq_rules(node: onnx.NodeProto, g: _Graph) -> Iterator[Broken]:
    quantize = node.op_type == "QuantizeLinear"
    scale = g.constants.get(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        yield "scale", f"scale {node.input[1]!r} must be a constant initializer"
    elif not (np.asarray(scale, dtype=np.float64) > 0).all():
        yield "scale", f"scale {node.input[1]!r} has coefficients <= 0; TensorRT needs every scale positive"
    zero_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zero_name is not None:  # without one the parser quantizes to INT8 with zero point 0
        zero_type = g.type_name(zero_name)
        if zero_type not in _QUANTIZED:
            yield "zero-point-type", (f"zero point {zero_name!r} is {zero_type}; TensorRT quantizes to INT8, FP8 or "
                                      "INT4 only (a UINT8 zero point is read as INT8: values above 127 wrap)")
        zero = g.constants.get(zero_name)
        if zero is None:
            yield "zero-point-value", f"zero point {zero_name!r} must be a constant"
        elif np.asarray(zero).astype(np.float64).any():
            yield "zero-point-value", f"zero point {zero_name!r} is not 0: TensorRT supports symmetric quantization only"
    if not quantize and g.type_name(node.input[0]) == "INT32":
        yield "int32-dequantize", ("dequantizes INT32 (a quantized bias): TensorRT dequantizes INT8, FP8 and INT4 "
                                   "only; keep biases in float")
    if scale is not None and np.asarray(scale).size > 1:
        yield from _axis_rules(node, g, int(np.asarray(scale).size))


def _axis_rules(node: onnx.NodeProto, g: _Graph, scale_size: int) -> Iterator[Broken]:
    shape = g.shapes.get(node.input[0])
    written = next((a.i for a in node.attribute if a.name == "axis"), None)
    if written is None:
        yield "axis", (f"per-axis scale of {scale_size} values without an axis attribute: TensorRT's parser then "
                       "quantizes along axis 0, ONNX and onnxruntime along axis 1; write the axis")
    axis = 0 if written is None else written  # as TensorRT reads it
    if shape is None:
        return
    rank = len(shape)
    if not -rank <= axis < rank:
        yield "axis", f"axis {axis} is outside the input's rank {rank}"
        return
    if shape[axis] not in (None, scale_size):
        yield "axis", f"per-axis scale of {scale_size} values, but dimension {axis} of the input has {shape[axis]}"
    source = g.producer.get(node.input[0])
    weights = node.input[0] in g.constants or (
        source is not None and source.op_type == "QuantizeLinear" and source.input[0] in g.constants)
    if not weights:
        yield "per-channel-activations", (f"activations quantized per channel (a scale of {scale_size} values on "
                                          f"axis {axis}): TensorRT quantizes activations per tensor only")


def _input_rules(g: _Graph) -> Iterator[tuple[str, str, str]]:
    for name in sorted(g.inputs):
        if g.type_name(name) != "UINT8":
            continue
        others = sorted({n.op_type for n in g.consumers.get(name, []) if not n.op_type.startswith("Cast")})
        if others:
            yield name, "uint8-input", f"UINT8 network input feeds {others}; TensorRT takes a UINT8 input only into a Cast"
