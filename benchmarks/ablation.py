"""Ablation: the paper's Tables I and III and Fig. 2(b) at CPU scale, on the synthetic set.

Every variant trains under one budget (the ``cpu-demo`` preset: ResNet-18 at 128x64, P=8 x
K=4, Adam, the same synthetic data, augmentation and epochs) with several seeds, and is
scored on the same test split with deterministic masks::

    python benchmarks/ablation.py --select    # choose SAN's configuration on the held-out twin split
    python benchmarks/ablation.py --decide    # then the pre-registered test: 8 seed pairs, test split once
    python benchmarks/ablation.py --twin-masks --seeds 8  # SAN's deployed masks compared on the twin split
    python benchmarks/ablation.py --confirm-masks --seeds 8  # ... and the winners on the test split once
    python benchmarks/ablation.py --quick     # 3 variants x 3 seeds x 12 epochs
    python benchmarks/ablation.py             # 9 variants x 5 seeds x 30 epochs (a GPU: --device cuda)
    python benchmarks/ablation.py --smoke     # a tiny pair, one epoch: it runs
    python benchmarks/ablation.py --variants san-pretrained san-block-1 --seeds 3 --epochs 12  # candidates

The decision is pre-registered. ``--select`` trains the candidates (the baseline, SAN with the
sparse and the nearest context-unit upsampling, and nearest with a mask warm-up; 2 seeds) and
scores only the held-out twin split (other people, the same cameras), every ``--val-every``
epochs: the validation curves, mask health over epochs, whether the baseline's curve has
flattened, and the choice (the highest mean validation mAP) in ``selection.json``. ``--decide``
then trains the baseline and the chosen configuration on 8 seeds each (the selection's seeds
are reused: same seed, same data order, augmentation and initialisation), scores the test split
once, and reports the paired differences over seeds with their 95 % t-intervals, the smallest
effect the design detects with 80 % power, and the verdict against the paper's +2.2 mAP:
supported (lower bound > 0), contradicted (upper bound < 2.2) or unresolved.

The candidates ask why SAN may trail the baseline at this budget; they are documented options,
never the defaults, each compared with full SAN. ``*-pretrained`` variants start their backbone
from the baseline trained on another synthetic set of other people, as the paper's start from
ImageNet; SAN's is compared with the baseline pretrained the same way. The set is filmed by the
same cameras (``same-cameras``), or by other ones (``other-cameras``: the generator's next seed).

Per variant: mAP and rank-1 as mean and 95 % t-interval over seeds; the difference to the row
it is measured against (the baseline, unless said otherwise) paired over seeds (runs of one
seed share data order, augmentation and initialisation), with the smallest effect that many
pairs detect, and paired over queries, as ``san-parity`` pairs them, on each query's AP and
rank-1 hit averaged over the seeds. Then the mask-sharpness histogram (Fig. 2(b)) of the first
seed's sharp and soft models, sampled and deployed, and what the deterministic masks cost on
the test split: the sampled masks (mean of 3 draws) against the deployed ones at 0.5, at the
threshold ``san-calibrate threshold`` picks on the twin split, and at 0.5 after BatchNorm is
re-estimated under them (``calibration.batchnorm``). Runs resume: a finished variant/seed of the same budget
(ids, image size, epochs) is never trained or scored again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from common import fmt, load_average, markdown_table, parse_args
from seed_stats import SeedPaired, paired_over_seeds, t_interval

from calibration.threshold_choice import DEFAULT_THRESHOLDS
from san.cli.arguments import DeviceGroup, RunGroup

if TYPE_CHECKING:
    from san.data.synth import SynthParams


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
    # The context unit's upsampling and a mask warm-up, each measured against full SAN (sparse).
    "san-nearest": Variant("SAN, context units upsample nearest x2", {"cu_upsample": "nearest"}, baseline="san"),
    "san-warmup": Variant("SAN, masks ramped in over the first quarter of the epochs",
                          recipe={"mask_warmup": "quarter"}, baseline="san"),
    "san-nearest-warmup": Variant("SAN, nearest x2 and masks ramped in over the first quarter",
                                  {"cu_upsample": "nearest"}, recipe={"mask_warmup": "quarter"}, baseline="san"),
}
#: Eq. 9's rate in the paper's 150-epoch schedule (tau reaches its floor of 0.5 after 87 epochs).
PAPER_TAU_RATE, PAPER_EPOCHS = 0.008, 150
QUICK = {"variants": ["baseline", "soft", "san"], "seeds": 3, "epochs": 12}
PAPER_VARIANTS = ["baseline", "soft", "san-no-cil", "san-no-cu", "san-no-tv", "san", "threshold", "power2", "power3"]
FULL = {"variants": PAPER_VARIANTS, "seeds": 5, "epochs": 30}
SELECT = {"variants": ["baseline", "san", "san-nearest", "san-nearest-warmup"], "seeds": 2, "epochs": 12}
DECIDE = {"variants": [], "seeds": 8, "epochs": 12}
SMOKE = {"variants": ["baseline", "san"], "seeds": 1, "epochs": 1}
#: SAN's gain over the ResNet baseline in the paper (Table I, Market-1501), in points.
PAPER_GAIN = {"mAP": 70.1 - 67.9, "rank-1": 85.9 - 84.0}
#: --smoke's budget, with any plan: one epoch on 48 ids at 64x32.
TINY = {"epochs": 1, "ids": 48, "height": 64, "width": 32}


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


# -- one run ------------------------------------------------------------------------------------
def train_and_score(args: argparse.Namespace, name: str, seed: int, layout: Layout) -> dict[str, Any]:
    """Train ``name`` with ``seed`` (resuming, never retraining a finished run), then score it on the
    test split; the per-query scores are kept in the run folder."""
    from san.data.registry import load_dataset
    from san.evaluation.evaluate import ModelEmbedder
    from san.evaluation.retrieval import embed_split, score
    from san.training.checkpoint import load_checkpoint

    out = layout.runs / name / f"seed{seed}"
    scores = out / "scores.npz"
    scored_now = not scores.is_file()
    if scored_now:
        train_variant(args, name, seed, layout)
        model, _ = load_checkpoint(out / "model.pt")
        dataset = load_dataset("synthetic", layout.test, verbose=False)
        per_query = score(embed_split(ModelEmbedder(model), dataset)).per_query
        np.savez(scores, ap=per_query.ap, first_rank=per_query.first_rank)
    record_test_scoring(out, args.command, scored_now)
    saved = np.load(scores)
    return {"ap": saved["ap"], "first_rank": saved["first_rank"], "seconds": training_seconds(out)}


#: Where a run records the commands whose reports its test-split scores went into, in order.
TEST_SCORED_BY = "test-scored-by.json"
#: The first entry of runs scored before the record was kept.
UNRECORDED = "(a command before test scorings were recorded)"


def record_test_scoring(out: Path, command: str, scored_now: bool) -> None:
    """Add ``command`` to the run's record of the commands its test-split scores were reported by."""
    path = out / TEST_SCORED_BY
    commands = json.loads(path.read_text()) if path.is_file() else [] if scored_now else [UNRECORDED]
    if command not in commands:
        path.write_text(json.dumps([*commands, command], indent=2) + "\n")


