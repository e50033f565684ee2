"""``san-parity``: CMC/mAP parity of exported artifacts with the PyTorch eval model (see runtime.parity)."""

from __future__ import annotations

import argparse
import json
import sys

from runtime.options import BACKEND
from runtime.parity import Artifact, ParityReport, run_parity
from san.cli.arguments import (
    CommandParser,
    DatasetGroup,
    LimitGroup,
    RerankGroup,
    RunGroup,
    count,
    existing_folder,
    model_file,
    output_file,
)
from san.cli.command import command
from san.contract.artifact import ARTIFACT_KINDS
from san.contract.rules import RULE_FIELDS, RULES, describe_rules
from san.data.registry import dataset_for_checkpoint, load_dataset
from san.evaluation.report import write_json
from san.io.atomic import atomic_write_text
from san.io.output_guard import refuse_overwriting_inputs


def _defaults_table() -> str:
    return "\n".join(["default thresholds (san.contract.rules; |deltas| in points vs torch; cosines per image):",
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
  san-parity --ckpt model.pt --onnx model.onnx --int8 model.int8.onnx --report parity.json --markdown parity.md
  san-parity --ckpt model.pt --engine model.engine --device cuda       # on the GPU box
  san-parity --ckpt model.pt --onnx model.onnx --dataset market1501 --root data/Market-1501-v15.09.15
  san-parity --ckpt model.pt --int8 model.int8.onnx --limit int8.max_delta_map=2 --draws 0

data set: default the one the checkpoint was trained on (with its recorded root and options);
--dataset synthetic without --root uses <checkpoint folder>/synthetic (generated when absent).

exit status: 0 every artifact within its thresholds; 1 a threshold breached (each one named,
e.g. "fp32.min_cosine_min: 0.71 < 0.99"); 2 nothing compared (bad arguments, files or data).
"""


DATA = DatasetGroup(default=None, root=existing_folder, root_help="data set folder (default: see below)")
LIMITS = LimitGroup("int8.min_cosine_mean=0.95, fp32.max_rank1_flips=0")
RUN = RunGroup(workers=True, json=True, quiet_alias=True, json_path_alias="--report")
RERANK = RerankGroup()
#: Each option that adds a compared file, with its kind (:data:`san.contract.artifact.ARTIFACT_KINDS`).
ROWS = [(kind, row) for kind in ARTIFACT_KINDS.values() for row in kind.parity]


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
    for kind, row in ROWS:
        parser.add_argument(row.option, type=model_file(kind.name), metavar="PATH", help=row.help)
    parser.add_argument("--openvino", action="store_true",
                        help="also run --onnx and --int8 on OpenVINO (rows openvino-onnx, openvino-int8), at "
                        "--precision (f32 unless given; bf16 and fp16 are judged by the fp16 rule)")
    LIMITS.add(parser)
    parser.add_argument("--draws", type=count(0), default=3, help="sampled-mask draws for torch (default 3; 0: skip)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first draw (default 0)")
    parser.add_argument("--batch-size", type=count(1), default=32, help="images per model call (default 32)")
    parser.add_argument("--report", type=output_file, metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--markdown", type=output_file, metavar="PATH", help="also write the report as Markdown")
    for group in (DATA, RUN, BACKEND, RERANK):
        group.add_to(parser)
    return parser


@command("san-parity")
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``san-parity``."""
    args = build_parser().parse_args(argv)
    run, rules = RUN.read(args), LIMITS.read(args)
    backend = BACKEND.read(args)
    # OpenVINO's alone: the torch reference computes in fp32, and nothing else compiles to a cache
    openvino = tuple((name, backend.pop(name)) for name in ("precision", "compile_cache") if name in backend)
    precision = dict(openvino).get("precision")
    given = [(kind, row, path) for kind, row in ROWS if (path := getattr(args, row.option[2:]))]
    judged = precision if precision in ("bf16", "fp16") else None
    on_openvino = [kind.backend == "openvino" for kind, _, _ in given]
    artifacts = [Artifact(row.option[2:], path, row.precision, options=openvino if runs else (),
                          judged_as=judged if runs else None) for (kind, row, path), runs in zip(given, on_openvino)]
    if args.openvino:  # the ONNX files again, on OpenVINO
        artifacts += [Artifact(f"openvino-{row.option[2:]}", path, row.precision, "openvino", openvino, judged)
                      for kind, row, path in given if kind.name == "onnx"]
    every = ", ".join(row.option for _, row in ROWS)
    onnx_options = " and ".join(row.option for kind, row in ROWS if kind.name == "onnx")
    if not artifacts:
        raise ValueError(f"nothing to compare: give at least one of {every}")
    for setting, value in openvino:
        if not (args.openvino or any(on_openvino)):
            raise ValueError(f"--{setting.replace('_', '-')} {value} is OpenVINO's: give --openvino or an OpenVINO model")
    if args.openvino and not any(kind.name == "onnx" for kind, _, _ in given):
        raise ValueError(f"--openvino runs the {onnx_options} files on OpenVINO: give at least one of them")
    inputs = {"--ckpt": args.ckpt, **{row.option: path for _, row, path in given}}
    for option, path in (("--report", args.report), ("--markdown", args.markdown)):
        if path:
            refuse_overwriting_inputs(path, inputs, option)
    data = DATA.read(args)
    name, root, options = dataset_for_checkpoint(args.ckpt, data.name, data.root, data.options)
    dataset = load_dataset(name, root, verbose=run.progress and not run.json, **options)
    report: ParityReport = run_parity(
        args.ckpt, dataset, artifacts, rules, draws=args.draws, seed=args.seed,
        batch_size=args.batch_size, options=backend, workers=run.workers, rerank=RERANK.read(args),
        progress=run.progress and not run.json,
    )
    print(json.dumps(report.to_dict(), indent=2) if run.json else report.render())
    if args.report:
        write_json(report, args.report)
    if args.markdown:
        atomic_write_text(args.markdown, report.markdown())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
