"""The FP16 emulation of DeepStream's engines (every tensor between layers in float16), checked
on hand-computed graphs, and the model's L2 normalisation, which holds there where
``x / max(||x||, eps)`` does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from export.cli import main as san_export
from export.fp16_emulation import as_tensorrt_layers, in_fp16_everywhere, rounding_session
from san import ModelConfig, build_model, save_checkpoint
from san.model import network
from support.looks_trained import looks_trained


def reduce_l2(opset: int) -> onnx.ModelProto:
    """x [N, 2] -> ReduceL2 over axis 1 -> y [N, 1]; axes as an attribute (17) or an input (18)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    if opset >= 18:
        node = helper.make_node("ReduceL2", ["x", "axes"], ["y"], name="l2", keepdims=1)
        inits = [numpy_helper.from_array(np.array([1], np.int64), "axes")]
    else:
        node, inits = helper.make_node("ReduceL2", ["x"], ["y"], name="l2", axes=[1], keepdims=1), []
    return helper.make_model(helper.make_graph([node], "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [17, 18])
def test_reduce_l2_splits_as_tensorrt_imports_it_and_overflows_in_fp16(opset: int) -> None:
    """sqrt(300^2 + 300^2) = 424.26 in float32; as TensorRT's layers in half precision the square
    90000 exceeds float16's 65504, so the norm is infinite. sqrt(3^2 + 4^2) = 5 either way."""
    x = np.array([[300.0, 300.0], [3.0, 4.0]], np.float32)
    model = reduce_l2(opset)
    split = as_tensorrt_layers(model)
    assert [n.op_type for n in split.graph.node] == ["Mul", "ReduceSum", "Sqrt"]
    exact = rounding_session(model).run(None, {"x": x})[0]
    assert np.allclose(rounding_session(split).run(None, {"x": x})[0], exact) and np.allclose(exact[:, 0], [424.26407, 5])
    half = rounding_session(in_fp16_everywhere(model)).run(None, {"x": x})[0]
    assert np.isinf(half[0, 0]) and half[1, 0] == 5.0


def test_every_written_tensor_is_rounded_to_fp16() -> None:
    """y = x * w with w = 1 + 2^-12: float16 keeps 10 mantissa bits, so w rounds to 1 and
    x = 2049 (not a float16) to 2048."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"], name="m"),], "g", [x], [y],
                              [numpy_helper.from_array(np.array([1 + 2**-12], np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert rounding_session(model).run(None, {"x": np.array([2048.0], np.float32)})[0][0] == np.float32(2048 * (1 + 2**-12))
    assert rounding_session(in_fp16_everywhere(model)).run(None, {"x": np.array([2048.0], np.float32)})[0][0] == 2048.0


def test_the_l2_normalisation_equals_the_textbook_one_in_float32() -> None:
    """...and in float16 too, for rows whose squared norm (up to 1e9 here) float16 cannot hold."""
    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 3.5, 64)[:, None]
    assert torch.allclose(network.l2_normalize(x), torch.nn.functional.normalize(x, dim=1), atol=1e-6)
    assert not network.l2_normalize(torch.zeros(2, 8)).any()  # a zero row stays zero
    half = network.l2_normalize(x.half()).float()
    assert torch.isfinite(half).all() and torch.allclose(half.norm(dim=1), torch.ones(64), atol=2e-3)
    squares = (x.half() * x.half()).sum(dim=1, dtype=torch.float16)  # the textbook form's sum, stored in float16
    assert torch.isinf(squares).sum() >= 8


def test_deepstream_fp16_holds_for_a_wide_embedding_that_the_textbook_l2_breaks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose graph L2-normalises embeddings of norm ~3000: squared, they exceed float16.
    DeepStream's FP16 engine may compute the normalisation in half precision; the model's own
    normalisation holds there, x / max(||x||, eps) (its earlier form) gives zero rows, and the
    export refuses it. (The baseline, without hard masks, so that only the tail is judged.)"""
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", attention="none").with_spec(height=64, width=32, l2_normalize=True)
    model = looks_trained(build_model(cfg))
    with torch.no_grad():
        model.head[-1].weight.mul_(100.0)
    save_checkpoint(tmp_path / "wide.pt", model)
    argv = ["--ckpt", str(tmp_path / "wide.pt"), "--verify-count", "4"]
    assert san_export([*argv, "--deepstream", str(tmp_path / "ours")]) == 0
    capsys.readouterr()
    monkeypatch.setattr(network, "l2_normalize", lambda x: torch.nn.functional.normalize(x, dim=1))
    assert san_export([*argv, "--out", str(tmp_path / "textbook.onnx"), "--deepstream", str(tmp_path / "textbook")]) == 1
    out = capsys.readouterr().out
    assert "with every layer in fp16" in out and "--deepstream-precision fp32" in out
    assert not (tmp_path / "textbook" / "config_tracker_reid.yml").exists()
