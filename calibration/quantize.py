"""INT8 post-training quantization of a SAN ONNX export, as explicit Q/DQ.

``onnxruntime.quantization.quantize_static`` in ``QuantFormat.QDQ``: int8 weights,
symmetric, per output channel; activations per tensor; for one of two targets
(:data:`TARGETS`):

- ``onnxruntime`` (default: the CPU is where a file without a GPU runs): uint8
  asymmetric activations, so post-ReLU tensors get all 256 levels and every ReLU folds
  into its QuantizeLinear; onnxruntime fuses every quantized Conv into ``QLinearConv``
  (u8 x s8 MLAS kernels; all 65 of a ResNet-50 SAN with ``float_blocks=0``), with its
  bias as INT32, and every quantized residual Add into ``QLinearAdd``;
- ``tensorrt``: what TensorRT's explicit quantization accepts (``san-export --trt
  --int8``; :mod:`export.tensorrt_lint` checks it): int8 symmetric activations with
  zero point 0, int8 weights per output channel on axis 0, biases left in float (TensorRT
  dequantizes no INT32). The context units' ConvTranspose, whose kernel keeps output
  channels on axis 1, produces X of its block and so stays float with the mask path.
  onnxruntime runs it too, but a ReLU cannot fold into a zero-point-0 clamp, so it keeps
  DQ -> ReLU -> Q float islands and leaves a third of the convolutions unfused (slower
  than fp32 on the CPU).

The attention mask path stays in float. Quantizing the input X of a block's per-channel
min-max normalisation (Eq. 3) to one per-tensor scale would leave low-range channels with
a handful of levels, and ``1[pi > threshold]`` would flip wholesale. So the nodes of each
mask path — the producer of X (context-unit deconvolution or the stage's ReLU), the
min-max normalisation, the comparison, the Cast and the Mul by the mask — are found by op
pattern (:func:`find_mask_paths`), passed as ``nodes_to_exclude``, and after quantization
their inputs are rewired to the float tensors (:func:`restore_float_inputs`).

Even so X is computed by the quantized network, and hard masks amplify its error: a
flipped mask element doubles or removes a feature (F = (1 + M) T), and every later block
inherits it. ``float_blocks=N`` keeps the stem and the first N stages with their
attention blocks in fp32; on the CPU without VNNI the large early feature maps are where
int8 kernels gain nothing anyway. Stages are found the same way for every model, SAN or the
plain ResNet (:func:`stage_outputs`), so "the stem and stage 1 in float" and "the head in
float" (:func:`float_head`) mean the same for both.

Calibration images stream through :func:`san.io.preprocess.load_image` (the contract's one
decode + resize). The collected ranges are cached in a JSON file keyed by the source
model's sha256, the method and the image list's content hash; a second run with the same
key reuses them without running the model.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from calibration.half_floats import with_half_float_parts
from san.cli.command import foreign_prints_dropped
from san.contract.artifact import (
    INPUT_NAME,
    PRECISION_KEY,
    convention_of,
    hard_mask_stages,
    load_onnx_with_data,
    metadata_of,
    read_contract,
)
from san.contract.input_convention import InputConvention
from san.contract.onnx_graph import GraphIndex, drop_unread
from san.contract.precision import MaskPath, find_mask_paths
from san.contract.spec import METADATA_KEY, InputSpec
from san.io.atomic import atomic_write
from san.io.error_reason import reason
from san.io.errors import ToolkitError
from san.io.hashing import file_sha256
from san.io.preprocess import load_image
from san.io.progress import progress_bar

log = logging.getLogger(__name__)

#: Calibration methods: CLI name -> onnxruntime method.
METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
#: Percentile of |x| kept by ``percentile`` calibration (onnxruntime's default).
PERCENTILE = 99.999
#: metadata_props key of the calibration record (sample, seed, method, source sha256).
CALIBRATION_KEY = "san.calibration"
_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


class QuantizeError(ToolkitError, RuntimeError):
    """A model or option that cannot be quantized as asked; the message says why."""


#: The exporter's record of each node's module path (torch.onnx, dynamo): e.g. ``['', 'san',
#: 'san.stages.0', 'san.stages.0.1', 'relu_3']``.
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
STAGES = (1, 2, 3, 4)


def stage_outputs(model: onnx.ModelProto) -> dict[int, str]:
    """Stage (1..4) -> the tensor it hands on: the output of its attention block where it has
    one, else of its last residual block; the same definition for SAN and the plain ResNet.

    A stage is the nodes of the backbone stage and of its attention block, as the exporter's
    name scopes record them (``san.stages.{k-1}``, ``san.attention.{k}``); its output is the one
    tensor that leaves them. :class:`QuantizeError` for a graph without those records.
    """
    g = GraphIndex(model.graph)
    scopes = {n.name: _scopes(n) for n in g.nodes}
    outputs = {}
    for stage in STAGES:
        own = {f"san.stages.{stage - 1}", f"san.attention.{stage}"}
        members = {n.name for n in g.nodes if own & scopes[n.name]}
        leaving = {out for n in g.nodes if n.name in members for out in n.output
                   if any(c.name not in members and c.op_type != "Shape" for c in g.consumers.get(out, []))}
        if len(leaving) != 1:
            raise QuantizeError(f"cannot find the output of stage {stage} in the graph ({len(leaving)} tensors leave "
                                "it; the exporter's name scopes are missing or the model is not a SAN/ResNet export): "
                                "export it again with san-export")
        outputs[stage] = leaving.pop()
    return outputs


def _scopes(node: onnx.NodeProto) -> set[str]:
    recorded = next((p.value for p in node.metadata_props if p.key == NAME_SCOPES_KEY), "[]")
    try:
        scopes = ast.literal_eval(recorded)
    except (ValueError, SyntaxError):
        return set()
    return {str(scope) for scope in scopes} if isinstance(scopes, list) else set()


def float_prefix(model: onnx.ModelProto, blocks: int) -> list[str]:
    """Names of the nodes up to the output of stage ``blocks`` (:func:`stage_outputs`: the stem,
    the first ``blocks`` stages and their attention blocks): the part kept in float by
    ``float_blocks``."""
    if blocks <= 0:
        return []
    if blocks > len(STAGES):
        raise QuantizeError(f"float_blocks={blocks}, but the backbone has {len(STAGES)} stages")
    g = GraphIndex(model.graph)
    return list(g.names(g.ancestors(stage_outputs(model)[blocks])))


def float_head(model: onnx.ModelProto) -> list[str]:
    """Names of the node that makes the last stage's output (its attention block's Add of Eq. 2,
    or the backbone's last ReLU) and every node after it: pooling and the embedding head.

    They cost a fraction of a percent of the FLOPs, but quantizing them rounds the pooled
    features and the embedding itself to one per-tensor 8-bit grid, which is most of the
    INT8 model's cosine error on a weak model's small ranking margins.
    """
    g = GraphIndex(model.graph)
    output = stage_outputs(model)[STAGES[-1]]
    return list(g.names([g.producer[output], *g.descendants(output)]))


def float_placement(model: onnx.ModelProto, options: QuantizeOptions) -> list[str]:
    """The nodes the toolkit keeps in float, by name, in graph order: every mask path
    (:func:`san.contract.precision.find_mask_paths`), the stem and the first ``float_blocks``
    stages, and the head when ``float_head``. One placement for every quantizer that takes an
    exclusion list (onnxruntime's ``nodes_to_exclude``, NNCF's ignored scope)."""
    mask_nodes = [name for path in find_mask_paths(model) for name in path.nodes]
    kept = [*float_prefix(model, options.float_blocks), *(float_head(model) if options.float_head else [])]
    return list(dict.fromkeys([*mask_nodes, *kept]))


def restore_float_inputs(model: onnx.ModelProto, float_nodes: Iterable[str]) -> int:
    """Rewire float nodes that read ``DQ(Q(x))`` to ``x`` itself when ``x`` is produced by a
    float node; drop the Q/DQ nodes left without readers. Returns the inputs rewired.

    onnxruntime's quantizer gives all readers of a tensor one shared Q/DQ pair, excluded
    readers included. ``x`` is the true float value only when its producer was excluded
    too: a quantized ReLU is folded into its Q, leaving the pre-ReLU value under the
    ReLU's name, so other inputs are left as they are.
    """
    members = set(float_nodes)
    g = GraphIndex(model.graph)
    rewired = 0
    for node in (n for n in g.nodes if n.name in members):
        for index, name in enumerate(node.input):
            dq = g.producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or g.is_constant(dq.input[0]):
                continue
            q = g.producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue
            origin = g.producer.get(q.input[0])
            if origin is not None and origin.name in members:
                node.input[index] = q.input[0]
                rewired += 1
    drop_unread(model, _QUANT_OPS)
    return rewired


def quant_nodes_on_path(model: onnx.ModelProto, paths: Sequence[MaskPath]) -> list[str]:
    """Edges ``producer -> consumer`` where a QuantizeLinear/DequantizeLinear touches a mask
    path: one feeding a path node (entry nodes excepted: they read the quantized network),
    or one fed by a path node other than an entry node or the final Mul. Empty when the
    path is all float."""
    g = GraphIndex(model.graph)
    found = []
    for path in paths:
        entry = set(path.entry)
        for node in (n for n in g.nodes if n.name in path.nodes and n.name not in entry):
            found += [
                f"{p.name} -> {node.name}"
                for name in node.input
                if (p := g.producer.get(name)) is not None and p.op_type in _QUANT_OPS
            ]
            if node.op_type != "Mul":
                found += [
                    f"{node.name} -> {c.name}"
                    for name in node.output
                    for c in g.consumers.get(name, [])
                    if c.op_type in _QUANT_OPS
                ]
    return found


# -- calibration data -----------------------------------------------------------------------


class ImageReader(CalibrationDataReader):
    """Feeds calibration batches: each image decoded and resized by :func:`load_image`.

    Supports ``set_range`` so onnxruntime collects ranges one batch at a time (bounded
    memory for histogram methods). A progress bar (on a terminal) counts images.
    """

    def __init__(
        self, paths: Sequence[Path], spec: InputSpec, batch_size: int = 8, progress: bool = True,
        convention: InputConvention = InputConvention(),
    ) -> None:
        if not paths:
            raise QuantizeError("no calibration images given")
        self.paths = list(paths)
        self.spec = spec
        self.convention = convention
        self.batch_size = batch_size
        self.batches = [self.paths[i : i + batch_size] for i in range(0, len(self.paths), batch_size)]
        self._bar = progress_bar(enabled=progress, total=len(self.paths), desc="calibrating", unit="img")
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._pending, None)
        if batch is None:
            return None
        images = np.stack([load_image(p, self.spec) for p in batch])
        self._bar.update(len(batch))
        return {INPUT_NAME: self.convention.encode(images)}

    def close(self) -> None:
        self._bar.close()


def image_list_sha256(paths: Iterable[Path]) -> str:
    """SHA-256 over the content hashes of ``paths`` in order: what the ranges were computed on."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def cache_key(model_sha256: str, method: str, images_sha256: str) -> str:
    """The range cache's key: source model, calibration method (with its setting), images."""
    setting = f"{method}@{PERCENTILE}" if method == "percentile" else method
    return hashlib.sha256(f"{model_sha256}\n{setting}\n{images_sha256}".encode()).hexdigest()


