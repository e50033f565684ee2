"""``san-tune``: measure every runtime and precision this machine has on your images, judge each by
its rule, and write the profile ``san-embed --profile`` runs (see :mod:`runtime.tune`)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from runtime.options import THREADS
from runtime.registry import open_backend
from runtime.tune import Row, candidates, steps_per_row, timings_per_row, tune, write_profile
from san.cli.arguments import CommandParser, DatasetGroup, RunGroup, count, existing_folder, model_file, output_file
from san.cli.command import command
from san.data.registry import load_dataset
from san.io.discovery import discover_images
from san.io.output_guard import refuse_overwriting_inputs
from san.io.progress import progress_bar

EPILOG = """\
example:
  san-tune runs/demo/model.onnx --int8 runs/demo/model.int8.onnx --images runs/demo/synthetic/query
  san-tune runs/demo/model.onnx --int8 runs/demo/model.int8.onnx --images runs/demo/synthetic/query \\
      --dataset synthetic --root runs/demo/synthetic --budget 120
  san-embed photos/ --profile runs/demo/model.tune.json

Rows: onnxruntime fp32 (the reference) and INT8 (with --int8); OpenVINO f32, bf16 (on CPUs with
AVX-512 BF16 or AMX) and INT8, with the openvino extra; onnxruntime CUDA where onnxruntime has it;
each --engine on TensorRT. Each is timed model-only at every --batches size and end to end (decoded
from your files by --workers processes, then embedded) at the largest. Each is judged against
onnxruntime fp32 on the same images by its precision's rule (san-parity's rule table): paired
cosine, the hard masks read from inside the graph (onnxruntime and OpenVINO; a flip far from the
threshold with none upstream fails an fp32 row), and with --dataset its retrieval on that labelled
split (mAP and rank-1 deltas). The profile names the fastest row that passes at --choose-at (the
largest batch unless given: a tracker that embeds a few crops per frame wants 1 or 8),
and the machine it was measured on: san-embed refuses it on a machine with other instruction sets
or runtime versions.
"""


def batch_list(text: str) -> tuple[int, ...]:
    """``--batches 1,8,32``."""
    sizes = tuple(count(1, 4096)(part) for part in text.split(","))
    return tuple(sorted(set(sizes)))


RUN = RunGroup(workers=True)
DATA = DatasetGroup(default=None, root=existing_folder, root_help="the labelled split's folder (with --dataset)",
                    default_help="none: judged on --images alone")
DEFAULT_SECONDS = 3.0


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``san-tune``."""
    parser = CommandParser(prog="san-tune", description=__doc__.split("\n\n")[0].replace("``", ""),
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=model_file("onnx"), help="the fp32 ONNX model (san-export)")
    parser.add_argument("--int8", type=model_file("onnx"), metavar="QDQ.onnx", help="its INT8 file (san-calibrate)")
    parser.add_argument("--engine", type=model_file("engine"), action="append", default=[], metavar="ENGINE",
                        help="a TensorRT engine of the model (san-export --trt), repeatable; needs TensorRT here")
    parser.add_argument("--images", type=existing_folder, required=True, metavar="DIR",
                        help="your images, searched recursively (the first --max-images of them)")
    parser.add_argument("--max-images", type=count(2), default=64, metavar="N", help="images judged (default %(default)s)")
    parser.add_argument("--batches", type=batch_list, default=(1, 8, 32), metavar="B,B",
                        help="batch sizes timed (default 1,8,32)")
    parser.add_argument("--choose-at", type=count(1, 4096), metavar="B",
                        help="the batch size the profile's row is chosen at, one of --batches (default the largest)")
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--seconds", type=positive_seconds, metavar="S",
                        help=f"time per row and measurement (default {DEFAULT_SECONDS:g})")
    timing.add_argument("--budget", type=positive_seconds, metavar="S",
                        help="time for all the timed measurements together, shared evenly (judging comes on top)")
    THREADS.add_to(parser)
    DATA.add_to(parser)
    parser.add_argument("--profile", type=output_file, metavar="PATH",
                        help="where the profile goes (default: MODEL.tune.json beside the model)")
    RUN.add_to(parser)
    return parser


