"""``san-tune``: every runtime and precision measured on the user's images and judged by its rule
(cosine, hard-mask flips read from inside the graph, retrieval on a labelled split); the profile
names the fastest row that passes, ``san-embed --profile`` runs it, and a profile from another kind
of machine is refused in one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from calibration.quantize import QuantizeOptions, quantize_onnx
from runtime.cli_embed import main as san_embed
from runtime.cli_search import main as san_search
from runtime.cli_tune import main as san_tune
from runtime.tune import Candidate, Row, candidates, choose, tune
from san.contract.artifact import INPUT_NAME, pi_name, read_contract
from san.contract.engine_sidecar import BatchProfile, EngineSidecar, sidecar_path
from san.contract.input_convention import InputConvention
from san.contract.onnx_graph import session_exposing
from san.contract.rules import RULES
from san.contract.spec import InputSpec
from san.contract.tensorrt_target import TargetEnvironment
from san.data.registry import load_dataset
from san.io.discovery import discover_images
from san.io.preprocess import load_image
from support.independent_retrieval import independent
from support.int8_faults import scale_activation_ranges
from support.module_folders import ModuleFolders
from support.tampering import tampered_block

SYNTH = {"ids": 8, "cameras": 3, "height": 64, "width": 32}


@pytest.fixture(scope="module")
def int8_files(tiny: Path, module_tmp: ModuleFolders) -> tuple[Path, Path]:
    """(an INT8 file calibrated on the tiny model's images, the same with its ranges x1000: broken)."""
    folder = module_tmp.mktemp("tune")
    images = [tiny / "images" / p for p in discover_images(tiny / "images")]
    good = quantize_onnx(tiny / "model.onnx", images, folder / "model.int8.onnx",
                         options=QuantizeOptions(batch_size=4, progress=False)).out
    return good, scale_activation_ranges(good, folder / "broken.int8.onnx", 1000.0)


@pytest.fixture(scope="module")
def synth(module_tmp: ModuleFolders) -> Path:
    root = module_tmp.mktemp("tune-split") / "synth"
    load_dataset("synthetic", root, verbose=False, **SYNTH)
    return root


def test_a_failing_row_is_never_chosen_however_fast() -> None:
    fast_but_wrong = Row("fast", "a.onnx", "onnxruntime", {}, "int8", {32: 900.0}, cosine_min=0.2, cosine_mean=0.7,
                         breaches=["int8.min_cosine_mean"])
    rows = [Row("reference", "m.onnx", "onnxruntime", {}, "fp32", {32: 100.0}), fast_but_wrong,
            Row("good", "b.onnx", "openvino", {}, "int8", {32: 300.0}, cosine_min=0.99, cosine_mean=0.995)]
    assert choose(rows, 32).name == "good"
    assert choose(rows[:2], 32).name == "reference"


def test_the_profile_names_a_passing_row_and_san_embed_runs_it(tiny: Path, int8_files: tuple[Path, Path],
                                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, broken = int8_files
    profile = tmp_path / "tune.json"
    assert san_tune([str(tiny / "model.onnx"), "--int8", str(broken), "--images", str(tiny / "images"),
                     "--batches", "1,4", "--seconds", "1", "--threads", "1", "--profile", str(profile),
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(profile.read_text())["rows"]
    names = [row["name"] for row in rows]
    assert names[:2] == ["onnxruntime fp32", "onnxruntime INT8"] and all(row["images_per_second"] for row in rows)
    broken_rows = [row for row in rows if row["artifact"] == str(broken.resolve())]
    assert broken_rows and all(not row["passed"] and row["breaches"] for row in broken_rows)  # its ranges x1000
    assert "INT8 | " in out and "int8: FAIL" in out and "(chosen)" in out
    choice = json.loads(profile.read_text())["choice"]
    assert choice["artifact"] != str(broken.resolve())  # a row that fails its rule is never chosen

    assert san_embed([str(tiny / "images"), "--profile", str(profile), "--out", str(tmp_path / "by-profile")]) == 0
    flags = [*sum((["--" + k.replace("_", "-"), ",".join(v) if isinstance(v, list) else str(v)]
                   for k, v in choice["options"].items()), [])]
    by_hand = ["--model", choice["artifact"], "--backend", choice["backend"], *flags]
    assert san_embed([str(tiny / "images"), *by_hand, "--out", str(tmp_path / "by-hand")]) == 0
    profiled, hand = (np.load(tmp_path / name / "embeddings.npy") for name in ("by-profile", "by-hand"))
    assert np.array_equal(profiled, hand)

    image = str(tiny / "images" / discover_images(tiny / "images")[0])
    capsys.readouterr()
    query = ["query", str(tmp_path / "by-profile"), "--images", image, "-k", "3"]
    assert san_search([*query, "--profile", str(profile)]) == 0
    with_profile = capsys.readouterr().out
    assert san_search([*query, *by_hand]) == 0
    assert with_profile == capsys.readouterr().out and "query 1:" in with_profile


def test_a_profile_from_another_kind_of_machine_is_refused_in_one_line(tiny: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "tune.json"
    assert san_tune([str(tiny / "model.onnx"), "--images", str(tiny / "images"), "--batches", "1,2", "--choose-at", "1",
                     "--seconds", "1", "--threads", "1", "--profile", str(profile), "--no-progress"]) == 0
    record = json.loads(profile.read_text())
    assert record["batch"] == 1 and "x fp32 at 1" in capsys.readouterr().out
    for change in ({"instruction_sets": ["avx2"]}, {"versions": {"onnxruntime": "1.0.0"}}):
        profile.write_text(json.dumps({**record, "machine": {**record["machine"], **change}}))
        capsys.readouterr()
        assert san_embed([str(tiny / "images"), "--profile", str(profile), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "made on a machine with other" in err[0] and "run san-tune on this machine" in err[0]
        assert not (tmp_path / "out").exists()
    for options in ({"threads": "two"}, {"threads": 0}, {"providers": [1]}, {"colour": "red"}):
        profile.write_text(json.dumps({**record, "choice": {**record["choice"], "options": options}}))
        assert san_embed([str(tiny / "images"), "--profile", str(profile), "--out", str(tmp_path / "out")]) == 2
        assert "is not one san-tune writes" in capsys.readouterr().err and not (tmp_path / "out").exists()
    profile.write_text("{}")
    assert san_embed([str(tiny / "images"), "--profile", str(profile), "--out", str(tmp_path / "out")]) == 2
    assert "not a san-tune profile" in capsys.readouterr().err


def test_a_mask_flipped_far_from_the_threshold_fails_an_fp32_row_and_is_counted_exactly(
        tiny: Path, tmp_path: Path) -> None:
    """The block after stage 1 compares pi with 0.6 instead of 0.5: every element of pi_1 in
    [0.501, 0.6] flips there with nothing upstream (unexplained); later blocks of those images
    inherit it (propagated). The count comes from pi_1 read by a plain onnxruntime session."""
    tampered = tampered_block(tiny / "model.onnx", tmp_path / "tampered.onnx", 1, "threshold")
    paths = discover_images(tiny / "images")
    cpu = {"threads": 1, "providers": ["cpu"]}
    rows = [Candidate("reference", tiny / "model.onnx", "onnxruntime", cpu, "fp32"),
            Candidate("tampered", tampered, "onnxruntime", cpu, "fp32"),
            Candidate("OpenVINO f32", tiny / "model.onnx", "openvino", {"threads": 1, "precision": "f32"}, "fp32")]
    reference, broken, openvino = tune(rows, tiny / "images", paths, (2,), 0.05, workers=0)

    model = onnx.load(tiny / "model.onnx")
    decoded = np.stack([load_image(tiny / "images" / p, read_contract(tiny / "model.onnx")) for p in paths])
    (pi_1,) = session_exposing(model, [pi_name(1)]).run([pi_name(1)], {INPUT_NAME: decoded})
    expected = int(((pi_1 > 0.5 + RULES["fp32"].flip_margin) & (pi_1 <= 0.6)).sum())
    assert expected > 0
    assert broken.masks is not None and broken.masks.unexplained == expected
    assert broken.masks.images_flipped == int(((pi_1 > 0.5) & (pi_1 <= 0.6)).any(axis=(1, 2, 3)).sum())
    assert any(b.startswith("fp32.max_unexplained_flips") for b in broken.breaches) and not broken.passed
    assert reference.masks is not None and reference.masks.images_flipped == 0 and reference.passed
    assert openvino.masks is not None and openvino.masks.unexplained == 0 and openvino.passed, openvino


def test_a_labelled_split_scores_each_row_as_an_independent_computation_does(
        tiny: Path, synth: Path, int8_files: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, broken = int8_files
    profile = tmp_path / "tune.json"
    assert san_tune([str(tiny / "model.onnx"), "--int8", str(broken), "--images", str(tiny / "images"),
                     "--batches", "2", "--budget", "2", "--threads", "1", "--workers", "1", "--dataset", "synthetic",
                     "--root", str(synth), "--profile", str(profile), "--no-progress"]) == 0
    out = capsys.readouterr().out
    rows = {row["name"]: row for row in json.loads(profile.read_text())["rows"]}
    _, _, mAP, rank1 = independent(tiny / "model.onnx", synth)
    reference = rows["onnxruntime fp32"]["split"]
    assert reference["mAP"] == pytest.approx(100 * mAP, abs=1e-6) and reference["rank1"] == pytest.approx(100 * rank1)
    _, _, broken_map, _ = independent(broken, synth)
    int8 = rows["onnxruntime INT8"]
    assert int8["split"]["delta_map"] == pytest.approx(100 * (broken_map - mAP), abs=1e-6)
    limit = RULES["int8"].max_delta_map
    assert limit is not None
    judged = [b for b in int8["breaches"] if b.startswith("int8.max_delta_map") and b.endswith("on synthetic")]
    assert bool(judged) == (abs(100 * (broken_map - mAP)) > limit)
    assert all(row["end_to_end"] > 0 for row in rows.values())
    assert "dmAP / drank-1 on synthetic" in out and "end to end at 2" in out
    assert "s per timing" in out


def test_split_options_without_a_data_set_are_refused_in_one_line(tiny: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    base = [str(tiny / "model.onnx"), "--images", str(tiny / "images"), "--profile", str(tmp_path / "p.json")]
    assert san_tune([*base, "--root", str(tmp_path)]) == 2
    assert "give --dataset too" in capsys.readouterr().err
    assert san_tune([*base, "--dataset", "synthetic"]) == 2
    assert "give its folder with --root" in capsys.readouterr().err
    assert san_tune([*base, "--seconds", "1", "--budget", "5"]) == 2
    assert "not allowed with" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_a_tensorrt_engine_is_a_row_at_its_sidecars_precision_and_refused_in_one_line_without_tensorrt(
        tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"\x00" * 64)  # never deserialized here: the row is planned from the sidecar
    sidecar = EngineSidecar(InputSpec(height=64, width=32), InputConvention(), "fp16", False, False,
                            BatchProfile(1, 8, 32), TargetEnvironment("10.13.0", "NVIDIA H100 80GB HBM3", "9.0"),
                            "0" * 64, "1" * 64, {})
    sidecar_path(engine).write_text(json.dumps(sidecar.to_dict()))
    rows = candidates(tiny / "model.onnx", None, 1, [engine])
    assert (rows[-1].name, rows[-1].backend, rows[-1].kind, rows[-1].options) == (
        "TensorRT fp16 (model.fp16.engine)", "tensorrt", "fp16", {})
    if importlib.util.find_spec("tensorrt") is not None:
        return  # the refusal below is what a machine without TensorRT says
    assert san_tune([str(tiny / "model.onnx"), "--engine", str(engine), "--images", str(tiny / "images"),
                     "--profile", str(tmp_path / "p.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tensorrt" in err[0] and not (tmp_path / "p.json").exists()


def test_a_runtime_that_cannot_read_inner_tensors_is_judged_without_mask_flips(tiny: Path) -> None:
    """A checkpoint run by PyTorch has no graph whose tensors a runtime exposes: its row has no mask
    agreement, is judged by its cosines alone, and the table says the flips were not readable."""
    from runtime.cli_tune import render

    paths = discover_images(tiny / "images")[:4]
    rows = [Candidate("reference", tiny / "model.onnx", "onnxruntime", {"threads": 1, "providers": ["cpu"]}, "fp32"),
            Candidate("PyTorch", tiny / "model.pt", "torch", {"threads": 1}, "fp32")]
    reference, torch_row = tune(rows, tiny / "images", paths, (2,), 0.05, workers=0)
    assert reference.masks is not None and torch_row.masks is None
    assert torch_row.passed and torch_row.cosine_min >= RULES["fp32"].min_cosine_min
    assert "| not readable |" in render([reference, torch_row], reference, (2,), 2)
