"""The ``deepstream`` export target (``--deepstream DIR``): a ReID model for DeepStream's
tracker (NvDCF / NvDeepSORT) or for nvinfer as a secondary GIE, with configs derived from
the contract.

DeepStream crops and scales each object itself and feeds the network float values
``y = netScaleFactor * (x - offsets[c])`` (nvinfer: ``net-scale-factor``, ``offsets``). One
scalar cannot express a per-channel std, so the exact route is the one NVIDIA's DeepSORT
sample takes: a float-input graph that carries raw 0..255 RGB and normalises inside,
``offsets: [0, 0, 0]``, ``netScaleFactor: 1.0``. Files written:

- ``san_reid.onnx``: that graph (verified against PyTorch like every export);
- ``config_tracker_reid.yml``: the ``ReID:`` section for the low-level tracker config;
- ``config_infer_secondary_reid.txt``: nvinfer as a secondary GIE emitting tensor meta;
- ``README.txt``: where each file goes, what it assumes, and the DeepStream and TensorRT
  releases the files are for.

``--deepstream-version`` names the DeepStream release, and so the TensorRT whose parser will
import the graph (:data:`DEEPSTREAM_TENSORRT`). DeepStream 6.4 and 7.0 ship TensorRT 8.6, whose
parser ignores the ``axes`` input of opset-18 Reduce ops and reduces over every axis: for them the
graph is converted to opset 17 (axes as attributes) and checked to give the same embeddings as
the opset-18 one. Every graph is checked against its TensorRT release's parser rules.

With ``--deepstream-precision fp16`` (the default) DeepStream builds an FP16 engine from the
float graph, and nothing there checks the mask path in half precision. The model is therefore
also exported in half precision (fp32 L2 normalisation, as ``--trt --fp16`` builds from) and
verified under the fp16 rule before the configs are written; that graph is only the check and
is not kept. A model that fails it is refused, with ``--deepstream-precision fp32`` named.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from export.errors import ExportError
from export.targets import ExportJob, FolderTarget, Written
from export.tensorrt_lint import PARSERS, require_tensorrt_compatible
from san.arguments import count, output_folder
from san.artifact import INPUT_NAME, OUTPUT_NAME
from san.atomic import atomic_write, atomic_write_text
from san.input_convention import InputConvention
from san.onnx_graph import with_attribute_axes
from san.spec import InputSpec

log = logging.getLogger(__name__)

ONNX_NAME = "san_reid.onnx"
TRACKER_CONFIG = "config_tracker_reid.yml"
NVINFER_CONFIG = "config_infer_secondary_reid.txt"
#: The graph DeepStream feeds: float RGB pixels, NCHW, normalised inside.
CONVENTION = InputConvention("float32")
#: ``reidType`` of the tracker: which association uses the features.
REID_TYPES = {"deepsort": 1, "reassoc": 2, "both": 3}
#: DeepStream release -> the TensorRT release it ships (a row of :data:`export.tensorrt_lint.PARSERS`).
DEEPSTREAM_TENSORRT = {"6.4": "8.6", "7.0": "8.6", "7.1": "10", "8.0": "10"}
LATEST_DEEPSTREAM = "8.0"
#: The converted graph's embeddings may differ from the opset-18 graph's by rounding only.
CONVERSION_TOLERANCE = 1e-5
#: Precision codes differ: the tracker's ``networkMode`` is 0 fp32, 1 fp16, 2 int8; nvinfer's
#: ``network-mode`` is 0 FP32, 1 INT8, 2 FP16.
TRACKER_MODES = {"fp32": 0, "fp16": 1}
NVINFER_MODES = {"fp32": 0, "fp16": 2}


def tracker_config(spec: InputSpec, reid_type: str, batch_size: int, precision: str) -> str:
    """The ``ReID:`` section (YAML) for the NvMultiObjectTracker low-level config; with
    re-association, the ``TrajectoryManagement`` switch it needs."""
    engine = f"{ONNX_NAME}_b{batch_size}_gpu0_{precision}.engine"
    reassoc = "" if reid_type == "deepsort" else """\
# Re-association also needs trajectory management to keep it on: merge this too (NvDCF).
TrajectoryManagement:
  enableReAssoc: 1
"""
    return f"""\
