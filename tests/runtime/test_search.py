"""san-search: exact top-k (NumPy and FAISS) against brute force, query by image vs by row, pictures."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import EmbedOptions, LocalRunner, embed_folder, open_backend
from runtime.cli_search import main
from runtime.pictures import BORDER, COLOURS, GAP, LEGEND, LINE, PAD, QUERY_COLOUR, mask_strip_size, person_id, ranked_list_size
from runtime.search import (
    FAISS_INDEX,
    SEARCH_META,
    EmbeddingFolder,
    FaissSearcher,
    Hits,
    NumpySearcher,
    SearchError,
    embed_query_images,
    recall_at_k,
    reranked_search,
)
from san.contract.spec import InputSpec
from san.data.synth import GALLERY, ensure_synthetic
from san.evaluation.metrics import euclidean_distance
from san.evaluation.rerank import RerankParams, k_reciprocal_distances
from support.module_folders import ModuleFolders

ENGINES = [NumpySearcher, pytest.param("faiss", id="faiss")]


def engine(name: object) -> object:
    if name == "faiss":
        pytest.importorskip("faiss")
        return FaissSearcher.exact
    return name


def brute_force(queries: np.ndarray, gallery: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: full distance matrix by broadcasting (100 queries at a time, so a
    4000 x 4000 matrix takes 100 MB, not 8 GB), full stable sort."""
    q, g = queries.astype(np.float64), gallery.astype(np.float64)
    if metric == "cosine":
        q, g = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
        dist = 1 - q @ g.T
    else:
        dist = np.concatenate([np.linalg.norm(q[i : i + 100, None, :] - g[None, :, :], axis=2)
                               for i in range(0, len(q), 100)])
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
def folder(tiny: Path, module_tmp: ModuleFolders) -> Path:
    """The gallery of a tiny synthetic set (Market-1501 names, so ids are known), embedded by san-embed."""
    data = module_tmp.mktemp("search") / "synth"
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
    assert main(["build", str(copy), "--index", "numpy", "--metric", "cosine"]) == 0
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
    Image.new("RGB", (32, 64)).save(tmp_path / "x.jpg")
    assert main(["query", str(folder), "--images", str(tmp_path / "x.jpg")]) == 2
    assert "--images needs --model" in capsys.readouterr().err
    assert main(["query", str(tmp_path / "nowhere"), "--rows", "0"]) == 2
    assert "nowhere: folder not found" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(folder, unfinished)
    (unfinished / "progress.json").write_text("{}")  # as a killed san-embed leaves it
    assert main(["query", str(unfinished), "--rows", "0"]) == 2
    assert capsys.readouterr().err == (f"san-search query: error: {unfinished}: an unfinished san-embed run "
                                       "(progress.json is there); finish it with san-embed --resume and the same "
                                       "arguments\n")
    assert main(["query", str(tmp_path), "--rows", "0"]) == 2  # a folder of images, say
    err = capsys.readouterr().err
    assert err.endswith("not san-embed output (no meta.json); give the --out folder of a finished san-embed run\n")
    assert "--resume" not in err


