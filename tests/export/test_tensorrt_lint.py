"""The TensorRT compatibility check (``san-export --check-tensorrt``): hand-made graphs that
break one parser rule each, and the real fp32, fp16 and INT8 graphs of a trained-looking SAN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from calibration.hygiene import folder_images, sample_images
from calibration.quantize import QuantizeOptions, quantize_onnx
from export.cli import main as san_export
from export.onnx_export import export_onnx
from export.tensorrt_lint import PARSERS, RULE_KINDS, lint_tensorrt, lint_tensorrt_file, parser_of
from san.contract.onnx_graph import with_attribute_axes
from san.contract.spec import InputSpec
from san.contract.tensorrt_target import TargetEnvironment, TensorRTUnavailable
from san.data.synth import ensure_synthetic
from san.model.config import ModelConfig
from san.model.network import build_model
from san.training.checkpoint import save_checkpoint
from support.looks_trained import looks_trained
from support.module_folders import ModuleFolders

CFG = ModelConfig(backbone="resnet18", spec=InputSpec(height=64, width=32))


def _model(nodes: list[onnx.NodeProto], inputs: list, initializers: list, output: str = "y") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                              initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _qdq(zero_point: np.ndarray, scale: np.ndarray, *, axis: int | None = None, weights: bool = False) -> onnx.ModelProto:
    """x -> QuantizeLinear -> DequantizeLinear -> y (or int8 weights -> DequantizeLinear -> y)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero_point, "z")]
    kwargs = {} if axis is None else {"axis": axis}
    if weights:
        inits.append(numpy_helper.from_array(np.ones((3, 2, 1, 1), np.int8), "w"))
        return _model([helper.make_node("DequantizeLinear", ["w", "s", "z"], ["y"], name="dq", **kwargs)], [], inits)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q", **kwargs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq", **kwargs)]
    return _model(nodes, [x], inits)


def _rules(model: onnx.ModelProto) -> list[str]:
    return [str(v) for v in lint_tensorrt(model)]


def test_symmetric_int8_qdq_passes() -> None:
    assert _rules(_qdq(np.array(0, np.int8), np.array(0.1, np.float32))) == []
    assert _rules(_qdq(np.zeros(3, np.int8), np.full(3, 0.1, np.float32), axis=0, weights=True)) == []
    # Weights per channel on axis 1 (NVIDIA's quantizer does so for ConvTranspose): the size matches, so it passes.
    assert _rules(_qdq(np.zeros(2, np.int8), np.full(2, 0.1, np.float32), axis=1, weights=True)) == []


def test_a_missing_zero_point_is_not_a_refusal() -> None:
    """The parser quantizes to INT8 with zero point 0 when none is given."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq")]
    assert _rules(_model(nodes, [x], [numpy_helper.from_array(np.array(0.1, np.float32), "s")])) == []


@pytest.mark.parametrize(("case", "expected"), [
    ("uint8 zero point", "q (QuantizeLinear): zero point 'z' is UINT8"),
    ("non-zero zero point", "q (QuantizeLinear): zero point 'z' is not 0"),
    ("negative scale", "q (QuantizeLinear): scale 's' has coefficients <= 0"),
    ("int32 bias", "dq (DequantizeLinear): dequantizes INT32"),
    ("activations per channel", "q (QuantizeLinear): activations quantized per channel (a scale of 3 values on axis 1)"),
    ("axis outside the rank", "dq (DequantizeLinear): axis 4 is outside the input's rank 4"),
    ("scale length", "dq (DequantizeLinear): per-axis scale of 5 values, but dimension 0 of the input has 3"),
])
def test_each_qdq_rule_names_the_node(case: str, expected: str) -> None:
    model = {
        "uint8 zero point": lambda: _qdq(np.array(0, np.uint8), np.array(0.1, np.float32)),
        "non-zero zero point": lambda: _qdq(np.array(3, np.int8), np.array(0.1, np.float32)),
        "negative scale": lambda: _qdq(np.array(0, np.int8), np.array(-0.1, np.float32)),
        "int32 bias": lambda: _model(
            [helper.make_node("DequantizeLinear", ["b", "s"], ["y"], name="dq", axis=0)], [],
            [numpy_helper.from_array(np.arange(3, dtype=np.int32), "b"),
             numpy_helper.from_array(np.full(3, 0.01, np.float32), "s")]),
        "activations per channel": lambda: _qdq(np.zeros(3, np.int8), np.full(3, 0.1, np.float32), axis=1),
        "axis outside the rank": lambda: _qdq(np.zeros(3, np.int8), np.full(3, 0.1, np.float32), axis=4, weights=True),
        "scale length": lambda: _qdq(np.zeros(5, np.int8), np.full(5, 0.1, np.float32), axis=0, weights=True),
    }[case]()
    assert any(rule.startswith(expected) for rule in _rules(model)), _rules(model)


def test_build_time_inputs_follow_each_release() -> None:
    """10.15's matrix (10.7+): Slice takes any axes, Unsqueeze's need only resolve to a constant
    (here from a static Shape); 8.6-GA wants initializers for both."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    ints = lambda name, *v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    computed = _model([helper.make_node("Slice", ["x", "s", "e", "k"], ["y"], name="slice")], [x, k],
                      [ints("s", 0), ints("e", 1)])
    assert lint_tensorrt(computed, PARSERS["10.7"]) == []
    assert [v.rule for v in lint_tensorrt(computed, PARSERS["8.6"]) if v.op_type != "opset"] == [
        "input axes ('k') must be a constant (initializer) for TensorRT 8.6's parser"]
    shape_of = lambda dims: _model([  # noqa: E731
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["first"], name="first"),
        helper.make_node("Sub", ["first", "two"], ["axis"], name="axis"),  # 2 - 2 = 0, known only by folding
        helper.make_node("Unsqueeze", ["x", "axis"], ["y"], name="unsqueeze")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)], [ints("zero", 0), ints("two", 2)])
    assert lint_tensorrt(shape_of([2, 3]), PARSERS["10.7"]) == []
    assert [v.node for v in lint_tensorrt(shape_of([2, 3]), PARSERS["8.6"]) if v.op_type != "opset"] == ["unsqueeze"]
    assert [v.rule for v in lint_tensorrt(shape_of([None, 3]), PARSERS["10.7"])] == [
        "input axes ('axis') must resolve to a constant at build time for TensorRT 10.7+'s parser"]