# ReID section for DeepStream's low-level tracker config (NvDCF or NvDeepSORT); generated
# by san-export from the model's input contract: merge it into your tracker YAML. NvDeepSORT
# associates with the features: --deepstream-reid-type deepsort writes reidType 1 for it.
{reassoc}ReID:
  reidType: {REID_TYPES[reid_type]}  # 1 NvDeepSORT association, 2 re-association, 3 both
  batchSize: {batch_size}
  workspaceSize: 1000
  reidFeatureSize: {spec.embedding_dim}
  reidHistorySize: 100
  inferDims: [3, {spec.height}, {spec.width}]  # C, H, W of the network input
  networkMode: {TRACKER_MODES[precision]}  # 0 fp32, 1 fp16, 2 int8
  inputOrder: 0  # NCHW
  colorFormat: 0  # RGB
  offsets: [0.0, 0.0, 0.0]  # y = netScaleFactor * (x - offsets): raw pixels; mean/std are in the graph
  netScaleFactor: 1.0
  keepAspc: 0  # the model was trained on crops stretched to H x W ({spec.interpolation}), not letterboxed
  addFeatureNormalization: {0 if spec.l2_normalize else 1}  # the graph {'already L2-normalises' if spec.l2_normalize else 'does not normalise'}
  onnxFile: {ONNX_NAME}
  modelEngineFile: {engine}
"""


def nvinfer_config(spec: InputSpec, batch_size: int, precision: str, class_ids: list[int]) -> str:
    """nvinfer (secondary GIE) config: embeddings attached to each object as tensor meta."""
    engine = f"{ONNX_NAME}_b{batch_size}_gpu0_{precision}.engine"
    return f"""\
# nvinfer as a secondary GIE running the SAN ReID model on each detected object; generated by
# san-export from the model's input contract. The embeddings arrive as NvDsInferTensorMeta.
[property]
gpu-id=0
onnx-file={ONNX_NAME}
model-engine-file={engine}
batch-size={batch_size}
# 0 FP32, 1 INT8, 2 FP16 (not the tracker's numbering)
network-mode={NVINFER_MODES[precision]}
# y = net-scale-factor * (x - offsets): raw RGB pixels; mean/std are inside the graph
net-scale-factor=1.0
offsets=0.0;0.0;0.0
# 0 RGB
model-color-format=0
infer-dims=3;{spec.height};{spec.width}
maintain-aspect-ratio=0
# 100: other (no built-in parser); the output stays a tensor
network-type=100
output-tensor-meta=1
# 2: secondary, on objects of operate-on-gie-id
process-mode=2
gie-unique-id=2
operate-on-gie-id=1
# only objects of these classes of the primary detector (persons)
operate-on-class-ids={';'.join(map(str, class_ids))}
"""


def readme(spec: InputSpec, deepstream: str, opset: int) -> str:
    return f"""\
SAN ReID model for DeepStream, written by san-export.

{ONNX_NAME}
    Input "images": float32 [N, 3, {spec.height}, {spec.width}], RGB pixels 0..255 (DeepStream's crop
    and scale with offsets 0 and scale 1.0); mean/std normalisation is inside the graph.
    Output "embeddings": float32 [N, {spec.embedding_dim}]{', L2-normalised' if spec.l2_normalize else ''}.
{TRACKER_CONFIG}
    The ReID: section for the low-level tracker config (ll-config-file of [tracker]): merge it
    into config_tracker_NvDCF_*.yml or config_tracker_NvDeepSORT.yml; keep the ONNX file beside it
    (paths are relative to the config). The tracker builds the engine named in modelEngineFile on
    first use.
{NVINFER_CONFIG}
    Alternatively, nvinfer as a secondary GIE (config-file of a [secondary-gie] group) that
    attaches each object's embedding as tensor meta.

Made for DeepStream {deepstream} (TensorRT {DEEPSTREAM_TENSORRT[deepstream]}): ONNX opset {opset}, checked against that
TensorRT's parser rules. For another release, export again with --deepstream-version.
Everything here was derived from the model's input contract; DeepStream itself was not run.
"""


@dataclass(frozen=True)
class DeepStreamOptions:
    """The DeepStream files' settings; the graph's input convention is DeepStream's own."""

    folder: Path
    reid_type: str = "reassoc"
    batch: int = 16
    precision: str = "fp16"
    version: str = LATEST_DEEPSTREAM
    class_ids: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if self.reid_type not in REID_TYPES:
            raise ValueError(f"--deepstream-reid-type must be one of {sorted(REID_TYPES)}, got {self.reid_type!r}")
        if self.precision not in TRACKER_MODES:
            raise ValueError(f"--deepstream-precision must be one of {sorted(TRACKER_MODES)}, got {self.precision!r}")
        if self.version not in DEEPSTREAM_TENSORRT:
            raise ValueError(f"--deepstream-version must be one of {list(DEEPSTREAM_TENSORRT)}, got {self.version!r}")
        if self.batch < 1:
            raise ValueError(f"--deepstream-batch must be >= 1, got {self.batch}")
        if not self.class_ids or any(i < 0 for i in self.class_ids):
            raise ValueError(f"--deepstream-class-id must be >= 0, got {list(self.class_ids)}")


