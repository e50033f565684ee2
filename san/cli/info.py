"""``san-info``: configuration, input contract, parameter table and FLOPs of a SAN."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from san.arguments import CommandParser, count, model_file
from san.config import ATTENTIONS, BACKBONES, ConfigError, ModelConfig
from san.presets import PRESETS
from san.command import command


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="san-info",
        description="Describe a SAN: its configuration, input contract, parameters per "
        "component (the context units also in the paper's Table II count, convolution "
        "weights only) and FLOPs per image. Give a checkpoint, or describe a fresh model "
        "from flags: the paper's (ResNet-50 at 256x128) unless --preset names another starting point.",
        epilog="examples:\n  san-info\n  san-info runs/demo/model.pt\n  san-info --preset cpu-demo\n"
        "  san-info --backbone resnet18 --height 128 --width 64 --attention soft",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", nargs="?", type=model_file("checkpoint"), help="a model.pt written by san-train")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="start from this san-train preset's model "
                        "(the options below change it)")
    parser.add_argument("--backbone", choices=BACKBONES)
    parser.add_argument("--attention", choices=ATTENTIONS, help="mask generator variant")
    parser.add_argument("--stages", type=int, nargs="+", help="stages with attention")
    parser.add_argument("--no-context-unit", action="store_true", help="generate masks from T directly")
    parser.add_argument("--height", type=count(16, 4096))
    parser.add_argument("--width", type=count(16, 4096))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return parser


def _described_config(args: argparse.Namespace) -> ModelConfig:
    """The preset's model (or the paper's), changed by the options given."""
    base = PRESETS[args.preset].base.recipe.model if args.preset else ModelConfig()
    given = {"backbone": args.backbone, "attention": args.attention,
             "attention_stages": tuple(args.stages) if args.stages else None,
             "context_unit": False if args.no_context_unit else None}
    size = {"height": args.height, "width": args.width}
    spec = replace(base.spec, **{k: v for k, v in size.items() if v is not None})
    return replace(base, spec=spec, **{k: v for k, v in given.items() if v is not None})


@command("san-info")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported here so `san-info --help` answers without loading torch.
    from san.checkpoint import CheckpointError, load_checkpoint
    from san.model.network import build_model
    from san.summary import flops_per_image, format_table, parameter_table

    try:
        if args.checkpoint:
            model, _ = load_checkpoint(args.checkpoint)
        else:
            model = build_model(_described_config(args))
    except (CheckpointError, ConfigError, ValueError) as exc:
        print(f"san-info: error: {exc}", file=sys.stderr)
        return 2
    rows = parameter_table(model)
    flops = flops_per_image(model)
    if args.json:
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