def train_variant(args: argparse.Namespace, name: str, seed: int, layout: Layout) -> Path:
    """Train ``name`` with ``seed`` unless it finished (scoring the held-out twin split every
    ``--val-every`` epochs and at the last: the validation curve); its run folder."""
    variant = VARIANTS[name]
    recipe = {k: _relative(k, v, args.epochs) for k, v in variant.recipe.items()}
    if variant.pretrained:
        recipe["pretrained"] = str(pretrained_backbone(args, layout, variant.pretrained))
    out = layout.runs / name / f"seed{seed}"
    train_once(args, variant.model, recipe, out, layout.test, synthetic_options(args), seed,
               validation_hook(args, layout))
    return out


def _relative(key: str, value: Any, epochs: int) -> Any:
    """A recipe value given relative to the budget: ``scaled`` tau rate, a ``quarter`` of the epochs."""
    if value == "scaled":
        return PAPER_TAU_RATE * PAPER_EPOCHS / epochs
    if value == "quarter":  # at least one epoch, and never all of them
        return min(max(1, epochs // 4), epochs - 1)
    return value


def validation_hook(args: argparse.Namespace, layout: Layout) -> Any:
    """The trainer's ``after_epoch``: mAP and rank-1 (%) on the held-out twin split (other
    people, the same cameras) every ``--val-every`` epochs and at the last epoch. The split is
    read on the first epoch scored, so a finished run, which scores none, never reads it."""
    from san.evaluation.evaluate import evaluate_model

    validation = None

    def score_validation(model: Any, record: dict[str, Any]) -> dict[str, Any]:
        nonlocal validation
        if record["epoch"] % args.val_every and record["epoch"] != args.epochs:
            return {}
        validation = validation or validation_set(args, layout)
        report = evaluate_model(model, validation, workers=0)
        return {"validation": {"mAP": 100 * report.mAP, "rank1": 100 * report.ranks[1]}}

    return score_validation


def training_seconds(out: Path) -> float:
    """The run's training time: its epochs' seconds in ``metrics.jsonl``, across resumes."""
    return float(sum(record["seconds"] for record in read_metrics(out)))


def train_once(args: argparse.Namespace, model: dict[str, Any], recipe: dict[str, Any], out: Path, data: Path,
               data_options: dict[str, Any], seed: int, after_epoch: Any = None) -> None:
    """Train the ``cpu-demo`` preset with these changes into ``out`` unless it finished there (an
    interrupted run resumes; one killed before its first checkpoint, which has nothing to resume,
    starts again); ``after_epoch`` as :func:`san.training.train.train` takes it."""
    from san.training.presets import PRESETS
    from san.training.train import RUN_FILES, train

    if not (out / "last.pt").is_file() and not (out / "model.pt").is_file():  # killed before its first checkpoint
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)

    base = PRESETS["cpu-demo"].config(str(out), "synthetic", str(data), data_options)
    spec = replace(base.recipe.model.spec, height=args.height, width=args.width)
    cfg = base.with_changes(model=replace(base.recipe.model, spec=spec, **model), seed=seed, epochs=args.epochs,
                            eval_every=0, progress=RUN.read(args).progress, device=str(DEVICE.read(args)),
                            resume=(out / "last.pt").is_file() and not (out / "model.pt").is_file(), **recipe)
    if not (out / "model.pt").is_file():
        train(cfg, after_epoch)


def pretrained_backbone(args: argparse.Namespace, layout: Layout, kind: str) -> Path:
    """The backbone ``kind`` pretrained variants start from, as ImageNet weights in torchvision's
    layout: the baseline trained (seed 0, the same epochs) on the ``kind`` pretraining set, half as
    many other people as the test set's, 80 % of them in its training split. Made once."""
    import torch

    from san.io.atomic import atomic_write
    from san.model.pretrained import torchvision_backbone_state
    from san.training.checkpoint import load_checkpoint

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
    from san.evaluation.metrics import paired_delta

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
            pairs = min(len(runs), len(base))
            if pairs > 1:  # seeds 0..pairs-1 ran on both sides
                (base_map, base_r1) = map_r1(base)
                cells += [_seed_cell(paired_over_seeds(base_map[:pairs], maps[:pairs])),
                          _seed_cell(paired_over_seeds(base_r1[:pairs], r1s[:pairs]))]
            else:
                cells += ["(one seed)", "(one seed)"]
            (ap, hit), (base_ap, base_hit) = per_query(runs), per_query(base)
            cells += [_delta_cell(paired_delta(ap - base_ap)), _delta_cell(paired_delta(hit - base_hit))]
        paper = VARIANTS[name].paper
        cells += [f"{paper[1]:.1f} / {paper[0]:.1f}" if paper else "-",
                  fmt(float(np.mean([x["seconds"] for x in runs])) / 60, 1)]
        rows.append(cells)
    return markdown_table(["variant", "mAP % (95 % over seeds)", "rank-1 %", "Δ against", "ΔmAP, paired over seeds",
                           "Δrank-1, paired over seeds", "ΔmAP, paired over queries", "Δrank-1, paired over queries",
                           "paper Market-1501 mAP / rank-1", "train min"], rows)


def _delta_cell(d: Any) -> str:
    return f"{d.delta:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"


def _seed_cell(d: SeedPaired) -> str:
    return f"{_delta_cell(d)}, detects {d.detectable:.2f}"


# -- the pre-registered decision ----------------------------------------------------------------
def read_metrics(out: Path) -> list[dict[str, Any]]:
    """A run's ``metrics.jsonl``, one record per epoch (the last line written for it; a line torn
    by a kill dropped), in epoch order."""
    records: dict[int, dict[str, Any]] = {}
    for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        records[row["epoch"]] = row
    return [records[e] for e in sorted(records) if e > 0]


def validation_curve(out: Path) -> dict[int, float]:
    """Validation mAP (%) by epoch of one run."""
    return {r["epoch"]: r["validation"]["mAP"] for r in read_metrics(out) if "validation" in r}


def selection(args: argparse.Namespace, layout: Layout, names: list[str]) -> tuple[str, str]:
    """Choose SAN's configuration on the held-out twin split (the test split is never scored):
    the SAN candidate with the highest mean validation mAP at the last epoch (mask health: the
    last epoch, mean over seeds). Also whether the
    baseline's validation mAP has flattened at this budget: its change over the last quarter of
    the epochs is below its seed noise (SD over seeds at the last epoch). The report and the choice."""
    seeds = range(args.seeds)
    final = {n: [validation_curve(layout.runs / n / f"seed{k}")[args.epochs] for k in seeds] for n in names}
    rows = []
    for name in names:
        (m, h) = t_interval(final[name])
        last = [read_metrics(layout.runs / name / f"seed{k}")[-1] for k in seeds]
        health = _mean_health(last) if "masks" in last[0] else {"masks": {}}
        masks = health["masks"].values()
        active = float(np.mean([r["triplets"]["active"] for r in last]))
        against = "san" if name != "san" and VARIANTS[name].model.get("attention") != "none" else None
        delta = _seed_cell(paired_over_seeds(final[against], final[name])) if against and args.seeds > 1 else ""
        rows.append([VARIANTS[name].label, f"{m:.2f} ± {fmt(h, 2)}", delta,
                     " / ".join(f"{f['mean_m']:.2f}" for f in masks),
                     " / ".join(f"{100 * f['sharp']:.0f}" for f in masks),
                     " / ".join(f"{f['gap_to_deployed']:.2f}" for f in masks), f"{100 * active:.0f}"])
    candidates = [n for n in names if VARIANTS[n].model.get("attention") != "none"]
    chosen = max(candidates, key=lambda n: float(np.mean(final[n])))
    text = [f"selection on the held-out twin split ({args.seeds} seeds, epoch {args.epochs}); the test split is "
            f"not scored. Chosen: {chosen} ({VARIANTS[chosen].label}), the highest mean validation mAP.",
            markdown_table(["candidate", "validation mAP % (95 % over seeds)", "Δ against SAN (full), paired over seeds",
                            "mean M per block", "M within 0.1 of 0/1 % per block", "gap to the deployed mask per block",
                            "active triplets %"], rows)]
    if "baseline" in names:
        text.append(flatness(args, layout))
    return "\n\n".join(text), chosen


def flatness(args: argparse.Namespace, layout: Layout) -> str:
    """The baseline's validation curve (mean over seeds) and whether it has flattened."""
    curves = [validation_curve(layout.runs / "baseline" / f"seed{k}") for k in range(args.seeds)]
    epochs = sorted(set.intersection(*(set(c) for c in curves)))
    mean = {e: float(np.mean([c[e] for c in curves])) for e in epochs}
    start = min(e for e in epochs if e >= args.epochs - args.epochs // 4)
    change = mean[args.epochs] - mean[start]
    noise = float(np.std([c[args.epochs] for c in curves], ddof=1)) if len(curves) > 1 else float("nan")
    verdict = "flattened" if abs(change) < noise else "not flattened: train longer (--epochs)"
    return ("baseline validation mAP by epoch (mean over seeds): "
            + ", ".join(f"{e}: {mean[e]:.2f}" for e in epochs)
            + f"; change over the last quarter (epoch {start} to {args.epochs}) {change:+.2f}, seed SD {noise:.2f}: {verdict}")


def mask_health_over_epochs(args: argparse.Namespace, layout: Layout, names: list[str]) -> str:
    """Per epoch and variant (mean over seeds): per block the mean M, the share of M within 0.1
    of 0 or 1 and |M − deployed|; active triplets. Drawn to ``mask-health.png``."""
    series: dict[str, list[dict[str, Any]]] = {}
    rows = []
    for name in names:
        runs = [read_metrics(layout.runs / name / f"seed{k}") for k in range(args.seeds)]
        if "masks" not in runs[0][-1]:
            continue
        series[name] = [_mean_health([run[e] for run in runs]) for e in range(args.epochs)]
        for epoch, h in enumerate(series[name], start=1):
            rows.append([str(epoch), name, " / ".join(f"{f['mean_m']:.2f}" for f in h["masks"].values()),
                         " / ".join(f"{100 * f['sharp']:.0f}" for f in h["masks"].values()),
                         " / ".join(f"{f['gap_to_deployed']:.2f}" for f in h["masks"].values()),
                         f"{100 * h['active']:.0f}"])
    png = layout.runs / "mask-health.png"
    _health_figure(series, png)
    return (markdown_table(["epoch", "variant", "mean M per block", "M within 0.1 of 0/1 % per block",
                            "gap to the deployed mask per block", "active triplets %"], rows) + f"\n\nfigure: {png}")


def _mean_health(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mask health of one epoch averaged over seeds' records."""
    blocks = records[0]["masks"]
    masks = {b: {"mean_m": float(np.mean([r["masks"][b]["mean_m"] for r in records])),
                 "sharp": float(np.mean([r["masks"][b]["m_below_0.1"] + r["masks"][b]["m_above_0.9"] for r in records])),
                 "gap_to_deployed": float(np.mean([r["masks"][b]["gap_to_deployed"] for r in records]))}
             for b in blocks}
    return {"masks": masks, "active": float(np.mean([r["triplets"]["active"] for r in records]))}


def _health_figure(series: dict[str, list[dict[str, Any]]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = [("mean_m", "mean M"), ("sharp", "M within 0.1 of 0 or 1"), ("gap_to_deployed", "|M − deployed mask|")]
    fig, axes = plt.subplots(1, len(fields), figsize=(11, 3.4))
    for ax, (key, title) in zip(axes, fields):
        for (name, epochs), style in zip(series.items(), ("-", "--", ":", "-.")):
            for block in epochs[0]["masks"]:
                ax.plot(range(1, len(epochs) + 1), [h["masks"][block][key] for h in epochs], style,
                        label=f"{name} b{block}", color=f"C{int(block) - 1}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def decision(chosen: str, results: dict[str, list[dict[str, Any]]]) -> str:
    """The pre-registered test: ``chosen`` against the baseline, paired over seeds, scored on the
    test split once; the verdict against the paper's gain."""
    rows = []
    for metric, value in (("mAP", lambda r: 100 * float(np.mean(r["ap"]))),
                          ("rank-1", lambda r: 100 * float(np.mean(r["first_rank"] == 1)))):
        base, san = [value(r) for r in results["baseline"]], [value(r) for r in results[chosen]]
        d = paired_over_seeds(base, san)
        (bm, bh), (sm, sh) = t_interval(base), t_interval(san)
        rows.append([metric, f"{bm:.2f} ± {bh:.2f}", f"{sm:.2f} ± {sh:.2f}", _delta_cell(d), f"{d.sd:.2f}",
                     f"{d.detectable:.2f}", f"+{PAPER_GAIN[metric]:.1f}", d.verdict(PAPER_GAIN[metric])])
    pairs = len(results["baseline"])
    return (f"decision: {VARIANTS[chosen].label} against the ResNet baseline, {pairs} seed pairs, test split scored once\n\n"
            + markdown_table(["metric", "baseline % (95 % over seeds)", "SAN %", "Δ paired over seeds [95 %]",
                              "SD of Δ", "detects at 80 % power", "paper's gain", "verdict"], rows))


#: Deployments of a SAN's masks that :func:`deployed_masks` compares, on the test split and on the twin.
SAMPLED, DEPLOYED, SWEPT, BN, NOISE_FREE = ("sampled, mean of 3 draws", "deployed 0.5", "deployed, swept threshold",
                                           "deployed 0.5, BatchNorm re-estimated", "noise-free, sigmoid(logit(pi)/tau)")
TEST_DEPLOYMENTS = (SAMPLED, DEPLOYED, SWEPT, BN, NOISE_FREE)
TWIN_DEPLOYMENTS = (DEPLOYED, SWEPT, NOISE_FREE)


def deployed_masks(args: argparse.Namespace, layout: Layout, name: str, twin: bool = False,
                   confirm: bool = False) -> str:
    """What the deterministic masks cost, for the first ``--mask-seeds`` seeds of ``name`` on the
    test split, or for every seed on the held-out twin split (``twin``, where a deployment is
    chosen): the sampled masks (mean of 3 draws), the deployed ones at 0.5, at the threshold
    ``san-calibrate threshold`` picks on the twin split, at 0.5 after re-estimating BatchNorm with
    them on ``--bn-images`` training images, and the noise-free relaxed masks at the temperature
    training ended with. ``confirm``: the twin split's deployments on the test split for every
    seed, 1[pi > 0.5] read from the run's own test scoring. Differences to the deployed masks at
    0.5, paired over seeds and over queries (AP averaged over the seeds)."""
    import torch

    from calibration.batchnorm import reestimate_batchnorm
    from calibration.threshold import sweep_thresholds
    from san.data.registry import load_dataset
    from san.evaluation.evaluate import ModelEmbedder
    from san.evaluation.metrics import paired_delta
    from san.evaluation.retrieval import embed_split, score
    from san.model.sampled import NoiseFreeMasks, StochasticMasks
    from san.training.checkpoint import load_checkpoint

    test = load_dataset("synthetic", layout.test, verbose=False)
    validation = validation_set(args, layout)
    split = validation if twin else test
    modes = TWIN_DEPLOYMENTS if twin or confirm else TEST_DEPLOYMENTS
    per_seed: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {mode: [] for mode in modes}
    seeds = range(args.seeds if twin or confirm else min(args.seeds, args.mask_seeds))
    for seed in seeds:
        out = layout.runs / name / f"seed{seed}"
        cache = out / ("deployment-twin" if twin else "deployment")
        cache.mkdir(exist_ok=True)

        def scored(key: str, net: Any, cache: Path = cache) -> tuple[np.ndarray, np.ndarray]:
            """AP and rank-1 hit per query of the split, kept in this run's cache folder."""
            path = cache / f"{key}.npz"
            if not path.is_file():
                q = score(embed_split(ModelEmbedder(net), split)).per_query
                np.savez(path, ap=q.ap, hit=q.first_rank == 1)
            saved = np.load(path)
            return saved["ap"], saved["hit"].astype(float)

        model, _ = load_checkpoint(out / "model.pt")
        if SAMPLED in modes:
            draws = []
            for draw in range(3):
                torch.manual_seed(draw)
                draws.append(scored(f"sampled-draw{draw}", StochasticMasks(model)))
            per_seed[SAMPLED].append((np.mean([d[0] for d in draws], 0), np.mean([d[1] for d in draws], 0)))
        if confirm:  # the run's own test scoring, not repeated
            saved = np.load(out / "scores.npz")
            per_seed[DEPLOYED].append((saved["ap"], (saved["first_rank"] == 1).astype(float)))
        else:
            per_seed[DEPLOYED].append(scored("deployed-0.5", model.eval()))
        choice = out / "deployment" / "threshold.json"  # chosen on the twin split, whichever split is scored
        choice.parent.mkdir(exist_ok=True)
        if not choice.is_file():
            choice.write_text(json.dumps({"chosen": sweep_thresholds(model, validation, args.thresholds).chosen}))
        chosen = float(json.loads(choice.read_text())["chosen"])
        model.set_mask_threshold(chosen)
        per_seed[SWEPT].append(scored(f"deployed-{chosen:g}", model))
        model.set_mask_threshold(0.5)
        if BN in modes:
            images = np.random.default_rng(seed).permutation([r.path for r in test.train])[: args.bn_images]
            if not (cache / "bn-reestimated.npz").is_file():
                reestimate_batchnorm(model, list(images))
            per_seed[BN].append(scored("bn-reestimated", model))
        per_seed[NOISE_FREE].append(scored("noise-free", NoiseFreeMasks(load_checkpoint(out / "model.pt")[0])))
        if confirm:  # once this run's scores of them exist
            record_test_scoring(out, args.command, scored_now=False)
    rows = []
    deployed = per_seed[DEPLOYED]
    for mode in modes:
        runs = per_seed[mode]
        maps = [100 * float(ap.mean()) for ap, _ in runs]
        r1s = [100 * float(hit.mean()) for _, hit in runs]
        cells = [mode, f"{np.mean(maps):.2f}", f"{np.mean(r1s):.2f}"]
        if mode == DEPLOYED:
            cells += ["", "", ""]
        else:
            base_maps = [100 * float(ap.mean()) for ap, _ in deployed]
            over_seeds = _seed_cell(paired_over_seeds(base_maps, maps)) if len(runs) > 1 else "(one seed)"
            ap = np.mean([a for a, _ in runs], 0) - np.mean([a for a, _ in deployed], 0)
            hit = np.mean([h for _, h in runs], 0) - np.mean([h for _, h in deployed], 0)
            cells += [over_seeds, _delta_cell(paired_delta(ap)), _delta_cell(paired_delta(hit))]
        rows.append(cells)
    where = (f"the held-out twin split ({len(split.query)} queries; the swept threshold is chosen on it too)" if twin
             else f"the test split ({len(split.query)} queries), 1[pi > 0.5] from each run's own scoring" if confirm
             else f"the test split ({len(split.query)} queries); BatchNorm re-estimated on {args.bn_images} training images")
    return (f"deployed masks of {VARIANTS[name].label}, seeds 0..{len(seeds) - 1}, on {where}\n\n"
            + markdown_table(["deployment", "mAP %", "rank-1 %", "ΔmAP against deployed 0.5, paired over seeds",
                              "ΔmAP, paired over queries", "Δrank-1, paired over queries"], rows))


# -- Fig. 2(b) and the threshold gap ---------------------------------------------------------
def mask_sharpness(args: argparse.Namespace, layout: Layout) -> str:
    """Histogram PNG of mask values on the test split and the share within 0.1 of 0 or 1."""
    import torch

    from san.data.registry import load_dataset
    from san.io.preprocess import load_image
    from san.model.sampled import StochasticMasks
    from san.training.checkpoint import load_checkpoint

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


def test_params(args: argparse.Namespace) -> SynthParams:
    """The synthetic set every run trains on and is scored on: the ``cpu-demo`` one at this budget."""
    from san.data.synth import SynthParams
    from san.training.presets import PRESETS

    return SynthParams(**{**PRESETS["cpu-demo"].synthetic, **synthetic_options(args)})


def validation_set(args: argparse.Namespace, layout: Layout) -> Any:
    """The held-out twin split every setting is chosen on (generated once)."""
    from san.data.registry import load_dataset

    return load_dataset("synthetic", layout.validation, verbose=False, **vars(twin_params(args)))


def twin_params(args: argparse.Namespace) -> SynthParams:
    """The test set's held-out twin: a quarter as many other people (at least 40), the same cameras."""
    from san.data.synth import held_out_params

    return replace(held_out_params(test_params(args)), ids=max(40, args.ids // 4))


# -- command line -------------------------------------------------------------------------------
DEVICE = DeviceGroup("cpu")
RUN = RunGroup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 variants x 3 seeds x 12 epochs (about an hour)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--select", action="store_true",
                      help="choose SAN's configuration on the held-out twin split (default: baseline and three SAN "
                      "candidates x 2 seeds x 12 epochs); the test split is not scored")
    mode.add_argument("--decide", action="store_true",
                      help="the pre-registered test: the configuration --select chose against the baseline, "
                      "8 seed pairs (--seeds), scored on the test split once")
    mode.add_argument("--twin-masks", action="store_true",
                      help="compare the deployed masks of the SAN runs of --variants (default: san) on the held-out "
                      "twin split: 1[pi > 0.5], the swept threshold and the noise-free masks; the test split is not scored")
    mode.add_argument("--confirm-masks", action="store_true",
                      help="score --twin-masks' deployments (the swept threshold, the noise-free masks) on the test "
                      "split once, against each run's own test scoring of 1[pi > 0.5]")
    parser.add_argument("--val-every", type=int, default=3, metavar="E",
                        help="score the held-out twin split every E epochs and at the last (the validation curve)")
    parser.add_argument("--mask-seeds", type=int, default=3, metavar="N",
                        help="seeds whose deployed masks are compared on the test split (sampled, thresholds, BatchNorm "
                        "re-estimated, noise-free); 0: no mask comparison, the test split scored by the runs alone")
    parser.add_argument("--bn-images", type=int, default=512, metavar="N",
                        help="training images BatchNorm is re-estimated on (default %(default)s)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: the paper's nine (quick: baseline soft san)")
    parser.add_argument("--seeds", type=int, help="training seeds per variant (default 5; quick 3)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default 30; quick 12)")
    parser.add_argument("--ids", type=int, default=1000, help="synthetic identities (the cpu-demo set)")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--mask-images", type=int, default=256, help="test images the histogram is drawn from")
    parser.add_argument("--thresholds", type=float, nargs="+", default=DEFAULT_THRESHOLDS,
                        help="swept as san-calibrate threshold does (default 0.30 .. 0.70 step 0.05)")
    DEVICE.add_to(parser)
    RUN.add_to(parser)
    parser.add_argument("--work", type=Path, default=Path("runs/ablation"),
                        help="data sets, and per budget the runs, scores, PNG and reports")
    args = parse_args(parser, argv, smoke={**TINY, "mask_images": 8, "thresholds": [0.4, 0.5], "bn_images": 16})
    if args.mask_seeds < 0:
        parser.error(f"--mask-seeds must be at least 0, got {args.mask_seeds}")
    for option in ("val_every", "bn_images", "seeds", "epochs"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    plan = SELECT if args.select else DECIDE if args.decide else QUICK if args.quick else SMOKE if args.smoke else FULL
    masks_only = args.twin_masks or args.confirm_masks
    args.variants = args.variants or (["san"] if masks_only else plan["variants"])
    args.seeds = args.seeds or plan["seeds"]
    args.epochs = args.epochs or plan["epochs"]
    if args.decide and args.seeds < 2:
        parser.error(f"--decide pairs runs over seeds: --seeds must be at least 2, got {args.seeds}")
    layout = Layout.of(args)
    chosen = chosen_variant(layout) if args.decide else None
    args.variants = (["baseline", chosen] if chosen else args.variants if masks_only
                     else with_baselines(args.variants))
    started = time.perf_counter()
    if RUN.read(args).progress:  # each run's epoch lines, and progress lines within an epoch (san.io.progress)
        from san.cli.command import show_library_messages

        show_library_messages()
    args.command = f"python benchmarks/ablation.py {' '.join(sys.argv[1:] if argv is None else argv)}"
    print(f"command: {args.command}")
    print(f"{len(args.variants)} variants x {args.seeds} seeds x {args.epochs} epochs, cpu-demo budget at "
          f"{args.height}x{args.width}, {args.ids} synthetic ids; load average {load_average()}", flush=True)
    if args.select:
        report = select(args, layout)
    elif masks_only:
        report = twin_masks(args, layout)
    else:
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in args.variants}
        for seed in range(args.seeds):  # seed by seed: an interrupted ablation leaves whole pairs
            for name in args.variants:
                results[name].append(train_and_score(args, name, seed, layout))
                print(f"  {name} seed {seed}: mAP {100 * results[name][-1]['ap'].mean():.2f}", flush=True)
        report = [decision(chosen, results)] if chosen else []
        report.append(table(args, results))
        report.append(earlier_test_scorings(layout, results, args.command))
        if {"san", "soft"} & set(args.variants) and not chosen and args.mask_seeds:
            report.append(mask_sharpness(args, layout))
        if (chosen or "san" in args.variants) and args.mask_seeds:
            report.append(deployed_masks(args, layout, chosen or "san"))
        (layout.runs / "ablation.json").write_text(json.dumps(
            {n: [{"mAP": float(r["ap"].mean()), "rank1": float(np.mean(r["first_rank"] == 1))} for r in runs]
             for n, runs in results.items()}, indent=2) + "\n", encoding="utf-8")
    minutes = (time.perf_counter() - started) / 60
    report.append(f"total {minutes:.1f} min (runs already finished are not repeated); load average {load_average()}")
    text = "\n\n".join(report)
    print(text)
    name = ("selection.md" if args.select else "twin-masks.md" if args.twin_masks else "confirm-masks.md"
            if args.confirm_masks else "decision.md" if args.decide else "ablation.md")
    (layout.runs / name).write_text(text + "\n", encoding="utf-8")
    return 0


def select(args: argparse.Namespace, layout: Layout) -> list[str]:
    """Train the candidates (validation curves only) and choose; the choice goes to ``selection.json``."""
    for name in args.variants:
        for seed in range(args.seeds):
            train_variant(args, name, seed, layout)
            curve = validation_curve(layout.runs / name / f"seed{seed}")
            print(f"  {name} seed {seed}: validation mAP {curve[args.epochs]:.2f}", flush=True)
    text, chosen = selection(args, layout, args.variants)
    (layout.runs / "selection.json").write_text(json.dumps(
        {"chosen": chosen, "candidates": args.variants, "seeds": args.seeds, "epochs": args.epochs}, indent=2) + "\n")
    return [text, mask_health_over_epochs(args, layout, [n for n in args.variants if n != "baseline"])]


def twin_masks(args: argparse.Namespace, layout: Layout) -> list[str]:
    """Train the runs (validation curves only) and compare their deployed masks on the twin split,
    or (``--confirm-masks``) on the test split, each run's 1[pi > 0.5] from its own test scoring."""
    report = []
    option = "--confirm-masks" if args.confirm_masks else "--twin-masks"
    for name in args.variants:
        if VARIANTS[name].model.get("attention", "sharp") != "sharp":
            raise SystemExit(f"ablation.py: error: {option} compares sampled masks; {name} has none")
        for seed in range(args.seeds):
            train_variant(args, name, seed, layout)
            if args.confirm_masks and not (layout.runs / name / f"seed{seed}" / "scores.npz").is_file():
                raise SystemExit(f"ablation.py: error: {option}: {name} seed {seed} has no test scoring of "
                                 "1[pi > 0.5] to compare with; run its decision first")
        report.append(deployed_masks(args, layout, name, twin=not args.confirm_masks, confirm=args.confirm_masks))
    return report


def earlier_test_scorings(layout: Layout, results: dict[str, list[dict[str, Any]]], command: str) -> str:
    """Which runs of this report had their test split reported first by another command."""
    lines = []
    for name, runs in results.items():
        for seed in range(len(runs)):
            first = json.loads((layout.runs / name / f"seed{seed}" / TEST_SCORED_BY).read_text())[0]
            if first != command:
                lines.append(f"- {name} seed {seed}: `{first}`")
    if not lines:
        return "test split: every run here was scored on it first by this command"
    return "test split scored first by another command:\n" + "\n".join(lines)


def chosen_variant(layout: Layout) -> str:
    """The configuration ``--select`` chose at this budget."""
    path = layout.runs / "selection.json"
    if not path.is_file():
        raise SystemExit(f"ablation.py: error: {path} not found: run --select at this budget first")
    return str(json.loads(path.read_text())["chosen"])

if __name__ == "__main__":
    sys.exit(main())
