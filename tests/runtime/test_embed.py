"""san-embed: identical bytes across runs, kill + resume, shards + merge, bad files, NaN rows."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import Backend, EmbedError, EmbedOptions, LocalRunner, Shard, embed_folder, merge_shards, open_backend
from runtime.cli_embed import main
from runtime.embed import NON_FINITE
from san.contract.spec import InputSpec
from san.io.discovery import IMAGE_SUFFIXES
from san.io.failpoints import ENV
from support.badfiles import make_bad_files
from support.embedding_runs import OPTIONS, reference_run
from support.module_folders import ModuleFolders
from support.tiny import N_IMAGES, make_images

IDENTITY = ("embeddings.npy", "index.csv", "meta.json")


@pytest.fixture(scope="module")
def folder(tiny: Path, module_tmp: ModuleFolders) -> Path:
    """The tiny images plus a text file named .jpg and a zero-byte .png."""
    folder = module_tmp.mktemp("folder") / "images"
    shutil.copytree(tiny / "images", folder)
    (folder / "sub" / "notes.jpg").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def reference(tiny: Path, folder: Path, module_tmp: ModuleFolders) -> Path:
    """One uninterrupted, unsharded run, decoding in-process."""
    return reference_run(tiny / "model.onnx", folder, module_tmp.mktemp("reference"))


def assert_same_output(a: Path, b: Path) -> None:
    for name in IDENTITY:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_second_run_gives_identical_bytes_and_lists_bad_files(tiny: Path, folder: Path, reference: Path,
                                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [str(folder), "--model", str(tiny / "model.onnx"), "--out", str(tmp_path), "--batch-size", "3",
            "--chunk-size", "4", "--workers", "2", "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 file(s) failed" in err and "\n  empty.png: " in err and "\n  sub/notes.jpg: " in err
    assert_same_output(reference, tmp_path)
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert main([*argv, "--resume"]) == 1  # a finished run: nothing embedded, nothing written, its failures listed
    out = capsys.readouterr().out
    assert out == f"{tmp_path}: already finished ({N_IMAGES}/{N_IMAGES + 2} images embedded); nothing to do, " \
                  "nothing rewritten\n"
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == files
    assert str(folder) not in (tmp_path / "index.csv").read_text()  # reasons name relative paths
    rows = [line.split(",", 3) for line in (tmp_path / "index.csv").read_text().splitlines()[1:]]
    assert [r[2] for r in rows].count("error") == 2 and [r[0] for r in rows if r[2] == "error"] == ["-1", "-1"]
    assert [int(r[0]) for r in rows if r[2] == "ok"] == list(range(N_IMAGES))
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["counts"] == {"images": N_IMAGES + 2, "ok": N_IMAGES, "failed": 2}
    assert np.load(tmp_path / "embeddings.npy").shape == (N_IMAGES, 128)
    assert json.loads((tmp_path / "timing.json").read_text())["images_per_second"] > 0


def test_shards_merge_into_the_unsharded_output(tiny: Path, folder: Path, reference: Path, tmp_path: Path) -> None:
    parts = [tmp_path / f"s{i}" for i in (1, 2, 3)]
    with open_backend(tiny / "model.onnx") as backend:
        for i, part in enumerate(parts, start=1):
            embed_folder(folder, backend, part, OPTIONS, shard=Shard(i, 3), runner=LocalRunner(0), progress=False)
    with pytest.raises(EmbedError, match="each of the shards 1/n .. n/n of one run once, got 1/3, 2/3$"):
        merge_shards(parts[:2], tmp_path / "partial")
    with pytest.raises(EmbedError, match="got 1/3, 1/3, 2/3$"):
        merge_shards([parts[0], *parts[:2]], tmp_path / "twice")
    with pytest.raises(EmbedError, match=f"^{reference}: not a shard's output"):
        merge_shards([reference, *parts], tmp_path / "unsharded")
    result = merge_shards([parts[2], parts[0], parts[1]], tmp_path / "merged")
    assert (result.ok, len(result.failures)) == (N_IMAGES, 2)
    assert_same_output(reference, tmp_path / "merged")


def test_a_shard_without_a_chunk_says_so_and_the_shards_still_merge(tiny: Path, folder: Path, reference: Path,
                                                                     tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    parts = [tmp_path / f"s{i}" for i in (1, 2, 3)]
    notes = []
    for i, part in enumerate(parts, start=1):  # the whole folder is one chunk: two shards get none
        argv = [str(folder), "--model", str(tiny / "model.onnx"), "--out", str(part), "--shard", f"{i}/3",
                "--batch-size", str(OPTIONS.batch_size), "--chunk-size", "1000", "--workers", "0", "--no-progress"]
        assert main(argv) in (0, 1)  # 1: the shard holding the bad files lists them
        notes.append("holds no chunk of this folder" in capsys.readouterr().err)
    assert notes.count(True) == 2
    assert main(["merge", *map(str, parts), "--out", str(tmp_path / "merged")]) == 1
    for name in ("embeddings.npy", "index.csv"):
        assert (tmp_path / "merged" / name).read_bytes() == (reference / name).read_bytes(), name


def test_existing_output_and_changed_plans_are_refused(tiny: Path, folder: Path, reference: Path) -> None:
    with open_backend(tiny / "model.onnx") as backend:
        with pytest.raises(EmbedError, match="already holds embedding output"):
            embed_folder(folder, backend, reference, OPTIONS, runner=LocalRunner(0), progress=False)
        with pytest.raises(EmbedError, match="refused to resume: this run's options differ"):
            embed_folder(folder, backend, reference, EmbedOptions(batch_size=5, chunk_size=4), runner=LocalRunner(0), resume=True)
        done = embed_folder(folder, backend, reference, OPTIONS, runner=LocalRunner(0), resume=True, progress=False)
    assert (done.processed, done.ok) == (0, N_IMAGES)


def test_killed_run_resumes_to_the_uninterrupted_output(tiny: Path, tmp_path: Path) -> None:
    images = tmp_path / "many"
    make_images(images, 120, seed=1)
    options = EmbedOptions(batch_size=4, chunk_size=8)
    with open_backend(tiny / "model.onnx") as backend:
        embed_folder(images, backend, tmp_path / "whole", options, runner=LocalRunner(0), progress=False)
    out = tmp_path / "killed"
    command = [str(Path(sys.executable).with_name("san-embed")), str(images), "--model", str(tiny / "model.onnx"),
               "--out", str(out), "--batch-size", "4", "--chunk-size", "8", "--workers", "1", "--no-progress"]
    killed = subprocess.run(command, env={**os.environ, ENV: "embed.chunk_committed=3"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    assert killed.returncode == -signal.SIGKILL  # killed right after committing its third chunk
    assert _chunks_done(out) == 3 and not (out / "meta.json").exists()
    assert main(command[1:] + ["--resume"]) == 0
    assert_same_output(tmp_path / "whole", out)
    assert sorted(p.name for p in out.iterdir()) == sorted([*IDENTITY, "timing.json"])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_and_awkward_files_never_stop_a_run(tiny: Path, tmp_path: Path) -> None:
    # badfiles.py marks animated.gif as listed, but .gif is not among the image suffixes san-embed discovers
    cases = [c for c in make_bad_files(tmp_path / "bad") if c.listed and Path(c.path).suffix.lower() in IMAGE_SUFFIXES]
    with open_backend(tiny / "model.onnx") as backend:
        result = embed_folder(tmp_path / "bad", backend, tmp_path / "out", runner=LocalRunner(1), progress=False)
    with open(tmp_path / "out" / "index.csv", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        index = {path: (status, error) for _, path, status, error in list(csv.reader(fh))[1:]}
    assert sorted(index) == sorted(c.path for c in cases)  # discovery lists exactly the listed kinds
    wrong = {c.name: index[c.path] for c in cases if not c.skip
             and (index[c.path][0] != c.outcome or c.reason not in index[c.path][1])}
    assert not wrong
    assert result.ok == sum(status == "ok" for status, _ in index.values()) > 0


def _chunks_done(out: Path) -> int:
    try:
        return json.loads((out / "progress.json").read_text())["chunks_done"]
    except (OSError, ValueError):
        return 0


class StubBackend(Backend):
    """Embeds a 8x4 image as (mean R, mean G, mean of column 0); an all-black image gives NaN."""

    name = "stub"

    def _activate(self) -> InputSpec:
        return InputSpec(height=8, width=4, embedding_dim=3)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32)
        out = np.stack([x[:, 0].mean((1, 2)), x[:, 1].mean((1, 2)), x[..., 0].mean((1, 2))], axis=1)
        out[x.max(axis=(1, 2, 3)) == 0] = np.nan
        return out

    def _deactivate(self) -> None:
        pass


@pytest.fixture
def stub(tmp_path: Path) -> StubBackend:
    artifact = tmp_path / "stub.bin"
    artifact.write_bytes(b"stub")
    return StubBackend(artifact)


def test_non_finite_embeddings_are_reported_with_their_files(stub: StubBackend, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name, value in (("a.png", 50), ("black.png", 0), ("c.png", 200)):
        Image.new("RGB", (4, 8), (value, value, value)).save(images / name)
    result = embed_folder(images, stub, tmp_path / "out", runner=LocalRunner(0), progress=False)
    assert result.failures == [("black.png", NON_FINITE)]
    embeddings = np.load(tmp_path / "out" / "embeddings.npy")
    assert embeddings.shape == (2, 3) and np.isfinite(embeddings).all()
    assert "-1,black.png,error," in (tmp_path / "out" / "index.csv").read_text()


def test_flip_tta_and_l2_normalisation(stub: StubBackend, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(1, 256, (8, 4, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "x.png")
    embed_folder(images, stub, tmp_path / "out", EmbedOptions(tta="flip", l2_normalize=True), runner=LocalRunner(0), progress=False)
    x = pixels.transpose(2, 0, 1)[None]
    expected = (stub.infer(x) + stub.infer(np.ascontiguousarray(x[..., ::-1]))) / 2
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "embeddings.npy"), expected, rtol=1e-6)


def test_shard_argument() -> None:
    assert Shard.parse("2/4") == Shard(2, 4)
    assert Shard(3, 3).chunk_range(10) == range(6, 10)
    for bad in ("0/2", "3/2", "two/4", "1-2"):
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(bad)
