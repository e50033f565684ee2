"""What DeepStream's crop scaling costs the model: each resize a DeepStream pipeline may apply to
person crops larger than the network input, against the contract's own.

The contract resizes with PIL's bilinear filter, which widens its support when it shrinks
(antialiasing). DeepStream scales object crops with NvBufSurfTransform: nvinfer's default filter
is nearest (``NvBufSurfTransformInter_Default``), ``scaling-filter=1`` is a bilinear filter that
samples four neighbours at any scale, and supersampling (``Algo2`` on the GPU) averages areas when
shrinking. Emulated here on the CPU with PyTorch's ``interpolate``: ``nearest``, ``bilinear``
without antialiasing, and ``area``; each rounded to uint8 as DeepStream's scaled surface is.

The crops are the synthetic test split rendered at ``--factors`` times the network input (a
person 256 px tall in a 1080p frame is 2x a 128x64 input). Every resize of the same decoded crop
is embedded by the same model; the table gives the cosine of each image's embedding to the
contract's, and mAP / rank-1 with their difference to the contract's paired over queries (95 %
interval)::

    python benchmarks/deepstream_scaling.py --ckpt runs/demo/model.pt      # the demo's 1000 ids, 2x and 3x
    python benchmarks/deepstream_scaling.py --smoke                          # seconds: a tiny trained-looking model
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from common import markdown_table, parse_args
from PIL import Image

from runtime.machine import cpu_name
from san.contract.spec import InputSpec
from san.data.records import ImageRecord
from san.data.registry import load_dataset
from san.evaluation.metrics import evaluate_embeddings, paired_cosine, paired_map_delta, paired_rank1_delta
from san.io.preprocess import decode_image, resize_to_contract
from san.model.network import SAN
from san.training.checkpoint import load_checkpoint, save_checkpoint

Resize = Callable[[Image.Image, InputSpec], np.ndarray]


def _interpolated(mode: str) -> Resize:
    def resize(img: Image.Image, spec: InputSpec) -> np.ndarray:
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)[None].float()
        extra = {"align_corners": False, "antialias": False} if mode == "bilinear" else {}
        y = torch.nn.functional.interpolate(x, size=(spec.height, spec.width), mode=mode, **extra)
        return y.round().clamp(0, 255).to(torch.uint8)[0].numpy()

    return resize


#: Row label -> the resize: the contract's, and what DeepStream's filters compute.
RESIZES: dict[str, Resize] = {
    "contract: PIL bilinear, antialiased": resize_to_contract,
    "GPU bilinear, 4 taps (scaling-filter=1)": _interpolated("bilinear"),
    "nearest (nvinfer's default)": _interpolated("nearest"),
    "area average (supersampling, shrinking)": _interpolated("area"),
}
CONTRACT = next(iter(RESIZES))


def embed(model: SAN, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(crops[i:i + batch])).float().numpy()
                               for i in range(0, len(crops), batch)])


def measure(model: SAN, records: Sequence[ImageRecord], n_query: int) -> list[list[str]]:
    """One row per resize: cosine to the contract's embeddings, mAP, rank-1 and their paired deltas."""
    spec = model.spec
    decoded = [decode_image(r.path) for r in records]
    pids = np.array([r.pid for r in records])
    camids = np.array([r.camid for r in records])
    features = {name: embed(model, np.stack([resize(img, spec) for img in decoded])) for name, resize in RESIZES.items()}
    results = {}
    for name, feats in features.items():
        results[name] = evaluate_embeddings(feats[:n_query], feats[n_query:], pids[:n_query], pids[n_query:],
                                            camids[:n_query], camids[n_query:])
    rows = []
    for name, feats in features.items():
        cos = paired_cosine(features[CONTRACT], feats)
        result = results[name]
        row = [name, f"{cos.mean():.4f}", f"{np.percentile(cos, 5):.4f}", f"{cos.min():.4f}",
               f"{100 * result.mAP:.2f}", f"{100 * result.cmc[0]:.2f}"]
        if name == CONTRACT:
            row += ["", ""]
        else:
            dmap = paired_map_delta(results[CONTRACT].per_query, result.per_query)
            drank = paired_rank1_delta(results[CONTRACT].per_query, result.per_query).delta
            row += [f"{dmap.delta:+.2f} [{dmap.low:+.2f}, {dmap.high:+.2f}]",
                    f"{drank.delta:+.2f} [{drank.low:+.2f}, {drank.high:+.2f}]"]
        rows.append(row)
    return rows


def tiny_checkpoint(folder: Path) -> Path:
    """A ResNet-18 SAN at 64x32 that looks trained (the smoke run's model)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from san import ModelConfig, build_model
    from support.looks_trained import looks_trained

    torch.manual_seed(0)
    path = folder / "tiny.pt"
    save_checkpoint(path, looks_trained(build_model(ModelConfig(backbone="resnet18").with_spec(height=64, width=32))))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="the model (default with --smoke: a tiny trained-looking one)")
    parser.add_argument("--factors", default="2,3", help="crop size as multiples of the network input (default 2,3)")
    parser.add_argument("--ids", type=int, default=1000, help="synthetic identities, as the demo (default 1000)")
    parser.add_argument("--test-fraction", type=float, default=0.8, help="share of ids in the test split (default 0.8)")
    parser.add_argument("--work", type=Path, help="where the rendered crops are kept (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parse_args(parser, argv, smoke={"ids": 24, "factors": "2", "test_fraction": 0.5})
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="san-ds-scaling-") as temporary:
        work = args.work or Path(temporary)
        ckpt = args.ckpt or (tiny_checkpoint(work) if args.smoke else None)
        if ckpt is None:
            parser.error("--ckpt is required without --smoke")
        model, _ = load_checkpoint(ckpt)
        model.eval()
        spec = model.spec
        print(f"{ckpt}: {spec.height}x{spec.width} input; CPU {cpu_name()}, {args.threads} threads")
        for factor in (float(f) for f in args.factors.split(",")):
            height, width = round(factor * spec.height), round(factor * spec.width)
            data = load_dataset("synthetic", work / f"crops-{height}x{width}", verbose=False, ids=args.ids,
                                cameras=4, seed=0, test_fraction=args.test_fraction, height=height, width=width)
            rows = measure(model, [*data.query, *data.gallery], len(data.query))
            print(f"\ncrops {height}x{width} ({factor:g}x the input), {len(data.query)} queries, "
                  f"{len(data.gallery)} gallery images")
            print(markdown_table(["resize", "cos mean", "cos p5", "cos min", "mAP %", "rank-1 %",
                                  "ΔmAP vs contract [95 %]", "Δrank-1 vs contract [95 %]"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
