"""Where OpenVINO's CPU time goes for a SAN, and how close it runs to this machine's peak.

For each configuration (the fp32 file at f32 and at bf16, the Q/DQ INT8 file at f32 and at bf16),
in one run, on the same threads:

- images per second at batch ``--batch`` (LATENCY mode, one request: every thread on one batch);
- OpenVINO's own per-node profile of those calls (``enable_profiling``), summed by the precision
  each kernel ran in (the suffix of its ``exec_type``: ``I8``/``U8``, ``BF16``, ``FP32``) and by
  node type, so the share of the time spent outside INT8 or bf16 kernels is read, not guessed;
- the model's useful rate, its multiply-adds (``san-info``'s FLOPs) times images per second,
  against the measured peak of this CPU for the same precision: a stack of 1x1 convolutions of 512
  channels on a batch of 32 16x8 maps, compiled by the same OpenVINO (f32, bf16, and INT8 through
  FakeQuantize).

    python benchmarks/openvino_profile.py --ckpt runs/demo/model.pt           # a trained model
    python benchmarks/openvino_profile.py                                     # random ResNet-50 SAN, 256x128

The model files come from ``benchmarks/embed.py``'s set-up (its ``--work`` folder), so the two
scripts time the same files.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from common import cpu_flags, load_average, markdown_table, parse_args, run_in_child

from runtime.machine import cpu_name

SMOKE = {"batch": 2, "calls": 2, "height": 64, "width": 32, "backbone": "resnet18", "calib_images": 4, "peak_seconds": 0.2}
#: (row, which file, OpenVINO's inference precision).
CONFIGS = (("fp32 file at f32", "onnx", "f32"), ("fp32 file at bf16", "onnx", "bf16"),
           ("INT8 Q/DQ at f32", "int8", "f32"), ("INT8 Q/DQ at bf16", "int8", "bf16"))
PEAK_LAYERS, PEAK_CHANNELS, PEAK_MAP = 8, 512, (16, 8)


def kernel_precision(exec_type: str) -> str:
    """The precision a CPU kernel ran in, from OpenVINO's ``exec_type`` (``brgconv_avx512_amx_I8``)."""
    suffix = exec_type.rsplit("_", 1)[-1].upper()
    return {"U8": "int8", "I8": "int8", "BF16": "bf16", "FP32": "f32", "F32": "f32", "FP16": "f16"}.get(suffix, "other")


