"""``san-tune``: measure every runtime and precision this machine has on your images, judge each by
its rule, and write the profile ``san-embed --profile`` runs (see :mod:`runtime.tune`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.options import THREADS
from runtime.tune import candidates, tune, write_profile
from san.cli.arguments import CommandParser, RunGroup, count, existing_folder, model_file, output_file
from san.cli.command import command
from san.io.discovery import discover_images
from san.io.output_guard import refuse_overwriting_inputs
from san.io.progress import progress_bar

EPILOG = """\
example:
  san-tune runs/demo/model.onnx --int8 runs/demo/model.int8.onnx --images runs/demo/synthetic/query
  san-embed photos/ --profile runs/demo/model.tune.json

Rows: onnxruntime fp32 (the reference) and INT8 (with --int8); OpenVINO f32, bf16 (on CPUs with
AVX-512 BF16 or AMX) and INT8, with the openvino extra; onnxruntime CUDA where onnxruntime has it.
Each is timed model-only at every --batches size and judged against onnxruntime fp32 on the same
images by its precision's rule (paired cosine, min and mean; san-parity's rule table). The profile
names the fastest row that passes at the largest batch, and the machine it was measured on:
san-embed refuses it on a machine with other instruction sets or runtime versions.
"""


def batch_list(text: str) -> tuple[int, ...]:
    """``--batches 1,8,32``."""
    sizes = tuple(count(1, 4096)(part) for part in text.split(","))
    return tuple(sorted(set(sizes)))


RUN = RunGroup()


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``san-tune``."""
    parser = CommandParser(prog="san-tune", description=__doc__.split("\n\n")[0].replace("``", ""),
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=model_file("onnx"), help="the fp32 ONNX model (san-export)")
    parser.add_argument("--int8", type=model_file("onnx"), metavar="QDQ.onnx", help="its INT8 file (san-calibrate)")
    parser.add_argument("--images", type=existing_folder, required=True, metavar="DIR",
                        help="your images, searched recursively (the first --max-images of them)")
    parser.add_argument("--max-images", type=count(2), default=64, metavar="N", help="images judged (default %(default)s)")
    parser.add_argument("--batches", type=batch_list, default=(1, 8, 32), metavar="B,B",
                        help="batch sizes timed (default 1,8,32); the profile is chosen at the largest")
    parser.add_argument("--seconds", type=count(1), default=3, metavar="S",
                        help="time per row and batch size (default %(default)s)")
    THREADS.add_to(parser)
    parser.add_argument("--profile", type=output_file, metavar="PATH",
                        help="where the profile goes (default: MODEL.tune.json beside the model)")
    RUN.add_to(parser)
    return parser


@command("san-tune")
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``san-tune``."""
    args = build_parser().parse_args(argv)
    profile = args.profile or args.model.with_name(f"{args.model.stem}.tune.json")
    refuse_overwriting_inputs(profile, {"model": args.model, **({"--int8": args.int8} if args.int8 else {})}, "--profile")
    images = [args.images / p for p in discover_images(args.images)][: args.max_images]
    if len(images) < 2:
        raise ValueError(f"--images {args.images}: {len(images)} image(s); the paired cosine needs at least 2")
    rows = candidates(args.model, args.int8, THREADS.read(args))
    bar = progress_bar(enabled=RUN.read(args).progress, total=len(rows), desc="tuning", unit="row")
    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update()

    measured = tune(rows, images, args.batches, args.seconds, progress=step)
    bar.close()
    largest = max(args.batches)
    chosen = write_profile(Path(profile), args.model, measured, largest)
    reference = measured[0].images_per_second
    print(f"| row | {' | '.join(f'img/s batch {b}' for b in args.batches)} | x fp32 at {largest} | cos min | cos mean "
          "| rule |")
    print(f"|---|{'---|' * len(args.batches)}---|---|---|---|")
    for row in measured:
        rule = f"{row.kind}: pass" if row.passed else f"{row.kind}: FAIL {'; '.join(row.breaches)}"
        print(f"| {row.name}{' (chosen)' if row is chosen else ''} | "
              f"{' | '.join(f'{row.images_per_second[b]:.1f}' for b in args.batches)} | "
              f"{row.images_per_second[largest] / reference[largest]:.2f}x | {row.cosine_min:.4f} | "
              f"{row.cosine_mean:.4f} | {rule} |")
    print(f"profile: {profile} ({chosen.name} at batch {largest}; san-embed IMAGES --profile {profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
