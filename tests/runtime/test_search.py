"""san-search: exact top-k (NumPy and FAISS) against brute force, query by image vs by row, pictures."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import EmbedOptions, LocalRunner, embed_folder, open_backend
from runtime.cli_search import main
from runtime.pictures import BORDER, COLOURS, PAD, mask_strip_size, person_id, ranked_list_size
from runtime.search import (
    FAISS_INDEX,
    SEARCH_META,
    EmbeddingFolder,
    FaissSearcher,
    NumpySearcher,
    SearchError,
    embed_query_images,
)
from san.data.synth import GALLERY, ensure_synthetic

ENGINES = [NumpySearcher, pytest.param("faiss", id="faiss")]


def engine(name: object) -> type:
    if name == "faiss":
        pytest.importorskip("faiss")
        return FaissSearcher
    return name  # type: ignore[return-value]


def brute_force(queries: np.ndarray, gallery: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: full distance matrix by broadcasting, full stable sort."""
    q, g = queries.astype(np.float64), gallery.astype(np.float64)
    if metric == "cosine":
        q, g = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
        dist = 1 - q @ g.T
    else:
        dist = np.linalg.norm(q[:, None, :] - g[None, :, :], axis=2)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("searcher", ENGINES)
def test_top_k_equals_brute_force(searcher: object, metric: str) -> None:
    rng = np.random.default_rng(0)
    gallery, queries = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(7, 16)).astype(np.float32)
    cls = engine(searcher)
    hits = cls(gallery, metric).search(queries, 10)
    rows, dist = brute_force(queries, gallery, 10, metric)
    np.testing.assert_array_equal(hits.rows, rows)
    np.testing.assert_allclose(hits.distances, dist, rtol=1e-4, atol=1e-4)
    everything = cls(gallery[:5], metric).search(queries, 50)  # k larger than the gallery: all of it
    assert everything.rows.shape == (7, 5)
    np.testing.assert_array_equal(everything.rows, brute_force(queries, gallery[:5], 5, metric)[0])


def test_numpy_search_chunks_queries_and_keeps_the_lower_row_among_equal_distances() -> None:
    gallery = np.array([[1, 0], [0, 1], [1, 0], [5, 5]], np.float32)  # rows 0 and 2 tie
    hits = NumpySearcher(gallery, chunk=2).search(np.array([[1, 0], [1, 0], [0, 1]], np.float32), 3)
    np.testing.assert_array_equal(hits.rows, [[0, 2, 1], [0, 2, 1], [1, 0, 2]])
    assert hits.distances[0, 0] == 0.0  # float64: an image is exactly 0 away from itself
    with pytest.raises(SearchError, match="-k must be"):
        NumpySearcher(gallery).search(gallery, 0)