def compile_model(model: Any, precision: str, threads: int, profiling: bool) -> Any:
    """``model`` (a path or an ov.Model) compiled for the CPU at ``precision``, one latency request."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    config = {hints.inference_precision: {"f32": ov.Type.f32, "bf16": ov.Type.bf16}[precision],
              hints.performance_mode: hints.PerformanceMode.LATENCY, props.inference_num_threads: threads,
              props.enable_profiling: profiling}
    return ov.Core().compile_model(model, "CPU", config)


def profile(path: str, precision: str, batch: np.ndarray, threads: int, calls: int) -> dict[str, Any]:
    """Images per second of ``path`` at ``precision``, and its profile summed over ``calls`` calls."""
    compiled = compile_model(path, precision, threads, profiling=True)
    request = compiled.create_infer_request()
    request.infer({0: batch})  # warm-up
    by_precision: dict[str, float] = defaultdict(float)
    by_type: dict[tuple[str, str], float] = defaultdict(float)
    started = time.perf_counter()
    for _ in range(calls):
        request.infer({0: batch})
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            seconds = info.real_time.total_seconds()
            by_precision[kernel_precision(info.exec_type)] += seconds
            by_type[(info.node_type, kernel_precision(info.exec_type))] += seconds
    elapsed = time.perf_counter() - started
    return {"images_per_second": calls * len(batch) / elapsed, "by_precision": dict(by_precision),
            "by_type": dict(by_type)}


def conv_peak(precision: str, threads: int, seconds: float) -> float:
    """GMAC/s of a stack of :data:`PEAK_LAYERS` 1x1 convolutions (:data:`PEAK_CHANNELS` channels,
    batch 32 of :data:`PEAK_MAP`, as a ResNet's middle stages) in ``precision``: ``int8`` through
    FakeQuantize on each convolution's input and weights (OpenVINO's CPU plugin then runs them in
    INT8), else the f32 graph compiled at that inference precision; the best call of ``seconds``."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    shape = (32, PEAK_CHANNELS, *PEAK_MAP)
    data = ops.parameter(shape, ov.Type.f32)
    node = data
    for _ in range(PEAK_LAYERS):
        weights = ops.constant(rng.standard_normal((PEAK_CHANNELS, PEAK_CHANNELS, 1, 1)).astype(np.float32) * 0.05)
        if precision == "int8":
            lo, hi = ops.constant(np.float32(0.0)), ops.constant(np.float32(4.0))
            node = ops.fake_quantize(node, lo, hi, lo, hi, 256)
            wlo, whi = ops.constant(np.float32(-0.2)), ops.constant(np.float32(0.2))
            weights = ops.fake_quantize(weights, wlo, whi, wlo, whi, 255)
        node = ops.relu(ops.convolution(node, weights, [1, 1], [0, 0], [0, 0], [1, 1]))
    compiled = compile_model(ov.Model([node], [data]), "f32" if precision == "int8" else precision, threads,
                             profiling=False)
    request = compiled.create_infer_request()
    feed = {0: rng.random(shape, dtype=np.float32)}
    request.infer(feed)
    best, until = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < until:  # seconds, not calls: a short run under-measures AMX (its clock settles)
        started = time.perf_counter()
        request.infer(feed)
        best = min(best, time.perf_counter() - started)
    return PEAK_LAYERS * PEAK_CHANNELS**2 * shape[0] * PEAK_MAP[0] * PEAK_MAP[1] / best / 1e9


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, help="a SAN checkpoint instead of random weights")
    p.add_argument("--backbone", default="resnet50", help="backbone of the random-weight model (default resnet50)")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch", type=int, default=32, help="images per call (default 32)")
    p.add_argument("--calls", type=int, default=10, help="profiled calls per configuration (default 10)")
    p.add_argument("--peak-seconds", type=float, default=3.0,
                   help="time each peak measurement runs, the best call kept (default 3; less under-measures AMX)")
    p.add_argument("--calib-images", type=int, default=64, help="INT8 calibration sample (default 64)")
    p.add_argument("--threads", type=int, help="inference threads (default: physical cores)")
    p.add_argument("--work", type=Path, default=Path("runs/bench"), help="data and models (default runs/bench)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv, SMOKE)
    from embed import prepare_images, prepare_models

    from runtime.base import physical_cores
    from san.contract.artifact import read_contract
    from san.io.discovery import discover_images
    from san.io.preprocess import load_image

    threads = args.threads or physical_cores()
    args.work.mkdir(parents=True, exist_ok=True)
    embedded, pool = prepare_images(args.work, args.batch, args.height, args.width, 1.0)
    art = prepare_models(argparse.Namespace(**vars(args), quant=[]), pool, embedded)
    if isinstance(art.int8, str):
        raise SystemExit(f"no INT8 file: {art.int8}")
    spec, macs = read_contract(art.onnx), art.flops / 2
    batch = np.stack([load_image(embedded / p, spec) for p in discover_images(embedded)[: args.batch]])
    print(f"CPU: {cpu_name()} ({cpu_flags()}); {threads} threads; load average {load_average()}", flush=True)
    peaks = {precision: run_in_child(conv_peak, precision, threads, args.peak_seconds)
             for precision in ("f32", "bf16", "int8")}
    print("peak of 1x1 convolutions, GMAC/s: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()), flush=True)
    results = {}
    for name, which, precision in CONFIGS:
        print(f"profiling {name} ...", flush=True)
        path = str(art.onnx if which == "onnx" else art.int8)
        results[name] = run_in_child(profile, path, precision, batch, threads, args.calls)
    print(f"\n{art.ckpt.name} at {spec.height}x{spec.width}, {macs / 1e9:.2f} GMAC per image, "
          f"batch {args.batch}, {args.calls} calls; load average {load_average()}")
    rows = []
    for name, _, precision in CONFIGS:
        r = results[name]
        total = sum(r["by_precision"].values())
        share = {k: v / total for k, v in r["by_precision"].items()}
        best_kernels = "int8" if "INT8" in name else precision
        useful = macs * r["images_per_second"] / 1e9
        rows.append([name, f"{r['images_per_second']:.1f}", f"{useful:.0f}",
                     f"{100 * useful / peaks[best_kernels]:.0f} % of {best_kernels}",
                     *(f"{100 * share.get(k, 0.0):.0f}" for k in ("int8", "bf16", "f32", "other"))])
    print(markdown_table(["configuration", "img/s", "GMAC/s", "of the peak", "% time int8", "% bf16", "% f32",
                          "% other"], rows))
    for name, _, _ in CONFIGS:
        r = results[name]
        total = sum(r["by_type"].values())
        top = sorted(r["by_type"].items(), key=lambda item: -item[1])[:6]
        print(f"{name}: " + "; ".join(f"{node} {kind} {100 * t / total:.0f} %" for (node, kind), t in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
