"""san-parity at small size: torch vs ORT fp32 (and INT8) on a tiny synthetic set, thresholds asserted,
metric deltas checked against an independent computation, a wrong artifact refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from runtime.cli_parity import main
from runtime.parity import Artifact, run_parity
from san.contract.rules import RULES, Rule, override_rules
from san.data.registry import load_dataset
from san.evaluation.metrics import PairedDelta, Rank1Change, euclidean_distance, evaluate_ranking, mcnemar_exact
from san.evaluation.retrieval import Comparison
from support.independent_retrieval import independent
from support.module_folders import ModuleFolders

SYNTH = {"ids": 8, "cameras": 3, "height": 64, "width": 32}


@pytest.fixture(scope="module")
def synth(module_tmp: ModuleFolders) -> Path:
    root = module_tmp.mktemp("parity") / "synth"
    load_dataset("synthetic", root, verbose=False, **SYNTH)
    return root


@pytest.fixture(scope="module")
def other_onnx(tiny: Path, module_tmp: ModuleFolders) -> Path:
    """A deliberately wrong artifact: the same graph and contract, every weight tensor shuffled
    (like another checkpoint's random initialisation, without a second export)."""
    model = onnx.load(tiny / "model.onnx")
    rng = np.random.default_rng(1)
    for tensor in model.graph.initializer:
        if len(tensor.dims) >= 2:
            values = numpy_helper.to_array(tensor)
            tensor.CopyFrom(numpy_helper.from_array(rng.permutation(values.ravel()).reshape(values.shape), tensor.name))
    path = module_tmp.mktemp("other") / "other.onnx"
    onnx.save(model, path)
    return path


def args(tiny: Path, synth: Path, *extra: str) -> list[str]:
    return ["--ckpt", str(tiny / "model.pt"), "--dataset", "synthetic", "--root", str(synth),
            "--threads", "1", "--workers", "1", "--no-progress", *extra]


def test_torch_vs_onnxruntime_fp32_passes_and_its_numbers_match_an_independent_computation(
    tiny: Path, synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(args(tiny, synth, "--onnx", str(tiny / "model.onnx"), "--draws", "0",
                     "--report", str(tmp_path / "p.json"), "--markdown", str(tmp_path / "p.md")))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASSED" in out and "onnx" in out
    report = json.loads((tmp_path / "p.json").read_text())
    torch_row, onnx_row = report["results"]
    assert (torch_row["kind"], onnx_row["kind"], report["passed"]) == ("reference", "fp32", True)
    tq, tg, t_map, t_rank1 = independent(tiny / "model.pt", synth)
    oq, og, o_map, o_rank1 = independent(tiny / "model.onnx", synth)
    assert report["num_query"] == len(tq) and report["num_gallery"] == len(tg)
    assert torch_row["retrieval"]["mAP_percent"] == pytest.approx(100 * t_map, abs=1e-7)  # percent, as printed
    assert onnx_row["retrieval"]["rank1_percent"] == pytest.approx(100 * o_rank1, abs=1e-7)
    c = onnx_row["comparison"]
    assert c["delta_map"] == pytest.approx(100 * (o_map - t_map), abs=1e-6)
    assert c["delta_rank"]["1"] == pytest.approx(100 * (o_rank1 - t_rank1), abs=1e-6)
    a, b = np.concatenate([tq, tg]), np.concatenate([oq, og])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert c["cosine_min"] == pytest.approx(cos.min(), abs=1e-6) and c["cosine_min"] >= RULES["fp32"].min_cosine_min
    assert c["top10_overlap"] == 1.0 and c["rank1_flips"] == 0
    assert abs(c["delta_map"]) <= RULES["fp32"].max_delta_map and abs(c["delta_rank"]["1"]) <= RULES["fp32"].max_delta_rank1
    markdown = (tmp_path / "p.md").read_text()
    assert markdown.startswith("# SAN parity report") and "| onnx | fp32 |" in markdown and "pass |" in markdown


def test_an_export_of_another_checkpoint_fails_naming_the_breached_thresholds(
    tiny: Path, synth: Path, other_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args(tiny, synth, "--onnx", str(other_onnx), "--draws", "0")) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "fp32.min_cosine_min" in out and "FAILED" in out
    assert "95 % intervals over queries" in out and "McNemar p = " in out
    assert "coarser than the ±0.5-point limit, so noise alone can breach it" in out  # 10 queries


def test_top10_overlap_and_flips_against_brute_force(tiny: Path, synth: Path, other_onnx: Path) -> None:
    report = run_parity(tiny / "model.pt", load_dataset("synthetic", synth, verbose=False),
                        [Artifact("onnx", other_onnx)], draws=0, options={"threads": 1}, workers=1)
    tq, tg, *_ = independent(tiny / "model.pt", synth)
    oq, og, *_ = independent(other_onnx, synth)

    def top10(q: np.ndarray, g: np.ndarray) -> np.ndarray:
        dist = np.linalg.norm(q[:, None].astype(np.float64) - g[None].astype(np.float64), axis=2)
        return np.argsort(dist, axis=1, kind="stable")[:, :10]

    a, b = top10(tq, tg), top10(oq, og)
    c = report.results[1].comparison
    assert c.top10_overlap == pytest.approx(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b)]))
    assert c.rank1_flips == int((a[:, 0] != b[:, 0]).sum()) > 0
    assert not report.passed and report.results[1].breaches
    # rank-1 gains and losses, query by query (Market protocol: same pid and camera is junk)
    data = load_dataset("synthetic", synth, verbose=False)
    gallery = [(r.pid, r.camid) for r in data.gallery]

    def hit(q: np.ndarray, g: np.ndarray, record) -> bool | None:
        kept = [j for j, (pid, cam) in enumerate(gallery) if not (pid == record.pid and cam == record.camid)]
        if not any(gallery[j][0] == record.pid for j in kept):
            return None  # no true match left: the query does not count
        dist = [float(np.linalg.norm(q.astype(np.float64) - g[j].astype(np.float64))) for j in kept]
        return gallery[kept[int(np.argmin(dist))]][0] == record.pid

    pairs = [(hit(tq[i], tg, r), hit(oq[i], og, r)) for i, r in enumerate(data.query)]
    pairs = [p for p in pairs if p[0] is not None]
    r1 = c.rank1_change
    assert (r1.gained, r1.lost) == (sum(b and not a for a, b in pairs), sum(a and not b for a, b in pairs))
    assert r1.p_value == mcnemar_exact(r1.gained, r1.lost)
    assert r1.delta.low <= c.delta_rank[1] <= r1.delta.high
    assert c.map_change.low <= c.delta_map <= c.map_change.high


