"""san-calibrate end to end, and the INT8 verdict on a trained model against broken files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from calibration.cli import main as san_calibrate
from calibration.hygiene import folder_images, sample_images
from calibration.quantize import quantize_onnx
from export.onnx_export import export_onnx
from san.contract.artifact import read_contract
from san.contract.rules import RULES
from san.data.registry import load_dataset
from san.io.preprocess import load_image
from san.training.checkpoint import load_checkpoint
from support.calibration_helpers import CFG, OPTIONS, embed_onnx
from support.int8_faults import quantize_everything, scale_activation_ranges
from support.module_folders import ModuleFolders


def test_cli_quantizes_reports_and_refuses_evaluation_images(
    fp32_onnx: Path, synth: Path, quantized, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.int8.onnx"
    common = ["--onnx", str(fp32_onnx), "--out", str(out), "--num", "8", "--seed", "0", "--no-progress",
              "--cache-dir", str(quantized.cache.parent), "--eval-dataset", "synthetic", "--eval-root", str(synth)]
    assert san_calibrate(["--images", str(synth / "query"), *common]) == 2
    assert "calibration images are also evaluation" in capsys.readouterr().err and not out.exists()

    # Random weights and a few queries: the retrieval deltas are noise, so this run gates the
    # paired cosine only; the exit status follows the verdict in the report either way.
    noise = ["--limit", "int8.max_delta_map=none", "--limit", "int8.max_delta_rank1=none"]
    status = san_calibrate(["--images", str(synth / "bounding_box_train"), *common, *noise])
    printed = capsys.readouterr().out
    assert "8 of" in printed and "seed 0" in printed and "reused" in printed and "delta mAP" in printed
    report = json.loads((tmp_path / "cli.int8.onnx.report.json").read_text())
    breached = report["cosine_mean"] < RULES["int8"].min_cosine_mean
    assert status == (1 if breached else 0) and report["breaches"] == (
        [f"int8.min_cosine_mean: {report['cosine_mean']:.6g} < 0.95"] if breached else [])
    assert set(report["flip_rate"]) == {"1", "2", "3", "4"} and report["ranges"]
    assert 0 <= report["int8_retrieval"]["mAP_percent"] <= 100 and report["calibration"]["num_images"] == 8


def test_cli_help_teaches_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["quantize", "--help"], ["threshold", "--help"]):
        with pytest.raises(SystemExit):
            san_calibrate(argv)
    text = capsys.readouterr().out
    assert "threshold" in text and "hygiene" in text and "--exclude" in text and "validation split" in text


# -- the INT8 verdict on a trained model ----------------------------------------------------


#: The trained model's evaluation set: its 16 training ids plus 400 unseen ones (3763 query
#: and gallery images). A 4-epoch model retrieves unseen people near chance (mAP ~1 %), so
#: its retrieval deltas carry no information whatever the split size; the verdict that has
#: power here is the paired cosine of thousands of images, each a measurement of what INT8
#: did to that image. Measured: default file 0.9746, mask path quantized 0.9355, ranges x10
#: 0.8283, each +- 0.0004..0.0011 (95 %), against the rule's 0.95.
TRAINED_SYNTH = {"ids": 416, "cameras": 4, "seed": 0, "height": 64, "width": 32, "test_fraction": 400 / 416}


@pytest.fixture(scope="module")
def trained_int8(module_tmp: ModuleFolders):
    """(fp32 ONNX, default INT8 result, evaluation data set, calibration images) of a model
    trained 4 epochs, so BatchNorm statistics and folded biases are real."""
    from san.training.train import train
    from san.training.train_config import TrainConfig

    tmp = module_tmp.mktemp("trained-int8")
    root = tmp / "synth"
    cfg = TrainConfig.of(out=str(tmp / "run"), model=CFG, root=str(root), dataset_options=TRAINED_SYNTH,
                      epochs=4, batch_p=8, batch_k=4, workers=0, eval_every=0, progress=False, seed=0)
    train(cfg)
    model, _ = load_checkpoint(tmp / "run" / "model.pt")
    fp32 = export_onnx(model, tmp / "model.onnx")
    images = sample_images(folder_images(root / "bounding_box_train", "--images"), 32, seed=0)
    result = quantize_onnx(fp32, images, tmp / "model.int8.onnx", options=OPTIONS)
    return fp32, result, load_dataset("synthetic", root, verbose=False), images


@pytest.fixture(scope="module")
def reference(trained_int8) -> tuple[np.ndarray, np.ndarray]:
    """(every query and gallery image decoded, the fp32 file's embeddings of them), computed once."""
    fp32, _, dataset, _ = trained_int8
    spec = read_contract(fp32)
    batch = np.stack([load_image(r.path, spec) for r in (*dataset.query, *dataset.gallery)])
    return batch, embed_onnx(fp32, batch)


#: The broken files are judged on every 6th query and gallery image (628): their cosines lie 0.015
#: and 0.12 below the floor, and the half-width of the interval each test asserts is at most about 0.003 there.
EVERY = 6


def _cosine_interval(reference: tuple[np.ndarray, np.ndarray], int8: Path, every: int = 1) -> tuple[float, float, int]:
    """Mean paired cosine of the fp32 and ``int8`` files' embeddings over every ``every``-th query
    and gallery image, computed here with onnxruntime directly, with its 95 % half-width; and the
    image count."""
    batch, a = reference[0][::every], reference[1][::every]
    b = embed_onnx(int8, batch)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.mean()), float(1.96 * cos.std(ddof=1) / np.sqrt(len(cos))), len(cos)


@pytest.mark.slow
def test_the_default_int8_file_passes_the_int8_rule_with_power_to_spare(trained_int8, reference) -> None:
    from calibration.report import build_report

    fp32, result, dataset, _ = trained_int8
    report = build_report(fp32, result.out, dataset, result.cache, progress=False)
    assert report.passed, report.render()
    assert set(report.flip_rate) == {1, 2, 3, 4}
    mean, half_width, images = _cosine_interval(reference, result.out)
    assert report.images == images >= 3000 and report.cosine_mean == pytest.approx(mean, abs=1e-5)
    assert mean - half_width > RULES["int8"].min_cosine_mean  # the whole interval clears the floor


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["mask path quantized", "activation ranges x10"])
def test_broken_int8_files_fail_the_int8_rule(trained_int8, reference, fault: str, tmp_path: Path) -> None:
    from calibration.report import build_report

    fp32, result, dataset, images = trained_int8
    if fault == "mask path quantized":
        broken = quantize_everything(fp32, images, tmp_path / "broken.onnx")
    else:
        broken = scale_activation_ranges(result.out, tmp_path / "broken.onnx", 10.0)
    judged = [*dataset.query, *dataset.gallery][::EVERY]  # the report's split: the interval's images
    queries = len(dataset.query[::EVERY])
    subset = replace(dataset, query=judged[:queries], gallery=judged[queries:])
    report = build_report(fp32, broken, subset, progress=False)
    assert not report.passed and any(b.startswith("int8.min_cosine_mean") for b in report.breaches), report.render()
    mean, half_width, count = _cosine_interval(reference, broken, EVERY)
    assert report.images == count and report.cosine_mean == pytest.approx(mean, abs=1e-5)
    assert mean + half_width < RULES["int8"].min_cosine_mean  # the whole interval is below the floor

