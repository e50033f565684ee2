"""Embedding benchmark: a hand-written PyTorch loop vs ``san-embed`` on each backend.

One run, one synthetic JPEG folder, one batch size, the same threads for everyone::

    python benchmarks/embed.py                 # ResNet-50 SAN, 256x128, 512 images, batch 32
    python benchmarks/embed.py --smoke         # seconds: tiny model, 8 images

Competitors, each in its own spawned child process (so the peak memory of one is not
the high-water mark left by another, and the ORT children never import torch):

- ``reference``: what a user writes by hand: PIL decode + torchvision ``Resize``,
  ``ToTensor``, ``Normalize`` + the model under ``torch.inference_mode``, batch by batch,
  decoding inline. SAN normalises inside its graph (the contract), so the user's
  ``Normalize`` only rescales ``ToTensor``'s 0..1 back to the model's 0..255 input.
- ``san-embed`` (:func:`runtime.embed_folder`, decode workers, output files and commits
  included) with the torch backend, onnxruntime fp32 and onnxruntime INT8 Q/DQ (made by
  :func:`calibration.quantize.quantize_onnx` from a calibration sample drawn from the
  synthetic *training* split and checked disjoint from the embedded images).
- ``san-embed --ray`` with onnxruntime fp32 on a local Ray started for the run (decode in Ray
  tasks, the model in one actor; start-up and shutdown of the local Ray included); skipped
  without the ``cluster`` extra.
- ``san-embed --backend openvino`` on the same ONNX files: fp32 at f32, fp32 at bf16 (CPUs
  with AVX-512 BF16 or AMX), INT8 Q/DQ with f32 and with bf16 float parts; skipped without
  the ``openvino`` extra.
- With a CUDA GPU: the reference loop on CUDA, under ``torch.compile``, onnxruntime CUDA,
  TensorRT FP16 and INT8 (rows say why they are skipped otherwise).

``--sweep 1,8,32`` adds a second table: onnxruntime fp32 and INT8 and the OpenVINO rows
model-only at each of those batch sizes (tracker-sized batches: a tracker embeds the crops of
one frame), with images/s, p50/p99 per call, RSS, the ratio to onnxruntime fp32 at the same
batch, the cosine to onnxruntime fp32 judged by the row's rule, and the OpenVINO goals; plus
OpenVINO INT8 with every batch on its LATENCY model, which shows where the backend's switch
to THROUGHPUT requests pays.

Columns: end-to-end img/s (files to embeddings); model-only img/s (the same backend on
pre-decoded batches: the library's uint8 from :func:`san.io.preprocess.load_image`, the
reference's own float tensors); p50/p99 of the per-batch model call in the end-to-end run;
decode+resize per image (serial, inline) and its share of the model time per image;
effective GFLOP/s (FLOPs per image x end-to-end img/s) and its share of the float32
matrix-multiply peak measured here on the same threads; peak RSS of the child process
after the end-to-end run, and of its process tree (decode workers included, sampled);
the mean and lowest cosine similarity of its embeddings to the reference's, judged by the
rule of the row's precision (:data:`san.contract.rules.RULES`, as san-parity judges it); ratios to the
reference. The table ends with the project's speed targets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    TreeRss,
    cpu_flags,
    fmt,
    load_average,
    markdown_table,
    matmul_peak_gflops,
    parse_args,
    peak_rss_mib,
    percentile_ms,
    run_in_child,
    verdict,
)

from runtime.base import physical_cores
from runtime.embed import EMBEDDINGS
from runtime.machine import cpu_name
from san.contract.artifact import read_checkpoint_header
from san.contract.rules import RULES
from san.evaluation.metrics import paired_cosine
from san.evaluation.retrieval import default_workers
from san.io.discovery import discover_images

#: Speed targets (ratios to the reference loop; decode share of model time).
ORT_FP32_TARGET, ORT_INT8_TARGET, DECODE_SHARE_TARGET = 1.8, 2.2, 0.10
#: OpenVINO goals on a VNNI CPU: INT8 over onnxruntime fp32 at batch 32; batch-8 cost per image
#: over batch-32's.
OV_INT8_TARGET, OV_BATCH8_COST_TARGET = 2.5, 1.3
REFERENCE = "reference: torch eager loop"
SMOKE = {"images": 8, "batch_size": 4, "height": 64, "width": 32, "backbone": "resnet18", "calib_images": 4}


@dataclass(frozen=True)
class Setup:
    """What every competitor's child process gets: the same files, batch and threads."""

    root: Path
    paths: tuple[str, ...]
    batch_size: int
    threads: int
    workers: int
    work: Path

    def files(self) -> list[Path]:
        """Absolute paths, in discovery order (the rows of every embedding matrix)."""
        return [self.root / p for p in self.paths]


