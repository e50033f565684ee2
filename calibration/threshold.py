"""Mask-threshold calibration: the deterministic threshold that best preserves the retrieval
quality of the stochastically trained model.

SAN trains with sampled masks (relaxed Bernoulli by Gumbel-Softmax, Eqs. 4-5) and deploys
``M = 1[pi > threshold]``; 0.5 is the noiseless arg-max of Eq. 4, but the deterministic
network is not the network that was trained. :func:`sweep_thresholds` measures both on a
validation split and picks the threshold whose mAP is closest to the stochastic model's.

The reference, precisely: every sharp mask generator in training mode — a fresh relaxed
Bernoulli sample per image and forward pass, at the temperature tau stored in the
checkpoint (the trainer's final tau of Eq. 9; it is a buffer of each block) — and every
other module in eval mode (BatchNorm uses its running statistics). One *draw* embeds the
query and the gallery once with ``torch.manual_seed(seed + k)``; the reference mAP (rank-1,
mask density) is the mean over ``draws`` draws of each draw's value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from calibration.threshold_choice import DEFAULT_THRESHOLDS, SweepPoint, choose_threshold
from san.data.records import ReidDataset
from san.evaluation.evaluate import EvalReport, evaluate_model
from san.model.network import SAN
from san.model.sampled import StochasticMasks
from san.training.checkpoint import load_checkpoint, save_checkpoint


@contextmanager
def mask_density(model: SAN) -> Iterator[dict[int, list[float]]]:
    """Accumulate, per block, the sum of mask values and their count over every forward pass
    inside the block: {stage: [sum, count]}."""
    totals: dict[int, list[float]] = {stage: [0.0, 0.0] for stage in model.sampled_generators()}

    def hook(stage: int) -> Callable[[nn.Module, Any, tuple[Tensor, Tensor]], None]:
        def record(_module: nn.Module, _inputs: Any, output: tuple[Tensor, Tensor]) -> None:
            totals[stage][0] += float(output[0].float().sum())
            totals[stage][1] += output[0].numel()

        return record

    handles = [g.register_forward_hook(hook(stage)) for stage, g in model.sampled_generators().items()]
    try:
        yield totals
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class ThresholdReport:
    """The reference, every swept threshold, and the choice."""

    reference: SweepPoint
    points: list[SweepPoint]
    chosen: float
    draws: int
    seed: int
    tau: dict[int, float]
    dataset: str

    def to_dict(self) -> dict[str, Any]:
        """JSON- and checkpoint-safe summary."""
        def point(p: SweepPoint) -> dict[str, Any]:
            d = asdict(p)
            d["density"] = {str(k): v for k, v in p.density.items()}
            return d

        return {
            "reference": point(self.reference), "points": [point(p) for p in self.points],
            "chosen": self.chosen, "draws": self.draws, "seed": self.seed,
            "tau": {str(k): v for k, v in self.tau.items()}, "dataset": self.dataset,
        }

    def render(self) -> str:
        """The sweep as a table for humans."""
        stages = sorted(self.reference.density)
        head = f"{'threshold':>10} {'mAP':>7} {'dmAP':>7} {'rank-1':>7}  " + " ".join(f"{'dens' + str(s):>7}" for s in stages)
        ref = self.reference

        def row(label: str, p: SweepPoint, mark: str = "") -> str:
            dens = " ".join(f"{p.density[s]:7.3f}" for s in stages)
            return f"{label:>10} {100 * p.mAP:7.2f} {100 * (p.mAP - ref.mAP):+7.2f} {100 * p.rank1:7.2f}  {dens}{mark}"

        lines = [
            f"mask-threshold sweep on {self.dataset} (reference: sampled masks at tau "
            f"{', '.join(f'{t:.3f}' for t in self.tau.values())}, mean of {self.draws} draws from seed {self.seed})",
            head,
            row("sampled", ref),
        ]
        lines += [row(f"{p.threshold:.2f}", p, "  <- chosen" if p.threshold == self.chosen else "") for p in self.points]
        return "\n".join(lines)


def _measure(model: nn.Module, san: SAN, dataset: ReidDataset, **eval_options: Any) -> SweepPoint:
    with mask_density(san) as totals:
        report: EvalReport = evaluate_model(model, dataset, **eval_options)
    density = {stage: s / n if n else 0.0 for stage, (s, n) in totals.items()}
    return SweepPoint(None, float(report.mAP), float(report.cmc[0]), density)


def sweep_thresholds(
    model: SAN,
    dataset: ReidDataset,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    draws: int = 3,
    seed: int = 0,
    **eval_options: Any,
) -> ThresholdReport:
    """Measure the stochastic reference and every deterministic threshold on ``dataset``'s
    query/gallery (a validation split); ``eval_options`` go to :func:`san.evaluation.evaluate.evaluate_model`.

    The model's own threshold is restored afterwards.
    """
    generators = model.sampled_generators()
    if not generators:
        raise ValueError(
            f"model has no sampled attention mask (attention={model.cfg.attention!r}); "
            "only sampled masks have a deterministic threshold to calibrate"
        )
    if draws < 1:
        raise ValueError(f"--draws must be >= 1, got {draws}")
    bad = [t for t in thresholds if not 0.0 < t < 1.0]
    if not thresholds or bad:
        raise ValueError(f"thresholds must lie in (0, 1), got {list(thresholds) or 'none'}")
    tau = model.temperatures()
    was_training = model.training
    sampled = []
    try:
        for k in range(draws):
            torch.manual_seed(seed + k)
            sampled.append(_measure(StochasticMasks(model), model, dataset, **eval_options))
    finally:
        model.train(was_training)  # the wrapper leaves the generators sampling
    reference = SweepPoint(
        None,
        float(np.mean([p.mAP for p in sampled])),
        float(np.mean([p.rank1 for p in sampled])),
        {s: float(np.mean([p.density[s] for p in sampled])) for s in generators},
    )
    original = model.spec.mask_threshold
    points = []
    try:
        for threshold in thresholds:
            model.set_mask_threshold(float(threshold))
            p = _measure(model, model, dataset, **eval_options)
            points.append(SweepPoint(float(threshold), p.mAP, p.rank1, p.density))
    finally:
        model.set_mask_threshold(original)
    return ThresholdReport(reference, points, choose_threshold(reference, points), draws, seed, tau, dataset.name)


def calibrate_threshold(
    ckpt: str | Path,
    dataset: ReidDataset,
    out: str | Path,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    draws: int = 3,
    seed: int = 0,
    **eval_options: Any,
) -> ThresholdReport:
    """Sweep, then write ``out``: the checkpoint's model with the chosen threshold in its
    contract, its training state unchanged, and the sweep under ``extra["threshold_sweep"]``."""
    model, meta = load_checkpoint(ckpt)
    report = sweep_thresholds(model, dataset, thresholds, draws, seed, **eval_options)
    model.set_mask_threshold(report.chosen)
    extra = {**meta.extra, "threshold_sweep": report.to_dict(), "threshold_source_sha256": meta.sha256}
    save_checkpoint(out, model, training=meta.training, extra=extra)
    return report