def test_sampled_masks_are_scored_reproducibly_at_the_checkpoints_tau(tiny: Path, synth: Path) -> None:
    data = load_dataset("synthetic", synth, verbose=False)
    first, again = (run_parity(tiny / "model.pt", data, [], draws=2, seed=3, options={"threads": 1}, workers=1).stochastic
                    for _ in range(2))
    assert first.draws == 2 and first.tau == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}  # the random model's buffer
    assert [r.mAP for r in first.per_draw] == [r.mAP for r in again.per_draw]
    assert first.per_draw[0].mAP != first.per_draw[1].mAP  # the draws really sample
    assert first.delta_map == pytest.approx(100 * (first.mAP - first.deterministic.mAP))


def test_int8_from_san_calibrate_is_judged_by_the_int8_rule(
    tiny: Path, synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quantize = pytest.importorskip("calibration.quantize")
    from calibration.hygiene import folder_images, sample_images

    images = sample_images(folder_images(synth / "bounding_box_train", "--images"), 12, seed=0)
    int8 = quantize.quantize_onnx(tiny / "model.onnx", images, tmp_path / "model.int8.onnx",
                                  options=quantize.QuantizeOptions(batch_size=4, progress=False)).out
    # Random weights and 10 queries: rank-1 and mAP are noise (one query moves rank-1 by 10 points),
    # so this run gates the paired cosine only, at the int8 rule's own floor.
    relaxed = ["--limit", "int8.max_delta_map=none", "--limit", "int8.max_delta_rank1=none"]
    assert main(args(tiny, synth, "--onnx", str(tiny / "model.onnx"), "--int8", str(int8), "--draws", "0",
                     "--report", str(tmp_path / "p.json"), *relaxed)) == 0, capsys.readouterr().out
    rows = json.loads((tmp_path / "p.json").read_text())["results"]
    assert [r["kind"] for r in rows] == ["reference", "fp32", "int8"]
    c = rows[2]["comparison"]
    assert RULES["int8"].min_cosine_mean <= c["cosine_mean"] < 0.9999  # within the rule, and really quantized
    # The default int8 rule: exit 1 exactly when a limit is exceeded, naming each one.
    default = RULES["int8"]
    exceeded = [name for name, bad in (("int8.max_delta_map", abs(c["delta_map"]) > default.max_delta_map),
                                       ("int8.max_delta_rank1", abs(c["delta_rank"]["1"]) > default.max_delta_rank1),
                                       ("int8.min_cosine_mean", c["cosine_mean"] < default.min_cosine_mean)) if bad]
    capsys.readouterr()
    assert main(args(tiny, synth, "--int8", str(int8), "--draws", "0")) == (1 if exceeded else 0)
    out = capsys.readouterr().out
    assert all(name in out for name in exceeded) and out.count("FAILED int8.") == len(exceeded)
    assert main(args(tiny, synth, "--int8", str(tiny / "model.onnx"))) == 2  # an fp32 file passed as --int8
    assert "precision is 'fp32', not 'int8'" in capsys.readouterr().err


def test_rules_check_each_threshold_and_take_overrides() -> None:
    c = Comparison(delta_rank={1: 0.6, 5: 0.0, 10: 0.0}, cosine_min=0.9999, cosine_mean=1.0,
                   top10_overlap=0.9, rank1_flips=1, queries=10, map_change=PairedDelta(-0.5, -1.0, 0.0),
                   rank1_change=Rank1Change(PairedDelta(0.6, -1.0, 2.2), gained=1, lost=0, p_value=1.0))
    assert RULES["fp32"].breaches("fp32", c.measured()) == ["fp32.max_delta_rank1: 0.6 > 0.5"]  # limits are inclusive
    strict = Rule(min_top10_overlap=0.95, max_rank1_flips=0.0)
    assert strict.breaches("x", c.measured()) == ["x.min_top10_overlap: 0.9 < 0.95", "x.max_rank1_flips: 0.1 > 0"]
    rules = override_rules(RULES, ["int8.max_delta_map=2", "fp32.min_cosine_min=none", "fp16.max_rank1_flips=0"])
    assert rules["int8"].max_delta_map == 2 and rules["int8"].min_cosine_mean == RULES["int8"].min_cosine_mean
    assert rules["fp32"].min_cosine_min is None and RULES["fp32"].min_cosine_min == 0.99  # defaults untouched
    for bad in ("int8.max_delta_map", "int8.colour=1", "max_delta_map=1", "int8.max_delta_map=lots"):
        with pytest.raises(ValueError, match="--limit"):
            override_rules(RULES, [bad])


def test_cli_refuses_bad_arguments_with_exit_2(tiny: Path, synth: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args(tiny, synth)) == 2
    assert "give at least one of --onnx, --int8, --engine" in capsys.readouterr().err
    assert main(args(tiny, synth, "--onnx", str(tmp_path / "absent.onnx"))) == 2
    assert "--onnx" in capsys.readouterr().err
    assert main(args(tiny, synth, "--onnx", str(tiny / "model.onnx"), "--limit", "fp32.nope=1")) == 2
    assert "KIND.FIELD=VALUE" in capsys.readouterr().err
    assert main(args(tiny, synth, "--onnx", str(tiny / "nocontract.onnx"), "--draws", "0")) == 2
    assert "no input contract" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "fp32" in help_text and "min_cosine_mean=0.9999" in help_text


def test_rerank_scores_every_backend_on_re_ranked_distances(tiny: Path, synth: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from san.evaluation.rerank import RerankParams, k_reciprocal_distances

    code = main(args(tiny, synth, "--onnx", str(tiny / "model.onnx"), "--draws", "0", "--rerank", "--k1", "6",
                     "--k2", "3", "--report", str(tmp_path / "p.json"), "--json"))
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "p.json").read_text())
    assert json.loads(out[out.index("{"):]) == report  # --json prints the report --report writes
    assert any("k-reciprocal re-ranked distances (k1 6, k2 3, lambda 0.3)" in n for n in report["notes"])
    q, g, _, _ = independent(tiny / "model.onnx", synth)
    data = load_dataset("synthetic", synth, verbose=False)
    labels = [np.array([getattr(r, a) for r in s]) for a in ("pid", "camid") for s in (data.query, data.gallery)]
    dist = k_reciprocal_distances(euclidean_distance(q, g), euclidean_distance(q, q), euclidean_distance(g, g),
                                  RerankParams(6, 3, 0.3))
    assert report["results"][1]["retrieval"]["mAP_percent"] == pytest.approx(100 * evaluate_ranking(dist, *labels).mAP,
                                                                             abs=1e-2)



