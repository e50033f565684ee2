"""Parameter and FLOP accounting for ``san-info``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from san.model.network import SAN


@dataclass(frozen=True)
class ParamRow:
    """One component: trainable parameters, and the paper's count (conv weights only)."""

    name: str
    trainable: int
    paper: int | None = None


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_table(model: SAN) -> list[ParamRow]:
    """Backbone, each context unit, the head and the total."""
    rows = [ParamRow("backbone", _count(model.stem) + _count(model.stages))]
    for stage, block in model.blocks().items():
        if block.context is not None:
            rows.append(ParamRow(f"context unit {stage}", _count(block.context), block.context.paper_parameter_count()))
    rows.append(ParamRow("head", _count(model.head)))
    cu = [r for r in rows if r.paper is not None]
    if cu:
        rows.append(ParamRow("context units", sum(r.trainable for r in cu), sum(r.paper or 0 for r in cu)))
    rows.append(ParamRow("total", _count(model)))
    return rows


def flops_per_image(model: SAN) -> int:
    """FLOPs (2 x multiply-accumulates) of one eval forward at the contract's size."""
    spec = model.spec
    x = torch.zeros(1, 3, spec.height, spec.width)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


#: The paper's Table II: ResNet-50's context units, convolution weights only (millions).
TABLE_II_RESNET50 = "0.51, 2.03 and 8.13 M, 10.67 M in all"


def format_table(rows: list[ParamRow]) -> str:
    """Millions with two decimals; the second count follows Table II's convention, on this model."""
    lines = [f"{'component':<18}{'params (M)':>12}{'Table II way (M)':>18}"]
    for r in rows:
        paper = f"{r.paper / 1e6:.2f}" if r.paper is not None else "-"
        lines.append(f"{r.name:<18}{r.trainable / 1e6:>12.2f}{paper:>18}")
    if any(r.paper is not None for r in rows):
        lines.append(f"Table II way: this model's convolution weights only, as the paper counts (its figures are "
                     f"for ResNet-50: {TABLE_II_RESNET50})")
    return "\n".join(lines)