# -- quantization ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """How a runtime wants its Q/DQ file (see the module docstring)."""

    activations: QuantType
    symmetric: bool
    quantize_bias: bool

    def describe(self) -> str:
        kind = "int8" if self.activations == QuantType.QInt8 else "uint8"
        return f"{kind} {'symmetric' if self.symmetric else 'asymmetric'} per-tensor"


TARGETS = {
    "onnxruntime": Target(QuantType.QUInt8, symmetric=False, quantize_bias=True),
    "tensorrt": Target(QuantType.QInt8, symmetric=True, quantize_bias=False),
}
#: What the parts left in float run in.
FLOAT_PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class QuantizeOptions:
    """How to quantize (see the module docstring for ``target``).

    ``float_blocks``: the stem and the first N stages with their attention blocks stay
    fp32. ``float_head``: so do pooling and the embedding head (:func:`float_head`).
    ``float_precision``: ``fp16`` writes those float parts, the mask paths included, in
    float16 for a TensorRT engine (:mod:`calibration.half_floats`; ``--target tensorrt`` only).
    ``reduce_range``: 7-bit weights, against the int16 pair-sum saturation of the
    AVX2 ``vpmaddubsw`` u8 x s8 kernels on CPUs without VNNI. The defaults were chosen on
    a validation split with ``benchmarks/calibration_sweep.py``: percentile ranges kept
    the INT8 embeddings closest to fp32 (mean cosine 0.9973-0.9976 over three calibration
    samples, minmax 0.9957-0.9970) and rank-1 within 1.2 points (minmax: 1.5-1.8).
    """

    method: str = "percentile"
    target: str = "onnxruntime"
    float_precision: str = "fp32"
    float_blocks: int = 1
    float_head: bool = True
    per_channel: bool = True
    reduce_range: bool = False
    batch_size: int = 8
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantizeError(f"--method must be one of {sorted(METHODS)}, got {self.method!r}")
        if self.target not in TARGETS:
            raise QuantizeError(f"--target must be one of {sorted(TARGETS)}, got {self.target!r}")
        if self.float_precision not in FLOAT_PRECISIONS:
            raise QuantizeError(f"--float-precision must be one of {list(FLOAT_PRECISIONS)}, got {self.float_precision!r}")
        if self.float_precision == "fp16" and self.target != "tensorrt":
            raise QuantizeError("--float-precision fp16 is for --target tensorrt (a strongly typed engine takes each "
                                "layer's precision from the graph); onnxruntime's CPU kernels have no fp16 convolutions")
        if self.float_blocks < 0:
            raise QuantizeError(f"--float-blocks must be >= 0, got {self.float_blocks}")
        if self.batch_size < 1:
            raise QuantizeError(f"--batch-size must be >= 1, got {self.batch_size}")