def test_quiet_is_a_deprecated_spelling_of_no_progress(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.cli_parity import build_parser

    given = ["--ckpt", str(tiny / "model.pt"), "--onnx", str(tiny / "model.onnx")]
    assert build_parser().parse_args(given).progress is True and capsys.readouterr().err == ""
    assert build_parser().parse_args([*given, "--no-progress"]).progress is False and capsys.readouterr().err == ""
    assert build_parser().parse_args([*given, "--quiet"]).progress is False
    assert capsys.readouterr().err == ("san-parity: note: --quiet is deprecated and will be removed in the next "
                                       "release; use --no-progress\n")


def test_json_prints_and_its_former_file_meaning_is_a_deprecated_spelling_of_report(
        tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.cli_parity import build_parser

    given = ["--ckpt", str(tiny / "model.pt"), "--onnx", str(tiny / "model.onnx")]
    parsed = build_parser().parse_args([*given, "--json"])
    assert (parsed.json, parsed.report, capsys.readouterr().err) == (True, None, "")
    parsed = build_parser().parse_args([*given, "--json", str(tmp_path / "p.json")])
    assert (parsed.json, parsed.report) == (False, tmp_path / "p.json")
    assert capsys.readouterr().err == ("san-parity: note: --json PATH is deprecated and will be removed in the next "
                                       "release; use --report PATH (--json alone prints JSON)\n")
