"""Mask-threshold calibration: the choice rule and the checkpoint it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from calibration.cli import main as san_calibrate
from calibration.threshold_choice import SweepPoint, choose_threshold
from san.data.synth import ensure_synthetic
from san.model.network import SAN
from san.training.checkpoint import load_checkpoint, save_checkpoint
from support.calibration_helpers import SYNTH


def test_threshold_choice_prefers_the_closest_map_then_one_half() -> None:
    ref = SweepPoint(None, 0.50, 0.6, {})
    points = [SweepPoint(t, m, 0.6, {}) for t, m in [(0.3, 0.40), (0.35, 0.52), (0.5, 0.45), (0.6, 0.48), (0.7, 0.52)]]
    assert choose_threshold(ref, points) == 0.6  # |d| 0.02, tied with 0.35 and 0.7; 0.6 is nearest 0.5
    assert choose_threshold(ref, [*points, SweepPoint(0.4, 0.52, 0.6, {})]) == 0.4  # as near 0.5: the lower
    assert choose_threshold(ref, [*points, SweepPoint(0.55, 0.501, 0.6, {})]) == 0.55


def test_threshold_sweep_writes_a_checkpoint_whose_contract_carries_the_choice(
    fp32_model: SAN, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_checkpoint(tmp_path / "model.pt", fp32_model, training={"epoch": 3})
    root = tmp_path / "val"  # a small validation set of its own keeps the four evaluations quick
    ensure_synthetic(root, **(SYNTH | {"ids": 6, "seed": 1}))
    argv = ["threshold", "--ckpt", str(tmp_path / "model.pt"), "--dataset", "synthetic", "--root", str(root),
            "--out", str(tmp_path / "model.thr.pt"), "--thresholds", "0.4", "0.5", "0.6", "--draws", "1",
            "--workers", "0", "--batch-size", "64"]
    assert san_calibrate(argv) == 0
    printed = capsys.readouterr().out
    model, meta = load_checkpoint(tmp_path / "model.thr.pt")
    sweep = meta.extra["threshold_sweep"]
    assert [p["threshold"] for p in sweep["points"]] == [0.4, 0.5, 0.6] and "<- chosen" in printed
    densities = [p["density"]["1"] for p in sweep["points"]]
    assert densities[0] > densities[1] > densities[2] and 0 < sweep["reference"]["density"]["1"] < 1
    assert meta.spec.mask_threshold == sweep["chosen"] == model.attention["1"].generator.threshold
    assert f"mask threshold {sweep['chosen']:.2f}" in printed and meta.training == {"epoch": 3}