@dataclass
class Measurement:
    """One competitor's numbers."""

    images: int
    e2e_s: float
    model_s: float
    decode_s: float
    latencies_s: list[float]
    rss_mib: float
    tree_rss_mib: float
    embeddings: np.ndarray = field(repr=False)

    @property
    def e2e_ips(self) -> float:
        return self.images / self.e2e_s

    @property
    def model_ips(self) -> float:
        return self.images / self.model_s

    @property
    def decode_share(self) -> float:
        """Decode+resize time over model time, per image."""
        return self.decode_s / self.model_s


@dataclass(frozen=True)
class Competitor:
    """A row: ``run(*args)`` in a child process, unless ``skip`` says why not."""

    key: str
    name: str
    run: Callable[..., Measurement]
    args: tuple[Any, ...] = ()
    skip: str | None = None
    kind: str = "fp32"  #: the precision whose rule judges its embeddings (san.contract.rules.RULES)


def judged(kind: str, cos: np.ndarray) -> str:
    """``KIND: pass`` or ``KIND: FAIL`` for paired cosines against fp32, by the rule table's cosine
    limits for that precision, as san-parity judges them (retrieval aside)."""
    breaches = RULES[kind].breaches(kind, {"min_cosine_min": float(cos.min()), "min_cosine_mean": float(cos.mean())})
    return f"{kind}: {'FAIL' if breaches else 'pass'}"


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- competitors (child side) ---------------------------------------------------------------
def eager_loop(setup: Setup, ckpt: Path, device: str = "cpu", compiled: bool = False) -> Measurement:
    """The reference: PIL + torchvision transforms + the model, written as a user would."""
    import torch
    import torchvision.transforms as T
    from PIL import Image

    from san.training.checkpoint import load_checkpoint

    torch.set_num_threads(setup.threads)
    model, meta = load_checkpoint(ckpt, map_location=device)
    if compiled:
        model = torch.compile(model)
    spec = meta.spec
    transform = T.Compose([
        T.Resize((spec.height, spec.width), interpolation=T.InterpolationMode.BILINEAR),
        T.ToTensor(),
        T.Normalize((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255)),  # the model takes 0..255
    ])
    files = setup.files()

    def decode(chunk: Sequence[Path]) -> torch.Tensor:
        return torch.stack([transform(Image.open(f).convert("RGB")) for f in chunk])

    def embed(batch: torch.Tensor) -> np.ndarray:
        return model(batch.to(device)).float().cpu().numpy()

    with torch.inference_mode():
        embed(decode(files[: setup.batch_size]))  # warm-up (and compilation)
        latencies, rows = [], []
        with TreeRss() as tree:
            start = time.perf_counter()
            for chunk in _batches(files, setup.batch_size):
                batch = decode(chunk)
                tic = time.perf_counter()
                rows.append(embed(batch))
                latencies.append(time.perf_counter() - tic)
            e2e = time.perf_counter() - start
        rss = peak_rss_mib()
        start = time.perf_counter()
        decoded = [decode([f]) for f in files]
        decode_s = time.perf_counter() - start
        batches = [torch.cat(list(chunk)) for chunk in _batches(decoded, setup.batch_size)]
        start = time.perf_counter()
        for batch in batches:
            embed(batch)
        model_s = time.perf_counter() - start
    return Measurement(len(files), e2e, model_s, decode_s, latencies, rss, tree.peak_mib, np.concatenate(rows))


