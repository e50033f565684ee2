"""``san-embed``: embed every image of a folder with a SAN model (thin CLI over runtime.embed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.embed import TTA_MODES, EmbedOptions, EmbedResult, LocalRunner, Runner, Shard, embed_folder, merge_shards
from runtime.options import BACKEND, ModelChoice, model_choice
from runtime.registry import BACKENDS, backend_for, open_backend
from san.cli.arguments import (
    CommandParser,
    RunGroup,
    add_overwrite_argument,
    count,
    existing_file,
    existing_folder,
    model_file,
    output_folder,
)
from san.cli.command import command
from san.contract.artifact import ARTIFACT_KINDS
from san.io.output_guard import refuse_overwriting_inputs

EXAMPLES = """\
output folder (default: <images>_embeddings beside the image folder):
  embeddings.npy  float32, one row per readable image
  index.csv       row,path,status,error for every file (row -1 = failed, with the reason)
  meta.json       contract, model sha256, backend, options, counts (identical across runs)
  timing.json     wall time and img/s of the run

examples:
  san-embed photos/ --model model.onnx
  san-embed photos/ --model model.pt --device cuda --batch-size 128 --tta flip --l2-normalize
  san-embed photos/ --model model.engine --out emb/          # TensorRT engine + sidecar
  san-embed photos/ --model model.onnx --out emb/ --resume   # after an interruption
  san-embed photos/ --model model.onnx --shard 1/2 --out s1/ # on machine 1 (2/2 on machine 2)
  san-embed merge s1/ s2/ --out emb/                         # same bytes as one unsharded run
  san-embed photos/ --model model.onnx --ray                 # on a local Ray (pip install '.[cluster]')
  san-embed /shared/photos --model /shared/model.onnx --ray head:6379 --ray-actors 8 --device cuda

exit status: 0 all images embedded; 1 some files failed (listed); 2 nothing run (bad arguments,
model or output folder).
"""


RUN = RunGroup(workers=True)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``san-embed IMAGES --model MODEL``."""
    parser = CommandParser(
        prog="san-embed",
        description="Embed every jpg/jpeg/png/bmp/webp under a folder (recursive, sorted by path; hidden\n"
        "files skipped) with a SAN checkpoint (.pt), ONNX export (.onnx) or TensorRT engine (.engine).\n"
        "Merge shard outputs with `san-embed merge --help`.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", type=existing_folder, help="folder of images (searched recursively)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=model_file(*ARTIFACT_KINDS),
                        help="model.pt, model.onnx, model.engine or OpenVINO model.xml")
    source.add_argument("--profile", type=existing_file, metavar="PROFILE.json",
                        help="run the model, backend and options san-tune chose on this machine (backend flags "
                        "given here change them)")
    parser.add_argument("--out", type=output_folder, help="output folder (default: <images>_embeddings)")
    parser.add_argument("--backend", choices=sorted(BACKENDS), help="override the backend chosen by the suffix")
    parser.add_argument("--batch-size", type=count(1), default=EmbedOptions.batch_size,
                        help="images per model call (default %(default)s)")
    parser.add_argument("--chunk-size", type=count(1), default=EmbedOptions.chunk_size,
                        help="files per committed chunk: the unit of --resume and --shard (default %(default)s)")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="flip: average with the mirrored image's embedding")
    parser.add_argument("--l2-normalize", action="store_true", help="scale every embedding to unit length")
    BACKEND.add_to(parser)
    ray = parser.add_argument_group("Ray Data (pip install '.[cluster]')")
    ray.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                     help="decode in Ray tasks and embed in Ray actors: on the cluster at ADDRESS (HOST:PORT, "
                     "ray://HOST:PORT or auto; every node must see the images and the model at the same paths), "
                     "or on a local Ray started for the run when no address is given")
    ray.add_argument("--ray-actors", type=count(1), default=1, metavar="N",
                     help="model replicas (default %(default)s); each takes one GPU with --device cuda")
    parser.add_argument("--shard", type=shard_arg, metavar="I/N", help="embed only shard I of N (contiguous chunks)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (same arguments)")
    add_overwrite_argument(parser, "earlier output in --out")
    RUN.add_to(parser)
    parser.only_with("--ray", "--ray-actors")
    parser.never_with("--resume", "--overwrite", "--resume continues the run in --out, --overwrite starts it again")
    return parser


