"""INT8 Q/DQ quantization: the mask path and the head stay float, the contract and calibration are recorded, ranges are cached."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from calibration.hygiene import folder_images
from calibration.quantize import (
    CALIBRATION_KEY,
    QuantizeError,
    QuantizeOptions,
    float_head,
    quant_nodes_on_path,
    quantize_onnx,
    read_calibration,
)
from san.contract.artifact import read_contract
from san.contract.precision import find_mask_paths
from san.contract.rules import RULES
from san.contract.spec import METADATA_KEY
from san.evaluation.metrics import paired_cosine
from san.io.hashing import file_sha256
from san.io.preprocess import load_image
from support.calibration_helpers import CFG, OPTIONS, counting_load_image, embed_onnx, float_prefix_of


@pytest.mark.parametrize("flavour", ["quantized", "quantized_tensorrt"])
def test_no_quantize_or_dequantize_on_the_mask_path(flavour: str, fp32_onnx: Path, request: pytest.FixtureRequest) -> None:
    result = request.getfixturevalue(flavour)
    model = onnx.load(result.out)
    paths = find_mask_paths(model)
    assert len(paths) == len(CFG.active_stages) == len(find_mask_paths(onnx.load(fp32_onnx)))
    ops = {n.name: n.op_type for n in model.graph.node}
    for path in paths:
        kinds = {ops[name] for name in path.nodes}
        assert {"ReduceMin", "ReduceMax", "Div", "Greater", "Cast", "Mul"} <= kinds
    assert quant_nodes_on_path(model, paths) == []
    # ... while the network around it really is quantized: every Conv after the float
    # prefix reads dequantized int8, every Conv inside it reads float.
    producer = {out: n for n in model.graph.node for out in n.output}
    float_prefix = set(float_prefix_of(fp32_onnx, result.calibration["float_blocks"]))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    quantized_convs = [n for n in convs if producer[n.input[0]].op_type == "DequantizeLinear"]
    assert {n.name for n in convs} - {n.name for n in quantized_convs} == {n.name for n in convs} & float_prefix
    assert len(quantized_convs) >= len(convs) * 2 // 3


def _quantized_in_head(path: Path, source: Path) -> list[str]:
    """Nodes after the last stage's output (pooling, embedding head) that read Q/DQ, and graph
    outputs written by Q/DQ: the head computes in float from a float stage output (the node
    making that output may read quantized inputs). ``source``: the fp32 model the head is found in."""
    fp32 = onnx.load(source)
    head = set(float_head(fp32)[1:])  # float_head()[0] makes the stage output
    model = onnx.load(path)
    producer = {out: n for n in model.graph.node for out in n.output}
    qdq = {"QuantizeLinear", "DequantizeLinear"}
    reads = [n.name for n in model.graph.node if n.name in head
             for i in n.input if i in producer and producer[i].op_type in qdq]
    writes = [o.name for o in model.graph.output if producer[o.name].op_type in qdq]
    return reads + writes


def test_pooling_and_embedding_head_stay_float(quantized, fp32_onnx: Path, calibration_images, tmp_path: Path) -> None:
    fp32 = onnx.load(fp32_onnx)
    head = float_head(fp32)
    assert {"Add", "ReduceMean", "Gemm"} <= {n.op_type for n in fp32.graph.node if n.name in head}
    assert _quantized_in_head(quantized.out, fp32_onnx) == []
    options = QuantizeOptions(float_head=False, batch_size=4, progress=False)
    plain = quantize_onnx(fp32_onnx, calibration_images, tmp_path / "plain.onnx", options=options,
                          cache_dir=quantized.cache.parent)
    assert _quantized_in_head(plain.out, fp32_onnx), "with float_head=False the embedding itself is rounded to int8"


def test_unprotected_quantization_would_put_qdq_on_the_mask_path(quantized) -> None:
    """The check above can fail: a Q/DQ pair in front of the min-max normalisation, and one
    inside it (between the subtraction and the division), are found edge by edge."""
    model = onnx.load(quantized.out)
    paths = find_mask_paths(model)
    inside = [n for n in model.graph.node if n.name in paths[0].nodes]
    reduce_min = next(n for n in inside if n.op_type == "ReduceMin")
    divide = next(n for n in inside if n.op_type == "Div")
    subtract = next(n for n in inside if n.op_type == "Sub" and n.output[0] in divide.input)
    source = reduce_min.input[0]
    producer = next(n for n in model.graph.node if source in n.output)
    assert producer.name in paths[0].entry  # X's producer: its other readers may see quantized values
    for tag, consumer, tensor in (("x", reduce_min, source), ("range", divide, subtract.output[0])):
        model.graph.node.extend([
            onnx.helper.make_node("QuantizeLinear", [tensor, "s", "z"], [f"q_{tag}"], name=f"leak_q_{tag}"),
            onnx.helper.make_node("DequantizeLinear", [f"q_{tag}", "s", "z"], [f"dq_{tag}"], name=f"leak_dq_{tag}")])
        consumer.input[list(consumer.input).index(tensor)] = f"dq_{tag}"
    assert sorted(quant_nodes_on_path(model, paths)) == sorted([
        f"leak_dq_x -> {reduce_min.name}", f"{subtract.name} -> leak_q_range", f"leak_dq_range -> {divide.name}"])


def test_output_keeps_the_contract_and_records_the_calibration(quantized, fp32_onnx: Path) -> None:
    assert read_contract(quantized.out) == read_contract(fp32_onnx)
    meta = {p.key: p.value for p in onnx.load(fp32_onnx).metadata_props}
    out_meta = {p.key: p.value for p in onnx.load(quantized.out).metadata_props}
    assert out_meta[METADATA_KEY] == meta[METADATA_KEY]
    record = read_calibration(onnx.load(quantized.out))
    assert record["num_images"] == 8 and record["seed"] == 0 and record["method"] == "percentile"
    assert record["activations"].startswith("uint8") and record["float_blocks"] == 1
    assert record["source_onnx_sha256"] == file_sha256(fp32_onnx)
    assert json.loads(out_meta[CALIBRATION_KEY]) == record


def test_range_cache_is_reused_and_invalidated_when_the_model_changes(
    quantized, fp32_onnx: Path, calibration_images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting_load_image(monkeypatch)
    again = quantize_onnx(fp32_onnx, calibration_images, tmp_path / "again.onnx", options=OPTIONS,
                          cache_dir=quantized.cache.parent)
    assert again.cache_hit and again.cache == quantized.cache and calls == []
    assert onnx.load(again.out).graph == onnx.load(quantized.out).graph

    changed = onnx.load(fp32_onnx)
    changed.metadata_props.add(key="note", value="another model")  # other bytes, other sha256
    onnx.save(changed, tmp_path / "changed.onnx")
    fresh = quantize_onnx(tmp_path / "changed.onnx", calibration_images, tmp_path / "changed.int8.onnx",
                          options=OPTIONS, cache_dir=quantized.cache.parent)
    assert not fresh.cache_hit and fresh.cache != quantized.cache
    assert sorted(calls) == sorted(map(str, calibration_images))  # every image decoded once, through load_image


@pytest.mark.parametrize("damage", ["truncated", "foreign", "not finite"])
def test_a_damaged_or_foreign_range_cache_is_said_and_calibrated_again(
    damage: str, quantized, fp32_onnx: Path, calibration_images: list[Path], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    cache = cache_dir / quantized.cache.name
    good = json.loads(quantized.cache.read_text())  # onnxruntime's TensorsData: {"CLS": ..., "data": {tensor: ...}}
    ranges = good["data"]
    first = next(iter(ranges))
    cache.write_text({"truncated": quantized.cache.read_text()[: len(quantized.cache.read_text()) // 2],
                      "foreign": json.dumps({**good, "data": {"tensor_of_another_graph": ranges[first]}}),
                      "not finite": json.dumps({**good, "data": {**ranges, first: {**ranges[first], "lowest": float("nan")}}}),
                      }[damage])
    with caplog.at_level("INFO", logger="calibration.quantize"):
        again = quantize_onnx(fp32_onnx, calibration_images, tmp_path / "again.onnx", options=OPTIONS,
                              cache_dir=cache_dir)
    said = {"truncated": "a damaged range cache (", "foreign": "a range cache of another graph",
            "not finite": "a range cache without a finite (min, max)"}[damage]
    assert any(r.getMessage().startswith(f"{cache}: {said}") for r in caplog.records), caplog.text
    assert not again.cache_hit and json.loads(cache.read_text()) == good  # calibrated again, the cache rewritten
    assert onnx.load(again.out).graph == onnx.load(quantized.out).graph


def test_an_int8_model_is_not_quantized_again(quantized, calibration_images: list[Path], tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match=r"already quantized \(precision 'int8' in its metadata\)"):
        quantize_onnx(quantized.out, calibration_images, tmp_path / "twice.onnx", options=OPTIONS)
    unmarked = onnx.load(quantized.out)  # Q/DQ nodes without the toolkit's mark
    kept = [p for p in unmarked.metadata_props if p.key != "san.precision"]
    del unmarked.metadata_props[:]
    unmarked.metadata_props.extend(kept)
    onnx.save(unmarked, tmp_path / "unmarked.onnx")
    with pytest.raises(QuantizeError, match=r"already quantized \(DequantizeLinear/QuantizeLinear nodes\)"):
        quantize_onnx(tmp_path / "unmarked.onnx", calibration_images, tmp_path / "twice.onnx", options=OPTIONS)
    assert not (tmp_path / "twice.onnx").exists()


def test_int8_embeddings_meet_the_int8_rule_against_fp32(quantized, fp32_onnx: Path, synth: Path) -> None:
    """Random weights are the hard case: nothing learned to be robust, so every hard mask sits
    on noise. Judged as san-parity judges it, by
    the int8 rule's cosine limit (single images are not gated: each CPU's INT8 kernels, AVX2,
    VNNI or AMX, round differently); a wrong scale or a quantized mask path falls below it
    (tests/calibration/test_int8_report.py)."""
    spec = read_contract(fp32_onnx)
    batch = np.stack([load_image(p, spec) for p in folder_images(synth / "query", "q")])
    fp32, int8 = embed_onnx(fp32_onnx, batch), embed_onnx(quantized.out, batch)
    assert np.isfinite(int8).all()
    cosine = paired_cosine(fp32, int8)
    assert RULES["int8"].breaches("int8", {"min_cosine_mean": float(cosine.mean())}) == [], cosine


def test_a_model_whose_mask_path_is_not_recognised_is_refused(fp32_onnx: Path, calibration_images, tmp_path: Path) -> None:
    model = onnx.load(fp32_onnx)
    for node in model.graph.node:
        if node.op_type == "Greater":
            node.op_type = "Less"  # still a comparison ...
            node.input[0], node.input[1] = node.input[1], node.input[0]
        if node.op_type == "ReduceMax":
            node.op_type = "ReduceMean"  # ... but no longer a min-max normalisation
    onnx.save(model, tmp_path / "odd.onnx")
    with pytest.raises(QuantizeError, match="promises 4 hard-mask"):
        quantize_onnx(tmp_path / "odd.onnx", calibration_images, tmp_path / "odd.int8.onnx", options=OPTIONS)


def _backbone_convs(model: onnx.ModelProto, names: set[str], scopes: tuple[str, ...]) -> list[str]:
    """Conv nodes among ``names`` that the exporter records inside one of ``scopes``."""
    from calibration.quantize import _scopes

    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.name in names and _scopes(n) & set(scopes)]


def test_the_placement_means_the_same_for_the_baseline_as_for_san(fp32_onnx: Path, calibration_images,
                                                                   tmp_path: Path) -> None:
    """The plain ResNet quantizes with the default placement: the stem and stage 1 stay float, as
    in SAN (the same five backbone convolutions of a ResNet-18), and so do pooling and the head."""
    from dataclasses import replace

    import torch

    from calibration.quantize import float_prefix
    from export.onnx_export import export_onnx
    from san.model.network import build_model
    from support.looks_trained import looks_trained

    torch.manual_seed(0)
    baseline_onnx = export_onnx(looks_trained(build_model(replace(CFG, attention="none"))), tmp_path / "baseline.onnx")
    result = quantize_onnx(baseline_onnx, calibration_images, tmp_path / "baseline.int8.onnx", options=OPTIONS)
    assert result.calibration["float_blocks"] == 1 and result.calibration["float_head"] is True
    stem_and_stage_1 = ("san.stem", "san.stages.0")
    for source in (baseline_onnx, fp32_onnx):
        model = onnx.load(source)
        prefix = set(float_prefix(model, 1))
        assert len(_backbone_convs(model, prefix, stem_and_stage_1)) == 5  # conv1 and layer1's two blocks
        assert not _backbone_convs(model, prefix, ("san.stages.1", "san.stages.2", "san.stages.3"))
        head = {n.op_type for n in model.graph.node if n.name in set(float_head(model))}
        assert {"ReduceMean", "Gemm"} <= head
    assert _quantized_in_head(result.out, baseline_onnx) == []
    quantized = onnx.load(result.out)
    producer = {out: n for n in quantized.graph.node for out in n.output}
    prefix = set(float_prefix(onnx.load(baseline_onnx), 1))
    for conv in (n for n in quantized.graph.node if n.op_type == "Conv"):
        assert (producer[conv.input[0]].op_type == "DequantizeLinear") == (conv.name not in prefix), conv.name