def test_graph_rules_name_the_node() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    dynamic_axes = _model([helper.make_node("ReduceMax", ["x", "axes"], ["y"], name="rmax")], [x, axes], [])
    assert _rules(dynamic_axes) == ["rmax (ReduceMax): input axes ('axes') must be a constant (initializer) for "
                                    "TensorRT 10.0-10.6's parser"]
    constant_axes = _model([helper.make_node("ReduceMax", ["x", "a"], ["y"], name="rmax")], [x],
                           [numpy_helper.from_array(np.array([1], np.int64), "a")])
    assert _rules(constant_axes) == []
    custom = _model([helper.make_node("FusedGemm", ["x", "x"], ["y"], name="fg", domain="com.microsoft")], [x], [])
    assert _rules(custom)[0].startswith("fg (FusedGemm): custom domain 'com.microsoft'")
    u8 = helper.make_tensor_value_info("u", TensorProto.UINT8, [2, 3])
    into_cast = _model([helper.make_node("Cast", ["u"], ["y"], name="c", to=TensorProto.FLOAT)], [u8], [])
    assert _rules(into_cast) == []
    into_mul = _model([helper.make_node("Cast", ["u"], ["f"], name="c", to=TensorProto.FLOAT),
                       helper.make_node("Mul", ["u", "u"], ["m"], name="m"),
                       helper.make_node("Cast", ["m"], ["y"], name="c2", to=TensorProto.FLOAT)], [u8], [])
    rules = _rules(into_mul)
    assert any(r.startswith("m (Mul): input 'u' is UINT8; TensorRT's Mul takes") for r in rules), rules
    assert any(r.startswith("u (input): UINT8 network input feeds ['Mul']") for r in rules), rules


@pytest.fixture(scope="module")
def san_graphs(module_tmp: ModuleFolders) -> dict[str, Path]:
    """fp32, fp16, default INT8 and TensorRT INT8 graphs of a trained-looking SAN."""
    root = module_tmp.mktemp("lint")
    torch.manual_seed(0)
    model = looks_trained(build_model(CFG))
    data = root / "synth"
    ensure_synthetic(data, ids=8, cameras=2, seed=0, height=64, width=32)
    images = sample_images(folder_images(data / "bounding_box_train", "--images"), 8, seed=0)
    save_checkpoint(root / "model.pt", model)
    fp32 = export_onnx(model, root / "model.onnx")
    options = {"batch_size": 4, "progress": False}
    return {
        "checkpoint": root / "model.pt",
        "fp32": fp32,
        "fp16": export_onnx(model, root / "model.fp16.onnx", precision="fp16"),
        "int8 onnxruntime": quantize_onnx(fp32, images, root / "model.int8.onnx", options=QuantizeOptions(**options)).out,
        "int8 tensorrt": quantize_onnx(fp32, images, root / "model.trt.int8.onnx",
                                       options=QuantizeOptions(target="tensorrt", float_blocks=0, **options)).out,
    }