def positive_seconds(text: str) -> float:
    """A number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


@command("san-tune")
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``san-tune``."""
    args = build_parser().parse_args(argv)
    run, data = RUN.read(args), DATA.read(args)
    profile = args.profile or args.model.with_name(f"{args.model.stem}.tune.json")
    paths = discover_images(args.images)[: args.max_images]
    if len(paths) < 2:
        raise ValueError(f"--images {args.images}: {len(paths)} image(s); the paired cosine needs at least 2")
    for engine in args.engine:
        open_backend(engine, "tensorrt")  # TensorRT missing here: one line now, not after the other rows
    dataset = None
    if data.name is not None:
        if data.root is None:
            raise ValueError(f"--dataset {data.name}: give its folder with --root")
        dataset = load_dataset(data.name, data.root, verbose=False, **(data.options or {}))
    elif data.root is not None or data.options:
        raise ValueError("--root and --dataset-arg describe a labelled split: give --dataset too")
    records = [] if dataset is None else [*dataset.query, *dataset.gallery]
    inputs = {"model": args.model, **({"--int8": args.int8} if args.int8 else {}),
              **{f"--engine {engine}": engine for engine in args.engine},
              **{f"--images image {path}": args.images / path for path in paths},
              **{f"--root image {r.path}": r.path for r in records}}
    refuse_overwriting_inputs(profile, inputs, "--profile")
    if args.choose_at is not None and args.choose_at not in args.batches:
        raise ValueError(f"--choose-at {args.choose_at}: not one of --batches {','.join(map(str, args.batches))}")
    rows = candidates(args.model, args.int8, THREADS.read(args), args.engine)
    steps = steps_per_row(args.batches, dataset)
    timed = len(rows) * timings_per_row(args.batches)
    seconds = args.budget / timed if args.budget else args.seconds or DEFAULT_SECONDS
    bar = progress_bar(enabled=run.progress, total=len(rows) * steps, desc="tuning", unit="step")

    def step(what: str) -> None:
        bar.set_postfix_str(what)
        bar.update()

    started = time.perf_counter()
    measured = tune(rows, args.images, paths, args.batches, seconds, workers=run.workers, dataset=dataset,
                    progress=step)
    bar.close()
    at = args.choose_at or max(args.batches)
    chosen = write_profile(Path(profile), args.model, measured, at)
    print(render(measured, chosen, args.batches, at))
    print(f"{len(rows)} rows in {time.perf_counter() - started:.0f} s ({seconds:.2g} s per timing); profile: {profile} "
          f"({chosen.name} at batch {at}; san-embed IMAGES --profile {profile})")
    return 0


def render(rows: list[Row], chosen: Row, batches: tuple[int, ...], at: int) -> str:
    """The table san-tune prints: speed, its ratio to the reference at batch ``at``, and each row's
    fidelity and rule."""
    largest, reference = max(batches), rows[0]
    split = rows[0].split
    head = ["row", *(f"img/s batch {b}" for b in batches), f"x fp32 at {at}", f"end to end at {largest}",
            "cos min", "cos mean", "images with a mask flip", *([f"dmAP / drank-1 on {split.dataset}"] if split else []),
            "rule"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        flips = ("not readable" if row.masks is None else
                 f"{row.masks.images_flipped}/{row.masks.images}" + (
                     f", {row.masks.unexplained} unexplained" if row.masks.unexplained else ""))
        cells = [f"{row.name}{' (chosen)' if row is chosen else ''}",
                 *(f"{row.images_per_second[b]:.1f}" for b in batches),
                 f"{row.images_per_second[at] / reference.images_per_second[at]:.2f}x",
                 f"{row.end_to_end:.1f} img/s" if row.end_to_end else "-", f"{row.cosine_min:.4f}",
                 f"{row.cosine_mean:.4f}", flips]
        if split:
            cells.append(f"{row.split.delta_map:+.2f} / {row.split.delta_rank1:+.2f}" if row.split else "-")
        cells.append(f"{row.kind}: pass" if row.passed else f"{row.kind}: FAIL {'; '.join(row.breaches)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
