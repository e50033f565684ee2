"""``san-export``: checkpoint -> verified ONNX (-> TensorRT engine with ``--trt``)."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from export.targets import SharedOptions, target_classes
from export.tensorrt_lint import DEFAULT_PARSER, PARSERS, ParserVersion, parser_of
from san.cli.arguments import (
    CommandParser,
    LimitGroup,
    add_overwrite_argument,
    count,
    existing_folder,
    finite_list,
    model_file,
    output_file,
)
from san.cli.command import command
from san.contract.input_convention import KINDS, InputConvention
from san.contract.spec import DEPLOYED_MASKS, InputSpec

EPILOG = """\
what it writes:
  model.onnx          input `images` uint8 RGB NCHW at the contract's HxW (0..255, decoded and
                      resized by san.io.preprocess.load_image; mean/std are inside the graph),
                      output `embeddings` float32 [N, D]; hard masks 1[pi > threshold] (--mask
                      noise-free: sigmoid(logit(pi) / tau), continuous), no random
                      ops, dynamic batch; the input contract and provenance in metadata_props
  model.engine(.json) with --trt: the engine and its sidecar (contract, precision, batch
                      profile, TensorRT version, GPU, ONNX sha256); FP16 engines are built from
                      model.fp16.onnx, written and verified beside model.onnx

every ONNX file is verified against the PyTorch eval model with onnxruntime before anything
else happens, under the rule of its precision in the one rule table that san-parity and the
INT8 report read too (san.contract.rules):
{rules}
A mask element whose pi lies within flip_margin of the threshold may flip in one runtime and
not the other, and moves every later block of that image: such flips are expected, and the
image is held to min_cosine_min. Refused, each naming the block: an unexplained flip, an image
whose masks all agree below min_cosine_unflipped, a block whose mask the graph lacks or
bypasses. A refused file is renamed to *.rejected and the command fails.

examples:
  san-export --ckpt runs/demo/model.pt
  san-export --ckpt model.pt --out deploy/san.onnx --verify-images data/market/query --verify-count 64
  san-export --ckpt model.pt --trt --fp16 --min-batch 1 --opt-batch 32 --max-batch 128
  san-export --ckpt model.pt --trt --int8 model.int8.onnx --timing-cache trt.cache
  san-export --ckpt model.pt --limit fp32.min_cosine_unflipped=0.99999
  san-export --check-tensorrt model.trt.int8.onnx     # no GPU, no TensorRT needed

--check-tensorrt FILE checks a graph against the rules of TensorRT's ONNX parser (op types and
their input types, Q/DQ int8/fp8/int4 with zero point 0 and positive constant scales, UINT8
only as an input into a Cast, constant axes): each violation is printed with its node and
rule. --trt runs the same check on the file it builds from, and refuses early.

exit status: 0 ok, 1 verification failed (or --check-tensorrt: not compatible), 2 bad arguments or
             input files (unreadable ONNX),
             3 --trt asked on a machine without TensorRT or a GPU (the ONNX is still written)
