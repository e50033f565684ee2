"""``san-train``: train a SAN with a named preset (see :mod:`san.training.presets`, :mod:`san.training.train`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from san.cli.arguments import (
    Adder,
    ArgumentGroup,
    CommandParser,
    DatasetGroup,
    DeviceGroup,
    RunGroup,
    count,
    existing_file,
    finite,
    output_folder,
)
from san.cli.command import command
from san.cli.model_arguments import ModelGroup
from san.training.presets import PRESETS

EPILOG = """\
examples:
  san-train --preset cpu-demo --out runs/demo            # synthetic set (time: see --preset above)
  san-train --dataset market1501 --root data/Market-1501-v15.09.15 --out runs/market \\
      --pretrained resnet50-0676ba61.pth                 # the paper's configuration
  san-train --dataset cuhk03 --root data/cuhk03 --dataset-arg variant=detected --out runs/c3d
  san-train --preset cpu-demo --out runs/demo --resume   # continue after the last saved epoch
  san-train --preset cpu-demo --attention none --out runs/baseline   # the plain ResNet, the same recipe
  torchrun --nproc-per-node 4 -m san.cli.train --dataset market1501 --root DIR --out runs/ddp

The run folder gets model.pt (final weights), last.pt (every epoch, with the optimizer
state --resume needs), best.pt (best evaluated mAP), metrics.jsonl (one JSON line per
epoch; epoch 0 = the untrained network) and tensorboard/ when TensorBoard is installed.
With --dataset synthetic and no --root, the set is generated into OUT/synthetic.

Loss: batch-hard triplet (margin 0.5, or --soft-margin) + mu * sum_i TV(A_i), mu = 0.1.
Each TV term is divided by its element count C*H*W: Eq. 6 is a plain sum, about a
million times the triplet loss at 256x128, which would make mu = 0.1 meaningless.
Temperature per Eq. 9: tau(t) = max(exp(-0.008 t), 0.5). Learning rate: constant, then
exponential decay to 1e-3 x lr over the last third of the steps (Hermans et al.).
"""


class TrainingGroup(ArgumentGroup[dict[str, Any]]):
    """The recipe options san-train changes over its preset: each flag's destination is the
    training config field it sets, and the group reads back exactly the flags it added."""

    title = "training (default: the preset's)"

    def __init__(self) -> None:
        self.fields: tuple[str, ...] = ()

    def add(self, parser: Adder) -> None:
        actions = [
            parser.add_argument("--epochs", type=count(1), help="epochs (one epoch visits every training id once)"),
            parser.add_argument("--batch-p", type=count(2), help="identities per batch (paper 64)"),
            parser.add_argument("--batch-k", type=count(2), help="images per identity (paper 4)"),
            parser.add_argument("--lr", type=finite, help="Adam learning rate (paper 2e-4)"),
            parser.add_argument("--mask-warmup", type=count(0), metavar="E",
                                help="ramp the masks in over the first E epochs: F = (1 + alpha M) T, alpha 0 -> 1 "
                                "(default 0: off)"),
            parser.add_argument("--mu", type=finite, help="TV weight of Eq. 8 (paper 0.1)"),
            parser.add_argument("--soft-margin", action="store_true", default=None, help="softplus instead of a 0.5 hinge"),
            parser.add_argument("--seed", type=int, help="seed of every random draw (default 0)"),
            parser.add_argument("--eval-every", type=count(0),
                                help="evaluate every N epochs (and at epochs 0 and last; 0: never)"),
            parser.add_argument("--pretrained", type=existing_file, metavar="PATH",
                                help="torchvision ImageNet ResNet state dict for the backbone"),
            parser.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"),
                                help="mixed precision on CUDA (default auto)"),
            parser.add_argument("--resume", action="store_true", default=None,
                                help="continue the run in --out from last.pt"),
        ]
        self.fields = tuple(action.dest for action in actions)

    def read(self, args: argparse.Namespace) -> dict[str, Any]:
        values = {name: getattr(args, name) for name in self.fields}
        return {name: str(value) if isinstance(value, Path) else value
                for name, value in values.items() if value is not None}


DATA = DatasetGroup(default="synthetic", root=output_folder,
                    root_help="data set folder (synthetic: default OUT/synthetic, generated when absent)")
TRAINING = TrainingGroup()
MODEL = ModelGroup("san-train")
DEVICE = DeviceGroup("auto")
RUN = RunGroup(workers=True)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``san-train``."""
    parser = CommandParser(
        prog="san-train",
        description="Train a Sharp Attention Network for person re-identification (paper IV-B).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                        help="named configuration (default %(default)s): "
                        + "; ".join(f"{k}: {p.description}" for k, p in PRESETS.items()).replace("%", "%%"))
    parser.add_argument("--out", required=True, type=output_folder, metavar="DIR", help="run folder (created)")
    for group in (DATA, TRAINING, MODEL, DEVICE, RUN):
        group.add_to(parser)
    return parser


@command("san-train")
def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the config, train; 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)
    preset = PRESETS[args.preset]
    overrides = TRAINING.read(args)
    run = RUN.read(args)
    overrides.update(device=str(DEVICE.read(args)), progress=run.progress,
                     **({} if run.workers is None else {"workers": run.workers}))
    overrides["model"] = MODEL.read(args).applied_to(preset.base.recipe.model)
    if overrides["model"].attention == "none" and overrides.get("mask_warmup"):
        raise ValueError("--mask-warmup ramps attention masks in, but --attention none has none")
    data = DATA.read(args)
    from san.training.train import train

    root = None if data.root is None else str(data.root)
    train(preset.config(str(args.out), str(data.name), root, data.options, **overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
