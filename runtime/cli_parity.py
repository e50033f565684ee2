"""``san-parity``: CMC/mAP parity of exported artifacts with the PyTorch eval model (see runtime.parity)."""

from __future__ import annotations

import argparse
import sys

from runtime.base import BackendError
from runtime.options import add_backend_arguments, backend_options
from runtime.parity import Artifact, ParityReport, run_parity
from san.arguments import (
    CommandParser,
    add_dataset_arguments,
    add_limit_argument,
    add_progress_argument,
    add_rerank_arguments,
    count,
    dataset_options,
    existing_folder,
    model_file,
    output_file,
    rerank_params,
)
from san.atomic import atomic_write_text
from san.command import command
from san.data.registry import dataset_for_checkpoint, load_dataset
from san.output_guard import refuse_overwriting_inputs
from san.report import write_json
from san.rules import RULE_FIELDS, RULES, describe_rules, override_rules
from san.spec import ContractError


def _defaults_table() -> str:
    return "\n".join(["default thresholds (san.rules; |deltas| in points vs torch; cosines per image):",
                      describe_rules(RULES), f"  fields: {', '.join(RULE_FIELDS)} (none = not checked)"])


EPILOG = f"""\
what is measured, per backend: rank-1/5/10 and mAP (Market-1501 protocol, Euclidean), their
deltas against the PyTorch eval model, paired cosine of every image's embeddings (min/mean),
top-10 overlap (mean share of each query's 10 nearest gallery images both list), rank-1 flips
(queries whose nearest gallery image changed); for PyTorch itself, sampled masks (Gumbel-
Softmax at the checkpoint's tau, BatchNorm in eval mode, mean of --draws seeded draws) against
the deterministic masks it deploys (reported, never gated). Under the table: each delta's 95 %
interval over queries, the queries that gained and lost rank-1 with McNemar's exact test, and a
note when the split is too small for a rank-1 limit to tell a change from noise (with the number
of queries that would resolve it; gates use the measured deltas). Every backend gets the same
uint8 arrays from the one decoder. An artifact is judged by the thresholds of its
precision, read from the file (ONNX san.precision metadata, engine sidecar).

{_defaults_table()}

examples:
  san-parity --ckpt runs/demo/model.pt --onnx runs/demo/model.onnx
  san-parity --ckpt model.pt --onnx model.onnx --int8 model.int8.onnx --json parity.json --markdown parity.md
  san-parity --ckpt model.pt --engine model.engine --device cuda       # on the GPU box
  san-parity --ckpt model.pt --onnx model.onnx --dataset market1501 --root data/Market-1501-v15.09.15
  san-parity --ckpt model.pt --int8 model.int8.onnx --limit int8.max_delta_map=2 --draws 0

data set: default the one the checkpoint was trained on (with its recorded root and options);
--dataset synthetic without --root uses <checkpoint folder>/synthetic (generated when absent).

exit status: 0 every artifact within its thresholds; 1 a threshold breached (each one named,
e.g. "fp32.min_cosine_min: 0.71 < 0.99"); 2 nothing compared (bad arguments, files or data).
"""


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``san-parity``."""
    parser = CommandParser(
        prog="san-parity",
        description="Check that exported SAN models (ONNX, INT8 ONNX, TensorRT engine) retrieve like the\n"
        "PyTorch checkpoint they came from, on a re-ID data set's query and gallery.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ckpt", type=model_file("checkpoint"), required=True,
                        help="the PyTorch checkpoint (the reference)")
    parser.add_argument("--onnx", type=model_file("onnx"), help="fp32 (or fp16) ONNX export of --ckpt")
    parser.add_argument("--int8", type=model_file("onnx"), help="INT8 Q/DQ ONNX made by san-calibrate")
    parser.add_argument("--engine", type=model_file("engine"),
                        help="TensorRT engine (+ .json sidecar) made by san-export --trt")
    parser.add_argument("--ir", type=model_file("openvino"), metavar="XML", help="OpenVINO IR made by san-export --openvino")
    parser.add_argument("--openvino", action="store_true",
                        help="also run --onnx and --int8 on OpenVINO (rows openvino-onnx, openvino-int8), at "
                        "--precision (f32 unless given; bf16 and fp16 are judged by the fp16 rule)")
    add_dataset_arguments(parser, default=None, root=existing_folder, root_help="data set folder (default: see below)")
    add_limit_argument(parser, "int8.min_cosine_mean=0.95, fp32.max_rank1_flips=0")
    parser.add_argument("--draws", type=count(0), default=3, help="sampled-mask draws for torch (default 3; 0: skip)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first draw (default 0)")
    parser.add_argument("--batch-size", type=count(1), default=32, help="images per model call (default 32)")
    add_backend_arguments(parser)
    parser.add_argument("--workers", type=count(0), help="decode threads (default: half the CPUs, 1..8)")
    add_rerank_arguments(parser)
    parser.add_argument("--json", type=output_file, metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--markdown", type=output_file, metavar="PATH", help="also write the report as Markdown")
    add_progress_argument(parser, quiet_alias=True)
    return parser


@command("san-parity")
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``san-parity``."""
    args = build_parser().parse_args(argv)
    backend = backend_options(args)
    precision = backend.pop("precision", None)  # OpenVINO's alone: the torch reference computes in fp32
    given = [(name, path) for name, path in (("onnx", args.onnx), ("int8", args.int8), ("engine", args.engine),
                                              ("ir", args.ir)) if path]
    openvino = (("precision", precision),) if precision else ()
    judged = precision if precision in ("bf16", "fp16") else None
    artifacts = [Artifact(name, path, "int8" if name == "int8" else None, options=openvino if name == "ir" else (),
                          judged_as=judged if name == "ir" else None) for name, path in given]
    if args.openvino:
        artifacts += [Artifact(f"openvino-{name}", path, "int8" if name == "int8" else None, "openvino", openvino,
                               judged) for name, path in given if name in ("onnx", "int8")]
    try:
        if not artifacts:
            raise ValueError("nothing to compare: give at least one of --onnx, --int8, --engine, --ir")
        if precision and not (args.openvino or args.ir):
            raise ValueError(f"--precision {precision} is OpenVINO's: give --openvino or --ir")
        if args.openvino and not (args.onnx or args.int8):
            raise ValueError("--openvino runs the --onnx and --int8 files on OpenVINO: give at least one of them")
        inputs = {"--ckpt": args.ckpt, **{f"--{name}": path for name, path in given}}
        for option in ("--json", "--markdown"):
            if getattr(args, option[2:]):
                refuse_overwriting_inputs(getattr(args, option[2:]), inputs, option)
        rules = override_rules(RULES, args.limit)
        name, root, options = dataset_for_checkpoint(args.ckpt, args.dataset, args.root, dataset_options(args))
        dataset = load_dataset(name, root, verbose=args.progress, **options)
        report: ParityReport = run_parity(
            args.ckpt, dataset, artifacts, rules, draws=args.draws, seed=args.seed, batch_size=args.batch_size,
            options=backend, workers=args.workers, rerank=rerank_params(args), progress=args.progress,
        )
    except (ContractError, BackendError, ValueError, OSError) as exc:
        print(f"san-parity: error: {exc}", file=sys.stderr)
        return 2
    print(report.render())
    if args.json:
        write_json(report, args.json)
    if args.markdown:
        atomic_write_text(args.markdown, report.markdown())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
