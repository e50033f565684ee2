"""The ``deepstream`` export target (``--deepstream DIR``): a ReID model for DeepStream's
tracker (NvDCF / NvDeepSORT) or for nvinfer as a secondary GIE, with configs derived from
the contract.

DeepStream crops and scales each object itself and feeds the network float values
``y = netScaleFactor * (x - offsets[c])`` (nvinfer: ``net-scale-factor``, ``offsets``). One
scalar cannot express a per-channel std, so the exact route is the one NVIDIA's DeepSORT
sample takes: a float-input graph that carries raw 0..255 RGB and normalises inside,
``offsets: [0, 0, 0]``, ``netScaleFactor: 1.0``. Files written:

- ``san_reid.onnx``: that graph (verified against PyTorch like every export);
- ``config_tracker_reid.yml``: a complete low-level tracker config (``ll-config-file``): NvDCF
  with ReID re-association, or NvDeepSORT, or NvDeepSORT with re-association, with every key
  that makes the ReID features count (:mod:`export.deepstream_tracker`);
- ``config_infer_secondary_reid.txt``: nvinfer as a secondary GIE emitting tensor meta, with
  bilinear scaling on the GPU (nvinfer's default filter is nearest);
- ``README.txt``: where each file goes, what it assumes, and the DeepStream and TensorRT
  releases the files are for.

``--deepstream-version`` names the DeepStream release, and so the TensorRT whose parser will
import the graph (:data:`DEEPSTREAM_TENSORRT`). DeepStream 6.4 and 7.0 ship TensorRT 8.6, whose
parser ignores the ``axes`` input of opset-18 Reduce ops and reduces over every axis: for them the
graph is converted to opset 17 (axes as attributes) and checked to give the same embeddings as
the opset-18 one. Every graph is checked against its TensorRT release's parser rules.

With ``--deepstream-precision fp16`` (the default) DeepStream builds an FP16 engine from the
float graph, and TensorRT may then run any layer in half precision: nothing in DeepStream pins
one to float32 (:mod:`export.fp16_emulation`). The model is built to hold there (its L2
normalisation cannot overflow and its guard is a normal float16 number), and the graph written here is
checked as that engine may compute it, every tensor between layers in float16, under the fp16
rule. A model that fails it is refused, with ``--deepstream-precision fp32`` named.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import onnx

from export.deepstream_tracker import REID_TYPES, TRACKER_MODES, reid_section, render, tracker_sections
from export.errors import ExportError
from export.fp16_emulation import in_fp16_everywhere, rounding_session
from export.targets import ExportJob, FolderTarget, Written
from export.tensorrt_lint import parser_of, require_tensorrt_compatible
from san.cli.arguments import CommandParser, count, output_folder
from san.contract.artifact import INPUT_NAME, OUTPUT_NAME
from san.contract.input_convention import InputConvention
from san.contract.onnx_graph import with_attribute_axes
from san.contract.spec import InputSpec
from san.io.atomic import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

ONNX_NAME = "san_reid.onnx"
TRACKER_CONFIG = "config_tracker_reid.yml"
NVINFER_CONFIG = "config_infer_secondary_reid.txt"
#: The graph DeepStream feeds: float RGB pixels, NCHW, normalised inside.
CONVENTION = InputConvention("float32")
#: DeepStream release -> the TensorRT release it ships, from each release's notes: 6.4 and 7.0 ship
#: 8.6, 7.1 ships 10.3, 8.0 ships 10.9, 9.0 ships 10.14 and 9.2 ships 10.16 (its migration guide).
DEEPSTREAM_TENSORRT = {"6.4": "8.6", "7.0": "8.6", "7.1": "10.3", "8.0": "10.9", "9.0": "10.14", "9.2": "10.16"}
LATEST_DEEPSTREAM = "9.2"
#: The converted graph's embeddings may differ from the opset-18 graph's by rounding only.
CONVERSION_TOLERANCE = 1e-5
#: nvinfer's ``network-mode`` codes: 0 FP32, 1 INT8, 2 FP16 (not the tracker's numbering).
NVINFER_MODES = {"fp32": 0, "fp16": 2}
#: nvinfer's ``scaling-filter``: ``NvBufSurfTransformInter_Bilinear`` (nvbufsurftransform.h; its
#: default, ``NvBufSurfTransformInter_Default``, is nearest on GPU and VIC), and
#: ``scaling-compute-hw``: ``NvBufSurfTransformCompute_GPU``, valid on dGPU and Jetson alike
#: (gst-nvinfer's property parser), so that Jetson's VIC does not pick its own filter.
SCALING_FILTER_BILINEAR = 1
SCALING_COMPUTE_GPU = 1


def engine_name(batch_size: int, precision: str) -> str:
    """The engine file DeepStream writes for the graph: ``<onnx>_b<batch>_gpu0_<precision>.engine``."""
    return f"{ONNX_NAME}_b{batch_size}_gpu0_{precision}.engine"


def tracker_config(spec: InputSpec, reid_type: str, batch_size: int, precision: str, model_dir: PurePosixPath,
                   release: str) -> str:
    """The complete low-level tracker config (:mod:`export.deepstream_tracker`), its model paths
    absolute under ``model_dir``."""
    sections = {**tracker_sections(reid_type),
                "ReID": reid_section(spec, reid_type, batch_size, precision, model_dir / ONNX_NAME,
                                     model_dir / engine_name(batch_size, precision))}
    header = (f"{REID_TYPES[reid_type].tracker} with the SAN ReID model, for DeepStream {release}; generated by san-export.\n"
              "Give this file to nvtracker as ll-config-file. Every section but ReID holds the values of\n"
              "NVIDIA's sample for this tracker, tuned for NVIDIA's ReID model: tune the ReID weights and\n"
              "thresholds for this one. Model paths are absolute (--deepstream-model-dir).")
    return render(sections, header)


def nvinfer_config(spec: InputSpec, batch_size: int, precision: str, class_ids: list[int]) -> str:
    """nvinfer (secondary GIE) config: embeddings attached to each object as tensor meta. Its
    paths are relative: nvinfer resolves them against the config file's folder."""
    return f"""\
# nvinfer as a secondary GIE running the SAN ReID model on each detected object; generated by
# san-export from the model's input contract. The embeddings arrive as NvDsInferTensorMeta.
[property]
gpu-id=0
onnx-file={ONNX_NAME}
model-engine-file={engine_name(batch_size, precision)}
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
# crops scaled bilinearly on the GPU: nvinfer's default filter is nearest, which the model never saw
scaling-filter={SCALING_FILTER_BILINEAR}
scaling-compute-hw={SCALING_COMPUTE_GPU}
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


def readme(spec: InputSpec, deepstream: str, opset: int, model_dir: PurePosixPath) -> str:
    return f"""\
