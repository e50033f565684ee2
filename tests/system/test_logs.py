"""Output redirected to a file reads as a log: one line per epoch or stage, no progress-bar
frames (carriage returns), no third-party chatter from the quantizer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _run(*argv: str) -> str:
    """A san-* command with stdout and stderr going to a pipe (not a terminal); all it printed."""
    command = [str(Path(sys.executable).with_name(argv[0])), *argv[1:]]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, done.stdout
    assert "\r" not in done.stdout, "progress-bar frames in a log"
    return done.stdout


@pytest.mark.slow
def test_train_calibrate_and_embed_log_one_line_per_stage(tmp_path: Path) -> None:
    root = tmp_path / "run" / "synthetic"
    train = _run("san-train", "--preset", "cpu-demo", "--out", str(tmp_path / "run"), "--dataset-arg", "ids=20",
                 "--dataset-arg", "height=64", "--dataset-arg", "width=32", "--epochs", "2", "--batch-p", "4",
                 "--workers", "0", "--eval-every", "0")
    epochs = [line for line in train.splitlines() if line.startswith("epoch ") and "/2: loss" in line]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"], train
    _run("san-export", "--ckpt", str(tmp_path / "run" / "model.pt"), "--verify-count", "4")
    calibrate = _run("san-calibrate", "--onnx", str(tmp_path / "run" / "model.onnx"),
                     "--images", str(root / "bounding_box_train"), "--num", "16", "--batch-size", "4")
    assert "Collecting tensor data" not in calibrate and "pre-processing" not in calibrate, calibrate
    assert len(calibrate.splitlines()) <= 6, calibrate
    embed = _run("san-embed", str(root / "query"), "--model", str(tmp_path / "run" / "model.onnx"),
                 "--out", str(tmp_path / "emb"))
    assert len(embed.splitlines()) == 1 and embed.startswith("embedded "), embed
