"""``pip install '.[cpu]'`` is the edge install: no torch, and the edge commands work in it.

A fresh virtual environment gets the package (with onnxruntime, its one extra) from a copy of its sources (dependencies from
the package index) and never sees torch; the commands run there on files the full
environment made, and their results are checked here against the torch model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from runtime import open_backend
from san.contract.artifact import PRECISION_KEY
from san.data.synth import ensure_synthetic
from san.evaluation.metrics import paired_cosine
from san.io.preprocess import load_image
from support.module_folders import ModuleFolders
from support.tiny import N_IMAGES, TINY_SPEC

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "san", "export", "calibration", "runtime")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def edge(module_tmp: ModuleFolders) -> Path:
    """The bin/ folder of a virtual environment with ``pip install '.[cpu]'`` and nothing else."""
    work = module_tmp.mktemp("edge")
    source = work / "src"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=300)
    pip = subprocess.run([str(work / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", f"{source}[cpu]"],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr
    return work / "venv" / "bin"


def run(edge: Path, command: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(edge / command), *map(str, args)], capture_output=True, text=True, timeout=600)


def test_the_edge_environment_has_no_torch(edge: Path) -> None:
    done = run(edge, "python", "-c", "import torch")
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr


def test_san_embed_runs_without_torch_and_matches_the_torch_model(edge: Path, tiny: Path, tmp_path: Path) -> None:
    done = run(edge, "san-embed", tiny / "images", "--model", tiny / "model.onnx", "--out", tmp_path / "out",
               "--no-progress")
    assert done.returncode == 0, done.stderr
    rows = [line.split(",") for line in (tmp_path / "out" / "index.csv").read_text().splitlines()[1:]]
    embeddings = np.load(tmp_path / "out" / "embeddings.npy")
    assert len(rows) == len(embeddings) == N_IMAGES
    with open_backend(tiny / "model.pt", "torch") as torch_model:
        images = np.stack([load_image(tiny / "images" / row[1], torch_model.spec) for row in rows])
        reference = torch_model.infer(images)
    assert paired_cosine(embeddings, reference).min() >= 0.9999


def test_san_calibrate_quantizes_and_reports_without_torch(edge: Path, tiny: Path, tmp_path: Path) -> None:
    synth = tmp_path / "synth"
    ensure_synthetic(synth, ids=12, cameras=2, seed=0, **TINY_SPEC)
    out = tmp_path / "model.int8.onnx"
    done = run(edge, "san-calibrate", "--onnx", tiny / "model.onnx", "--images", synth / "bounding_box_train",
               "--num", 8, "--out", out, "--eval-dataset", "synthetic", "--eval-root", synth, "--no-progress")
    assert done.returncode in (0, 1), done.stderr  # 1: the INT8 rule breached, still a full report
    assert "Traceback" not in done.stderr
    assert {p.key: p.value for p in onnx.load(out).metadata_props}[PRECISION_KEY] == "int8"
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert report["images"] > 0 and set(report["flip_rate"]) == {"1", "2", "3", "4"}
    assert ("PASSED" in done.stdout) == (done.returncode == 0)


def test_the_tensorrt_parser_check_runs_without_torch(edge: Path, tiny: Path) -> None:
    done = run(edge, "san-export", "--check-tensorrt", tiny / "model.onnx")
    assert done.returncode == 0, done.stderr
    assert "compatible with TensorRT 10.0-10.6's ONNX parser rules" in done.stdout


@pytest.mark.parametrize("command", ["san-eval", "san-parity", "san-calibrate", "san-export", "san-train", "san-info"])
def test_help_answers_without_torch(edge: Path, command: str) -> None:
    done = run(edge, command, "--help")
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr


@pytest.mark.parametrize("argv", [
    ["san-eval", "--ckpt", "{tiny}/model.pt", "--dataset", "synthetic"],
    ["san-parity", "--ckpt", "{tiny}/model.pt", "--onnx", "{tiny}/model.onnx", "--dataset", "synthetic"],
    ["san-export", "--ckpt", "{tiny}/model.pt", "--out", "{tmp}/m.onnx"],
    ["san-embed", "{tiny}/images", "--model", "{tiny}/model.pt", "--out", "{tmp}/out"],
    ["san-calibrate", "threshold", "--ckpt", "{tiny}/model.pt", "--dataset", "synthetic", "--root", "{tmp}",
     "--out", "{tmp}/t.pt"],
])
def test_commands_that_need_torch_say_which_extra_in_one_line(edge: Path, tiny: Path, tmp_path: Path,
                                                             argv: list[str]) -> None:
    done = run(edge, *(a.format(tiny=tiny, tmp=tmp_path) for a in argv))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "torch" in lines[0] and "'.[train]'" in lines[0], done.stderr


@pytest.mark.parametrize("argv, extra", [
    (["san-embed", "{tiny}/images", "--model", "{tiny}/model.onnx", "--out", "{tmp}/out", "--ray"], "cluster"),
    (["san-search", "build", "{tmp}", "--index", "ivf"], "search"),
])
def test_options_that_need_an_extra_say_which_in_one_line(edge: Path, tiny: Path, tmp_path: Path,
                                                         argv: list[str], extra: str) -> None:
    done = run(edge, *(a.format(tiny=tiny, tmp=tmp_path) for a in argv))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"'.[{extra}]'" in lines[0], done.stderr
    assert not (tmp_path / "out").exists()
