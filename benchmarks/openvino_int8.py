"""OpenVINO INT8 from OpenVINO's own quantizer (NNCF) beside the toolkit's Q/DQ file, on OpenVINO.

Side by side, in one run, each timed in its own process on the same images and threads:

- onnxruntime fp32 (the reference of every ratio) and OpenVINO fp32 at f32;
- the toolkit's Q/DQ file (``san-calibrate``) on OpenVINO;
- NNCF's INT8 with the toolkit's placement as its ignored scope (every mask path, the stem and
  the first ``float_blocks`` stages, the head: :func:`calibration.quantize.float_placement`);
- NNCF's INT8 with its defaults (the mask path quantized).

Each INT8 model is calibrated on the same sample of training images and judged against the
onnxruntime fp32 embeddings of a held-out split (the twin split: new people, the same cameras):
the paired cosine of every query and gallery image under the int8 rule, and its mAP and rank-1
deltas with their 95 % intervals over queries. Model-only speed at each batch size.

    python benchmarks/openvino_int8.py --ckpt runs/demo/model.pt --calib-images runs/demo/synthetic/bounding_box_train \\
        --eval-root runs/ablation/validation-1000ids-128x64

Needs the ``openvino`` extra and ``pip install nncf``; the NNCF rows say so when it is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import cpu_flags, load_average, markdown_table, parse_args, run_in_child

from calibration.hygiene import folder_images, sample_images
from calibration.quantize import DEFAULT_OPTIONS, float_placement
from runtime import open_backend
from runtime.machine import cpu_name
from san.contract.artifact import IR_SECTION, PRECISION_KEY, load_onnx_with_data, read_contract, read_metadata
from san.contract.rules import RULES
from san.data.registry import load_dataset
from san.evaluation.retrieval import compare, embed_split, score
from san.io.preprocess import load_image

SMOKE = {"num": 8, "batches": (1, 4), "repeats": 1}


def nncf_ir(onnx_path: Path, images: list[Path], out: Path, ignored: list[str] | None) -> Path:
    """``onnx_path`` quantized by NNCF on ``images`` (``ignored``: node names kept in float), as an
    IR at ``out`` with the ONNX file's metadata, so the runtime reads its contract."""
    import nncf
    import openvino as ov

    spec = read_contract(onnx_path)
    batches = [np.stack([load_image(p, spec)]) for p in images]
    model = ov.Core().read_model(str(onnx_path))
    scope = nncf.IgnoredScope(names=ignored, validate=False) if ignored else None
    quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches),
                              **({"ignored_scope": scope} if scope else {}))
    for key, value in {**read_metadata(onnx_path), PRECISION_KEY: "int8"}.items():
        quantized.set_rt_info(value, [IR_SECTION, key])
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def _cpu_options(backend: str, threads: int) -> dict[str, Any]:
    """The same CPU threads for every backend; onnxruntime on its CPU provider."""
    return {"threads": threads, **({"providers": ["cpu"]} if backend == "onnxruntime" else {})}


def speed(artifact: Path, backend: str, threads: int, images: np.ndarray, batches: tuple[int, ...],
          repeats: int) -> dict[int, float]:
    """Model-only images per second at each batch size (after one warm-up call), in this process."""
    rates = {}
    with open_backend(artifact, backend, **_cpu_options(backend, threads)) as model:
        for size in batches:
            chunks = [images[i : i + size] for i in range(0, len(images) - size + 1, size)]
            model.infer(chunks[0])
            started = time.perf_counter()
            for _ in range(repeats):
                for chunk in chunks:
                    model.infer(chunk)
            rates[size] = repeats * sum(len(c) for c in chunks) / (time.perf_counter() - started)
    return rates


