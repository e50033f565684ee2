"""Bad and awkward image files (tests/badfiles.py): the decoder, discovery, and every consumer."""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from san.contract.spec import InputSpec
from san.data.registry import load_dataset
from san.io.preprocess import ImageDecodeError, decode_image, load_image, printable_path, resize_to_contract
from support.badfiles import PROBE_TOLERANCE, BadCase, make_bad_files
from support.module_folders import ModuleFolders

SPEC = InputSpec(height=64, width=32)
NON_UTF8_NAME = os.fsdecode(b"c1_caf\xe9.jpg")


@pytest.fixture(scope="module")
def bad_folder(module_tmp: ModuleFolders) -> tuple[Path, list[BadCase]]:
    root = module_tmp.mktemp("bad") / "images"
    return root, make_bad_files(root)


def _decode_problem(root: Path, case: BadCase) -> str:
    """'' when ``decode_image`` does what ``case`` expects, else what went wrong."""
    try:
        img = decode_image(root / case.path)
    except ImageDecodeError as exc:
        if case.outcome != "error":
            return f"refused a valid image: {exc.reason}"
        return "" if case.reason in exc.reason else f"reason {exc.reason!r} lacks {case.reason!r}"
    if case.outcome != "ok":
        return "decoded, but should have been refused"
    pixels = np.asarray(img).astype(int)
    if img.mode != "RGB" or img.size != case.size:
        return f"got {img.mode} {img.size}, expected RGB {case.size}"
    wrong = [(x, y, tuple(pixels[y, x]), rgb) for x, y, rgb in case.probes
             if np.abs(pixels[y, x] - rgb).max() > PROBE_TOLERANCE]
    return f"pixels (x, y, got, expected): {wrong}" if wrong else ""


def test_generator_covers_at_least_twenty_kinds(bad_folder) -> None:
    _, cases = bad_folder
    assert len({c.name for c in cases}) == len(cases) >= 20
    assert {c.outcome for c in cases} == {"ok", "error"}
    assert all(c.reason for c in cases if c.outcome == "error")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decode_image_handles_every_kind(bad_folder) -> None:
    root, cases = bad_folder
    problems = {c.name: p for c in cases if not c.skip and (p := _decode_problem(root, c))}
    assert not problems


def test_unreadable_file_is_refused_with_its_reason(bad_folder) -> None:
    root, cases = bad_folder
    case = next(c for c in cases if c.path == "unreadable.jpg")
    if case.skip:
        pytest.skip(case.skip)
    assert _decode_problem(root, case) == ""


def test_load_image_gives_the_contract_shape_for_every_valid_kind(bad_folder) -> None:
    root, cases = bad_folder
    for case in (c for c in cases if c.outcome == "ok"):
        out = load_image(root / case.path, SPEC)
        assert out.dtype == np.uint8 and out.shape == (3, 64, 32), case.name


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_limit_follows_pillows_setting(tmp_path, monkeypatch) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match="40x30 = 1200 pixels exceeds PIL.Image.MAX_IMAGE_PIXELS = 1000"):
        decode_image(path)


def test_decode_error_pickles_and_prints_non_utf8_names(tmp_path) -> None:
    name = tmp_path / Path(b"caf\xe9.jpg".decode("utf-8", "surrogateescape"))
    name.write_bytes(b"")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(name)
    exc = info.value
    again = pickle.loads(pickle.dumps(exc))
    assert (again.path, again.reason, str(again)) == (exc.path, exc.reason, str(exc))
    assert str(exc).endswith("caf\\udce9.jpg: empty file (0 bytes)")
    str(exc).encode("utf-8")  # printable on a strict UTF-8 stream


def test_resize_refuses_images_that_are_not_rgb() -> None:
    with pytest.raises(ValueError, match="got mode 'L'"):
        resize_to_contract(Image.new("L", (8, 8)), SPEC)


def _market_name(i: int) -> str:
    return f"{1 + i % 3:04d}_c{1 + i % 2}s1_{i:06d}_00.jpg"


def _is_directory(root: Path, case: BadCase) -> bool:
    return (root / case.path).is_dir()


@pytest.fixture(scope="module")
def market_folder(bad_folder, module_tmp: ModuleFolders) -> Path:
    """A Market-1501 layout whose every split links, under valid names, to every bad kind."""
    bad_root, cases = bad_folder
    root = module_tmp.mktemp("market")
    for split in ("bounding_box_train", "bounding_box_test", "query"):
        (root / split).mkdir()
        for i, case in enumerate(cases):
            (root / split / _market_name(i)).symlink_to(bad_root / case.path)
        (root / split / f".{_market_name(0)}").write_bytes(b"\x00\x05\x16\x07")  # hidden: not data
    return root


@pytest.fixture(scope="module")
def image_folder_dataset(bad_folder, module_tmp: ModuleFolders) -> Path:
    """A generic ``<split>/<pid>/<camera>_<name>`` folder linking to every bad kind, plus hidden junk."""
    bad_root, cases = bad_folder
    root = module_tmp.mktemp("folder")
    for split in ("train", "query", "gallery"):
        for i, case in enumerate(cases):
            (root / split / f"p{i % 3}").mkdir(parents=True, exist_ok=True)
            (root / split / f"p{i % 3}" / f"c{i % 2}_{i:03d}.jpg").symlink_to(bad_root / case.path)
        (root / split / "p1" / NON_UTF8_NAME).symlink_to(bad_root / "empty.jpg")
        (root / split / "p0" / "._c1_resource.jpg").write_bytes(b"\x00\x05\x16\x07")
        (root / split / ".thumbnails").mkdir()
        (root / split / ".thumbnails" / "c1_thumb.jpg").write_bytes((bad_root / "plain.bmp").read_bytes())
    return root


