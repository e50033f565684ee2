"""``san-info``: configuration, input contract, parameter table and FLOPs of a SAN."""

from __future__ import annotations

import argparse
import json
import sys

from san.cli.arguments import CommandParser, RunGroup, model_file
from san.cli.command import command
from san.cli.model_arguments import ModelGroup
from san.model.config import ModelConfig
from san.training.presets import PRESETS

MODEL = ModelGroup("san-info", legacy_info=True)
RUN = RunGroup(json=True, progress=False)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="san-info",
        description="Describe a SAN: its configuration, input contract, parameters per "
        "component (the context units also in the paper's Table II count, convolution "
        "weights only) and FLOPs per image. Give a checkpoint, or describe a fresh model "
        "from flags: the paper's (ResNet-50 at 256x128) unless --preset names another starting point.",
        epilog="examples:\n  san-info\n  san-info runs/demo/model.pt\n  san-info --preset cpu-demo\n"
        "  san-info --backbone resnet18 --input-size 128x64 --attention soft\n  san-info --preset cpu-demo --attention none",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", nargs="?", type=model_file("checkpoint"), help="a model.pt written by san-train")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from this san-train preset's model "
                        "(the options below change it)")
    MODEL.add_to(parser)
    RUN.add_to(parser)
    return parser


def _described_config(args: argparse.Namespace) -> ModelConfig:
    """The preset's model (or the paper's), changed by the options given."""
    return MODEL.read(args).applied_to(PRESETS[args.preset].base.recipe.model if args.preset else ModelConfig())


@command("san-info")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported here so `san-info --help` answers without loading torch.
    from san.evaluation.summary import flops_per_image, format_table, parameter_table
    from san.model.network import build_model
    from san.training.checkpoint import load_checkpoint

    model = load_checkpoint(args.checkpoint)[0] if args.checkpoint else build_model(_described_config(args))
    rows = parameter_table(model)
    flops = flops_per_image(model)
    if RUN.read(args).json:
        print(json.dumps({
            "config": model.cfg.to_dict(),
            "parameters": {r.name: {"trainable": r.trainable, "table2_way": r.paper} for r in rows},
            "flops_per_image": flops,
        }, indent=2))
        return 0
    print("configuration:")
    for key, value in model.cfg.to_dict().items():
        if key != "spec":
            print(f"  {key:<18}{value}")
    print("input contract:")
    for key, value in model.spec.to_dict().items():
        print(f"  {key:<18}{value}")
    print(format_table(rows))
    print(f"FLOPs per image at {model.spec.height}x{model.spec.width}: {flops / 1e9:.2f} GFLOP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
