"""Smoke tests of the benchmark scripts: each runs end to end with ``--smoke`` and prints its
table ending in the ratios. No timing is asserted (times on shared machines are noise; the
scripts print ratios against their targets instead)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from san.contract.rules import RULES
from san.io.progress import INTERVAL_VARIABLE

ROOT = Path(__file__).resolve().parents[2]
TARGET_HEADER = "| target "


def run_script(script: str, *args: str) -> list[str]:
    """Run ``python benchmarks/<script> ARGS`` from the repository root; its stdout lines."""
    done = subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()


def table_header(lines: list[str], header: str) -> list[str]:
    """The column names of the markdown table that starts with ``header``."""
    line = next(line for line in lines if line.startswith(header))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def table_rows(lines: list[str], header: str) -> list[list[str]]:
    """The cells of the markdown table that starts with ``header`` (separator line dropped)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_embed_benchmark_smoke(tmp_path: Path) -> None:
    lines = run_script("embed.py", "--smoke", "--work", str(tmp_path),  # every CPU row but OpenVINO's bf16 ones
                       "--only", "torch,ort,int8,ray,ov-fp32,ov-int8,cuda-eager")
    header = table_header(lines, "| competitor ")
    rows = {row[0]: dict(zip(header, row)) for row in table_rows(lines, "| competitor ")}
    ratios = ("e2e x ref", "model x ref", "RSS x ref")
    for name in ("reference: torch eager loop", "san-embed torch", "san-embed onnxruntime fp32"):
        assert all(rows[name][r].endswith("x") for r in ratios), rows[name]
    assert rows["reference: torch eager loop"]["e2e x ref"] == "1.00x"
    int8 = rows["san-embed onnxruntime INT8 Q/DQ"]
    assert int8["RSS x ref"].endswith("x") or int8["img/s e2e"].startswith("skipped"), int8
    ray = rows["san-embed --ray onnxruntime fp32 (local Ray)"]
    assert ray["e2e x ref"].endswith("x") or ray["img/s e2e"].startswith("skipped"), ray
    if ray["e2e x ref"].endswith("x"):
        assert float(ray["min cos vs ref"]) >= 0.9999  # the same embeddings as the reference, through Ray
    # Each row is judged against the fp32 reference by its own precision's rule (the openvino
    # extra is installed): INT8 rows by the int8 rule, never by another runtime's INT8 rounding.
    for name, kind in (("san-embed onnxruntime INT8 Q/DQ", "int8"), ("san-embed OpenVINO fp32 at f32", "fp32"),
                       ("san-embed OpenVINO INT8 Q/DQ at f32", "int8")):
        assert rows[name]["e2e x ref"].endswith("x") and rows[name]["rule"] == f"{kind}: pass", rows[name]
        cosines = {"min_cosine_min": float(rows[name]["min cos vs ref"]),
                   "min_cosine_mean": float(rows[name]["cos mean vs ref"])}
        assert RULES[kind].breaches(kind, cosines) == [], rows[name]
    if subprocess.run([sys.executable, "-c", "import torch; assert torch.cuda.is_available()"]).returncode:
        assert rows["GPU: torch eager loop"]["img/s e2e"] == "skipped: no CUDA GPU"
    starts = {row[0]: row[1:] for row in table_rows(lines, "| first embedding after a start ")}
    assert list(starts) == ["onnxruntime fp32", "OpenVINO fp32 at f32", "OpenVINO INT8 Q/DQ at f32"]
    assert all(cold.isdigit() and warm.isdigit() and ratio.endswith("x") for cold, warm, ratio in starts.values())
    assert [p.name for p in tmp_path.glob("compile-cache-*")] != []  # the warm starts read what the cold ones wrote
    targets = table_rows(lines, TARGET_HEADER)
    assert [t[0] for t in targets] == [
        "ORT fp32 end-to-end / reference", "decode+resize / model time (ORT fp32)", "ORT INT8 end-to-end / reference"]
    assert lines[-1].startswith("| ORT INT8 end-to-end / reference")


@pytest.mark.slow
def test_train_step_benchmark_smoke() -> None:
    lines = run_script("train_step.py", "--smoke")
    rows = table_rows(lines, "| model ")
    assert len(rows) == 2 and rows[0][-4:] == ["1.00x"] * 4
    assert all(row[-1].endswith("x") for row in rows)
    assert table_rows(lines, TARGET_HEADER)[0][0] == "SAN step / baseline step"
    assert lines[-1].startswith("| SAN step / baseline step")