def build_merge_parser() -> argparse.ArgumentParser:
    """Arguments of ``san-embed merge SHARD... --out DIR``."""
    parser = CommandParser(
        prog="san-embed merge",
        description="Merge the outputs of --shard 1/N .. N/N into the output of one unsharded run.",
        epilog="example:\n  san-embed merge s1/ s2/ s3/ --out emb/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("parts", type=existing_folder, nargs="+", help="finished shard output folders (any order)")
    parser.add_argument("--out", type=output_folder, required=True, help="merged output folder")
    add_overwrite_argument(parser, "earlier output in --out")
    return parser


def shard_arg(text: str) -> Shard:
    """``--shard I/N`` for argparse."""
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def default_out(images: Path, shard: Shard | None) -> Path:
    """``photos/`` -> ``photos_embeddings`` (``photos_embeddings.shard-1-of-2`` for a shard)."""
    base = images.resolve()
    suffix = f".shard-{shard.index}-of-{shard.count}" if shard else ""
    return base.with_name(f"{base.name}_embeddings{suffix}")


def make_runner(args: argparse.Namespace, chosen: ModelChoice) -> Runner:
    """The local runner, or the Ray one with ``--ray``: each actor gets the first GPU Ray assigns it."""
    if args.ray is None:
        workers = RUN.read(args).workers
        return LocalRunner() if workers is None else LocalRunner(workers)
    from runtime.embed_ray import ActorSpec, RayRunner

    options = dict(chosen.options)
    engine = (chosen.backend or backend_for(chosen.model)) == "tensorrt"
    on_gpu = (options.get("device") or ("cuda" if engine else "cpu")).startswith("cuda")  # auto: each actor decides
    if on_gpu:
        options["device"] = "cuda"  # Ray sets CUDA_VISIBLE_DEVICES per actor
    actor = ActorSpec(str(chosen.model.resolve()), chosen.backend, options)
    return RayRunner(actor, args.ray or None, args.ray_actors, gpus_per_actor=1.0 if on_gpu else 0.0)


def report(result: EmbedResult, what: str, shard: Shard | None = None) -> int:
    """Print the summary; the exit status."""
    speed = f" ({result.images_per_second:.1f} img/s)" if result.processed else ""
    if result.finished_before:
        print(f"{result.out}: already finished ({result.ok}/{result.images} images embedded); nothing to do, "
              "nothing rewritten")
    else:
        print(f"{what} {result.ok}/{result.images} images in {result.seconds:.1f} s{speed} -> {result.out}")
    if result.images == 0 and shard is not None:
        print(f"note: shard {shard.index}/{shard.count} holds no chunk of this folder (--chunk-size files each); "
              "fewer shards or a smaller --chunk-size spread the files", file=sys.stderr)
    elif result.images == 0:
        print("note: no images found (suffixes .jpg .jpeg .png .bmp .webp, any case; hidden files skipped)",
              file=sys.stderr)
    if not result.failures:
        return 0
    print(f"{len(result.failures)} file(s) failed (listed in {result.out / 'index.csv'}):", file=sys.stderr)
    for path, error in result.failures[:20]:
        print(f"  {path}: {error}", file=sys.stderr)
    if len(result.failures) > 20:
        print(f"  ... and {len(result.failures) - 20} more", file=sys.stderr)
    return 1


@command("san-embed")
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``san-embed``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:
        args = build_merge_parser().parse_args(argv[1:])
        refuse_overwriting_inputs(args.out, {f"shard {i}": part for i, part in enumerate(args.parts, 1)})
        return report(merge_shards(args.parts, args.out, overwrite=args.overwrite), "merged")
    args = build_parser().parse_args(argv)
    options = EmbedOptions(args.batch_size, args.chunk_size, args.tta, args.l2_normalize)
    out = args.out or default_out(args.images, args.shard)
    chosen = model_choice(args, "san-embed")
    refuse_overwriting_inputs(out, {"images": args.images, "--model": chosen.model})
    runner = make_runner(args, chosen)
    with open_backend(chosen.model, chosen.backend, **chosen.options) as backend:
        for note in backend.notes:
            print(f"san-embed: note: {note}", file=sys.stderr)
        result = embed_folder(args.images, backend, out, options, shard=args.shard, runner=runner,
                              resume=args.resume, overwrite=args.overwrite, progress=RUN.read(args).progress)
    return report(result, "embedded", args.shard)


if __name__ == "__main__":
    sys.exit(main())