SAN ReID model for DeepStream, written by san-export.

{ONNX_NAME}
    Input "images": float32 [N, 3, {spec.height}, {spec.width}], RGB pixels 0..255 (DeepStream's crop
    and scale with offsets 0 and scale 1.0); mean/std normalisation is inside the graph.
    Output "embeddings": float32 [N, {spec.embedding_dim}]{', L2-normalised' if spec.l2_normalize else ''}.
{TRACKER_CONFIG}
    A complete low-level tracker config: in the [tracker] group (or on nvtracker) set
    ll-lib-file=/opt/nvidia/deepstream/deepstream/lib/libnvds_nvmultiobjecttracker.so and
    ll-config-file={model_dir / TRACKER_CONFIG}
    Its model paths are absolute: this folder must be at {model_dir} on the DeepStream machine
    (export again with --deepstream-model-dir for another place). The tracker builds the engine
    named in modelEngineFile on first use. Its ReID weights and thresholds are NVIDIA's sample
    values for NVIDIA's ReID model: tune them for this one. The tracker scales object crops itself;
    its config has no filter key. Set nvtracker's compute-hw=1 (GPU) where your release has it.
{NVINFER_CONFIG}
    Alternatively, nvinfer as a secondary GIE (config-file of a [secondary-gie] group) that
    attaches each object's embedding as tensor meta. Paths are relative to this file. It scales
    crops bilinearly on the GPU (scaling-filter={SCALING_FILTER_BILINEAR}, scaling-compute-hw={SCALING_COMPUTE_GPU}): nvinfer's
    default is nearest, which costs the model accuracy.

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
    model_dir: PurePosixPath | None = None  # where the folder lives on the DeepStream machine (None: where written)

    @property
    def install_dir(self) -> PurePosixPath:
        """The folder's absolute path on the DeepStream machine, for the tracker's model paths."""
        return self.model_dir or PurePosixPath(self.folder.resolve().as_posix())

    def __post_init__(self) -> None:
        if self.model_dir is not None and not self.model_dir.is_absolute():
            raise ValueError(f"--deepstream-model-dir must be an absolute path, got {str(self.model_dir)!r}")
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
    def add_arguments(cls, parser: CommandParser) -> None:
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
        group.add_argument("--deepstream-model-dir", type=PurePosixPath, metavar="DIR",
                           help="absolute path the folder will have on the DeepStream machine; the tracker config "
                           "names its model files there (default: where --deepstream writes it)")
        parser.only_with("--deepstream", "--deepstream-reid-type", "--deepstream-batch", "--deepstream-precision",
                         "--deepstream-version", "--deepstream-class-id", "--deepstream-model-dir")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> DeepStreamOptions | None:
        if args.deepstream is None:
            return None
        return DeepStreamOptions(args.deepstream, args.deepstream_reid_type, args.deepstream_batch,
                                 args.deepstream_precision, args.deepstream_version,
                                 tuple(args.deepstream_class_id or (0,)), args.deepstream_model_dir)

    def write_into(self, job: ExportJob, options: DeepStreamOptions, folder: Path) -> Written:
        spec = job.meta.spec
        onnx_path = self.export_for_consumer(job, folder, ONNX_NAME, CONVENTION,
                                             "DeepStream scales object crops bilinearly (scaling-filter=1 in nvinfer)")
        if onnx_path is None:
            return Written(self.name, folder, passed=False)
        parser = parser_of(DEEPSTREAM_TENSORRT[options.version])
        if not parser.reduce_axes_input:
            convert_for_attribute_axes(onnx_path, job.images, self.final(onnx_path))
        require_tensorrt_compatible(onnx_path, parser)
        if options.precision == "fp16" and not holds_in_fp16_everywhere(job, onnx_path, self.final(onnx_path)):
            log.error(f"{options.folder}: the graph with every layer in fp16 fails the fp16 rule (report above), "
                      "as DeepStream's FP16 engine may compute it; give --deepstream-precision fp32")
            return Written(self.name, folder, (onnx_path,), passed=False)
        opset = next(o.version for o in onnx.load(onnx_path).opset_import if o.domain in ("", "ai.onnx"))
        files = {TRACKER_CONFIG: tracker_config(spec, options.reid_type, options.batch, options.precision,
                                                options.install_dir, options.version),
                 NVINFER_CONFIG: nvinfer_config(spec, options.batch, options.precision, list(options.class_ids)),
                 "README.txt": readme(spec, options.version, opset, options.install_dir)}
        for name, text in files.items():
            atomic_write_text(folder / name, text)
        log.info(f"{options.folder}: {ONNX_NAME}, {', '.join(files)}")
        return Written(self.name, folder, (onnx_path, *(folder / name for name in files)))