class DeepStreamTarget(FolderTarget[DeepStreamOptions]):
    """``--deepstream DIR``: the float-input ONNX and its tracker and nvinfer configs."""

    name = "deepstream"
    option = "--deepstream"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("DeepStream (tracker ReID or nvinfer secondary GIE)")
        group.add_argument("--deepstream", type=output_folder, metavar="DIR", help="write the DeepStream files here")
        group.add_argument("--deepstream-reid-type", default="reassoc", choices=sorted(REID_TYPES),
                           help="what the tracker uses the features for (default reassoc)")
        group.add_argument("--deepstream-batch", type=count(1), default=16, metavar="N",
                           help="objects per ReID batch (default 16)")
        group.add_argument("--deepstream-precision", default="fp16", choices=sorted(TRACKER_MODES),
                           help="engine precision DeepStream builds (default fp16: the model is checked in half precision first)")
        group.add_argument("--deepstream-version", default=LATEST_DEEPSTREAM, choices=list(DEEPSTREAM_TENSORRT),
                           help="the DeepStream release, and so the TensorRT parser, the files are for "
                           f"(default {LATEST_DEEPSTREAM}; 6.4 and 7.0 get an opset-17 graph)")
        group.add_argument("--deepstream-class-id", type=count(0), action="append", metavar="ID",
                           help="detector class the nvinfer ReID runs on, repeatable (default 0: persons)")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> DeepStreamOptions | None:
        if args.deepstream is None:
            return None
        return DeepStreamOptions(args.deepstream, args.deepstream_reid_type, args.deepstream_batch,
                                 args.deepstream_precision, args.deepstream_version,
                                 tuple(args.deepstream_class_id or (0,)))

    def write(self, job: ExportJob, options: DeepStreamOptions) -> Written:
        spec = job.meta.spec
        onnx_path = self.export_for_consumer(job, options, ONNX_NAME, CONVENTION,
                                             "DeepStream scales object crops bilinearly")
        if onnx_path is None:
            return Written(self.name, options.folder, passed=False)
        if options.precision == "fp16" and not holds_in_fp16(job):
            log.error(f"{options.folder}: the model computed in fp16 fails the fp16 rule (report above), so "
                      "DeepStream's FP16 engine would not reproduce it; give --deepstream-precision fp32")
            return Written(self.name, options.folder, (onnx_path,), passed=False)
        parser = PARSERS[DEEPSTREAM_TENSORRT[options.version]]
        if not parser.reduce_axes_input:
            convert_for_attribute_axes(onnx_path, job.images)
        require_tensorrt_compatible(onnx_path, parser)
        opset = next(o.version for o in onnx.load(onnx_path).opset_import if o.domain in ("", "ai.onnx"))
        files = {TRACKER_CONFIG: tracker_config(spec, options.reid_type, options.batch, options.precision),
                 NVINFER_CONFIG: nvinfer_config(spec, options.batch, options.precision, list(options.class_ids)),
                 "README.txt": readme(spec, options.version, opset)}
        for name, text in files.items():
            atomic_write_text(options.folder / name, text)
        log.info(f"{options.folder}: {ONNX_NAME}, {', '.join(files)}")
        return Written(self.name, options.folder, (onnx_path, *(options.folder / name for name in files)))


def holds_in_fp16(job: ExportJob) -> bool:
    """Whether the model exported in half precision, in DeepStream's input convention, passes
    the fp16 rule against PyTorch on the job's images (the graph itself is discarded)."""
    log.info("DeepStream builds an FP16 engine from the float graph: checking the model in fp16")
    with tempfile.TemporaryDirectory(prefix="san-deepstream-fp16-") as folder:
        return job.export_verified(Path(folder) / "fp16-check.onnx", "fp16", CONVENTION)


def convert_for_attribute_axes(path: Path, images: np.ndarray) -> None:
    """Replace the opset-18 graph at ``path`` by its opset-17 form (:func:`san.onnx_graph.with_attribute_axes`)
    once onnxruntime gives both the same embeddings on ``images`` (uint8 N x 3 x H x W)."""
    import onnxruntime as ort

    original = onnx.load(path)
    converted = with_attribute_axes(original)
    batch = {INPUT_NAME: CONVENTION.encode(images)}
    outputs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run([OUTPUT_NAME], batch)[0]
               for m in (original, converted)]
    error = float(np.abs(outputs[0] - outputs[1]).max()) / max(float(np.abs(outputs[0]).max()), 1e-12)
    if error > CONVERSION_TOLERANCE:
        raise ExportError(f"{path}: the opset-17 graph differs from the opset-18 one by {error:.2e} (relative); "
                          "refusing to write it")
    atomic_write(path, lambda tmp: onnx.save(converted, tmp))
