"""Ablation: the paper's Tables I and III and Fig. 2(b) at CPU scale, on the synthetic set.

Every variant trains under one budget (the ``cpu-demo`` preset: ResNet-18 at 128x64, P=8 x
K=4, Adam, the same synthetic data, augmentation and epochs) with several seeds, and is
scored on the same test split with deterministic masks::

    python benchmarks/ablation.py --quick     # 3 variants x 3 seeds x 12 epochs: the README table
    python benchmarks/ablation.py             # 9 variants x 5 seeds x 30 epochs (a GPU: --device cuda)
    python benchmarks/ablation.py --smoke     # a tiny pair, one epoch: it runs
    python benchmarks/ablation.py --variants san-pretrained san-block-1 --seeds 3 --epochs 12  # candidates

The candidates ask why SAN may trail the baseline at this budget; they are documented options,
never the defaults, each compared with full SAN. ``*-pretrained`` variants start their backbone
from the baseline trained on another synthetic set of other people, as the paper's start from
ImageNet; SAN's is compared with the baseline pretrained the same way. The set is filmed by the
same cameras (``same-cameras``), or by other ones (``other-cameras``: the generator's next seed).

Per variant: mAP and rank-1 as mean and 95 % t-interval over seeds; the difference to the row
it is measured against (the baseline, unless said otherwise) as a Welch interval over seeds
(the verdict: distinguishable from seed noise when it excludes 0) and paired over queries, as
``san-parity`` pairs them, on each query's AP and rank-1 hit averaged over the seeds. Then the mask-sharpness histogram (Fig. 2(b)) of the
first seed's sharp and soft models, sampled and deployed, and what the deterministic masks
cost: the sampled masks (mean of 3 draws) against the deployed ones at 0.5 and at the
threshold ``san-calibrate threshold`` picks on the test split, measured on a held-out twin
split (other people, the same cameras). Runs resume: a finished variant/seed of the same
budget (ids, image size, epochs) is never trained or scored again.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from common import fmt, load_average, markdown_table, parse_args

from calibration.threshold_choice import DEFAULT_THRESHOLDS

if TYPE_CHECKING:
    from san.data.synth import SynthParams

#: Two-sided 95 % Student t quantiles by degrees of freedom (df > 30: the normal's 1.96).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


@dataclass(frozen=True)
class Variant:
    """A row: model and recipe changes against full SAN, and the paper's Market-1501 numbers."""

    label: str
    model: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    paper: tuple[float, float] | None = None  # (rank-1, mAP) on Market-1501, Tables I/III
    pretrained: str | None = None  # the backbone starts from one trained on a PRETRAINING set
    baseline: str = "baseline"  # the row its differences are measured against


VARIANTS = {
    "baseline": Variant("ResNet baseline", {"attention": "none"}, paper=(84.0, 67.9)),
    "soft": Variant("soft gating (sigmoid)", {"attention": "soft"}),
    "san-no-cil": Variant("SAN without CIL", {"cross_feature": False}, paper=(85.2, 69.0)),
    "san-no-cu": Variant("SAN without context units", {"context_unit": False}, paper=(84.3, 68.3)),
    "san-no-tv": Variant("SAN without TV", recipe={"mu": 0.0}, paper=(85.6, 69.6)),
    "san": Variant("SAN (full)", paper=(85.9, 70.1)),
    "threshold": Variant("thresholding (lambda 0.3)", {"attention": "threshold", "threshold_lambda": 0.3},
                         paper=(84.1, 68.0)),
    "power2": Variant("power x^2", {"attention": "power", "power": 2}, paper=(84.4, 68.2)),
    "power3": Variant("power x^3", {"attention": "power", "power": 3}, paper=(84.3, 68.1)),
    # Candidates for why SAN may trail the baseline at CPU scale (documented options, not defaults),
    # each measured against full SAN: does the change help it?
    "san-tau-scaled": Variant("SAN, tau annealed within the run (rate 0.008 x 150 / epochs)",
                              recipe={"tau_rate": "scaled"}, baseline="san"),
    "san-tv-0.01": Variant("SAN, TV weight mu 0.01", recipe={"mu": 0.01}, baseline="san"),
    "san-stages-123": Variant("SAN without the 4x2 stage-4 block", {"attention_stages": (1, 2, 3)}, baseline="san"),
    "san-block-1": Variant("SAN on block 1 only (Fig. 5(a): block 1 gives most of the gain)",
                           {"attention_stages": (1,)}, baseline="san"),
    "baseline-pretrained": Variant("ResNet baseline, backbone pretrained (same cameras)", {"attention": "none"},
                                   pretrained="same-cameras"),
    "san-pretrained": Variant("SAN, backbone pretrained (same cameras)", pretrained="same-cameras",
                              baseline="baseline-pretrained"),
    "baseline-pretrained-other-cameras": Variant("ResNet baseline, backbone pretrained (other cameras)",
                                                 {"attention": "none"}, pretrained="other-cameras"),
}
#: Eq. 9's rate in the paper's 150-epoch schedule (tau reaches its floor of 0.5 after 87 epochs).
PAPER_TAU_RATE, PAPER_EPOCHS = 0.008, 150
QUICK = {"variants": ["baseline", "soft", "san"], "seeds": 3, "epochs": 12}
PAPER_VARIANTS = ["baseline", "soft", "san-no-cil", "san-no-cu", "san-no-tv", "san", "threshold", "power2", "power3"]
FULL = {"variants": PAPER_VARIANTS, "seeds": 5, "epochs": 30}
SMOKE = {"variants": ["baseline", "san"], "seeds": 1, "epochs": 1, "ids": 48, "height": 64, "width": 32}