def fidelity(artifact: Path, backend: str, threads: int, eval_root: Path) -> Any:
    """The split's embeddings by ``artifact`` (query and gallery, in record order)."""
    dataset = load_dataset("synthetic", eval_root, verbose=False)
    with open_backend(artifact, backend, **_cpu_options(backend, threads)) as model:
        return embed_split(model, dataset, batch_size=32, workers=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint whose model.onnx and model.int8.onnx lie beside it")
    p.add_argument("--calib-images", type=Path, required=True, help="training images to calibrate NNCF on")
    p.add_argument("--eval-root", type=Path, required=True, help="held-out synthetic split (the twin split)")
    p.add_argument("--num", type=int, default=256, help="calibration images, as san-calibrate (default %(default)s)")
    p.add_argument("--batches", type=lambda s: tuple(int(b) for b in s.split(",")), default=(1, 8, 32))
    p.add_argument("--images", type=int, default=256, help="images timed per batch size (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="passes over them (default %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    args = parse_args(p, argv, SMOKE)
    onnx_path, qdq = args.ckpt.with_suffix(".onnx"), args.ckpt.with_name(f"{args.ckpt.stem}.int8.onnx")
    print(f"command: python benchmarks/openvino_int8.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"machine: {cpu_name()} ({cpu_flags()}); load average {load_average()}")
    calibration = sample_images(folder_images(args.calib_images, "--calib-images"), args.num, seed=0)
    rows: list[tuple[str, Path, str]] = [("onnxruntime fp32", onnx_path, "onnxruntime"),
                                         ("OpenVINO fp32 at f32", onnx_path, "openvino"),
                                         ("OpenVINO, the toolkit's Q/DQ file", qdq, "openvino")]
    skipped: dict[str, str] = {}
    placement = float_placement(load_onnx_with_data(onnx_path), DEFAULT_OPTIONS)
    for name, ignored, file in (("OpenVINO, NNCF, the toolkit's placement ignored", placement, "nncf-placement.xml"),
                                ("OpenVINO, NNCF defaults", None, "nncf-default.xml")):
        if importlib.util.find_spec("nncf") is None:
            skipped[name] = "skipped: NNCF is not installed (pip install nncf)"
            continue
        rows.append((name, run_in_child(nncf_ir, onnx_path, calibration, args.ckpt.parent / file, ignored), "openvino"))
    spec = read_contract(onnx_path)
    pool = folder_images(args.eval_root, "--eval-root")[: args.images]
    timed = np.stack([load_image(path, spec) for path in pool])
    print(f"{len(placement)} nodes in the toolkit's float placement; {len(timed)} images timed, {args.repeats} passes, "
          f"{args.threads} threads\n")
    rates = {name: run_in_child(speed, path, backend, args.threads, timed, args.batches, args.repeats)
             for name, path, backend in rows}
    runs = {name: run_in_child(fidelity, path, backend, args.threads, args.eval_root) for name, path, backend in rows}
    reference = runs["onnxruntime fp32"]
    ref_scores = score(reference)
    table = []
    for name, _, _ in rows:
        measured = compare(reference, ref_scores, runs[name], score(runs[name]))
        kind = "fp32" if "fp32" in name else "int8"
        breaches = RULES[kind].breaches(kind, measured.measured())
        d_map, d_r1 = measured.map_change, measured.rank1_change.delta
        table.append([name, *(f"{rates[name][b] / rates['onnxruntime fp32'][b]:.2f}x" for b in args.batches),
                      f"{measured.cosine_mean:.4f}", f"{measured.cosine_min:.4f}",
                      f"{d_map.delta:+.2f} [{d_map.low:+.2f}, {d_map.high:+.2f}]",
                      f"{d_r1.delta:+.2f} [{d_r1.low:+.2f}, {d_r1.high:+.2f}]",
                      f"{kind}: {'pass' if not breaches else 'FAIL ' + '; '.join(breaches)}"])
    table += [[name, reason, *[""] * (len(args.batches) + 4)] for name, reason in skipped.items()]
    headers = ["model", *(f"speed x ORT fp32, batch {b}" for b in args.batches), "cos mean", "cos min",
               "ΔmAP [95 %]", "Δrank-1 [95 %]", "rule"]
    print(f"twin split: {len(reference.query.records)} queries, {len(reference.gallery.records)} gallery images; "
          f"ORT fp32 mAP {100 * ref_scores.mAP:.2f}, rank-1 {100 * ref_scores.rank(1):.2f}; "
          f"load average after {load_average()}\n")
    print(markdown_table(headers, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
