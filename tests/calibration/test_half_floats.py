"""INT8 Q/DQ files whose float parts run in float16 (TensorRT's strongly typed INT8 engines)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.half_floats import HALF_QDQ_OPSET, with_half_float_parts
from calibration.hygiene import folder_images
from calibration.quantize import QuantizeError, QuantizeOptions, quant_nodes_on_path, quantize_onnx
from export.tensorrt_lint import PARSERS, lint_tensorrt
from san.contract.artifact import read_contract
from san.contract.precision import find_mask_paths, l2_tail
from san.contract.rules import RULES
from san.io.preprocess import load_image
from support.calibration_helpers import embed_onnx


def _head_with_l2() -> onnx.ModelProto:
    """x -> Gemm -> ReduceL2 / Clip / Div -> embeddings: a head whose L2 tail is three nodes."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    eps = numpy_helper.from_array(np.array(1e-12, np.float32), "eps")
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["emb"], name="head", transB=1),
        helper.make_node("ReduceL2", ["emb", "axes"], ["norm"], name="norm", keepdims=1),
        helper.make_node("Clip", ["norm", "eps"], ["safe"], name="clip"),
        helper.make_node("Div", ["emb", "safe"], ["embeddings"], name="divide"),
    ]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [None, 3])], [w, axes, eps])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_the_l2_tail_is_the_nodes_after_the_head_and_stays_float32() -> None:
    model = _head_with_l2()
    assert sorted(l2_tail(model)) == ["clip", "divide", "norm"]
    half = with_half_float_parts(model)
    types = {i.name: i.data_type for i in half.graph.initializer}
    assert types["w"] == TensorProto.FLOAT16 and types["eps"] == TensorProto.FLOAT  # 1e-12 is 0 in fp16
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    import onnxruntime as ort

    out = ort.InferenceSession(half.SerializeToString()).run(None, {"x": x})[0]
    assert out.dtype == np.float32 and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


@pytest.fixture(scope="module")
def half_tensorrt(quantized_tensorrt, fp32_onnx: Path, calibration_images: list[Path]):
    options = QuantizeOptions(target="tensorrt", float_precision="fp16", float_blocks=0, batch_size=4, progress=False)
    out = quantized_tensorrt.out.with_name("model.trt-int8-fp16.onnx")
    return quantize_onnx(fp32_onnx, calibration_images, out, options=options, cache_dir=quantized_tensorrt.cache.parent)


def test_float_parts_are_float16_and_tensorrt_10_parses_them(half_tensorrt, quantized_tensorrt) -> None:
    model = onnx.load(half_tensorrt.out)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == HALF_QDQ_OPSET
    floats = [t for t in model.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert floats and all(t.data_type == TensorProto.FLOAT16 for t in floats)  # weights, biases, scales
    assert [i.type.tensor_type.elem_type for i in model.graph.output] == [TensorProto.FLOAT]
    paths = find_mask_paths(model)
    assert len(paths) == 4 and not quant_nodes_on_path(model, paths)  # the mask path is still float, now fp16
    assert lint_tensorrt(model, PARSERS["10.0"]) == [] and lint_tensorrt(model, PARSERS["11"]) == []
    assert lint_tensorrt(model, PARSERS["8.6"])[0].op_type == "opset"  # 8.6 parses opsets up to 17
    assert half_tensorrt.calibration["float_precision"] == "fp16"
    assert read_contract(half_tensorrt.out) == read_contract(quantized_tensorrt.out)


def test_onnxruntime_runs_it_within_the_int8_rule_of_the_fp32_model(half_tensorrt, fp32_onnx: Path,
                                                                     synth: Path) -> None:
    """Judged against the fp32 model by the int8 rule, as every INT8 file is; never against the
    INT8 file with fp32 float parts, whose own INT8 rounding a CPU's kernels decide."""
    spec = read_contract(fp32_onnx)
    batch = np.stack([load_image(p, spec) for p in folder_images(synth / "query", "q")])
    a, b = embed_onnx(fp32_onnx, batch), embed_onnx(half_tensorrt.out, batch)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.isfinite(b).all(), b
    assert RULES["int8"].breaches("int8", {"min_cosine_mean": float(cosine.mean())}) == [], cosine


def test_the_int8_rule_judges_it_as_any_int8_file(half_tensorrt, fp32_onnx: Path, synth: Path) -> None:
    """The INT8 report runs it with onnxruntime against the fp32 file; its verdict is the int8
    rule's on the cosine measured here independently."""
    from calibration.report import build_report
    from san.data.registry import load_dataset

    dataset = load_dataset("synthetic", synth, verbose=False)
    report = build_report(fp32_onnx, half_tensorrt.out, dataset, half_tensorrt.cache, progress=False)
    spec = read_contract(fp32_onnx)
    batch = np.stack([load_image(r.path, spec) for r in (*dataset.query, *dataset.gallery)])
    a, b = embed_onnx(fp32_onnx, batch), embed_onnx(half_tensorrt.out, batch)
    cosine = float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean())
    assert report.images == len(batch) and report.cosine_mean == pytest.approx(cosine, abs=1e-5)
    assert any(b.startswith("int8.min_cosine_mean") for b in report.breaches) == (cosine < RULES["int8"].min_cosine_mean)


def test_fp16_float_parts_are_for_tensorrt_only() -> None:
    with pytest.raises(QuantizeError, match="--target tensorrt"):
        QuantizeOptions(float_precision="fp16")
