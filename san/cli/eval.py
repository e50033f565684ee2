"""``san-eval``: CMC/mAP of a checkpoint on a data set's query/gallery (see :mod:`san.evaluation.evaluate`)."""

from __future__ import annotations

import argparse
import json
import sys

from san.cli.arguments import (
    CommandParser,
    DatasetGroup,
    DeviceGroup,
    RerankGroup,
    RunGroup,
    count,
    existing_folder,
    model_file,
    output_file,
)
from san.cli.command import command
from san.data.augment import TENCROP_ENLARGE
from san.evaluation.embedding import TTA_MODES

EPILOG = f"""\
examples:
  san-eval --ckpt runs/demo/model.pt                     # the data set it was trained on
  san-eval --ckpt model.pt --dataset market1501 --root data/Market-1501-v15.09.15 --tta flip
  san-eval --ckpt model.pt --dataset cuhk03 --root data/cuhk03 --dataset-arg variant=labeled
  san-eval --ckpt model.pt --dataset synthetic --root runs/demo/synthetic --json --cmc-png cmc.png

Embeds query and gallery with the model in eval mode (deterministic masks), ranks the
gallery by Euclidean distance and prints rank-1/5/10/20 and mAP (Market-1501 protocol:
same-id same-camera gallery entries are ignored). CUHK03 with protocol=classic (the
default) is scored single-shot: one gallery image per id, averaged over 20 draws.

--tta flip averages the embeddings of the image and its mirror; --tta tencrop is the
standard 10-crop: resize to {TENCROP_ENLARGE} x the model's input size, take the four
corner and the centre crops at the input size, and their mirrors; average the 10.
Distances are computed in query chunks (--chunk), so 20k x 20k fits in memory.
Unreadable images are skipped and listed with their reason at the end.
"""


DATA = DatasetGroup(default=None, root=existing_folder,
                    root_help="data set folder (default: the recorded one; san-synth makes a synthetic one)")
DEVICE = DeviceGroup("auto")
RUN = RunGroup(workers=True, json=True)
RERANK = RerankGroup()


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``san-eval``."""
    parser = CommandParser(
        prog="san-eval",
        description="Evaluate a SAN checkpoint: CMC rank-1/5/10/20 and mAP.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ckpt", required=True, type=model_file("checkpoint"), metavar="PATH",
                        help="model.pt / best.pt / last.pt")
    DATA.add_to(parser)
    parser.add_argument("--tta", choices=TTA_MODES, default="none", help="test-time augmentation (default none)")
    parser.add_argument("--batch-size", type=count(1), default=128, help="images per forward pass (default 128)")
    parser.add_argument("--chunk", type=count(1), default=1024, help="queries per distance block (default 1024)")
    parser.add_argument("--cmc-png", type=output_file, metavar="PATH", help="also plot the CMC curve (needs matplotlib)")
    for group in (DEVICE, RUN, RERANK):
        group.add_to(parser)
    return parser


@command("san-eval")
def main(argv: list[str] | None = None) -> int:
    """Parse arguments, evaluate, print; 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)
    from san.evaluation.evaluate import evaluate_checkpoint, save_cmc_png

    data, run, device = DATA.read(args), RUN.read(args), DEVICE.read(args) or "auto"
    report = evaluate_checkpoint(
        args.ckpt, data.name, data.root, data.options,
        tta=args.tta, batch_size=args.batch_size, workers=run.workers, device=device,
        chunk=args.chunk, verbose=run.progress and not run.json, rerank=RERANK.read(args),
    )
    print(json.dumps(report.to_dict(), indent=2) if run.json else report.render())
    if args.cmc_png:
        save_cmc_png(report, args.cmc_png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