def san_embed(setup: Setup, artifact: Path, backend: str, options: dict[str, Any], on_ray: bool = False) -> Measurement:
    """The library path: :func:`runtime.embed_folder` over the folder, then the same backend
    model-only; ``on_ray``: with the Ray runner (per-batch latencies are then inside the actor,
    not measured)."""
    from runtime import EmbedOptions, LocalRunner, embed_folder, open_backend
    from san.io.preprocess import load_image

    if on_ray:
        from runtime.embed_ray import ActorSpec, RayRunner

        runner: Any = RayRunner(ActorSpec(str(artifact), backend, options))
    else:
        runner = LocalRunner(setup.workers)

    with open_backend(artifact, backend, **options) as model:
        spec = model.spec
        model.infer(np.zeros((setup.batch_size, 3, spec.height, spec.width), np.uint8))  # warm-up
        latencies: list[float] = []
        infer = model.infer

        def timed(batch: np.ndarray) -> np.ndarray:
            tic = time.perf_counter()
            out = infer(batch)
            latencies.append(time.perf_counter() - tic)
            return out

        model.infer = timed  # type: ignore[method-assign]  # per-batch latency inside embed_folder
        with tempfile.TemporaryDirectory(dir=setup.work) as out, TreeRss() as tree:
            start = time.perf_counter()
            embed_folder(setup.root, model, out, EmbedOptions(batch_size=setup.batch_size),
                         runner=runner, progress=False)
            e2e = time.perf_counter() - start
            embeddings = np.load(Path(out) / EMBEDDINGS)
        rss = peak_rss_mib()
        model.infer = infer  # type: ignore[method-assign]
        files = setup.files()
        start = time.perf_counter()
        decoded = [load_image(f, spec) for f in files]
        decode_s = time.perf_counter() - start
        batches = [np.stack(chunk) for chunk in _batches(decoded, setup.batch_size)]
        start = time.perf_counter()
        for batch in batches:
            model.infer(batch)
        model_s = time.perf_counter() - start
    return Measurement(len(files), e2e, model_s, decode_s, latencies, rss, tree.peak_mib, embeddings)


def first_embedding_s(artifact: Path, backend: str, options: dict[str, Any], height: int, width: int) -> float:
    """Seconds from opening ``artifact`` to its first embedding of one image: what a start of
    ``san-embed`` waits before its first result (OpenVINO compiles here, or reads its cache)."""
    from runtime import open_backend

    started = time.perf_counter()
    with open_backend(artifact, backend, **options) as model:
        model.infer(np.zeros((1, 3, height, width), np.uint8))
    return time.perf_counter() - started


def startup_report(setup: Setup, art: Artifacts, height: int, width: int) -> str:
    """Cold and warm starts, each in a fresh process: onnxruntime (its file read from the page
    cache the second time), and OpenVINO with an empty compiled-model cache, then with the
    entry the first start wrote."""
    starts = [("onnxruntime fp32", art.onnx, "onnxruntime", {"threads": setup.threads, "providers": ["cpu"]}, None)]
    for label, artifact in (("fp32", art.onnx), ("INT8 Q/DQ", art.int8)):
        skip = (artifact if isinstance(artifact, str) else None) or openvino_skip()
        cache = setup.work / f"compile-cache-{label.split()[0].lower()}"
        starts.append((f"OpenVINO {label} at f32", artifact, "openvino",
                       {"threads": setup.threads, "compile_cache": str(cache)}, skip))
    lines = ["| first embedding after a start | cold ms | warm ms | warm / cold |", "|---|---|---|---|"]
    for name, artifact, backend, options, skip in starts:
        if skip is not None:
            lines.append(f"| {name} | {skip} | | |")
            continue
        if "compile_cache" in options:
            shutil.rmtree(options["compile_cache"], ignore_errors=True)
        cold, warm = (run_in_child(first_embedding_s, artifact, backend, options, height, width) for _ in range(2))
        lines.append(f"| {name} | {1000 * cold:.0f} | {1000 * warm:.0f} | {warm / cold:.2f}x |")
    return "\n".join(lines)


@dataclass
class Sweep:
    """One competitor's model-only numbers per batch size."""

    seconds: dict[int, list[float]]  # batch -> per-call seconds
    rss_mib: float
    embeddings: np.ndarray = field(repr=False)  # at the largest batch

    def ips(self, batch: int) -> float:
        return batch * len(self.seconds[batch]) / sum(self.seconds[batch])