@dataclass(frozen=True)
class Layout:
    """Where a budget's files live under ``--work``. Runs are keyed by the whole budget (ids,
    image size, epochs), so a run of another budget is never taken for a finished one; the data
    sets by what generates them, so budgets that differ only in epochs share them."""

    runs: Path  # <variant>/seed<k>/, pretrain-<set>/, the threshold-gap cache, the PNG and the reports
    test: Path  # the synthetic set every run trains on and is scored on
    validation: Path  # its held-out twin, for the threshold sweep
    data: str  # what names the data sets of this budget: <ids>ids-<H>x<W>

    @classmethod
    def of(cls, args: argparse.Namespace) -> Layout:
        data = f"{args.ids}ids-{args.height}x{args.width}"
        return cls(args.work / f"{data}-{args.epochs}ep", args.work / f"synthetic-{data}",
                   args.work / f"validation-{data}", data)

    def pretraining(self, kind: str) -> Path:
        """The ``kind`` pretraining set, ``same-cameras`` or ``other-cameras`` (:func:`pretrained_backbone`)."""
        return self.test.parent / f"pretraining-{kind}-{self.data}"


def t975(df: float) -> float:
    """The 95 % two-sided Student t quantile for ``df`` degrees of freedom, from the table (rounded
    down to a listed df, the conservative side); 1.96 above 30."""
    return T975[max(k for k in T975 if k <= max(1, int(df)))] if df <= 30 else 1.96


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and 95 % half-width of ``values`` (Student t; 0 for a single value)."""
    n, mean = len(values), float(np.mean(values))
    if n < 2:
        return mean, float("nan")
    return mean, t975(n - 1) * float(np.std(values, ddof=1)) / math.sqrt(n)


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(b) - mean(a) and its 95 % Welch interval over seeds."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    delta = float(np.mean(b) - np.mean(a))
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else 30
    half = t975(df) * math.sqrt(va + vb)
    return delta, delta - half, delta + half


# -- one run ------------------------------------------------------------------------------------
def train_and_score(args: argparse.Namespace, name: str, seed: int, layout: Layout) -> dict[str, Any]:
    """Train ``name`` with ``seed`` (resuming, never retraining a finished run), then score it on the
    test split; the per-query scores are kept in the run folder."""
    from san.checkpoint import load_checkpoint
    from san.data.registry import load_dataset
    from san.evaluate import ModelEmbedder
    from san.retrieval import embed_split, score

    out = layout.runs / name / f"seed{seed}"
    scores = out / "scores.npz"
    if scores.is_file():
        saved = np.load(scores)
        return {"ap": saved["ap"], "first_rank": saved["first_rank"], "seconds": training_seconds(out)}
    variant = VARIANTS[name]
    recipe = {k: (PAPER_TAU_RATE * PAPER_EPOCHS / args.epochs if v == "scaled" else v) for k, v in variant.recipe.items()}
    if variant.pretrained:
        recipe["pretrained"] = str(pretrained_backbone(args, layout, variant.pretrained))
    train_once(args, variant.model, recipe, out, layout.test, synthetic_options(args), seed)
    model, _ = load_checkpoint(out / "model.pt")
    dataset = load_dataset("synthetic", layout.test, verbose=False)
    retrieval = score(embed_split(ModelEmbedder(model), dataset))
    per_query = retrieval.per_query
    np.savez(scores, ap=per_query.ap, first_rank=per_query.first_rank)
    return {"ap": per_query.ap, "first_rank": per_query.first_rank, "seconds": training_seconds(out)}


def training_seconds(out: Path) -> float:
    """The run's training time: its epochs' seconds in ``metrics.jsonl``, across resumes (the
    last line written for an epoch counts; a line torn by a kill does not)."""
    epochs = {}
    for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        epochs[row["epoch"]] = row["seconds"]
    return float(sum(epochs.values()))


def train_once(args: argparse.Namespace, model: dict[str, Any], recipe: dict[str, Any], out: Path, data: Path,
               data_options: dict[str, Any], seed: int) -> None:
    """Train the ``cpu-demo`` preset with these changes into ``out`` unless it finished there (an
    interrupted run resumes)."""
    from san.presets import PRESETS
    from san.train import train

    base = PRESETS["cpu-demo"].config(str(out), "synthetic", str(data), data_options)
    spec = replace(base.recipe.model.spec, height=args.height, width=args.width)
    cfg = base.with_changes(model=replace(base.recipe.model, spec=spec, **model), seed=seed, epochs=args.epochs,
                            eval_every=0, progress=False, device=args.device,
                            resume=(out / "last.pt").is_file() and not (out / "model.pt").is_file(), **recipe)
    if not (out / "model.pt").is_file():
        train(cfg)


def pretrained_backbone(args: argparse.Namespace, layout: Layout, kind: str) -> Path:
    """The backbone ``kind`` pretrained variants start from, as ImageNet weights in torchvision's
    layout: the baseline trained (seed 0, the same epochs) on the ``kind`` pretraining set, half as
    many other people as the test set's, 80 % of them in its training split. Made once."""
    import torch

    from san.atomic import atomic_write
    from san.checkpoint import load_checkpoint
    from san.model.pretrained import torchvision_backbone_state

    path = layout.runs / f"pretrain-{kind}" / "backbone.pth"
    if not path.is_file():
        test, twin = test_params(args), twin_params(args)
        others = replace(test, ids=args.ids // 2, test_fraction=0.2)
        others = (replace(others, first_pid=twin.first_pid + twin.ids) if kind == "same-cameras"  # after the twin's
                  else replace(others, seed=test.seed + 1))  # the generator's next seed: other people and cameras
        options = vars(others)
        train_once(args, {"attention": "none"}, {}, path.parent, layout.pretraining(kind), options, seed=0)
        state = torchvision_backbone_state(load_checkpoint(path.parent / "model.pt")[0])
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def with_baselines(names: list[str]) -> list[str]:
    """``names`` with the rows they are measured against, each before the rows measured against it."""
    ordered: list[str] = []

    def add(name: str) -> None:
        if name not in ordered:
            if VARIANTS[name].baseline != name:
                add(VARIANTS[name].baseline)
            ordered.append(name)

    for name in names:
        add(name)
    return ordered


def synthetic_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"ids": args.ids, "height": args.height, "width": args.width}


