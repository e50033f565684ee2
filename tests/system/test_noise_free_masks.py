"""A SAN deployed with noise-free masks, sigmoid(logit(pi) / tau) (``san-export --mask noise-free``),
through export, the TensorRT lint, OpenVINO, INT8 calibration, embedding and parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from calibration.cli import main as san_calibrate
from export.cli import main as san_export
from export.tensorrt_lint import PARSERS, lint_tensorrt
from runtime.cli_embed import main as san_embed
from runtime.cli_parity import main as san_parity
from san import ModelConfig, build_model, save_checkpoint
from san.contract.artifact import hard_mask_stages, pi_name, read_contract
from san.contract.onnx_graph import GraphIndex, with_outputs
from san.contract.precision import find_mask_paths
from san.data.synth import ensure_synthetic
from san.training.checkpoint import load_checkpoint
from support.looks_trained import looks_trained
from support.module_folders import ModuleFolders
from support.tiny import TINY_SPEC

TAU = 0.7  #: a temperature training could end with (Eq. 9 starts at 1)
EPS = 1e-6  #: the clamp of pi inside logit (san.model.attention)


@pytest.fixture(scope="module")
def cooled(tiny: Path, module_tmp: ModuleFolders) -> Path:
    """The session's tiny SAN, its temperature at :data:`TAU`."""
    model, _ = load_checkpoint(tiny / "model.pt")
    model.set_temperature(TAU)
    out = module_tmp.mktemp("noise-free") / "model.pt"
    save_checkpoint(out, model)
    return out


@pytest.fixture(scope="module")
def exported(cooled: Path, module_tmp: ModuleFolders) -> Path:
    folder = cooled.parent
    assert san_export(["--ckpt", str(cooled), "--mask", "noise-free", "--verify-count", "8",
                       "--openvino", str(folder / "ov")]) == 0
    return cooled.with_suffix(".onnx")


def _sigmoid_of(g: GraphIndex, pi: str) -> str:
    """The Sigmoid output downstream of ``pi``: the block's mask M."""
    return next(n.output[0] for n in g.descendants(pi) if n.op_type == "Sigmoid")


def test_the_graph_computes_sigmoid_logit_pi_over_tau_and_the_contract_says_so(exported: Path, tiny: Path) -> None:
    """Each block's mask, read from inside the graph by onnxruntime, equals Eqs. 4-5 without noise
    computed here from the same graph's pi: 1 / (1 + ((1 - p) / p) ** (1 / tau)), p = clip(pi)."""
    proto = onnx.load(exported)
    spec = read_contract(exported)
    assert spec.deployed_mask == "noise-free" and hard_mask_stages(proto, exported) == ()
    assert find_mask_paths(proto) == []  # no hard mask: logit's clamp compares pi, but applies no mask
    g = GraphIndex(proto.graph)
    stages = [s for s in (1, 2, 3, 4) if pi_name(s) in {o for n in proto.graph.node for o in n.output}]
    assert len(stages) >= 2
    masks = {s: _sigmoid_of(g, pi_name(s)) for s in stages}
    session = ort.InferenceSession(with_outputs(proto, [*map(pi_name, stages), *masks.values()]).SerializeToString())
    images = np.random.default_rng(0).integers(0, 256, (4, 3, spec.height, spec.width), dtype=np.uint8)
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: images})))
    for stage in stages:
        p = np.clip(got[pi_name(stage)].astype(np.float64), EPS, 1 - EPS)
        expected = 1.0 / (1.0 + ((1 - p) / p) ** (1 / TAU))
        m = got[masks[stage]]
        np.testing.assert_allclose(m, expected, atol=2e-5)
    first = got[masks[stages[0]]]  # (stage 4's 2 x 1 maps min-max normalise to 0 and 1)
    assert ((first > 0.05) & (first < 0.95)).mean() > 0.05  # continuous, not hard


def test_the_tensorrt_lint_openvino_and_int8_take_it(exported: Path, tmp_path: Path) -> None:
    assert lint_tensorrt(onnx.load(exported), PARSERS["10.0"]) == []
    assert (exported.parent / "ov" / "model.xml").is_file()  # written and verified against PyTorch by export
    images = tmp_path / "calib"
    ensure_synthetic(tmp_path / "synth", ids=8, cameras=2, height=TINY_SPEC["height"], width=TINY_SPEC["width"])
    images = tmp_path / "synth" / "bounding_box_train"
    out = tmp_path / "model.int8.onnx"
    assert san_calibrate(["--onnx", str(exported), "--images", str(images), "--num", "8", "--out", str(out),
                          "--no-progress"]) == 0
    assert read_contract(out).deployed_mask == "noise-free"
    assert san_embed([str(images), "--model", str(out), "--out", str(tmp_path / "emb"), "--no-progress"]) == 0


def test_parity_deploys_the_checkpoint_as_the_files_do_and_refuses_a_mix(cooled: Path, exported: Path,
                                                                          tmp_path: Path) -> None:
    root = tmp_path / "synth"
    ensure_synthetic(root, ids=8, cameras=3, height=TINY_SPEC["height"], width=TINY_SPEC["width"])
    report = tmp_path / "parity.json"
    assert san_parity(["--ckpt", str(cooled), "--onnx", str(exported), "--dataset", "synthetic", "--root", str(root),
                       "--draws", "0", "--report", str(report), "--no-progress"]) == 0
    rows = {r["name"]: r for r in json.loads(report.read_text())["results"]}
    assert rows["torch"]["backend"]["deployed_mask"] == "noise-free" and rows["onnx"]["breaches"] == []
    thresholded = tmp_path / "thresholded.onnx"
    assert san_export(["--ckpt", str(cooled), "--out", str(thresholded), "--verify-count", "4"]) == 0
    assert read_contract(thresholded).deployed_mask == "threshold"
    status = san_parity(["--ckpt", str(cooled), "--onnx", str(exported), "--int8", str(thresholded),
                         "--dataset", "synthetic", "--root", str(root), "--draws", "0", "--no-progress"])
    assert status == 2


def test_a_model_without_sampled_masks_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    baseline = tmp_path / "baseline.pt"
    save_checkpoint(baseline, looks_trained(build_model(ModelConfig(backbone="resnet18", attention="none")
                                                        .with_spec(**TINY_SPEC))))
    assert san_export(["--ckpt", str(baseline), "--mask", "noise-free"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mask noise-free" in err[0] and "no sampled masks" in err[0], err
    assert not baseline.with_suffix(".onnx").exists()