def test_loaders_list_every_non_directory_and_skip_hidden_files(
    bad_folder, market_folder, image_folder_dataset
) -> None:
    """Loaders list paths only: every file-like entry, broken links included, reaches the decoder."""
    bad_root, cases = bad_folder
    expected = sorted(_market_name(i) for i, c in enumerate(cases) if not _is_directory(bad_root, c))
    market = load_dataset("market1501", market_folder, verbose=False)
    for split in (market.query, market.gallery):
        assert sorted(Path(r.path).name for r in split) == expected
    assert len(market.train) == len(expected)
    generic = load_dataset("folder", image_folder_dataset, verbose=False)
    expected = sorted([NON_UTF8_NAME] + [f"c{i % 2}_{i:03d}.jpg" for i, c in enumerate(cases)
                                         if not _is_directory(bad_root, c)])
    for split in (generic.train, generic.query, generic.gallery):
        assert sorted(Path(r.path).name for r in split) == expected
    assert len({r.pid for r in generic.query}) == 3 and len({r.camid for r in generic.query}) == 2


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """A command-line program, with a strict UTF-8 stdout (a desktop locale, not C.UTF-8's lenient one)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_san_embed_lists_every_bad_file_and_embeds_every_valid_one(bad_folder, tiny, tmp_path) -> None:
    from runtime import open_backend

    root, cases = bad_folder
    out = tmp_path / "out"
    done = _run("runtime.cli_embed", str(root), "--model", str(tiny / "model.onnx"), "--out", str(out),
                "--workers", "1", "--chunk-size", "8", "--no-progress")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr  # 1: some files failed
    with open(out / "index.csv", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        index = {path: (int(row), status, error) for row, path, status, error in list(csv.reader(fh))[1:]}
    listed = [c for c in cases if c.listed]
    assert sorted(index) == sorted(c.path for c in listed)
    wrong = {c.name: index[c.path] for c in listed
             if not c.skip and (index[c.path][1] != c.outcome or c.reason not in index[c.path][2])}
    assert not wrong
    refused = sorted(c.path for c in listed if index[c.path][1] == "error")
    assert f"{len(refused)} file(s) failed" in done.stderr
    embeddings = np.load(out / "embeddings.npy")
    valid = [p for p in sorted(index) if index[p][1] == "ok"]
    assert len(embeddings) == len(valid) == len(listed) - len(refused)
    with open_backend(tiny / "model.onnx") as backend:
        direct = backend.infer(np.stack([load_image(root / p, backend.spec) for p in valid]))
    np.testing.assert_allclose(embeddings[[index[p][0] for p in valid]], direct, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_san_eval_skips_and_lists_every_unreadable_image(bad_folder, market_folder, tiny) -> None:
    bad_root, cases = bad_folder
    done = _run("san.cli.eval", "--ckpt", str(tiny / "model.pt"), "--dataset", "market1501",
                "--root", str(market_folder), "--workers", "1", "--json")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    files = [(i, c) for i, c in enumerate(cases) if not _is_directory(bad_root, c)]
    refused = {_market_name(i): c for i, c in files if c.outcome == "error"}
    unreadable = [(Path(u["path"]).name, u["reason"]) for u in report["unreadable"]]
    assert sorted(name for name, _ in unreadable) == sorted(2 * list(refused))  # in query and in gallery
    assert all(refused[name].reason in reason for name, reason in unreadable)
    readable = len(files) - len(refused)
    assert (report["num_query"], report["num_gallery"]) == (readable, readable)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_san_eval_prints_its_report_whatever_the_file_names(image_folder_dataset, tiny) -> None:
    done = _run("san.cli.eval", "--ckpt", str(tiny / "model.pt"), "--dataset", "folder",
                "--root", str(image_folder_dataset), "--workers", "0")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "unreadable images skipped:" in done.stdout
    assert "c1_caf\\udce9.jpg: empty file (0 bytes)" in done.stdout


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_san_calibrate_skips_unreadable_calibration_and_evaluation_images(bad_folder, tiny, tmp_path) -> None:
    from san.data.synth import ensure_synthetic

    images, cases = bad_folder
    held_out = tmp_path / "held_out"
    ensure_synthetic(held_out, ids=8, cameras=2, height=64, width=32)
    query = held_out / "query"
    (query / "0001_c1s9_900001_00.jpg").symlink_to(tmp_path / "missing.jpg")
    (query / "0001_c1s9_900002_00.jpg").symlink_to("0001_c1s9_900002_00.jpg")
    os.mkfifo(query / "0002_c2s9_900003_00.jpg")
    (query / "0002_c1s9_900004_00.jpg").write_bytes(b"")
    (query / "0003_c1s9_900005_00.jpg").write_text("an evaluation file that is not an image")
    out = tmp_path / "model.int8.onnx"
    done = _run("calibration.cli", "--onnx", str(tiny / "model.onnx"), "--images", str(images), "--num", "100",
                "--out", str(out), "--eval-dataset", "market1501", "--eval-root", str(held_out), "--no-progress")
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    refused = [c for c in cases if c.listed and c.outcome == "error"]
    assert f"{len(refused)} unreadable files skipped:" in done.stdout
    for case in refused:
        assert f"  {printable_path(images / case.path)}: " in done.stdout, case.name
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert done.returncode == (1 if report["breaches"] else 0)  # random weights: the int8 verdict may go either way
    left_out = [n for n in report["notes"] if n.startswith("unreadable, left out: ")]
    listed = load_dataset("market1501", held_out, verbose=False)
    assert len(left_out) == 5 and report["images"] == len(listed.query) + len(listed.gallery) - 5
