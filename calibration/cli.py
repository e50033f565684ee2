"""``san-calibrate``: INT8 Q/DQ quantization of an exported SAN, and mask-threshold calibration."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from calibration.hygiene import select_calibration_set
from calibration.quantize import DEFAULT_OPTIONS, FLOAT_PRECISIONS, METHODS, TARGETS, QuantizeOptions, quantize_onnx
from calibration.report import build_report
from calibration.threshold_choice import DEFAULT_THRESHOLDS
from san.cli.arguments import (
    CommandParser,
    DatasetGroup,
    LimitGroup,
    RunGroup,
    add_overwrite_argument,
    count,
    existing_folder,
    finite,
    model_file,
    output_file,
    output_folder,
)
from san.cli.command import command, subcommand
from san.contract.rules import Rule
from san.data.registry import DATASETS, load_dataset
from san.evaluation.report import write_json
from san.io.output_guard import refuse_overwriting_inputs, refuse_replacing
from san.io.output_lock import exclusive_output

DESCRIPTION = """\
Make an exported SAN run in INT8, without calibrating on the test set.

  san-calibrate --onnx model.onnx --images DIR [...]      (the default command: quantize)
  san-calibrate threshold --ckpt model.pt --dataset ...  (pick the deterministic mask threshold)

Typical order: train -> `san-calibrate threshold` (optional; writes model.thr.pt) ->
`san-export --ckpt model.thr.pt` -> `san-calibrate --onnx model.onnx ...` ->
`san-export --ckpt model.thr.pt --trt --int8 model.trt.int8.onnx` on a GPU box (quantized
with --target tensorrt).
Run `san-calibrate quantize --help` or `san-calibrate threshold --help` for the options.
"""

QUANTIZE_DESCRIPTION = """\
Write an INT8 copy of an exported SAN as explicit QuantizeLinear/DequantizeLinear (Q/DQ)
pairs, for the runtime that will run it (--target): onnxruntime on the CPU, or TensorRT as an
explicit INT8 engine.

What happens:
  1. hygiene  every image under --images is compared with the evaluation split (--exclude
              folders and/or the query+gallery of --eval-dataset): the same file, or the
              same bytes under another name, is refused. Then --num images are drawn
              with --seed (printed, and stored in the output's metadata).
  2. ranges   the sample streams through the contract's decode + resize (the one used by
              evaluation and every backend) into onnxruntime's calibrator (--method).
              The ranges are cached, keyed by the model's sha256, the method and the
              images' content: re-running with the same inputs skips this step.
  3. INT8     weights int8 symmetric per output channel; activations per tensor. The
              attention-mask path (min-max normalisation, comparison with the threshold,
              the multiplication by the mask) stays in float, so rounding cannot flip
              masks wholesale; so do the stem and the first --float-blocks stages, whose
              rounding every later hard mask would amplify. The input contract is copied
              unchanged.
  4. report   with --eval-dataset: fp32 vs INT8 CMC/mAP on its query/gallery, mask-flip
              rate per block, ranges per layer, and the verdict of the int8 rule that
              san-parity applies too (exit 1 when a limit is breached; the INT8 file is
              kept); printed and saved as JSON.

Methods: percentile (clip |x| at the 99.999th percentile; the default), minmax (the
full observed range), entropy (KL-divergence optimal clipping). The defaults (percentile,
--float-blocks 1, pooling and embedding head in float) were chosen on a validation split,
never the test split: `python benchmarks/calibration_sweep.py` (docs/benchmarks.md, "Training, parity
and INT8 on the demo model").

Targets: onnxruntime (the default, because a file made without a GPU at hand runs on the
CPU: uint8 activations fold every ReLU and fuse every Conv, biases INT32) is the file
onnxruntime runs fastest. tensorrt: int8 symmetric activations (zero point 0), weights per
output channel on axis 0, biases in float: what TensorRT's parser accepts (check any file
with `san-export --check-tensorrt FILE`); onnxruntime runs it too, more slowly.

Example:
  san-calibrate --onnx model.onnx --images data/bounding_box_train --num 256 \\
      --eval-dataset synthetic --eval-root data
"""

THRESHOLD_DESCRIPTION = """\
SAN trains with sampled masks (Gumbel-Softmax at temperature tau) and deploys the hard
mask 1[pi > threshold]. This sweeps the threshold on a validation split with the torch
model and picks the one whose mAP is closest to that of the stochastic model (sampled
masks at the checkpoint's final tau, BatchNorm in eval mode, mean over --draws seeded
draws); ties go to 0.5, the noiseless arg-max. It prints threshold vs mAP vs mask density
per block and writes a new checkpoint whose contract carries the chosen threshold, so
`san-export` and every backend use it.