"""


LIMITS = LimitGroup("fp32.min_cosine_min=0.995")


def build_parser() -> argparse.ArgumentParser:
    from san.contract.rules import RULES, describe_rules

    parser = CommandParser(
        prog="san-export",
        description="Export a SAN checkpoint to ONNX with deterministic masks and its input "
        "contract, check it against PyTorch, and optionally build a TensorRT engine.",
        epilog=EPILOG.format(rules=describe_rules({k: RULES[k] for k in ("fp32", "fp16")})),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", type=model_file("checkpoint"), metavar="PATH",
                        help="checkpoint written by san-train (model.pt)")
    source.add_argument("--check-tensorrt", type=model_file("onnx"), metavar="ONNX",
                        help="only check an ONNX file against TensorRT's parser rules (no GPU needed)")
    parser.add_argument("--tensorrt", type=tensorrt_release, metavar="VERSION",
                        help="the TensorRT release whose parser --check-tensorrt models, e.g. 8.6, 10.3, 10.13 or 11 "
                        f"(rules per {', '.join(row.name for row in PARSERS.values())}; default: the installed "
                        f"TensorRT, else {PARSERS[DEFAULT_PARSER].name})")
    parser.add_argument("--verbose", action="store_true",
                        help="with --check-tensorrt: after the summary, list every node that breaks a rule")
    verify = parser.add_argument_group("verification")
    verify.add_argument("--verify-images", type=existing_folder, metavar="DIR",
                        help="verify on these images (default: synthetic)")
    verify.add_argument("--verify-count", type=count(1), default=16, metavar="N", help="images to verify on (default 16)")
    LIMITS.add(verify)
    add_shared_arguments(parser)
    for target in target_classes().values():
        target.add_arguments(parser)
    return parser


def add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every target may read (:class:`export.targets.SharedOptions`)."""
    parser.add_argument("--out", type=output_file, metavar="PATH",
                        help="ONNX path (default: the checkpoint's path with .onnx)")
    parser.add_argument("--opset", type=count(17), default=17, metavar="N",
                        help="lowest opset (>= 17; the exporter writes >= 18)")
    parser.add_argument("--int8", type=model_file("onnx"), metavar="QDQ.onnx",
                        help="calibration's Q/DQ ONNX: an INT8 engine with --trt, an INT8 IR with --openvino")
    parser.add_argument("--mask", choices=DEPLOYED_MASKS,
                        help="how a SAN's sampled masks are deployed: threshold, 1[pi > threshold] (hard), or "
                        "noise-free, sigmoid(logit(pi) / tau) at the trained temperature (continuous); the contract "
                        "records it (default: the checkpoint's, threshold unless changed)")
    add_overwrite_argument(parser, "what an output holds: a target folder that is not empty (--triton, ...), or "
                           "an existing --out exported from another checkpoint or with another input convention")
    group = parser.add_argument_group("input convention of the ONNX file (the model inside is unchanged)")
    group.add_argument("--input", default="uint8", metavar="KIND",
                       help=f"{' | '.join(KINDS)}: uint8 pixels (default), float32 pixels 0..255, or float32 "
                       "(pixel / 255 - mean) / std")
    group.add_argument("--input-mean", type=finite_list(3), metavar="R,G,B", help="with --input normalized")
    group.add_argument("--input-std", type=finite_list(3), metavar="R,G,B", help="with --input normalized")
    group.add_argument("--bgr", action="store_true", help="channels in BGR order (mean/std in that order too)")
    group.add_argument("--nhwc", action="store_true", help="N x H x W x 3 instead of N x 3 x H x W")


def shared_options(args: argparse.Namespace) -> SharedOptions:
    convention = InputConvention.named(args.input, mean=args.input_mean, std=args.input_std, bgr=args.bgr,
                                       nhwc=args.nhwc)
    return SharedOptions(args.out or args.ckpt.with_suffix(".onnx"), convention, args.opset, args.overwrite, args.int8)


@command("san-export")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return check_tensorrt(args.check_tensorrt, args.tensorrt, args.verbose) if args.check_tensorrt else run(args)