# -- the table ----------------------------------------------------------------------------------
def table(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> str:
    from san.metrics import paired_delta

    def per_query(runs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """AP and rank-1 hit of every query, each averaged over the seeds."""
        return (np.mean([r["ap"] for r in runs], axis=0), np.mean([r["first_rank"] == 1 for r in runs], axis=0))

    def map_r1(runs: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
        """mAP and rank-1 (%) of every seed."""
        return ([100 * float(np.mean(r["ap"])) for r in runs], [100 * float(np.mean(r["first_rank"] == 1)) for r in runs])

    rows = []
    for name, runs in results.items():
        maps, r1s = map_r1(runs)
        (m, mh), (r, rh) = t_interval(maps), t_interval(r1s)
        against = VARIANTS[name].baseline
        cells = [VARIANTS[name].label, f"{m:.2f} ± {fmt(mh, 2)}", f"{r:.2f} ± {fmt(rh, 2)}"]
        base = results.get(against, []) if name != against else []
        if not base:
            cells += ["", "", "", "", ""]
        else:
            cells.append(VARIANTS[against].label)
            if len(runs) > 1 and len(base) > 1:  # a spread over seeds on both sides
                (base_map, base_r1) = map_r1(base)
                dm, lo, hi = welch_interval(base_map, maps)
                dr, rlo, rhi = welch_interval(base_r1, r1s)
                verdict = "above seed noise" if lo > 0 else "below seed noise" if hi < 0 else "within seed noise"
                cells += [f"{dm:+.2f} [{lo:+.2f}, {hi:+.2f}] ({verdict})", f"{dr:+.2f} [{rlo:+.2f}, {rhi:+.2f}]"]
            else:
                cells += ["(one seed)", "(one seed)"]
            (ap, hit), (base_ap, base_hit) = per_query(runs), per_query(base)
            cells += [_delta_cell(paired_delta(ap - base_ap)), _delta_cell(paired_delta(hit - base_hit))]
        paper = VARIANTS[name].paper
        cells += [f"{paper[1]:.1f} / {paper[0]:.1f}" if paper else "-",
                  fmt(float(np.mean([x["seconds"] for x in runs])) / 60, 1)]
        rows.append(cells)
    return markdown_table(["variant", "mAP % (95 % over seeds)", "rank-1 %", "Δ against", "ΔmAP, seeds",
                           "Δrank-1, seeds", "ΔmAP, paired over queries", "Δrank-1, paired over queries",
                           "paper Market-1501 mAP / rank-1", "train min"], rows)


def _delta_cell(d: Any) -> str:
    return f"{d.delta:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"


# -- Fig. 2(b) and the threshold gap ---------------------------------------------------------
def mask_sharpness(args: argparse.Namespace, layout: Layout) -> str:
    """Histogram PNG of mask values on the test split and the share within 0.1 of 0 or 1."""
    import torch

    from san.checkpoint import load_checkpoint
    from san.data.registry import load_dataset
    from san.model.sampled import StochasticMasks
    from san.preprocess import load_image

    dataset = load_dataset("synthetic", layout.test, verbose=False)
    records = (dataset.query + dataset.gallery)[: args.mask_images]
    rows, values = [], {}
    for name in ("san", "soft"):
        ckpt = layout.runs / name / "seed0" / "model.pt"
        if not ckpt.is_file():
            continue
        model, _ = load_checkpoint(ckpt)
        images = torch.from_numpy(np.stack([load_image(r.path, model.spec) for r in records]))
        torch.manual_seed(0)
        modes = ["deployed"] if name == "soft" else ["sampled (training mode)", "deployed (threshold)"]
        for mode in modes:
            net = StochasticMasks(model).san if mode.startswith("sampled") else model.eval()  # generators sample
            with torch.no_grad():
                masks = torch.cat([m.flatten() for b in range(0, len(images), 64)
                                   for m in net(images[b : b + 64], details=True).masks]).numpy()
            share = float(np.mean((masks <= 0.1) | (masks >= 0.9)))
            values[f"{name}: {mode}"] = masks
            rows.append([f"{VARIANTS[name].label}: {mode}", f"{100 * share:.1f} %", f"{masks.mean():.3f}",
                         str(masks.size)])
    png = layout.runs / "mask-sharpness.png"
    _histogram(values, png)
    return (markdown_table(["masks", "within 0.1 of 0 or 1", "mean value", "elements"], rows)
            + f"\n\nhistogram: {png}")


def _histogram(values: dict[str, np.ndarray], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.linspace(0, 1, 41)
    for label, v in values.items():
        ax.hist(v, bins=bins, weights=np.full(v.size, 1 / v.size), histtype="step", linewidth=1.6, label=label)
    ax.set_xlabel("mask value")
    ax.set_ylabel("share of elements")
    ax.set_title("Mask values on the test split (Fig. 2(b))")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def threshold_gap(args: argparse.Namespace, layout: Layout) -> str:
    """Sampled masks (mean of 3 draws) vs the deployed ones at 0.5 and at the threshold
    ``san-calibrate threshold`` picks on a held-out twin split (other people, the same cameras),
    measured on the test split, paired over its queries."""
    import torch

    from calibration.threshold import sweep_thresholds
    from san.checkpoint import load_checkpoint
    from san.data.registry import load_dataset
    from san.evaluate import ModelEmbedder
    from san.metrics import paired_delta
    from san.model.sampled import StochasticMasks
    from san.retrieval import embed_split, score

    model, _ = load_checkpoint(layout.runs / "san" / "seed0" / "model.pt")
    twin = twin_params(args)
    validation = load_dataset("synthetic", layout.validation, verbose=False, **vars(twin))
    cache = layout.runs / "threshold-gap"
    cache.mkdir(parents=True, exist_ok=True)
    choice = cache / "chosen.json"
    if not choice.is_file():
        choice.write_text(json.dumps({"chosen": sweep_thresholds(model, validation, args.thresholds).chosen}))
    chosen = float(json.loads(choice.read_text())["chosen"])
    test = load_dataset("synthetic", layout.test, verbose=False)

    def scored(name: str, net: Any) -> tuple[np.ndarray, np.ndarray]:
        """AP and rank-1 hit per test query (kept in the cache folder: a rerun reads them)."""
        path = cache / f"{name}.npz"
        if not path.is_file():
            q = score(embed_split(ModelEmbedder(net), test)).per_query
            np.savez(path, ap=q.ap, hit=q.first_rank == 1)
        saved = np.load(path)
        return saved["ap"], saved["hit"].astype(float)

    draws = []
    for draw in range(3):
        torch.manual_seed(draw)
        draws.append(scored(f"sampled-draw{draw}", StochasticMasks(model)))
    sampled_ap, sampled_hit = np.mean([d[0] for d in draws], axis=0), np.mean([d[1] for d in draws], axis=0)
    rows = [["sampled, mean of 3 draws", f"{100 * sampled_ap.mean():.2f}", f"{100 * sampled_hit.mean():.2f}", "", ""]]
    for threshold in dict.fromkeys((0.5, chosen)):
        model.eval().set_mask_threshold(threshold)
        ap, hit = scored(f"deployed-{threshold:g}", model)
        rows.append([f"deployed, threshold {threshold:g}", f"{100 * ap.mean():.2f}", f"{100 * hit.mean():.2f}",
                     _delta_cell(paired_delta(sampled_ap - ap)), _delta_cell(paired_delta(sampled_hit - hit))])
    return (f"threshold chosen by the sweep of san-calibrate threshold on a held-out twin split ({len(validation.query)} "
            f"queries): {chosen:g}; measured on the test split ({len(test.query)} queries), first seed of SAN\n\n"
            + markdown_table(["masks", "mAP %", "rank-1 %", "sampled − deployed, mAP", "sampled − deployed, rank-1"],
                             rows))


def test_params(args: argparse.Namespace) -> SynthParams:
    """The synthetic set every run trains on and is scored on: the ``cpu-demo`` one at this budget."""
    from san.data.synth import SynthParams
    from san.presets import PRESETS

    return SynthParams(**{**PRESETS["cpu-demo"].synthetic, **synthetic_options(args)})


def twin_params(args: argparse.Namespace) -> SynthParams:
    """The test set's held-out twin: a quarter as many other people (at least 40), the same cameras."""
    from san.data.synth import held_out_params

    return replace(held_out_params(test_params(args)), ids=max(40, args.ids // 4))


# -- command line -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 variants x 3 seeds x 12 epochs (about an hour)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: the paper's nine (quick: baseline soft san)")
    parser.add_argument("--seeds", type=int, help="training seeds per variant (default 5; quick 3)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default 30; quick 12)")
    parser.add_argument("--ids", type=int, default=1000, help="synthetic identities (the cpu-demo set)")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--mask-images", type=int, default=256, help="test images the histogram is drawn from")
    parser.add_argument("--thresholds", type=float, nargs="+", default=DEFAULT_THRESHOLDS,
                        help="swept as san-calibrate threshold does (default 0.30 .. 0.70 step 0.05)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--work", type=Path, default=Path("runs/ablation"), help="data sets, and per budget the runs, scores, PNG and reports")
    args = parse_args(parser, argv, smoke={**SMOKE, "mask_images": 8, "thresholds": [0.4, 0.5]})
    plan = QUICK if args.quick else SMOKE if args.smoke else FULL
    args.variants = args.variants or plan["variants"]
    args.seeds = args.seeds or plan["seeds"]
    args.epochs = args.epochs or plan["epochs"]
    args.variants = with_baselines(args.variants)
    layout = Layout.of(args)
    started = time.perf_counter()
    print(f"command: python benchmarks/ablation.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"{len(args.variants)} variants x {args.seeds} seeds x {args.epochs} epochs, cpu-demo budget at "
          f"{args.height}x{args.width}, {args.ids} synthetic ids; load average {load_average()}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {}
    for name in args.variants:
        results[name] = []
        for seed in range(args.seeds):
            results[name].append(train_and_score(args, name, seed, layout))
            print(f"  {name} seed {seed}: mAP {100 * results[name][-1]['ap'].mean():.2f}", flush=True)
    report = [table(args, results)]
    if {"san", "soft"} & set(args.variants):
        report.append(mask_sharpness(args, layout))
    if "san" in args.variants:
        report.append(threshold_gap(args, layout))
    minutes = (time.perf_counter() - started) / 60
    report.append(f"total {minutes:.1f} min (runs already finished are not repeated); load average {load_average()}")
    text = "\n\n".join(report)
    print(text)
    (layout.runs / "ablation.md").write_text(text + "\n", encoding="utf-8")
    (layout.runs / "ablation.json").write_text(json.dumps(
        {n: [{"mAP": float(r["ap"].mean()), "rank1": float(np.mean(r["first_rank"] == 1))} for r in runs]
         for n, runs in results.items()}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