Use a validation split, not the test set you report: e.g. the held-out twin of the
training set, new people under the same cameras (for the cpu-demo set: `san-synth --out val
--ids 1000 --test-fraction 0.8 --first-pid 1001`; another --seed would also draw other
cameras), or a held-out folder.

Example:
  san-calibrate threshold --ckpt runs/demo/model.pt --dataset synthetic --root val \\
      --out runs/demo/model.thr.pt
"""

COMMANDS = ("quantize", "threshold")


QUANTIZE_LIMITS = LimitGroup("int8.max_delta_map=2, as san-parity")
QUANTIZE_RUN = RunGroup()
THRESHOLD_DATA = DatasetGroup(default=None, required=True, root=existing_folder,
                              root_help="the validation data set's folder (san-synth makes a synthetic one)")
THRESHOLD_RUN = RunGroup(workers=True)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``san-calibrate`` and its two commands."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = CommandParser(prog="san-calibrate", description=DESCRIPTION, formatter_class=raw)
    commands = parser.add_subparsers(dest="command", metavar="{quantize,threshold}")

    q = commands.add_parser("quantize", help="INT8 Q/DQ ONNX (the default)", description=QUANTIZE_DESCRIPTION,
                            formatter_class=raw)
    q.add_argument("--onnx", required=True, type=model_file("onnx"), metavar="PATH", help="fp32 ONNX written by san-export")
    q.add_argument("--images", required=True, type=existing_folder, metavar="DIR",
                   help="calibration images (e.g. the training split), searched recursively")
    q.add_argument("--out", type=output_file, metavar="PATH", help="INT8 ONNX (default: MODEL.int8.onnx beside --onnx)")
    q.add_argument("--method", choices=sorted(METHODS), default=DEFAULT_OPTIONS.method, help="range calibration (default %(default)s)")
    q.add_argument("--num", type=count(1), default=256, metavar="N", help="images to sample (default %(default)s)")
    q.add_argument("--seed", type=count(0), default=0, metavar="S", help="sampling seed (default %(default)s)")
    q.add_argument(
        "--target", choices=sorted(TARGETS), default=DEFAULT_OPTIONS.target,
        help="onnxruntime: uint8 activations, INT32 biases, fastest on the CPU (default: a file made "
        "without a GPU runs there); tensorrt: int8 symmetric, float biases, for san-export --trt --int8",
    )
    q.add_argument(
        "--float-precision", choices=FLOAT_PRECISIONS, default=DEFAULT_OPTIONS.float_precision,
        help="what the parts kept in float run in: fp32 (default) or fp16 (--target tensorrt: an INT8 engine whose "
        "float parts use fp16 tensor cores; the L2 normalisation stays fp32; TensorRT 10 or later)",
    )
    q.add_argument(
        "--float-blocks", type=count(0), default=DEFAULT_OPTIONS.float_blocks, metavar="N",
        help="keep the stem and the first N stages (with their attention blocks) in fp32 "
        "(default %(default)s; 0: quantize all)",
    )
    q.add_argument("--reduce-range", action="store_true",
                   help="7-bit weights (AVX2 CPUs without VNNI can saturate u8 x s8 sums)")
    q.add_argument("--cache-dir", type=output_folder, metavar="DIR",
                   help="range cache folder (default: .calibration-cache beside --out)")
    q.add_argument("--batch-size", type=count(1), default=DEFAULT_OPTIONS.batch_size, metavar="N",
                   help="calibration batch (default %(default)s)")
    hygiene = q.add_argument_group("evaluation split (never calibrated on; also the report's held-out split)")
    hygiene.add_argument("--exclude", type=existing_folder, action="append", default=[], metavar="DIR",
                         help="evaluation image folder (repeatable)")
    hygiene.add_argument("--eval-dataset", choices=sorted(DATASETS), metavar="NAME",
                         help=f"data set whose query/gallery are evaluation images: {', '.join(sorted(DATASETS))}")
    hygiene.add_argument("--eval-root", type=existing_folder, metavar="DIR", help="that data set's folder")
    hygiene.add_argument("--report", type=output_file, metavar="PATH",
                         help="report JSON (default: OUT.report.json; needs --eval-dataset)")
    QUANTIZE_LIMITS.add(hygiene)
    add_overwrite_argument(q, "an existing --out (and its report)")
    QUANTIZE_RUN.add_to(q)

    t = commands.add_parser("threshold", help="calibrate the mask threshold (new checkpoint)",
                            description=THRESHOLD_DESCRIPTION, formatter_class=raw)
    t.add_argument("--ckpt", required=True, type=model_file("checkpoint"), metavar="PATH", help="trained checkpoint")
    THRESHOLD_DATA.add_to(t)
    t.add_argument("--out", required=True, type=output_file, metavar="PATH", help="checkpoint to write")
    t.add_argument("--thresholds", type=finite, nargs="+", default=DEFAULT_THRESHOLDS, metavar="T",
                   help="thresholds to sweep (default 0.30 .. 0.70 step 0.05)")
    t.add_argument("--draws", type=count(1), default=3, metavar="K",
                   help="seeded draws of the stochastic reference (default %(default)s)")
    t.add_argument("--seed", type=count(0), default=0, metavar="S", help="seed of the first draw (default %(default)s)")
    t.add_argument("--batch-size", type=count(1), default=128, metavar="N", help="evaluation batch (default %(default)s)")
    add_overwrite_argument(t, "an existing --out")
    THRESHOLD_RUN.add_to(t)
    return parser


def _quantize(args: argparse.Namespace) -> int:
    if (args.eval_dataset is None) != (args.eval_root is None):
        raise ValueError("--eval-dataset and --eval-root go together (the data set's name and its folder)")
    rule = QUANTIZE_LIMITS.read(args)["int8"]
    out = args.out or args.onnx.with_name(f"{args.onnx.stem}.int8.onnx")
    refuse_overwriting_inputs(out, {"--onnx": args.onnx})
    with exclusive_output(out):
        return _quantize_into(args, out, rule)


def _quantize_into(args: argparse.Namespace, out: Path, rule: Rule) -> int:
    """``san-calibrate`` into ``out``, which this run holds."""
    refuse_replacing(out, "--out", args.overwrite)
    dataset = load_dataset(args.eval_dataset, args.eval_root) if args.eval_dataset else None
    sample = select_calibration_set(args.images, args.num, args.seed, args.exclude, dataset)
    print(sample.render())
    options = QuantizeOptions(
        method=args.method, target=args.target, float_precision=args.float_precision, float_blocks=args.float_blocks,
        reduce_range=args.reduce_range, batch_size=args.batch_size, progress=QUANTIZE_RUN.read(args).progress,
    )
    result = quantize_onnx(args.onnx, sample.images, out, options=options, cache_dir=args.cache_dir, sampling=sample.sampling())
    print(result.render())
    if dataset is None:
        print("no report: pass --eval-dataset NAME --eval-root DIR to compare fp32 and INT8 on a held-out split")
        return 0
    report = build_report(args.onnx, out, dataset, result.cache, result.calibration,
                          progress=QUANTIZE_RUN.read(args).progress, rule=rule)
    print(report.render())
    print(f"report: {write_json(report, args.report or out.with_name(out.name + '.report.json'))}")
    return 0 if report.passed else 1


def _threshold(args: argparse.Namespace) -> int:
    from calibration.threshold import calibrate_threshold  # runs the torch model

    refuse_overwriting_inputs(args.out, {"--ckpt": args.ckpt})
    with exclusive_output(args.out):
        refuse_replacing(args.out, "--out", args.overwrite)
        data, run = THRESHOLD_DATA.read(args), THRESHOLD_RUN.read(args)
        dataset = load_dataset(str(data.name), str(data.root), **(data.options or {}))
        report = calibrate_threshold(
            args.ckpt, dataset, args.out, args.thresholds, args.draws, args.seed,
            batch_size=args.batch_size, workers=run.workers, progress=run.progress,
        )
    print(report.render())
    print(f"wrote {args.out} (mask threshold {report.chosen:.2f} in its contract)")
    return 0


@command("san-calibrate")
def main(argv: list[str] | None = None) -> int:
    """Parse, run one command; 0 on success, 1 when the INT8 report breaches its rule, 2 on bad
    input or refused data."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "quantize")  # the default command
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    subcommand(args.command)
    return _quantize(args) if args.command == "quantize" else _threshold(args)


if __name__ == "__main__":
    sys.exit(main())