def tensorrt_release(value: str) -> ParserVersion:
    """``--tensorrt``: a TensorRT version, as the :data:`export.tensorrt_lint.PARSERS` row of its rules."""
    try:
        return parser_of(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def check_tensorrt(path: Path, release: ParserVersion | None, verbose: bool = False) -> int:
    """Check ``path`` against the parser rules of ``release`` (None: the installed TensorRT's,
    else :data:`DEFAULT_PARSER`): the verdict, then the violations summed up by rule (with the
    change that fixes each) and by node kind, then with ``verbose`` every node. 0 when there is
    none, else 1."""
    from export.tensorrt_lint import installed_parser, lint_tensorrt_file, summarize

    parser = release or installed_parser()
    violations = lint_tensorrt_file(path, parser)
    if not violations:
        print(f"{path}: compatible with TensorRT {parser.name}'s ONNX parser rules")
        return 0
    print(f"{path}: {len(violations)} violation(s) of TensorRT {parser.name}'s ONNX parser rules")
    for line in summarize(violations):
        print(f"  {line}")
    if verbose:
        for violation in violations:
            print(f"{path}: {violation}")
    else:
        print("  --verbose lists every node")
    return 1


def run(args: argparse.Namespace) -> int:
    """Check every requested target's options, load the checkpoint, then write the targets;
    the exit status."""
    from export.targets import ExportJob, write_targets
    from export.verify import load_images, synthetic_images
    from san.io.output_guard import refuse_overwriting_inputs
    from san.io.output_lock import exclusive_output
    from san.training.checkpoint import load_checkpoint

    rules = LIMITS.read(args)
    shared = shared_options(args)
    classes = target_classes()
    requested = {name: options for name, cls in classes.items() if (options := cls.options_from(args)) is not None}
    if shared.int8 is not None and not any(classes[name].reads_int8 for name in requested):
        readers = " or ".join(cls.option for cls in classes.values() if cls.reads_int8)
        raise ValueError(f"--int8 {shared.int8}: only {readers} read it; give one of them")
    inputs = {name: path for name, path in (("--ckpt", args.ckpt), ("--int8", args.int8),
                                            ("--verify-images", args.verify_images)) if path is not None}
    refuse_overwriting_inputs(shared.onnx, inputs, "--out")
    outputs = [shared.onnx]
    for name, options in requested.items():
        classes[name].check(options, shared, requested)
        for option, output in classes[name].outputs(options).items():
            refuse_overwriting_inputs(output, inputs, option)  # a folder emptied by --overwrite included
            outputs.append(output)
    model, meta = load_checkpoint(args.ckpt)
    if args.mask is not None and args.mask != model.spec.deployed_mask:
        if not model.sampled_generators():
            raise ValueError(f"--mask {args.mask}: {args.ckpt} has no sampled masks to deploy (attention "
                             f"{model.cfg.attention!r})")
        model.set_deployed_mask(args.mask)
        meta = replace(meta, config=model.cfg)
    with ExitStack() as held:
        for output in outputs:  # one export writes each of these at a time
            held.enter_context(exclusive_output(output))
        refuse_replacing_another_export(shared.onnx, meta.sha256, shared.convention, model.spec, args.overwrite)
        if args.verify_images:
            images = load_images(args.verify_images, meta.spec, args.verify_count)
        else:
            images = synthetic_images(meta.spec, args.verify_count)
        written = write_targets(ExportJob(model, meta, images, rules, shared), requested)
    return 0 if all(w.passed for w in written) else 1


def refuse_replacing_another_export(onnx: Path, checkpoint_sha256: str, wanted: InputConvention, spec: InputSpec,
                                    overwrite: bool) -> None:
    """Refuse to replace an existing ``onnx`` that is not this checkpoint's export with this input
    convention and contract (another checkpoint, convention or deployed mask, or not a SAN export),
    unless ``overwrite``."""
    from san.contract.artifact import CHECKPOINT_SHA_KEY, contract_of, convention_of, load_onnx, metadata_of
    from san.contract.spec import ContractError

    if overwrite or not onnx.exists():
        return
    try:
        proto = load_onnx(onnx)
        same = (metadata_of(proto).get(CHECKPOINT_SHA_KEY) == checkpoint_sha256 and convention_of(proto, onnx) == wanted
                and contract_of(proto, onnx) == spec)
    except ContractError:
        same = False
    if not same:
        raise ValueError(f"--out {onnx} exists and is not this checkpoint's export with this input convention and mask "
                         "(other files may have been made from it); give another --out, or --overwrite to replace it")


if __name__ == "__main__":
    sys.exit(main())
