"""``san-tune``: every runtime and precision measured on the user's images and judged by its rule;
the profile names the fastest row that passes, ``san-embed --profile`` runs it, and a profile from
another kind of machine is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibration.quantize import QuantizeOptions, quantize_onnx
from runtime.cli_embed import main as san_embed
from runtime.cli_search import main as san_search
from runtime.cli_tune import main as san_tune
from runtime.tune import Row, choose
from san.io.discovery import discover_images
from support.int8_faults import scale_activation_ranges
from support.module_folders import ModuleFolders


@pytest.fixture(scope="module")
def int8_files(tiny: Path, module_tmp: ModuleFolders) -> tuple[Path, Path]:
    """(an INT8 file calibrated on the tiny model's images, the same with its ranges x1000: broken)."""
    folder = module_tmp.mktemp("tune")
    images = [tiny / "images" / p for p in discover_images(tiny / "images")]
    good = quantize_onnx(tiny / "model.onnx", images, folder / "model.int8.onnx",
                         options=QuantizeOptions(batch_size=4, progress=False)).out
    return good, scale_activation_ranges(good, folder / "broken.int8.onnx", 1000.0)


def test_a_failing_row_is_never_chosen_however_fast() -> None:
    fast_but_wrong = Row("fast", "a.onnx", "onnxruntime", {}, "int8", {32: 900.0}, 0.2, 0.7, ["int8.min_cosine_mean"])
    rows = [Row("reference", "m.onnx", "onnxruntime", {}, "fp32", {32: 100.0}), fast_but_wrong,
            Row("good", "b.onnx", "openvino", {}, "int8", {32: 300.0}, 0.99, 0.995)]
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
    assert san_tune([str(tiny / "model.onnx"), "--images", str(tiny / "images"), "--batches", "2", "--seconds", "1",
                     "--threads", "1", "--profile", str(profile), "--no-progress"]) == 0
    record = json.loads(profile.read_text())
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