DEFAULT_OPTIONS = QuantizeOptions()


@dataclass
class QuantizeResult:
    """What :func:`quantize_onnx` wrote and how."""

    out: Path
    cache: Path
    cache_hit: bool
    mask_paths: list[MaskPath]
    calibration: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "cache": str(self.cache), "cache_hit": self.cache_hit,
                "mask_blocks": len(self.mask_paths), "calibration": self.calibration}

    def render(self) -> str:
        """A few lines for humans."""
        c = self.calibration
        lines = [
            f"wrote {self.out}: INT8 Q/DQ for {c['target']} ({c['activations']} activations, {c['weights']} "
            f"weights, {c['biases']} biases), "
            f"method {c['method']}, {c['num_images']} images"
            + (f", seed {c['seed']}" if "seed" in c else ""),
            f"  ranges: {'reused from' if self.cache_hit else 'computed and cached in'} {self.cache}",
            f"  kept in float: the mask path of {len(self.mask_paths)} blocks"
            + (f", the stem and the first {c['float_blocks']} stage(s)" if c["float_blocks"] else "")
            + f" ({c['float_nodes']} nodes)" + (", in float16" if c.get("float_precision") == "fp16" else ""),
        ]
        return "\n".join(lines)


def quantize_onnx(
    onnx_path: str | Path,
    images: Sequence[Path],
    out: str | Path,
    *,
    options: QuantizeOptions = DEFAULT_OPTIONS,
    cache_dir: str | Path | None = None,
    sampling: dict[str, Any] | None = None,
) -> QuantizeResult:
    """Write the INT8 Q/DQ version of ``onnx_path`` to ``out`` (atomically).

    ``images``: the calibration sample (already checked against the evaluation split, see
    :mod:`calibration.hygiene`). ``cache_dir``: where range caches live (default:
    ``<out's folder>/.calibration-cache``). ``sampling``: how the sample was drawn (seed,
    pool size), stored in the output's ``metadata_props`` next to the method, the sample
    size and the source sha256. The contract is copied unchanged.
    """
    onnx_path, out = Path(onnx_path), Path(out)
    spec = read_contract(onnx_path)
    source = load_onnx_with_data(onnx_path)
    precision = metadata_of(source).get(PRECISION_KEY, "fp32")
    quantized = sorted({n.op_type for n in source.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")})
    if precision == "int8" or quantized:
        found = f"precision {precision!r} in its metadata" if precision == "int8" else f"{'/'.join(quantized)} nodes"
        raise QuantizeError(f"{onnx_path}: already quantized ({found}); calibrate the fp32 export it was made from")
    paths = find_mask_paths(source)
    expected = len(hard_mask_stages(source, onnx_path))
    if len(paths) != expected:
        raise QuantizeError(
            f"{onnx_path}: its export promises {expected} hard-mask attention blocks, but "
            f"{len(paths)} mask paths (min-max normalisation -> comparison -> Cast -> Mul) were "
            "found in the graph; refusing to quantize a mask path that could not be kept in float"
        )
    source_sha = file_sha256(onnx_path)
    images_sha = image_list_sha256(images)
    cache = Path(cache_dir or out.parent / ".calibration-cache") / (
        f"ranges-{options.method}-{cache_key(source_sha, options.method, images_sha)[:24]}.json"
    )
    damage = range_cache_damage(cache, source) if cache.is_file() else None
    if damage:
        log.info(f"{cache}: {damage}; calibrating again, and the cache is rewritten")
    cache_hit = cache.is_file() and damage is None
    reader = None if cache_hit else ImageReader(images, spec, options.batch_size, options.progress,
                                                convention_of(source, onnx_path))
    target = TARGETS[options.target]
    excluded = float_placement(source, options)
    with tempfile.TemporaryDirectory(prefix="san-quant-") as tmp, _quiet_quantizer():
        raw = Path(tmp) / "model.int8.onnx"
        fresh_cache = Path(tmp) / cache.name  # onnxruntime writes it; moved into place after the model
        try:
            quantize_static(
                onnx_path,
                raw,
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=options.per_channel,
                reduce_range=options.reduce_range,
                activation_type=target.activations,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=METHODS[options.method],
                calibration_cache_path=cache if cache_hit else fresh_cache,
                extra_options={
                    "ActivationSymmetric": target.symmetric,
                    "WeightSymmetric": True,
                    "QuantizeBias": target.quantize_bias,
                    "CalibStridedMinMax": 1,  # one batch per collection: bounded memory for histograms
                    "CalibPercentile": PERCENTILE,
                },
            )
        finally:
            if reader is not None:
                reader.close()
        model = onnx.load(raw)
        ranges = None if cache_hit else fresh_cache.read_bytes()
    restore_float_inputs(model, excluded)
    leaks = quant_nodes_on_path(model, paths)
    if leaks:
        raise QuantizeError(f"{onnx_path}: Q/DQ left on the float mask path: {leaks[:5]}")
    if options.float_precision == "fp16":
        model = with_half_float_parts(model)
    calibration = {
        "method": options.method,
        "num_images": len(images),
        **(sampling or {}),
        "source_onnx_sha256": source_sha,
        "images_sha256": images_sha,
        "target": options.target,
        "activations": target.describe(),
        "weights": f"int8 symmetric {'per-channel' if options.per_channel else 'per-tensor'}"
        + (" 7-bit (reduce_range)" if options.reduce_range else ""),
        "biases": "int32" if target.quantize_bias else "float",
        "float_precision": options.float_precision,
        "float_blocks": options.float_blocks,
        "float_head": options.float_head,
        "float_mask_path_nodes": [name for path in paths for name in path.nodes],
        "float_nodes": len(excluded),
        "onnxruntime": onnxruntime.__version__,
    }
    _copy_metadata(source, model, {PRECISION_KEY: "int8", CALIBRATION_KEY: json.dumps(calibration, sort_keys=True)})
    atomic_write(out, lambda tmp: onnx.save_model(model, tmp))
    if ranges is not None:
        atomic_write(cache, lambda tmp: tmp.write_bytes(ranges))
    return QuantizeResult(out, cache, cache_hit, paths, calibration)


def range_cache_damage(cache: Path, source: onnx.ModelProto) -> str | None:
    """What is wrong with a range cache read back for ``source``, or None when it can be used:
    readable, a finite (min, max) per tensor, every tensor one of the graph's."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    try:
        data = load_tensors_data(cache)
        ranges = {name: np.asarray(t.range_value, np.float64) for name, t in data.items()}
    except Exception as exc:  # noqa: BLE001 - json, KeyError or TypeError from onnxruntime's reader
        return f"a damaged range cache ({reason(exc)})"
    if not ranges or any(r.shape != (2,) or not np.isfinite(r).all() or r[0] > r[1] for r in ranges.values()):
        return "a range cache without a finite (min, max) for every tensor"
    names = {out for node in source.graph.node for out in node.output} | {i.name for i in source.graph.input}
    foreign = sorted(set(ranges) - names)
    if foreign:
        return f"a range cache of another graph (tensors {foreign[:3]} are not in this one)"
    return None


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Silence onnxruntime's quantizer: it prints a line per calibration batch and a summary of
    its histogram settings, and advises shape pre-processing through the root logger (the
    graph was exported with shapes and checked; the ranges and choices are in our own line)."""

    def not_advice(record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(not_advice)
    try:
        with foreign_prints_dropped():
            yield
    finally:
        root.removeFilter(not_advice)


def _copy_metadata(source: onnx.ModelProto, target: onnx.ModelProto, extra: dict[str, str]) -> None:
    """Give ``target`` the source's ``metadata_props`` (the contract among them) plus ``extra``."""
    entries = {p.key: p.value for p in source.metadata_props} | extra
    if METADATA_KEY not in entries:
        raise QuantizeError(f"source model has no input contract ({METADATA_KEY})")
    del target.metadata_props[:]
    for key, value in entries.items():
        target.metadata_props.add(key=key, value=value)


def read_calibration(model: onnx.ModelProto) -> dict[str, Any]:
    """The calibration record stored by :func:`quantize_onnx` (empty for an fp32 model)."""
    text = {p.key: p.value for p in model.metadata_props}.get(CALIBRATION_KEY)
    return json.loads(text) if text else {}
