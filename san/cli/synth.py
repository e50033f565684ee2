"""``san-synth``: write the synthetic Market-1501-layout re-ID data set."""

from __future__ import annotations

import argparse
import sys

from san.cli.arguments import CommandParser, RunGroup, count, finite, output_folder
from san.cli.command import command
from san.data.synth import GALLERY, MANIFEST, QUERY, TRAIN, SynthParams, ensure_synthetic, rendering_progress
from san.io.output_lock import exclusive_output

DESCRIPTION = f"""\
Render a synthetic person re-identification data set (pure NumPy + PIL, fast) in the
Market-1501 layout:

  DIR/{TRAIN + "/":<20} training identities
  DIR/{QUERY + "/":<20} one image per test identity per camera
  DIR/{GALLERY + "/":<20} the other test images, distractors (pid 0000), junk (pid -1)
  DIR/{MANIFEST:<20} parameters and image counts

File names are PPPP_cCs1_FFFFFF_NN.jpg (pid, camera, frame, box). The same arguments
always give byte-identical files; a complete set with the same arguments is reused.
"""


RUN = RunGroup()


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``san-synth``."""
    defaults = SynthParams()
    low, high = defaults.images_per_camera
    parser = CommandParser(
        prog="san-synth", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=output_folder, required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument(
        "--ids", type=count(2), default=defaults.ids, help="identities in all (default %(default)s)"
    )
    parser.add_argument(
        "--test-fraction",
        type=finite,
        default=defaults.test_fraction,
        help="share of the identities in query/gallery, the rest train (default %(default)s); "
        "more test identities measure rank-1 more finely without lengthening training",
    )
    parser.add_argument(
        "--first-pid",
        type=count(1),
        default=defaults.first_pid,
        help="number the identities from here (default %(default)s). The same seed keeps the "
        "cameras and gives pid N the same person, so --first-pid past another set's ids makes "
        "a validation set of new people under that set's cameras",
    )
    parser.add_argument(
        "--cameras", type=count(2, 9), default=defaults.cameras, help="cameras, 2..9 (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    parser.add_argument(
        "--height", type=count(16, 2048), default=defaults.height, help="image height (default %(default)s)"
    )
    parser.add_argument("--width", type=count(8, 1024), default=defaults.width, help="image width (default %(default)s)")
    parser.add_argument(
        "--images-per-camera",
        type=count(1),
        nargs=2,
        default=defaults.images_per_camera,
        metavar=("MIN", "MAX"),
        help=f"images per identity in each camera it appears in (default {low} {high})",
    )
    RUN.add_to(parser)
    return parser


@command("san-synth")
def main(argv: list[str] | None = None) -> int:
    """Parse arguments, write (or reuse) the set, print its summary; 0 on success, 2 on bad input."""
    args = build_parser().parse_args(argv)
    with exclusive_output(args.out):
        summary = ensure_synthetic(
            args.out,
            progress=rendering_progress(RUN.read(args).progress),
            ids=args.ids,
            test_fraction=args.test_fraction,
            first_pid=args.first_pid,
            cameras=args.cameras,
            seed=args.seed,
            images_per_camera=tuple(args.images_per_camera),
            height=args.height,
            width=args.width,
        )
    print(summary.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