def holds_in_fp16_everywhere(job: ExportJob, path: Path, shown: Path) -> bool:
    """Whether the graph at ``path`` (``shown`` in messages), computed as an FP16 engine may compute it (every tensor
    between layers in float16: :func:`export.fp16_emulation.in_fp16_everywhere`), passes the
    fp16 rule against PyTorch on the job's images."""
    from export.verify import verify_embeddings  # torch: not for `san-export --help` on an edge machine

    log.info("DeepStream builds an FP16 engine from the float graph: checking it with every layer in fp16")
    session = rounding_session(in_fp16_everywhere(onnx.load(path)))
    report = verify_embeddings(job.model, job.images, lambda batch: session.run(
        [OUTPUT_NAME], {INPUT_NAME: CONVENTION.encode(batch)})[0], kind="fp16", rule=job.rules["fp16"])
    log.info(f"{shown} with every layer in fp16: {report.render()}")
    return report.passed


def convert_for_attribute_axes(path: Path, images: np.ndarray, shown: Path) -> None:
    """Replace the opset-18 graph at ``path`` (``shown`` in messages) by its opset-17 form
    (:func:`san.contract.onnx_graph.with_attribute_axes`) once onnxruntime gives both the same embeddings
    on ``images`` (uint8 N x 3 x H x W)."""
    import onnxruntime as ort

    original = onnx.load(path)
    converted = with_attribute_axes(original)
    batch = {INPUT_NAME: CONVENTION.encode(images)}
    outputs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run([OUTPUT_NAME], batch)[0]
               for m in (original, converted)]
    error = float(np.abs(outputs[0] - outputs[1]).max()) / max(float(np.abs(outputs[0]).max()), 1e-12)
    if error > CONVERSION_TOLERANCE:
        raise ExportError(f"{shown}: the opset-17 graph differs from the opset-18 one by {error:.2e} (relative); "
                          "refusing to write it")
    atomic_write(path, lambda tmp: onnx.save(converted, tmp))