@pytest.mark.slow
def test_search_benchmark_smoke() -> None:
    lines = run_script("search.py", "--smoke")
    rows = {row[0]: row for row in table_rows(lines, "| index ")}
    assert list(rows) == ["numpy (exact)", "faiss flat", "faiss IVF64,Flat nprobe 4", "faiss HNSW32 efSearch 32"]
    assert rows["numpy (exact)"][2] == rows["numpy (exact)"][4] == "1.00x"
    assert rows["faiss flat"][-1] == "1.0000"  # exact: every true neighbour found
    assert all(0 < float(row[-1]) <= 1 and row[4].endswith("x") for row in rows.values())


def stats_module():
    """benchmarks/seed_stats.py, the ablation's statistics."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import seed_stats
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return seed_stats


def test_paired_analysis_over_seeds_matches_a_hand_computation() -> None:
    """Three seed pairs with differences 1, 2, 3: mean 2, SD 1, t(0.975, 2) = 4.303, t(0.80, 2) =
    1.061, so the interval is 2 -+ 4.303 / sqrt 3 = [-0.484, 4.484] and the smallest effect
    detected with 80 % power is (4.303 + 1.061) / sqrt 3 = 3.097."""
    stats = stats_module()
    d = stats.paired_over_seeds([10.0, 20.0, 30.0], [11.0, 22.0, 33.0])
    assert (d.delta, d.sd, d.pairs) == (pytest.approx(2.0), pytest.approx(1.0), 3)
    assert d.low == pytest.approx(2 - 4.303 / 3**0.5) and d.high == pytest.approx(2 + 4.303 / 3**0.5)
    assert d.detectable == pytest.approx((4.303 + 1.061) / 3**0.5)
    assert d.verdict(2.2) == "unresolved"
    assert stats.paired_over_seeds([0.0] * 8, [3.0, 4, 5, 3, 4, 5, 3, 4]).verdict(2.2) == "supported"
    assert stats.paired_over_seeds([0.0] * 8, [-1.0, 0, 1, 0, -1, 1, 0, 0]).verdict(2.2) == "contradicted at +2.2"
    with pytest.raises(ValueError, match="two or more pairs"):
        stats.paired_over_seeds([1.0], [2.0])


@pytest.mark.slow
def test_ablation_selects_on_the_twin_split_decides_on_the_test_split_and_never_retrains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = ["--smoke", "--work", str(tmp_path)]
    monkeypatch.setenv(INTERVAL_VARIABLE, "1e-6")  # a progress line per step: its output goes to a pipe
    lines = run_script("ablation.py", "--select", "--seeds", "2", "--variants", "baseline", "san",
                       "san-nearest-warmup", *work)
    assert any(re.fullmatch(r"epoch 1/1: \d+/\d+ batch \(100%\), \d+:\d\d elapsed", line) for line in lines), lines
    assert any(line.startswith("epoch 1/1: loss ") for line in lines)  # each run's epoch line
    monkeypatch.delenv(INTERVAL_VARIABLE)
    runs = tmp_path / "48ids-64x32-1ep"
    assert not list(runs.rglob("scores.npz"))  # the test split is not scored while choosing
    chosen = json.loads((runs / "selection.json").read_text())["chosen"]
    assert chosen in ("san", "san-nearest-warmup") and any(line.startswith("selection on the held-out") for line in lines)
    record = json.loads((runs / "san-nearest-warmup" / "seed0" / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(record["validation"]) == {"mAP", "rank1"} and set(record["masks"]) == {"1", "2", "3", "4"}
    assert [row[1] for row in table_rows(lines, "| epoch ")] == ["san", "san-nearest-warmup"]
    assert (runs / "mask-health.png").stat().st_size > 0
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/seed*/model.pt")}
    lines = run_script("ablation.py", "--decide", "--seeds", "2", *work)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the chosen runs are reused, not retrained
    decision = {row[0]: row for row in table_rows(lines, "| metric ")}
    assert list(decision) == ["mAP", "rank-1"] and decision["mAP"][6] == "+2.2"
    assert decision["mAP"][7] in ("supported", "unresolved", "contradicted at +2.2")
    per_seed = json.loads((runs / "ablation.json").read_text())
    maps = [[100 * r["mAP"] for r in per_seed[name]] for name in ("baseline", chosen)]
    expected = stats_module().paired_over_seeds(*maps)
    assert decision["mAP"][3] == f"{expected.delta:+.2f} [{expected.low:+.2f}, {expected.high:+.2f}]"
    assert [row[0] for row in table_rows(lines, "| deployment ")] == [
        "sampled, mean of 3 draws", "deployed 0.5", "deployed, swept threshold", "deployed 0.5, BatchNorm re-estimated",
        "noise-free, sigmoid(logit(pi)/tau)"]
    decide = f"python benchmarks/ablation.py --decide --seeds 2 {' '.join(work)}"
    assert "test split: every run here was scored on it first by this command" in lines
    assert json.loads((runs / chosen / "seed1" / "test-scored-by.json").read_text()) == [decide]

    twin = run_script("ablation.py", "--twin-masks", "--seeds", "2", "--variants", chosen, *work)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert [row[0] for row in table_rows(twin, "| deployment ")] == [
        "deployed 0.5", "deployed, swept threshold", "noise-free, sigmoid(logit(pi)/tau)"]
    assert any(re.match(r"deployed masks of .*, seeds 0\.\.1, on the held-out twin split \(\d+ queries", line)
               for line in twin)
    assert sorted(p.name for p in (runs / chosen / "seed1" / "deployment-twin").iterdir())[-1] == "noise-free.npz"

    confirm = run_script("ablation.py", "--confirm-masks", "--seeds", "2", "--variants", chosen, *work)
    rows = {row[0]: row for row in table_rows(confirm, "| deployment ")}
    assert list(rows) == ["deployed 0.5", "deployed, swept threshold", "noise-free, sigmoid(logit(pi)/tau)"]
    own = [100 * float(np.load(runs / chosen / f"seed{s}" / "scores.npz")["ap"].mean()) for s in (0, 1)]
    assert rows["deployed 0.5"][1] == f"{np.mean(own):.2f}"  # each run's own test scoring, not repeated
    assert any(re.match(r"deployed masks of .*, seeds 0\.\.1, on the test split \(\d+ queries\), 1\[pi > 0\.5\] from "
                        r"each run's own scoring", line) for line in confirm)
    assert json.loads((runs / chosen / "seed1" / "test-scored-by.json").read_text()) == [
        decide, f"python benchmarks/ablation.py --confirm-masks --seeds 2 --variants {chosen} {' '.join(work)}"]

    lines = run_script("ablation.py", *work)  # the plain smoke: baseline and SAN, seed 0, already trained
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    earlier = [f"- baseline seed 0: `{decide}`"] + ([f"- san seed 0: `{decide}`"] if chosen == "san" else [])
    start = lines.index("test split scored first by another command:") + 1
    assert list(itertools.takewhile(lambda line: line.startswith("- "), lines[start:])) == earlier
    rows = {row[0]: row for row in table_rows(lines, "| variant ")}
    assert list(rows) == ["ResNet baseline", "SAN (full)"]
    assert rows["SAN (full)"][-2] == "70.1 / 85.9"  # the paper's row, for orientation
    assert rows["SAN (full)"][3] == "ResNet baseline"  # what its differences are measured against
    assert rows["SAN (full)"][4] == "(one seed)" and rows["SAN (full)"][6].count("[") == 1  # paired over queries
    masks = {row[0]: float(row[1].rstrip(" %")) for row in table_rows(lines, "| masks ")}
    assert masks["SAN (full): deployed (threshold)"] == 100.0  # hard masks are exactly 0 or 1
    assert 0 <= masks["SAN (full): sampled (training mode)"] <= 100
    assert (runs / "mask-sharpness.png").stat().st_size > 0
    again = run_script("ablation.py", *work)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished runs are not trained again
    assert table_rows(again, "| variant ") == table_rows(lines, "| variant ")

    data = {p: p.stat().st_mtime_ns for p in (tmp_path / "synthetic-48ids-64x32").rglob("*.jpg")}
    lines = run_script("ablation.py", "--ids", "48", "--height", "64", "--width", "32", "--epochs", "2", "--seeds",
                       "1", "--variants", "baseline-pretrained", "--work", str(tmp_path))
    assert [row[0] for row in table_rows(lines, "| variant ")] == [
        "ResNet baseline", "ResNet baseline, backbone pretrained (same cameras)"]
    runs = tmp_path / "48ids-64x32-2ep"
    assert json.loads((runs / "baseline" / "seed0" / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 2
    assert data and {p: p.stat().st_mtime_ns for p in data} == data  # another budget trains anew on the same data
    pretrain = json.loads((runs / "pretrain-same-cameras" / "metrics.jsonl").read_text().splitlines()[-1])
    made = json.loads((tmp_path / "pretraining-same-cameras-48ids-64x32" / "synth.json").read_text())["params"]
    assert pretrain["epoch"] == 2 and made["first_pid"] == 48 + 40 + 1  # after the test set's and its twin's people
    backbone = torch.load(runs / "pretrain-same-cameras" / "backbone.pth", weights_only=True)
    torchvision.models.resnet18(num_classes=1).load_state_dict(  # torchvision's own layout, all but fc
        {**backbone, "fc.weight": torch.zeros(1, 512), "fc.bias": torch.zeros(1)})
    started = torch.load(runs / "baseline-pretrained" / "seed0" / "model.pt", weights_only=True)
    assert started["training"]["config"]["recipe"]["pretrained"] == str(runs / "pretrain-same-cameras" / "backbone.pth")


@pytest.mark.parametrize("script", ["embed.py", "train_step.py", "calibration_sweep.py", "rerank.py", "search.py", "deepstream_scaling.py",
                                    "ablation.py"])
def test_benchmark_help(script: str) -> None:
    assert "--smoke" in "\n".join(run_script(script, "--help"))


@pytest.mark.slow
def test_calibration_sweep_smoke(tmp_path: Path) -> None:
    lines = run_script("calibration_sweep.py", "--smoke", "--work", str(tmp_path))
    rows = table_rows(lines, "| setting ")
    assert [(r[0], r[1]) for r in rows] == [
        ("default", "0"), ("float_head=False", "0"), ("float_blocks=0", "0"), ("float_blocks=2", "0"),
        ("method=minmax", "0"), ("default", "1")]
    assert all(r[4].startswith("[") and 0 <= float(r[5]) <= 1 for r in rows)  # rank-1 interval, McNemar p
    assert all(len(r[8].split(" / ")) == 4 and r[9].endswith("x") for r in rows)  # four blocks' flips, a speed ratio
    bound = table_rows(lines, TARGET_HEADER)
    assert len(bound) == len(rows) and all(b[2] == "<= 1 point" for b in bound)


@pytest.mark.slow
def test_rerank_benchmark_smoke(tmp_path: Path) -> None:
    lines = run_script("rerank.py", "--smoke", "--work", str(tmp_path))
    rows = table_rows(lines, "| ranking ")
    assert [row[0] for row in rows] == ["Euclidean", "k-reciprocal (k1 6, k2 3, lambda 0.3)"]
    assert rows[1][3].count("[") == 1 and lines[-1].startswith("rank-1 gained by")


def test_deepstream_scaling_measures_what_each_crop_resize_costs(tmp_path: Path) -> None:
    """Crops 2x the input, resized as the contract, as DeepStream's bilinear and nearest filters:
    nearest samples one pixel of each 2x2 block, so its embeddings stray further from the
    contract's than bilinear's, which averages four; every row gets mAP and rank-1 with deltas
    paired over the same queries."""
    lines = run_script("deepstream_scaling.py", "--smoke", "--factors", "2", "--ids", "40", "--work", str(tmp_path))
    header = table_header(lines, "| resize ")
    rows = {row[0]: dict(zip(header, row)) for row in table_rows(lines, "| resize ")}
    contract, bilinear, nearest = (rows[name] for name in (
        "contract: PIL bilinear, antialiased", "GPU bilinear, 4 taps (scaling-filter=1)", "nearest (nvinfer's default)"))
    assert contract["cos min"] == "1.0000" and contract["ΔmAP vs contract [95 %]"] == ""
    assert float(nearest["cos mean"]) < float(bilinear["cos mean"]) < 1.0
    for row in (bilinear, nearest):
        delta = re.fullmatch(r"([+-]\d+\.\d\d) \[([+-]\d+\.\d\d), ([+-]\d+\.\d\d)\]", row["ΔmAP vs contract [95 %]"])
        assert delta and float(delta[2]) <= float(delta[1]) <= float(delta[3])
        assert abs(float(row["mAP %"]) - float(contract["mAP %"]) - float(delta[1])) < 0.02


def test_openvino_int8_benchmark_judges_each_quantizer_by_the_int8_rule(tiny: Path, tmp_path: Path) -> None:
    """The NNCF comparison runs whole on a tiny model: every row timed and judged; NNCF's rows say
    why they are missing where NNCF is not installed."""
    import shutil

    from calibration.quantize import QuantizeOptions, quantize_onnx
    from san.data.synth import ensure_synthetic

    for name in ("model.pt", "model.onnx"):
        shutil.copy(tiny / name, tmp_path / name)
    ensure_synthetic(tmp_path / "train", ids=6, cameras=2, height=64, width=32)
    ensure_synthetic(tmp_path / "twin", ids=8, cameras=2, height=64, width=32, first_pid=101, test_fraction=0.75)
    calibration = sorted((tmp_path / "train" / "bounding_box_train").glob("*.jpg"))[:8]
    quantize_onnx(tmp_path / "model.onnx", calibration, tmp_path / "model.int8.onnx",
                  options=QuantizeOptions(batch_size=4, progress=False))
    lines = run_script("openvino_int8.py", "--smoke", "--ckpt", str(tmp_path / "model.pt"),
                       "--calib-images", str(tmp_path / "train" / "bounding_box_train"),
                       "--eval-root", str(tmp_path / "twin"), "--threads", "1")
    rows = {row[0]: row for row in table_rows(lines, "| model ")}
    assert list(rows)[:3] == ["onnxruntime fp32", "OpenVINO fp32 at f32", "OpenVINO, the toolkit's Q/DQ file"]
    assert rows["onnxruntime fp32"][1:3] == ["1.00x", "1.00x"] and rows["onnxruntime fp32"][-1] == "fp32: pass"
    assert rows["OpenVINO fp32 at f32"][-1] == "fp32: pass" and rows["OpenVINO, the toolkit's Q/DQ file"][-1].startswith("int8: ")
    for name in ("OpenVINO, NNCF, the toolkit's placement ignored", "OpenVINO, NNCF defaults"):
        assert rows[name][-1].startswith("int8: ") or rows[name][1].startswith("skipped: ")


def test_kernel_precisions_are_read_from_openvino_exec_types() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from openvino_profile import kernel_precision
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    cases = {"brgconv_avx512_amx_I8": "int8", "jit_avx512_U8": "int8", "brgconv_avx512_amx_BF16": "bf16",
             "jit_avx2_FP32": "f32", "ref_any_f32": "f32", "unknown": "other", "undef": "other"}
    assert {exec_type: kernel_precision(exec_type) for exec_type in cases} == cases


def test_openvino_profile_smoke(tiny: Path, tmp_path: Path) -> None:
    """Every configuration of the suite's model (it looks trained) is profiled and its time split by
    kernel precision sums to the whole; the fp32 file at f32 runs in f32 kernels and the INT8 file
    runs some in INT8."""
    from runtime.machine import instruction_sets

    lines = run_script("openvino_profile.py", "--smoke", "--ckpt", str(tiny / "model.pt"), "--work", str(tmp_path),
                       "--threads", "1")
    peaks = next(line for line in lines if line.startswith("peak of 1x1 convolutions"))
    assert all(f"{precision} " in peaks for precision in ("f32", "bf16", "int8"))
    header = table_header(lines, "| configuration ")
    rows = {row[0]: dict(zip(header, row)) for row in table_rows(lines, "| configuration ")}
    assert list(rows) == ["fp32 file at f32", "fp32 file at bf16", "INT8 Q/DQ at f32", "INT8 Q/DQ at bf16"]
    shares = ("% time int8", "% bf16", "% f32", "% other")
    for name, row in rows.items():
        assert float(row["img/s"]) > 0 and 97 <= sum(int(row[s]) for s in shares) <= 103, (name, row)
    assert int(rows["fp32 file at f32"]["% f32"]) > 50 and int(rows["INT8 Q/DQ at f32"]["% time int8"]) > 0
    bf16 = bool({"avx512_bf16", "amx_bf16"} & set(instruction_sets()))  # elsewhere OpenVINO runs bf16 as f32
    assert (int(rows["fp32 file at bf16"]["% bf16"]) > 50) == bf16, rows["fp32 file at bf16"]


def test_delta_of_deltas_pairs_each_conditions_difference_over_seeds(tmp_path: Path) -> None:
    """Hand-computed: Δ first = 0, 10, 20 and Δ second = 10, 10, 10 (mAP %), so Δ second − Δ first is
    10, 0, -10: mean 0, SD 10, half-width t(0.975, 2) · 10 / √3 = 4.303 · 5.7735 = 24.84."""
    def write(folder: str, san: list[float], baseline: list[float]) -> Path:
        (tmp_path / folder).mkdir()
        runs = {"san": [{"mAP": m, "rank1": 0.0} for m in san], "baseline": [{"mAP": m, "rank1": 0.0} for m in baseline]}
        (tmp_path / folder / "ablation.json").write_text(json.dumps(runs))
        return tmp_path / folder

    first, second = write("12ep", [0.10, 0.20, 0.30], [0.10] * 3), write("30ep", [0.20] * 3, [0.10] * 3)
    lines = run_script("delta_of_deltas.py", str(first), str(second))
    assert [row[3] for row in table_rows(lines, "| seed ")] == ["+10.00", "+0.00", "-10.00"]
    assert lines[-1].startswith("Δ second − Δ first, paired over 3 seeds: +0.00 [-24.84, +24.84] (SD 10.00, ")
    assert any(line.startswith("Δ first (san − baseline") and "+10.00 [-14.84, +34.84]" in line for line in lines)