def test_the_model_has_folded_biases_as_real_checkpoints_do(san_graphs: dict[str, Path]) -> None:
    graph = onnx.load(san_graphs["fp32"]).graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    biases = [initializers[n.input[2]] for n in graph.node if n.op_type == "Conv" and len(n.input) > 2]
    assert len(biases) >= 20 and all(np.abs(b).max() > 0 for b in biases)


@pytest.mark.parametrize("kind", ["fp32", "fp16", "int8 tensorrt"])
def test_exported_and_tensorrt_int8_graphs_pass(kind: str, san_graphs: dict[str, Path], capsys) -> None:
    assert san_export(["--check-tensorrt", str(san_graphs[kind])]) == 0, capsys.readouterr().out
    assert "compatible with TensorRT 10.0-10.6's ONNX parser rules" in capsys.readouterr().out


def test_the_onnxruntime_int8_graph_fails_with_a_summary_and_the_one_fix(san_graphs: dict[str, Path], capsys) -> None:
    """The CPU flavour of INT8 breaks three Q/DQ rules on every quantized tensor: the summary
    comes first, counts each rule and node kind, and names the one change that fixes them all;
    ``--verbose`` lists each node after it."""
    path = san_graphs["int8 onnxruntime"]
    violations = lint_tensorrt_file(path)
    assert san_export(["--check-tensorrt", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: {len(violations)} violation(s) of TensorRT 10.0-10.6's ONNX parser rules"
    by_rule = {}
    for line in lines[2:]:
        if not line.startswith("    "):
            break
        count, title = line.split(None, 1)
        by_rule[title] = int(count)
    counted = {kind: sum(v.kind == kind for v in violations) for kind in RULE_KINDS}
    assert by_rule == {"zero point of a type other than INT8, FP8 or INT4": counted["zero-point-type"],
                       "zero point not a constant 0 (asymmetric quantization)": counted["zero-point-value"],
                       "DequantizeLinear of INT32 (a quantized bias)": counted["int32-dequantize"]}
    assert sum(by_rule.values()) == len(violations) and min(by_rule.values()) > 0
    assert f"  to fix all {len(violations)}: quantize the fp32 model with `san-calibrate --target tensorrt`" in "\n".join(lines)
    assert not any(line.startswith(f"{path}: ") for line in lines[1:])  # no node listed
    assert san_export(["--check-tensorrt", str(path), "--verbose"]) == 1
    verbose = capsys.readouterr().out.splitlines()
    nodes = [line for line in verbose if line.startswith(f"{path}: ") and "violation(s)" not in line]
    assert verbose[: len(lines) - 1] == lines[:-1] and nodes == [f"{path}: {v}" for v in violations]
    assert any("dequantizes INT32 (a quantized bias)" in n for n in nodes) and any("is UINT8;" in n for n in nodes)


def test_check_tensorrt_reports_an_unreadable_file_with_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    assert san_export(["--check-tensorrt", str(tmp_path / "bad.onnx")]) == 2
    assert "bad.onnx: not a readable ONNX file" in capsys.readouterr().err
    assert san_export(["--check-tensorrt", str(tmp_path / "absent.onnx")]) == 2


def test_trt_refuses_an_incompatible_int8_file_before_looking_for_a_gpu(
    san_graphs: dict[str, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "model.onnx"
    argv = ["--ckpt", str(san_graphs["checkpoint"]), "--out", str(out), "--verify-count", "2", "--trt"]
    assert san_export([*argv, "--int8", str(san_graphs["int8 onnxruntime"])]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TensorRT 10.0-10.6's ONNX parser would refuse it" in err and "INT32" in err
    # A compatible file passes the check; then the build needs TensorRT and a GPU (exit 3 without them).
    try:
        TargetEnvironment.detect()
        expected = 0
    except TensorRTUnavailable:
        expected = 3
    status, err = san_export([*argv, "--int8", str(san_graphs["int8 tensorrt"])]), capsys.readouterr().err
    assert status == expected and "ONNX parser would refuse" not in err, err
    assert expected == 0 or err.startswith("san-export: error: --trt: "), err


def _reduce_max(opset: int, axes_as_input: bool) -> onnx.ModelProto:
    """x [2, 3, 4] -> ReduceMax over axis 2, its axes as an input (opset 18) or an attribute (17)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    if axes_as_input:
        node = helper.make_node("ReduceMax", ["x", "axes"], ["y"], name="rmax")
        inits = [numpy_helper.from_array(np.array([2], np.int64), "axes")]
    else:
        node, inits = helper.make_node("ReduceMax", ["x"], ["y"], name="rmax", axes=[2]), []
    model = _model([node], [x], inits)
    model.opset_import[0].version = opset
    return model


@pytest.mark.parametrize(("version", "expected"), [
    ("8.6.1.6", "8.6"), ("8.6", "8.6"), ("9.3.0", "8.6"), ("10.0.1", "10.0"), ("10", "10.0"), ("10.3.0.26", "10.0"),
    ("10.6", "10.0"), ("10.7.0", "10.7"), ("10.13.3.9", "10.7"), ("11.1.0", "11")])
def test_a_tensorrt_version_maps_to_its_parsers_row(version: str, expected: str) -> None:
    assert parser_of(version) is PARSERS[expected]


@pytest.mark.parametrize("version", ["8.5.3", "7.2", "12.0", "x"])
def test_an_unsupported_tensorrt_version_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match="supported"):
        parser_of(version)


def test_reduce_axes_as_an_input_fail_only_before_tensorrt_10_and_opsets_are_capped_per_release() -> None:
    opset18 = _reduce_max(18, axes_as_input=True)
    assert [str(v) for v in lint_tensorrt(opset18, PARSERS["10.0"])] == []
    found = [str(v) for v in lint_tensorrt(opset18, PARSERS["8.6"])]
    assert found == ["(model) (opset): ONNX opset 18: TensorRT 8.6's parser imports opsets up to 17",
                     "rmax (ReduceMax): axes given as an input (the opset-18 form): TensorRT 8.6's parser ignores it "
                     "and reduces over every axis, batch included; give axes as an attribute (opset 17)"]
    assert lint_tensorrt(_reduce_max(17, axes_as_input=False), PARSERS["8.6"]) == []
    converted = with_attribute_axes(opset18)  # what --deepstream-version 6.4 writes
    assert lint_tensorrt(converted, PARSERS["8.6"]) == []
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for m in (opset18, converted)]
    assert np.array_equal(run[0], run[1]) and np.array_equal(run[0], x.max(2, keepdims=True))
    opset21 = _reduce_max(21, axes_as_input=True)
    assert [str(v) for v in lint_tensorrt(opset21, PARSERS["10.7"])] == [
        "(model) (opset): ONNX opset 21: TensorRT 10.7+'s parser imports opsets up to 20"]
    assert lint_tensorrt(opset21, PARSERS["11"]) == []


def _ints(name: str, *values: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _slice_with_axes_from_a_static_shape() -> onnx.ModelProto:
    """Slice whose ``axes`` is computed (Shape -> Gather -> Sub = 0): constant only once folded."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Gather", ["shape", "zero"], ["first"], name="first"),
             helper.make_node("Sub", ["first", "two"], ["axes"], name="axes"),
             helper.make_node("Slice", ["x", "s", "e", "axes"], ["y"], name="slice")]
    return _model(nodes, [x], [_ints("zero", 0), _ints("two", 2), _ints("s", 0), _ints("e", 1)])


def _squeeze_with_axes_from_a_static_shape() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    nodes = [helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Gather", ["shape", "zero"], ["first"], name="first"),
             helper.make_node("Sub", ["first", "one"], ["axes"], name="axes"),  # 1 - 1 = 0
             helper.make_node("Squeeze", ["x", "axes"], ["y"], name="squeeze")]
    return _model(nodes, [x], [_ints("zero", 0), _ints("one", 1)])


def _at_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    model.opset_import[0].version = opset
    return model


#: Each row of PARSERS: a graph its parser takes and one it refuses, with the rule that refuses it.
ROW_CASES = {
    "8.6": (lambda: _reduce_max(17, axes_as_input=False), lambda: _reduce_max(18, axes_as_input=True),
            "axes given as an input"),
    "10.0": (lambda: _reduce_max(18, axes_as_input=True), _slice_with_axes_from_a_static_shape,
             "input axes ('axes') must be a constant (initializer) for TensorRT 10.0-10.6's parser"),
    "10.7": (_slice_with_axes_from_a_static_shape, lambda: _at_opset(_reduce_max(18, True), 21),
             "ONNX opset 21: TensorRT 10.7+'s parser imports opsets up to 20"),
    "11": (lambda: _at_opset(_reduce_max(18, True), 21), lambda: _at_opset(_reduce_max(18, True), 26),
           "ONNX opset 26: TensorRT 11's parser imports opsets up to 25"),
}


@pytest.mark.parametrize("row", sorted(PARSERS))
def test_each_release_row_takes_one_graph_and_refuses_another(row: str) -> None:
    taken, refused, rule = ROW_CASES[row]
    assert lint_tensorrt(taken(), PARSERS[row]) == []
    assert any(rule in str(v) for v in lint_tensorrt(refused(), PARSERS[row])), lint_tensorrt(refused(), PARSERS[row])


def test_squeeze_axes_must_be_an_initializer_before_tensorrt_10_7() -> None:
    """10.0-10.6 (DeepStream 7.1, JetPack 6.1/6.2) want Squeeze's axes as an initializer; 10.7
    and later fold them."""
    model = _squeeze_with_axes_from_a_static_shape()
    assert [v.node for v in lint_tensorrt(model, PARSERS["10.0"])] == ["squeeze"]
    assert lint_tensorrt(model, PARSERS["10.7"]) == []


def test_a_per_channel_scale_without_an_axis_is_refused_where_tensorrt_and_onnxruntime_disagree() -> None:
    """A square weight (3 x 3 x 1 x 1) dequantized per channel without ``axis``: onnxruntime
    scales its input channels (ONNX's default axis 1), TensorRT's parser its output channels
    (axis 0), and both accept the shapes. The lint refuses it on every release."""
    scale = np.array([0.1, 1.0, 10.0], np.float32)
    weights = np.arange(9, dtype=np.int8).reshape(3, 3, 1, 1)
    graph = helper.make_graph([helper.make_node("DequantizeLinear", ["w", "s", "z"], ["y"], name="dq")], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(scale, "s"),
                               numpy_helper.from_array(np.zeros(3, np.int8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    (got,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})
    assert np.array_equal(got, weights * scale[None, :, None, None])  # onnxruntime: axis 1
    assert not np.array_equal(got, weights * scale[:, None, None, None])  # what TensorRT computes
    for row in PARSERS.values():
        assert [v.kind for v in lint_tensorrt(model, row) if v.kind != "opset"] == ["axis"], row.name
    explicit = onnx.ModelProto.FromString(model.SerializeToString())
    explicit.graph.node[0].attribute.append(helper.make_attribute("axis", 0))
    assert lint_tensorrt(explicit, PARSERS["10.7"]) == []


def test_the_toolkits_int8_graphs_name_every_per_channel_axis(san_graphs: dict[str, Path]) -> None:
    for kind in ("int8 onnxruntime", "int8 tensorrt"):
        graph = onnx.load(san_graphs[kind]).graph
        sizes = {t.name: int(np.prod(t.dims)) for t in graph.initializer}
        per_channel = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                       and sizes.get(n.input[1], 1) > 1]
        assert all(any(a.name == "axis" for a in n.attribute) for n in per_channel), kind
        assert per_channel, kind  # weights are quantized per output channel


def test_a_tensorrt_without_pip_metadata_is_read_from_its_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """JetPack and NVIDIA's Debian packages install the tensorrt module without pip metadata: its
    ``__version__`` picks the row (JetPack 6.0's 8.6 here), and an unsupported one is refused."""
    import sys
    import types
    from importlib import metadata

    from export.tensorrt_lint import installed_parser

    def no_metadata(dist: str) -> str:
        raise metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(metadata, "version", no_metadata)
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.2.3"))
    assert installed_parser() is PARSERS["8.6"]
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="7.1.3"))
    with pytest.raises(ValueError, match="'7.1.3' is not a supported release"):
        installed_parser()
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not importable: the default row
    assert installed_parser() is PARSERS["10.0"]


def test_a_graph_without_an_opset_17_form_is_refused_in_one_line() -> None:
    """Split-18 (``num_outputs``) has no down-conversion in ONNX's converter, which raises a bare
    RuntimeError naming a C++ assertion; the conversion for TensorRT 8.6 names the reason."""
    from san.contract.onnx_graph import GraphConversionError

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], name="split", axis=1, num_outputs=2),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    model = _model(nodes, [x], [])
    model.opset_import[0].version = 18
    with pytest.raises(GraphConversionError) as refused:
        with_attribute_axes(model)
    message = str(refused.value)
    assert "No Adapter From Version $18 for Split" in message and "opset 17" in message
    assert "\n" not in message and ".h:" not in message