def model_sweep(setup: Setup, artifact: Path, backend: str, options: dict[str, Any], batches: tuple[int, ...],
                latency_only: bool = False) -> Sweep:
    """The backend on pre-decoded images at each batch size (a warm-up call first); with
    ``latency_only``, OpenVINO runs every batch on its LATENCY-compiled model."""
    from runtime import open_backend
    from san.io.preprocess import load_image

    if latency_only:
        import runtime.openvino_backend

        runtime.openvino_backend.THROUGHPUT_FROM = 1 << 30
    seconds, rows = {}, []
    with open_backend(artifact, backend, **options) as model:
        decoded = np.stack([load_image(f, model.spec) for f in setup.files()])
        for batch in batches:
            calls = [decoded[i : i + batch] for i in range(0, len(decoded) - batch + 1, batch)]
            model.infer(calls[0])  # warm-up at this shape
            seconds[batch], rows = [], []
            for chunk in calls:
                tic = time.perf_counter()
                rows.append(model.infer(chunk))
                seconds[batch].append(time.perf_counter() - tic)
    return Sweep(seconds, peak_rss_mib(), np.concatenate(rows))


def sweep_plan(setup: Setup, art: Artifacts, batches: tuple[int, ...]) -> list[Competitor]:
    """onnxruntime fp32 and INT8, the OpenVINO rows, and OpenVINO INT8 on LATENCY alone."""
    ort = {"threads": setup.threads, "providers": ["cpu"]}
    int8_skip = art.int8 if isinstance(art.int8, str) else None
    rows = [Competitor("ort", "onnxruntime fp32", model_sweep, (setup, art.onnx, "onnxruntime", ort, batches)),
            Competitor("int8", "onnxruntime INT8 Q/DQ", model_sweep, (setup, art.int8, "onnxruntime", ort, batches),
                       int8_skip, "int8")]
    for row in openvino_rows(setup, art):
        rows.append(Competitor(row.key, row.name.removeprefix("san-embed "), model_sweep, (*row.args, batches), row.skip,
                               row.kind))
    ov = {"threads": setup.threads, "precision": "f32"}
    rows.append(Competitor("ov-int8-latency", "OpenVINO INT8 Q/DQ at f32, LATENCY model only", model_sweep,
                           (setup, art.int8, "openvino", ov, batches, True), int8_skip or openvino_skip(), "int8"))
    return rows


def sweep_report(rows: list[Competitor], results: dict[str, Sweep], batches: tuple[int, ...]) -> str:
    """Per row and batch: img/s, p50/p99, RSS, ratio to onnxruntime fp32, cosine and its rule; the goals."""
    base = results.get("onnxruntime fp32")
    headers = ["competitor", "batch", "img/s", "p50 ms", "p99 ms", "RSS MiB", "x ORT fp32", "cos mean vs ORT fp32",
               "rule"]
    table = []
    for c in rows:
        m = results.get(c.name)
        if m is None:
            table.append([c.name, "", c.skip or "not run", *[""] * (len(headers) - 3)])
            continue
        cos = paired_cosine(m.embeddings, base.embeddings) if base else None
        verdict_text = judged(c.kind, cos) if cos is not None and c.name != base_name(base, results) else ""
        for batch in batches:
            table.append([c.name, str(batch), fmt(m.ips(batch)), fmt(percentile_ms(m.seconds[batch], 50)),
                          fmt(percentile_ms(m.seconds[batch], 99)), fmt(m.rss_mib, 0),
                          fmt(m.ips(batch) / base.ips(batch), 2, "x") if base else "",
                          fmt(float(cos.mean()), 4) if cos is not None else "", verdict_text])
    largest, eight = max(batches), 8 if 8 in batches else None
    goal_rows = []
    for precision in ("f32", "bf16"):
        ov = results.get(f"OpenVINO INT8 Q/DQ at {precision}")
        speedup = ov.ips(largest) / base.ips(largest) if ov and base else None
        cost = ov.ips(largest) / ov.ips(eight) if ov and eight else None  # per-image time at 8 over at the largest
        goal_rows += [
            [f"OpenVINO INT8 ({precision} float parts) / onnxruntime fp32 at batch {largest}", fmt(speedup, 2, "x"),
             f">= {OV_INT8_TARGET}x", verdict(speedup, OV_INT8_TARGET)],
            [f"OpenVINO INT8 ({precision} float parts) cost per image, batch 8 / batch {largest}", fmt(cost, 2, "x"),
             f"<= {OV_BATCH8_COST_TARGET}x", verdict(cost, OV_BATCH8_COST_TARGET, at_most=True)],
        ]
    goals = markdown_table(["goal", "measured", "target", "verdict"], goal_rows)
    return f"{markdown_table(headers, table)}\n\n{goals}"


def base_name(base: Sweep | None, results: dict[str, Sweep]) -> str:
    """The name of the row every other is compared with."""
    return next((name for name, m in results.items() if m is base), "")