@pytest.fixture(scope="module")
def folder(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gallery of a tiny synthetic set (Market-1501 names, so ids are known), embedded by san-embed."""
    data = tmp_path_factory.mktemp("search") / "synth"
    ensure_synthetic(data, ids=8, cameras=3, height=64, width=32)
    out = data.parent / "emb"
    with open_backend(tiny / "model.onnx", threads=1) as backend:
        embed_folder(data / GALLERY, backend, out, EmbedOptions(batch_size=8, l2_normalize=True), runner=LocalRunner(0),
                     progress=False)
    return out


def printed(capsys: pytest.CaptureFixture[str]) -> list[tuple[str, float]]:
    """(path, distance) of the result lines printed by ``san-search query``."""
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    return [(parts[2], float(parts[1])) for parts in lines if len(parts) == 3]


def test_a_folder_search_equals_brute_force_on_its_embeddings(folder: Path) -> None:
    emb = EmbeddingFolder.open(folder)
    assert len(emb.paths) == len(emb.vectors) > 10 and emb.options.l2_normalize
    for name in ("numpy", "faiss"):
        if name == "faiss":
            pytest.importorskip("faiss")
        hits = emb.searcher(name, "l2").search(np.asarray(emb.vectors), 5)
        rows, dist = brute_force(np.asarray(emb.vectors), np.asarray(emb.vectors), 5, "l2")
        np.testing.assert_array_equal(hits.rows, rows)
        np.testing.assert_allclose(hits.distances, dist, atol=1e-3)


def test_query_by_image_equals_query_by_its_row(folder: Path, tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    emb = EmbeddingFolder.open(folder)
    row = 4
    image = emb.image_root() / emb.paths[row]
    with open_backend(tiny / "model.onnx", threads=1) as backend:
        vector = embed_query_images(emb, backend, [image])  # with the folder's l2 normalisation
    np.testing.assert_allclose(vector[0], emb.vectors[row], atol=1e-6)
    assert main(["query", str(folder), "--engine", "numpy", "--rows", str(row), "-k", "6"]) == 0
    by_row = printed(capsys)
    assert main(["query", str(folder), "--engine", "numpy", "--images", str(image), "--model", str(tiny / "model.onnx"),
                 "--threads", "1", "-k", "6"]) == 0
    by_image = printed(capsys)
    assert [p for p, _ in by_image] == [p for p, _ in by_row] and by_row[0] == (emb.paths[row], 0.0)
    np.testing.assert_allclose([d for _, d in by_image], [d for _, d in by_row], atol=1e-4)


def test_build_saves_an_index_that_query_uses_and_refuses_once_embeddings_change(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "emb"
    shutil.copytree(folder, copy)
    assert main(["build", str(copy), "--engine", "numpy", "--metric", "cosine"]) == 0
    assert (copy / SEARCH_META).is_file() and not (copy / FAISS_INDEX).exists()
    assert EmbeddingFolder.open(copy).searcher().metric == "cosine"  # the saved choice
    if importlib.util.find_spec("faiss"):  # without faiss-cpu the saved FAISS index is not tested
        assert main(["build", str(copy)]) == 0 and (copy / FAISS_INDEX).is_file()
        saved = EmbeddingFolder.open(copy).searcher()
        assert isinstance(saved, FaissSearcher) and saved.index.ntotal == len(EmbeddingFolder.open(copy).paths)
    vectors = np.load(copy / "embeddings.npy")
    np.save(copy / "embeddings.npy", vectors[::-1].copy())
    capsys.readouterr()
    assert main(["query", str(copy), "--rows", "0"]) == 2
    assert "search.json: was built for other embeddings" in capsys.readouterr().err


def test_query_errors_name_the_argument(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", str(folder), "--rows", "999"]) == 2
    assert "--rows [999]" in capsys.readouterr().err
    assert main(["query", str(folder), "--images", "x.jpg"]) == 2
    assert "--images needs --model" in capsys.readouterr().err
    assert main(["query", str(tmp_path / "nowhere"), "--rows", "0"]) == 2
    assert "embeddings folder not found" in capsys.readouterr().err


def test_ranked_list_png_has_the_expected_size_and_frames(folder: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    emb = EmbeddingFolder.open(folder)
    rows = [i for i, p in enumerate(emb.paths) if (person_id(p) or 0) > 0][:2]  # two images of real ids
    assert main(["query", str(folder), "--rows", *map(str, rows), "-k", "4", "--png", str(tmp_path / "list.png")]) == 0
    for n in (1, 2):
        picture = Image.open(tmp_path / f"list-{n}.png")
        assert picture.format == "PNG" and picture.size == ranked_list_size(4, 128, 64)
        first_result_x = PAD + (64 + 2 * BORDER) + 18  # the query cell, then GAP
        assert picture.getpixel((first_result_x + 1, PAD + 1)) == COLOURS[True]  # rank 1 is the query itself
    assert person_id("0002_c1s1_000451_03.jpg") == 2 and person_id("-1_c1s1_000013_00.jpg") == -1
    assert person_id("0001_c2_f0046182.jpg") == 1 and person_id("holiday.jpg") is None


def test_attention_overlays_are_written_one_per_image(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = sorted((tiny / "images").glob("*.png"))[:2]
    assert main(["masks", "--ckpt", str(tiny / "model.pt"), "--images", *map(str, images), "--out", str(tmp_path)]) == 0
    written = capsys.readouterr().out.split()
    assert [Path(p).name for p in written] == [f"{p.stem}_masks.png" for p in images]
    for path in written:
        assert Image.open(path).size == mask_strip_size(4, 64, 32)  # image + 4 attention blocks


def test_help_teaches_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("build", "query", "masks"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "example" in capsys.readouterr().out
