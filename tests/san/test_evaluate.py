"""Evaluation: test-time views, embeddings vs direct model calls, metrics wiring, san-eval."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from san import InputSpec, ModelConfig, build_model, save_checkpoint
from san.cli.eval import main as eval_main
from san.data.augment import eval_views
from san.data.records import ImageRecord, ReidDataset
from san.data.registry import load_dataset
from san.evaluation.evaluate import ModelEmbedder, evaluate_model
from san.evaluation.metrics import euclidean_distance, evaluate_ranking
from san.evaluation.retrieval import embed_records
from san.io.preprocess import decode_image, load_image, resize_to_contract
from support.module_folders import ModuleFolders

SPEC = InputSpec(height=64, width=32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="resnet18", spec=SPEC)).eval()


@pytest.fixture(scope="module")
def images(module_tmp: ModuleFolders) -> list[ImageRecord]:
    """8 images: 4 pids x 2 cameras, each pid a noisy colour."""
    root = module_tmp.mktemp("images")
    rng = np.random.default_rng(0)
    records = []
    for pid in range(4):
        colour = rng.integers(0, 256, 3)
        for cam in range(2):
            pixels = np.clip(colour + rng.normal(0, 40, (90, 40, 3)), 0, 255).astype(np.uint8)
            path = root / f"{pid}_{cam}.png"
            Image.fromarray(pixels).save(path)
            records.append(ImageRecord(str(path), pid, cam))
    return records


def embed_directly(model, paths: list[str], flip: bool = False) -> np.ndarray:
    x = torch.from_numpy(np.stack([load_image(p, SPEC) for p in paths]))
    with torch.no_grad():
        out = model(x)
        if flip:
            out = (out + model(x.flip(-1))) / 2
    return out.numpy()


def test_eval_views(images: list[ImageRecord]) -> None:
    img = decode_image(images[0].path)
    plain = load_image(images[0].path, SPEC)
    assert np.array_equal(eval_views(img, SPEC, "none"), plain[None])
    assert np.array_equal(eval_views(img, SPEC, "flip"), np.stack([plain, plain[:, :, ::-1]]))
    ten = eval_views(img, SPEC, "tencrop")
    big = resize_to_contract(img, InputSpec(height=72, width=36))  # 1.125 x 64x32
    assert ten.shape == (10, 3, 64, 32)
    assert np.array_equal(ten[0], big[:, :64, :32]) and np.array_equal(ten[3], big[:, 8:, 4:])
    assert np.array_equal(ten[4], big[:, 4:68, 2:34])  # centre
    assert np.array_equal(ten[5:], ten[:5, :, :, ::-1])


def test_embeddings_match_direct_model_calls_and_bad_files_are_skipped(model, images, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    records = [*images[:3], ImageRecord(str(bad), 9, 0)]
    got = embed_records(ModelEmbedder(model), records, batch_size=2, workers=0)
    assert got.records == images[:3]
    assert got.failures and got.failures[0][0] == str(bad) and got.failures[0][1]
    np.testing.assert_allclose(got.features, embed_directly(model, [r.path for r in images[:3]]), rtol=1e-5, atol=1e-5)
    flipped = embed_records(ModelEmbedder(model), images[:3], tta="flip", workers=0)
    want = embed_directly(model, [r.path for r in images[:3]], flip=True)
    np.testing.assert_allclose(flipped.features, want, rtol=1e-5, atol=1e-5)


def test_evaluate_model_equals_metrics_on_brute_force_distances(model, images) -> None:
    query, gallery = images[0::2], images  # camera-0 images as queries
    report = evaluate_model(model, ReidDataset("toy", (), tuple(query), tuple(gallery)), workers=0, chunk=3)
    q = embed_directly(model, [r.path for r in query])
    g = embed_directly(model, [r.path for r in gallery])
    dist = np.array([[np.linalg.norm(a - b) for b in g] for a in q])
    ranking = evaluate_ranking(dist, [r.pid for r in query], [r.pid for r in gallery],
                               [r.camid for r in query], [r.camid for r in gallery])
    cmc, mAP = ranking.cmc, ranking.mAP
    assert report.mAP == pytest.approx(mAP, abs=1e-6)
    np.testing.assert_allclose(report.cmc, cmc)
    assert report.valid_queries == 4 and set(report.ranks) == {1, 5, 10, 20}
    assert "mAP" in report.render() and report.to_dict()["rank1_percent"] == 100 * report.cmc[0]


def test_san_eval_cli_uses_the_recorded_synthetic_set(model, tmp_path: Path, capsys) -> None:
    root = tmp_path / "synthetic"
    options = {"ids": 6, "cameras": 2, "height": 64, "width": 32}
    data = load_dataset("synthetic", root, verbose=False, **options)
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, model, extra={"data": {"dataset": "synthetic", "root": str(root), "options": options}})
    assert eval_main(["--ckpt", str(ckpt), "--json", "--workers", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "synthetic" and report["num_query"] == len(data.query)
    assert report["unreadable"] == [] and set(report) >= {"mAP_percent", "rank1_percent", "cmc_percent"}
    printed = eval_main(["--ckpt", str(ckpt), "--workers", "0", "--no-progress"]), capsys.readouterr().out
    assert printed[0] == 0 and f"mAP {report['mAP_percent']:5.1f}%" in printed[1]  # the units the text uses
    assert report["rank1_percent"] == pytest.approx(report["cmc_percent"][0]) and 0 <= report["rank1_percent"] <= 100

    png = tmp_path / "cmc.png"
    rc = eval_main(["--ckpt", str(ckpt), "--dataset", "synthetic", "--root", str(root), "--workers", "0",
                    "--cmc-png", str(png)])
    captured = capsys.readouterr()
    assert "rank-1" in captured.out
    if importlib.util.find_spec("matplotlib"):
        assert rc == 0 and png.is_file()
    else:
        assert rc == 2 and "needs matplotlib" in captured.err


def test_san_eval_cli_errors_name_the_problem(model, tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, model)
    assert eval_main(["--ckpt", str(ckpt)]) == 2
    assert "give --dataset" in capsys.readouterr().err
    assert eval_main(["--ckpt", str(ckpt), "--dataset", "market1501"]) == 2
    assert "--root is required" in capsys.readouterr().err
    assert eval_main(["--ckpt", str(tmp_path / "missing.pt"), "--dataset", "market1501", "--root", "x"]) == 2
    assert "not found" in capsys.readouterr().err


def test_evaluate_model_reranks_with_the_dense_k_reciprocal_distances(model, images) -> None:
    from san.evaluation.rerank import RerankParams, k_reciprocal_distances

    query, gallery = images[0::2], images
    params = RerankParams(k1=3, k2=2, lam=0.3)
    report = evaluate_model(model, ReidDataset("toy", (), tuple(query), tuple(gallery)), workers=0, rerank=params)
    q = embed_directly(model, [r.path for r in query])
    g = embed_directly(model, [r.path for r in gallery])
    dist = k_reciprocal_distances(euclidean_distance(q, g), euclidean_distance(q, q), euclidean_distance(g, g),
                                  params)
    ranking = evaluate_ranking(dist, [r.pid for r in query], [r.pid for r in gallery],
                               [r.camid for r in query], [r.camid for r in gallery])
    assert report.mAP == pytest.approx(ranking.mAP, abs=1e-6)
    assert "k-reciprocal re-ranking (k1 3, k2 2, lambda 0.3)" in report.protocol
