"""Output redirected to a file reads as a log: one line per epoch or stage, progress lines for
long work (san.progress), no progress-bar frames (carriage returns), no third-party chatter
from the quantizer."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from san.progress import INTERVAL_VARIABLE


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


#: A progress line of san.progress: what, done/total, the share, the time taken (and left).
PROGRESS = re.compile(r"^(?P<what>[^:]+): (?P<done>\d+)/(?P<total>\d+)( \w+)? \(\d+%\), \d+:\d\d elapsed(, ~\d+:\d\d left)?$")


def _progress(log: str) -> dict[str, list[tuple[int, int]]]:
    """The progress lines of a log: what -> [(done, total), ...] in order."""
    found: dict[str, list[tuple[int, int]]] = {}
    for line in log.splitlines():
        if match := PROGRESS.match(line):
            found.setdefault(match["what"], []).append((int(match["done"]), int(match["total"])))
    return found


def _finished(lines: list[tuple[int, int]]) -> bool:
    """Counts that never go back and end at their total."""
    return bool(lines) and lines[-1][0] == lines[-1][1] and [d for d, _ in lines] == sorted(d for d, _ in lines)


@pytest.mark.slow
def test_long_work_writes_progress_lines_to_a_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With output to a pipe each long piece of work writes done/total lines (here one per step:
    the interval is shortened, as a user may with SAN_PROGRESS_INTERVAL_S), with no bar frames."""
    monkeypatch.setenv(INTERVAL_VARIABLE, "1e-6")
    run, root = tmp_path / "run", tmp_path / "run" / "synthetic"
    train = _progress(_run("san-train", "--preset", "cpu-demo", "--out", str(run), "--dataset-arg", "ids=20",
                           "--dataset-arg", "height=64", "--dataset-arg", "width=32", "--epochs", "1",
                           "--batch-p", "4", "--workers", "0", "--eval-every", "1"))
    assert _finished(train["rendering"]) and _finished(train["epoch 1/1"]), train  # the synthetic set, the epoch
    assert len(train["query"]) >= 2 and len(train["gallery"]) >= 2, train  # evaluations at epochs 0 and 1
    _run("san-export", "--ckpt", str(run / "model.pt"), "--verify-count", "4")
    calibrate = _progress(_run("san-calibrate", "--onnx", str(run / "model.onnx"), "--images",
                               str(root / "bounding_box_train"), "--num", "16", "--batch-size", "4",
                               "--eval-dataset", "synthetic", "--eval-root", str(root),  # a one-epoch model on
                               "--limit", "int8.max_delta_map=none", "--limit", "int8.max_delta_rank1=none"))  # 46 queries
    assert _finished(calibrate["calibrating"]) and _finished(calibrate["query"]), calibrate
    embed = _progress(_run("san-embed", str(root / "query"), "--model", str(run / "model.onnx"), "--out",
                           str(tmp_path / "emb"), "--batch-size", "4"))
    assert _finished(embed["embedding"]), embed
    build = _progress(_run("san-search", "build", str(tmp_path / "emb"), "--index", "flat"))
    assert _finished(build["indexing"]), build
    parity = _run("san-parity", "--ckpt", str(run / "model.pt"), "--onnx", str(run / "model.onnx"), "--draws", "2")
    assert "torch, sampled masks: draw 1/2" in parity and "torch, sampled masks: draw 2/2" in parity, parity
    assert len(_progress(parity)["gallery"]) >= 4, parity  # torch, onnx, and each draw
    evaluation = _progress(_run("san-eval", "--ckpt", str(run / "model.pt")))
    assert _finished(evaluation["query"]) and _finished(evaluation["gallery"]), evaluation