# -- preparation (parent side) --------------------------------------------------------------
def prepare_images(work: Path, n: int, height: int, width: int, source_scale: float) -> tuple[Path, Path]:
    """A folder of ``n`` synthetic test-split JPEGs to embed, and the training split (calibration pool)."""
    from san.data.synth import GALLERY, QUERY, TRAIN, SynthParams, ensure_synthetic, plan_images

    size = {"height": round(height * source_scale), "width": round(width * source_scale)}
    ids = max(4, n // 5)
    while sum(i.split != TRAIN for i in plan_images(SynthParams(ids=ids, **size))) < n:
        ids += max(1, ids // 10)
    synth = ensure_synthetic(work / f"synth-{size['height']}x{size['width']}-{ids}", ids=ids, **size).root
    target = work / f"embed-{n}-{size['height']}x{size['width']}"
    if len(discover_images(target) if target.is_dir() else []) != n:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        test = [synth / split / name for split in (QUERY, GALLERY) for name in discover_images(synth / split)]
        for source in test[:n]:
            os.link(source, target / f"{source.parent.name}-{source.name}")
    return target, synth / TRAIN


@dataclass(frozen=True)
class Artifacts:
    """The model files every competitor runs; an INT8 file is a skip message when it could not be made."""

    ckpt: Path
    onnx: Path
    int8: Path | str  # for onnxruntime
    trt_int8: Path | str  # for TensorRT (symmetric int8, float biases)
    flops: int


def prepare_models(args: argparse.Namespace, calibration_pool: Path, embedded: Path) -> Artifacts:
    """The checkpoint (``--ckpt`` or random weights), its ONNX export and its INT8 Q/DQ copy."""
    import torch

    from export.onnx_export import export_onnx
    from san.contract.spec import InputSpec
    from san.evaluation.summary import flops_per_image
    from san.model.config import ModelConfig
    from san.model.network import build_model
    from san.training.checkpoint import load_checkpoint, save_checkpoint

    ckpt = args.ckpt
    if ckpt is None:
        ckpt = args.work / f"random-{args.backbone}-{args.height}x{args.width}.pt"
        if not ckpt.is_file():
            torch.manual_seed(0)
            cfg = ModelConfig(backbone=args.backbone, spec=InputSpec(height=args.height, width=args.width))
            save_checkpoint(ckpt, build_model(cfg).eval())
    model, meta = load_checkpoint(ckpt)
    onnx = args.work / f"{ckpt.stem}-{meta.sha256[:12]}.onnx"
    if not onnx.is_file():
        export_onnx(model, onnx)
    trt_skip = gpu_skip("tensorrt")
    return Artifacts(ckpt, onnx, make_int8(args, onnx, calibration_pool, embedded),
                     trt_skip or make_int8(args, onnx, calibration_pool, embedded, target="tensorrt"),
                     flops_per_image(model))


def make_int8(args: argparse.Namespace, onnx: Path, pool: Path, embedded: Path, target: str = "onnxruntime") -> Path | str:
    """INT8 Q/DQ through the calibration package's library API; a skip message if it is missing."""
    try:
        from calibration.hygiene import select_calibration_set
        from calibration.quantize import QuantizeOptions, quantize_onnx
    except ImportError as exc:
        return f"skipped: the calibration package is not importable ({exc})"
    sample = select_calibration_set(pool, args.calib_images, seed=0, exclude=[embedded])
    options = QuantizeOptions(progress=False, **{**quant_overrides(QuantizeOptions, args.quant), "target": target})
    out = onnx.with_suffix(".int8.onnx" if target == "onnxruntime" else f".{target}.int8.onnx")
    quantize_onnx(onnx, sample.images, out, options=options, cache_dir=args.work / "calibration-cache",
                  sampling=sample.sampling())
    return out


def quant_overrides(options_type: type, pairs: Sequence[str]) -> dict[str, Any]:
    """``["target=tensorrt", "per_channel=false"]`` -> typed keyword arguments of ``options_type``."""
    types = {f.name: type(f.default) for f in fields(options_type)}
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in types:
            raise SystemExit(f"--quant {pair}: unknown option {key!r}; choose from {sorted(types)}")
        kind = types[key]
        parsed[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return parsed


def ray_skip() -> str | None:
    """Why the Ray row cannot run here (None when it can)."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return "skipped: Ray Data is not installed (pip install -e '.[cluster]')"
    return None


def gpu_skip(need: str = "") -> str | None:
    """Why a GPU competitor cannot run here (None when it can)."""
    import torch

    if not torch.cuda.is_available():
        return "skipped: no CUDA GPU"
    if need == "onnxruntime-cuda":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "skipped: onnxruntime has no CUDA provider (pip install -e '.[gpu-cu12]')"
    if need == "tensorrt":
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return "skipped: TensorRT is not installed (pip install -e '.[gpu-cu12]' or '.[gpu-cu13]')"
    return None


def tensorrt_engine(onnx: Path, batch_size: int, fp16_from: Path | None = None) -> Path:
    """Build (once) a TensorRT engine for ``onnx``; with ``fp16_from``, from its half-precision export."""
    from export.onnx_export import export_onnx
    from export.tensorrt_build import BatchProfile, build_engine
    from san.training.checkpoint import load_checkpoint

    source = onnx
    if fp16_from is not None:
        source = onnx.with_suffix(".fp16.onnx")
        if not source.is_file():
            export_onnx(load_checkpoint(fp16_from)[0], source, precision="fp16")
    engine = source.with_suffix(".engine")
    if not engine.is_file():
        build_engine(source, engine, profile=BatchProfile(1, batch_size, batch_size))
    return engine


def openvino_skip(precision: str = "f32") -> str | None:
    """Why an OpenVINO row cannot run here (None when it can)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "skipped: OpenVINO is not installed (pip install -e '.[openvino]')"
    if precision == "bf16" and not any(f in cpu_flags() for f in ("avx512_bf16", "amx_bf16")):
        return "skipped: this CPU has no bf16 (AVX-512 BF16 or AMX)"
    return None


def openvino_rows(setup: Setup, art: Artifacts) -> list[Competitor]:
    """The OpenVINO rows: fp32 and INT8 files, each at f32 and at bf16 float parts, and at bf16
    with the precision-sensitive nodes left unmarked (in bf16 too: what keeping them costs)."""
    rows = []
    for key, label, artifact in (("ov-fp32", "fp32", art.onnx), ("ov-int8", "INT8 Q/DQ", art.int8)):
        for precision, suffix, keep in (("f32", "", True), ("bf16", "-bf16", True), ("bf16", "-bf16-unmarked", False)):
            skip = (artifact if isinstance(artifact, str) else None) or openvino_skip(precision)
            options: dict[str, Any] = {"threads": setup.threads, "precision": precision}
            if not keep:
                options["keep_sensitive_f32"] = False
            kind = "int8" if key == "ov-int8" else "bf16" if precision == "bf16" else "fp32"
            where = "" if keep else ", mask paths unmarked"
            rows.append(Competitor(key + suffix, f"san-embed OpenVINO {label} at {precision}{where}", san_embed,
                                   (setup, artifact, "openvino", options), skip, kind))
    return rows


def plan(args: argparse.Namespace, setup: Setup, art: Artifacts) -> list[Competitor]:
    """Every row, in order; GPU rows carry their skip reason on a machine without one."""
    cpu = {"threads": setup.threads}
    ort_cpu = {**cpu, "providers": ["cpu"]}
    int8_skip = art.int8 if isinstance(art.int8, str) else None
    rows = [
        Competitor("reference", REFERENCE, eager_loop, (setup, art.ckpt)),
        Competitor("torch", "san-embed torch", san_embed, (setup, art.ckpt, "torch", cpu)),
        Competitor("ort", "san-embed onnxruntime fp32", san_embed, (setup, art.onnx, "onnxruntime", ort_cpu)),
        Competitor("int8", "san-embed onnxruntime INT8 Q/DQ", san_embed,
                   (setup, art.int8, "onnxruntime", ort_cpu), int8_skip, "int8"),
        Competitor("ray", "san-embed --ray onnxruntime fp32 (local Ray)", san_embed,
                   (setup, art.onnx, "onnxruntime", ort_cpu, True), ray_skip()),
        *openvino_rows(setup, art),
    ]
    cuda, ort_cuda, trt = gpu_skip(), gpu_skip("onnxruntime-cuda"), gpu_skip("tensorrt")
    rows += [
        Competitor("cuda-eager", "GPU: torch eager loop", eager_loop, (setup, art.ckpt, "cuda"), cuda),
        Competitor("cuda-compile", "GPU: torch.compile loop", eager_loop, (setup, art.ckpt, "cuda", True), cuda),
        Competitor("ort-cuda", "GPU: san-embed onnxruntime CUDA", san_embed,
                   (setup, art.onnx, "onnxruntime", {"providers": ["cuda"]}), ort_cuda),
    ]
    if trt is None:
        rows.append(Competitor("trt-fp16", "GPU: san-embed TensorRT FP16", san_embed,
                               (setup, tensorrt_engine(art.onnx, setup.batch_size, art.ckpt), "tensorrt", {}), kind="fp16"))
        trt_int8_skip = art.trt_int8 if isinstance(art.trt_int8, str) else None
        rows.append(Competitor("trt-int8", "GPU: san-embed TensorRT INT8", san_embed,
                               (setup, tensorrt_engine(art.trt_int8, setup.batch_size) if trt_int8_skip is None
                                else None, "tensorrt", {}), trt_int8_skip, "int8"))
    else:
        rows += [Competitor(k, f"GPU: san-embed TensorRT {p}", san_embed, skip=trt, kind=kind) for k, p, kind in
                 (("trt-fp16", "FP16", "fp16"), ("trt-int8", "INT8", "int8"))]
    wanted = {"reference", *args.only} if args.only else None
    return [c for c in rows if wanted is None or c.key in wanted]


# -- report ---------------------------------------------------------------------------------
def report(rows: list[Competitor], results: dict[str, Measurement], flops: int, peak_gflops: float) -> str:
    """The markdown table (ending in the ratios to the reference) and the targets."""
    ref = results[REFERENCE]
    headers = ["competitor", "img/s e2e", "img/s model", "e2e/model", "p50 ms", "p99 ms", "decode ms/img",
               "decode/model", "GFLOP/s", "% sgemm peak", "RSS MiB", "tree RSS MiB", "cos mean vs ref",
               "min cos vs ref", "rule", "e2e x ref", "model x ref", "RSS x ref"]
    table = []
    for c in rows:
        m = results.get(c.name)
        if m is None:
            table.append([c.name, c.skip or "not run", *[""] * (len(headers) - 2)])
            continue
        gflops = flops * m.e2e_ips / 1e9
        cos = paired_cosine(m.embeddings, ref.embeddings)
        table.append([
            c.name, fmt(m.e2e_ips), fmt(m.model_ips), fmt(m.e2e_ips / m.model_ips, 2),
            fmt(percentile_ms(m.latencies_s, 50)), fmt(percentile_ms(m.latencies_s, 99)),
            fmt(m.decode_s / m.images * 1e3, 2), fmt(m.decode_share * 100, 1, "%"),
            fmt(gflops), fmt(gflops / peak_gflops * 100, 0, "%"), fmt(m.rss_mib, 0), fmt(m.tree_rss_mib, 0),
            fmt(float(cos.mean()), 4), fmt(float(cos.min()), 4), "" if c.name == REFERENCE else judged(c.kind, cos),
            fmt(m.e2e_ips / ref.e2e_ips, 2, "x"), fmt(m.model_ips / ref.model_ips, 2, "x"),
            fmt(m.rss_mib / ref.rss_mib, 2, "x"),
        ])
    fp32, int8 = results.get("san-embed onnxruntime fp32"), results.get("san-embed onnxruntime INT8 Q/DQ")

    def ratio(m: Measurement | None) -> float | None:
        return m.e2e_ips / ref.e2e_ips if m else None

    share = fp32.decode_share if fp32 else None
    targets = [
        ["ORT fp32 end-to-end / reference", fmt(ratio(fp32), 2, "x"), f">= {ORT_FP32_TARGET}x",
         verdict(ratio(fp32), ORT_FP32_TARGET)],
        ["decode+resize / model time (ORT fp32)", fmt(share * 100 if share else None, 1, "%"),
         f"<= {DECODE_SHARE_TARGET:.0%}", verdict(share, DECODE_SHARE_TARGET, at_most=True)],
        ["ORT INT8 end-to-end / reference", fmt(ratio(int8), 2, "x"), f">= {ORT_INT8_TARGET}x",
         verdict(ratio(int8), ORT_INT8_TARGET)],
    ]
    goals = markdown_table(["target", "measured", "goal", "verdict"], targets)
    return f"{markdown_table(headers, table)}\n\n{goals}"


# -- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python benchmarks/embed.py``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Competitors: reference, torch, ort, "
                                "int8, ray, ov-fp32, ov-fp32-bf16, ov-fp32-bf16-unmarked, ov-int8, ov-int8-bf16, ov-int8-bf16-unmarked, "
                                "ov-int8-latency (sweep "
                                "only), cuda-eager, cuda-compile, ort-cuda, trt-fp16, trt-int8.")
    p.add_argument("--images", type=int, default=512, help="images to embed (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="images per model call, all competitors (default %(default)s)")
    p.add_argument("--threads", type=int, help="intra-op threads of every backend (default: physical cores)")
    p.add_argument("--workers", type=int, help="san-embed decode processes (default: san-embed's, half the CPUs)")
    p.add_argument("--height", type=int, default=256, help="contract height (default %(default)s)")
    p.add_argument("--width", type=int, default=128, help="contract width (default %(default)s)")
    p.add_argument("--source-scale", type=float, default=1.0,
                   help="synthetic JPEG size as a multiple of the contract size (default %(default)s)")
    p.add_argument("--backbone", default="resnet50", help="backbone of the random-weight model (default %(default)s)")
    p.add_argument("--ckpt", type=Path, help="a SAN checkpoint instead of random weights")
    p.add_argument("--calib-images", type=int, default=64, help="INT8 calibration sample (default %(default)s)")
    p.add_argument("--quant", action="append", default=[], metavar="KEY=VALUE",
                   help="calibration.quantize.QuantizeOptions override, repeatable (e.g. target=tensorrt)")
    p.add_argument("--sweep", type=lambda s: tuple(int(b) for b in s.split(",")), metavar="B,B",
                   help="also the model-only batch sweep at these batch sizes (e.g. 1,8,32)")
    p.add_argument("--only", type=lambda s: s.split(","), metavar="A,B",
                   help="run only these competitors (the reference always runs)")
    p.add_argument("--work", type=Path, default=Path("runs/bench"), help="data and models (default %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Prepare data and models, run every competitor in its own process, print the table."""
    args = parse_args(build_parser(), argv, SMOKE)
    args.work.mkdir(parents=True, exist_ok=True)
    threads = args.threads or physical_cores()
    import onnxruntime
    import PIL
    import torch
    from PIL import features

    print(f"command: python benchmarks/embed.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"machine: {cpu_name()} ({cpu_flags()}), {os.cpu_count()} CPUs; load average {load_average()}")
    print(f"versions: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, Pillow {PIL.__version__} "
          f"(libjpeg-turbo {features.check_feature('libjpeg_turbo')})")
    if args.ckpt is not None:  # its own input size: the images are made for it, the start-up embeds at it
        spec = read_checkpoint_header(args.ckpt)["config"]["spec"]
        args.height, args.width = spec["height"], spec["width"]
    embedded, pool = prepare_images(args.work, args.images, args.height, args.width, args.source_scale)
    art = prepare_models(args, pool, embedded)
    setup = Setup(embedded, tuple(discover_images(embedded)), args.batch_size, threads,
                  default_workers() if args.workers is None else args.workers, args.work)
    peak = matmul_peak_gflops(threads)
    print(f"model: {art.ckpt.name}, {art.flops / 1e9:.2f} GFLOP/image; {len(setup.paths)} images, batch "
          f"{setup.batch_size}, {threads} threads, {setup.workers} decode workers; sgemm peak {peak:.1f} GFLOP/s")
    rows = plan(args, setup, art)
    results: dict[str, Measurement] = {}
    for c in rows:
        if c.skip is None:
            print(f"running {c.name} ...", flush=True)
            results[c.name] = run_in_child(c.run, *c.args)
    print(f"load average after: {load_average()}\n")
    print(startup_report(setup, art, args.height, args.width) + "\n")
    print(report(rows, results, art.flops, peak))
    if args.sweep:
        sweep_rows = [c for c in sweep_plan(setup, art, args.sweep) if not args.only or c.key in {"ort", *args.only}]
        swept: dict[str, Sweep] = {}
        for c in sweep_rows:
            if c.skip is None:
                print(f"sweeping {c.name} ...", flush=True)
                swept[c.name] = run_in_child(c.run, *c.args)
        print(f"\nmodel-only, batch sizes {', '.join(map(str, args.sweep))} ({len(setup.paths)} images each); load "
              f"average after: {load_average()}\n")
        print(sweep_report(sweep_rows, swept, args.sweep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