def test_pictures_read_no_image_whose_indexed_path_leaves_the_image_root(folder: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A foreign folder's index names images by ``..`` and by an absolute path; both exist, in a
    colour no tile of the gallery has, and neither reaches the picture."""
    emb_dir = tmp_path / "emb"
    shutil.copytree(folder, emb_dir)
    emb = EmbeddingFolder.open(emb_dir)
    root = emb.image_root()
    rows = emb.searcher("numpy").search(np.asarray(emb.vectors[:1]), 4).rows[0]
    colour = (17, 201, 233)
    outside = tmp_path / "outside.png"
    Image.new("RGB", (32, 64), colour).save(outside)
    names = {int(rows[1]): os.path.relpath(outside, root), int(rows[2]): str(outside)}
    assert names[int(rows[1])].startswith("..")
    lines = (emb_dir / "index.csv").read_text().splitlines()
    for row, name in names.items():
        cells = lines[row + 1].split(",")
        lines[row + 1] = ",".join([cells[0], name, *cells[2:]])
    (emb_dir / "index.csv").write_text("\n".join(lines) + "\n")
    assert main(["query", str(emb_dir), "--rows", "0", "-k", "4", "--png", str(tmp_path / "list.png")]) == 0
    out = capsys.readouterr().out
    assert f"skipped 2 image(s) whose path in {emb_dir / 'index.csv'} leaves the image root {root}" in out
    pixels = np.asarray(Image.open(tmp_path / "list.png").convert("RGB")).reshape(-1, 3)
    assert not (pixels == colour).all(axis=1).any()
    assert (pixels == COLOURS[True]).all(axis=1).any()  # the images inside the root are drawn


def test_ranked_list_png_has_the_expected_size_and_frames(folder: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    emb = EmbeddingFolder.open(folder)
    rows = [i for i, p in enumerate(emb.paths) if (person_id(p) or 0) > 0][:2]  # two images of real ids
    assert main(["query", str(folder), "--rows", *map(str, rows), "-k", "4", "--png", str(tmp_path / "list.png")]) == 0
    width = round(160 * emb.spec.width / emb.spec.height)  # tiles 160 pixels high, the contract's aspect
    for n in (1, 2):
        picture = Image.open(tmp_path / f"list-{n}.png")
        assert picture.format == "PNG" and picture.size == ranked_list_size(4, 160, width)
        first_result_x = PAD + (width + 2 * BORDER) + GAP  # the query cell, then GAP
        top = LEGEND + PAD
        assert picture.getpixel((PAD + 1, top + 1)) == QUERY_COLOUR
        assert picture.getpixel((first_result_x + 1, top + 1)) == COLOURS[True]  # rank 1 is the query itself
        legend = np.asarray(picture)[PAD : PAD + LINE - 6, : picture.width // 2].reshape(-1, 3)
        assert all((legend == colour).all(axis=1).any() for colour in (QUERY_COLOUR, *COLOURS.values()))
    assert person_id("0002_c1s1_000451_03.jpg") == 2 and person_id("-1_c1s1_000013_00.jpg") == -1
    assert person_id("0001_c2_f0046182.jpg") == 1 and person_id("holiday.jpg") is None


def test_attention_overlays_are_written_one_per_image(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = sorted((tiny / "images").glob("*.png"))[:2]
    assert main(["masks", "--ckpt", str(tiny / "model.pt"), "--images", *map(str, images), "--out", str(tmp_path)]) == 0
    written = capsys.readouterr().out.split()
    assert [Path(p).name for p in written] == [f"{p.stem}_masks.png" for p in images]
    assert main(["masks", "--ckpt", str(tiny / "model.pt"), "--images", str(images[0]), "--out", str(tmp_path / "a"),
                 "--device", "auto"]) == 0  # this machine's GPU if it has one, else the CPU
    assert capsys.readouterr().out.split() == [str(tmp_path / "a" / f"{images[0].stem}_masks.png")]
    assert main(["masks", "--ckpt", str(tiny / "model.pt"), "--images", str(images[0]), "--out", str(tmp_path / "b"),
                 "--device", "npu"]) == 2
    assert capsys.readouterr().err == ("san-search masks: error: --device npu is OpenVINO's; a PyTorch model runs on "
                                       "cpu, cuda[:N] or auto\n")
    for path in written:
        picture = Image.open(path)
        assert picture.size == mask_strip_size(4, 64, 32)  # image + 4 attention blocks
        assert picture.height >= 256 + 3 * LINE and picture.width >= 5 * 128  # tiles 4x the 64x32 input


def test_help_teaches_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("build", "query", "masks"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "example" in capsys.readouterr().out


def vector_folder(root: Path, vectors: np.ndarray) -> Path:
    """A finished san-embed folder holding ``vectors`` (one made-up file per row)."""
    root.mkdir(parents=True)
    np.save(root / "embeddings.npy", vectors.astype(np.float32))
    lines = ["row,path,status,error"] + [f"{i},p{i:06d}.jpg,ok," for i in range(len(vectors))]
    (root / "index.csv").write_text("\n".join(lines) + "\n")
    meta = {"contract": InputSpec(embedding_dim=vectors.shape[1]).to_dict(), "options": {},
            "counts": {"images": len(vectors), "ok": len(vectors), "failed": 0}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def clustered_vectors(n: int, dim: int = 32, clusters: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


def test_recall_at_k_counts_the_exact_top_k_found() -> None:
    class Fixed:
        metric = "l2"

        def __init__(self, rows: list[list[int]]) -> None:
            self.rows = np.array(rows)

        def search(self, queries: np.ndarray, k: int) -> Hits:
            return Hits(self.rows[:, :k], np.zeros(self.rows[:, :k].shape))

    truth = Fixed([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = Fixed([[4, 3, 9, 9], [5, 0, 0, 0]])  # 2 of 4, then 1 of 4
    assert recall_at_k(found, truth, np.zeros((2, 1)), k=4) == pytest.approx((2 / 4 + 1 / 4) / 2)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_records_the_recall_brute_force_measures(kind: str, metric: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("faiss")
    vectors = clustered_vectors(4000)
    root = vector_folder(tmp_path / "emb", vectors)
    n = len(vectors)
    flags = ["--nprobe", "1"] if kind == "ivf" else ["--ef-search", "10"]
    assert main(["build", str(root), "--index", kind, "--metric", metric, "--recall-queries", str(n), *flags]) == 0
    assert "recall@10" in capsys.readouterr().out
    record = json.loads((root / SEARCH_META).read_text())
    factory = f"IVF{min(round(4 * n**0.5), n // 39)},Flat" if kind == "ivf" else "HNSW32"
    assert record["factory"] == factory and record["metric"] == metric and record["recall_at_10"]["queries"] == n
    if kind == "ivf":  # every training point set aside: 39..256 per list
        assert record["train_rows"] == min(n, 256 * int(factory[3:].split(",")[0])) >= 39 * int(factory[3:].split(",")[0])
    saved = EmbeddingFolder.open(root).searcher()
    assert isinstance(saved, FaissSearcher) and saved.parameters == record["search_parameters"]
    found = saved.search(vectors, 10).rows
    truth = brute_force(vectors, vectors, 10, metric)[0]
    measured = np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth)])
    assert record["recall_at_10"]["value"] == pytest.approx(measured, abs=1e-4) and measured < 1.0
    wider = EmbeddingFolder.open(root).searcher(nprobe=10_000, ef_search=4000).search(vectors[:200], 10).rows
    assert np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(wider, truth[:200])]) == 1.0


def test_factory_strings_train_on_what_faiss_asks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("faiss")
    root = vector_folder(tmp_path / "emb", clustered_vectors(3000))
    assert main(["build", str(root), "--index", "IVF16,PQ8"]) == 2  # PQ's 256 centroids need 9984 rows
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "IVF16,PQ8 trains 256 centroids, which needs at least 9984 rows" in err
    assert main(["build", str(root), "--index", "IVF8,SQ8"]) == 0
    record = json.loads((root / SEARCH_META).read_text())
    assert record["train_rows"] == 256 * 8 and record["recall_at_10"] == {**record["recall_at_10"], "queries": 1000,
                                                                        "held_out": 3000 - 256 * 8}
    assert main(["build", str(root), "--index", "Nonsense12"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--index 'Nonsense12': FAISS cannot make it (could not parse index string Nonsense12)" in err
    assert ".cpp" not in err  # FAISS's C++ location is not the user's business


def test_bad_search_input_gets_one_line(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("faiss")
    copy = tmp_path / "emb"
    shutil.copytree(folder, copy)
    assert main(["build", str(copy), "--index", "flat", "--metric", "cosine"]) == 0
    capsys.readouterr()
    assert main(["query", str(copy), "--rows", "0", "--metric", "l2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the index was built for the cosine metric; query with --metric cosine" in err
    emb = EmbeddingFolder.open(copy)
    with pytest.raises(SearchError, match="queries of shape \\(1, 7\\) do not fit an index of 128-dimensional"):
        emb.searcher().search(np.zeros((1, 7), np.float32), 3)
    with pytest.raises(SearchError, match="do not fit embeddings of 128"):
        NumpySearcher(emb.vectors).search(np.zeros((1, 7), np.float32), 3)
    empty = vector_folder(tmp_path / "empty", np.zeros((0, 8), np.float32))
    assert main(["build", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no embeddings" in err


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_sparse_rerank_of_all_candidates_equals_the_dense_form(metric: str) -> None:
    g = clustered_vectors(300, dim=16, clusters=12, seed=2)
    queries = clustered_vectors(4, dim=16, clusters=12, seed=2)[:4] + 0.01
    params = RerankParams(k1=10, k2=4, lam=0.3)
    hits = reranked_search(NumpySearcher(g, metric), g, queries, k=15, candidates=len(g), params=params)
    space = (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)) if metric == "cosine" else (lambda x: x)
    gs, qs = space(g.astype(np.float64)), space(queries.astype(np.float64))
    scale = 4 * max((gs**2).sum(1).max(), (qs**2).sum(1).max())
    for i, q in enumerate(qs):  # the dense form over "this query + the stored rows", one scale
        dense = k_reciprocal_distances(euclidean_distance(q[None], gs), np.zeros((1, 1)), euclidean_distance(gs, gs),
                                       params, scale=scale)[0]
        np.testing.assert_array_equal(hits.rows[i], np.argsort(dense, kind="stable")[:15])
        np.testing.assert_allclose(hits.distances[i], np.sort(dense)[:15], atol=1e-5)


def test_query_rerank_prints_the_reranked_list(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    emb = EmbeddingFolder.open(folder)
    assert main(["query", str(folder), "--engine", "numpy", "--rows", "3", "-k", "5", "--rerank", "--k1", "6",
                 "--k2", "3", "--candidates", str(len(emb.paths))]) == 0
    shown = printed(capsys)
    expected = reranked_search(NumpySearcher(emb.vectors), emb.vectors, np.asarray(emb.vectors[3:4]), 5,
                               len(emb.paths), RerankParams(6, 3, 0.3))
    assert [p for p, _ in shown] == [emb.paths[r] for r in expected.rows[0]]
    assert main(["query", str(folder), "--rows", "3", "-k", "5", "--rerank", "--candidates", "4"]) == 2
    assert "--candidates 4 must be at least -k 5" in capsys.readouterr().err


FORGED_QUERY = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))  # the machine stays safe whatever the code does
from runtime.cli_search import main
status = main(["query", sys.argv[1], "--rows", "0"])
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))  # this program's own peak
print(int(peak.split()[1]) * 1024)
sys.exit(status)
"""


@pytest.mark.skipif(not importlib.util.find_spec("faiss"), reason="needs faiss-cpu")
@pytest.mark.parametrize("claimed", [4 * 2**30, 16 * 2**30])
def test_a_faiss_index_declaring_gigabytes_is_refused_before_they_are_allocated(claimed: int, tmp_path: Path) -> None:
    """A flat index whose codes array declares ``claimed`` bytes in a file of a few hundred: FAISS
    would allocate (and zero) them before finding the file short; refused in one line instead,
    the process never larger than its import."""
    import struct
    import subprocess
    import sys

    vectors = clustered_vectors(10, dim=8)
    root = vector_folder(tmp_path / "emb", vectors)
    assert main(["build", str(root), "--index", "flat"]) == 0
    data = bytearray((root / FAISS_INDEX).read_bytes())
    codes_size = 4 + 4 + 8 + 8 + 8 + 1 + 4  # IxF2 header: fourcc, d, ntotal, two dummies, is_trained, metric
    assert data[:4] == b"IxF2" and struct.unpack_from("<Q", data, codes_size)[0] == vectors.size
    struct.pack_into("<Q", data, codes_size, claimed // 4)  # counted in floats
    (root / FAISS_INDEX).write_bytes(data)
    done = subprocess.run([sys.executable, "-c", FORGED_QUERY, str(root)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"san-search query: error: {root / FAISS_INDEX}: asks for more than the 1.0 GiB an "
                                  f"index of {len(data)} bytes may take to read"), done.stderr
    assert int(done.stdout.split()[-1]) < 2**30  # nothing of the claim was allocated


def test_zero_recall_queries_builds_the_index_and_says_recall_was_not_measured(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    root = vector_folder(tmp_path / "emb", clustered_vectors(300, dim=8))
    kind = "hnsw" if importlib.util.find_spec("faiss") else "numpy"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the mean of no recall values warned before
        assert main(["build", str(root), "--index", kind, "--recall-queries", "0"]) == 0
    out = capsys.readouterr().out
    record = json.loads((root / SEARCH_META).read_text())
    if kind == "hnsw":
        assert "recall@10 not measured (0 queries asked)" in out and record["recall_at_10"]["value"] is None
    else:
        assert ": exact search ->" in out and record["recall_at_10"]["value"] == 1.0
