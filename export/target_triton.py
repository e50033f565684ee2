"""The ``triton`` export target (``--triton REPO``): a Triton Inference Server model repository.

``REPO/<name>/config.pbtxt`` plus ``REPO/<name>/1/model.onnx`` (platform
``onnxruntime_onnx``); with ``--trt`` also ``REPO/<name>_trt/1/model_cc<major><minor>.plan``
(platform ``tensorrt_plan``), named for the one compute capability it was built for in
``cc_model_filenames`` and with no ``default_model_filename`` fallback: an engine runs only on
its GPU architecture and with the TensorRT version that built it, so Triton refuses to load it
elsewhere instead of running it. ``REPO/<name>_trt/README.txt`` names that TensorRT version,
which the Triton release that serves it must ship. Every field is
derived from the artifact: input name, dtype and dims (without the batch: ``max_batch_size``
> 0) from its contract and input convention, the output's width from the embedding
dimension, and an engine profile that does not start at 1 or ends below ``max_batch_size`` is
refused.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from export.target_tensorrt import TensorRTOptions, TensorRTTarget
from export.targets import ExportJob, FolderTarget, SharedOptions, Written
from san.cli.arguments import CommandParser, count, output_folder
from san.contract.artifact import INPUT_NAME, OUTPUT_NAME, read_contract, read_input_convention
from san.contract.engine_sidecar import EngineSidecar
from san.contract.input_convention import InputConvention
from san.contract.spec import InputSpec
from san.io.atomic import atomic_write_text

log = logging.getLogger(__name__)

KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
ORT_TENSORRT = ("off", "fp32", "fp16")
_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32"}


@dataclass(frozen=True)
class TritonOptions:
    """The serving settings a user chooses; everything else comes from the artifact."""

    name: str = "san"
    max_batch: int = 64
    delay_us: int = 100
    instances: int = 1
    kind: str = "auto"
    ort_tensorrt: str = "off"  # onnxruntime's TensorRT execution accelerator: off, fp32 or fp16
    folder: Path = Path("model_repository")  # the model repository the target writes

    def __post_init__(self) -> None:
        problems = []
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            problems.append(f"--triton-name {self.name!r}: a model name is one folder name, without spaces")
        if self.max_batch < 1:
            problems.append(f"--triton-max-batch must be >= 1, got {self.max_batch}")
        if self.delay_us < 0:
            problems.append(f"--triton-delay-us must be >= 0, got {self.delay_us}")
        if self.instances < 1:
            problems.append(f"--triton-instances must be >= 1, got {self.instances}")
        if self.kind not in KINDS:
            problems.append(f"--triton-kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if self.ort_tensorrt not in ORT_TENSORRT:
            problems.append(f"--triton-ort-tensorrt must be one of {ORT_TENSORRT}, got {self.ort_tensorrt!r}")
        if problems:
            raise ValueError("; ".join(problems))


def model_config(name: str, platform: str, spec: InputSpec, convention: InputConvention, options: TritonOptions,
                 cc_model: str | None = None) -> str:
    """``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``)."""
    dims = ", ".join(str(d) for d in convention.dims(spec))
    kind = "KIND_GPU" if platform == "tensorrt_plan" else KINDS[options.kind]
    lines = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {options.max_batch}",
        f'input [ {{ name: "{INPUT_NAME}" data_type: {_TYPES[convention.dtype]} dims: [ {dims} ] }} ]',
        f'output [ {{ name: "{OUTPUT_NAME}" data_type: TYPE_FP32 dims: [ {spec.embedding_dim} ] }} ]',
        f"dynamic_batching {{ max_queue_delay_microseconds: {options.delay_us} }}",
        f"instance_group [ {{ count: {options.instances} kind: {kind} }} ]",
        "version_policy { latest { num_versions: 1 } }",
    ]
    if platform == "tensorrt_plan":
        lines.append(f'cc_model_filenames [ {{ key: "{cc_model}" value: "{plan_name(cc_model)}" }} ]')
    elif options.ort_tensorrt != "off":
        lines.append(
            "optimization { execution_accelerators { gpu_execution_accelerator: [ { name: \"tensorrt\" "
            f'parameters {{ key: "precision_mode" value: "{options.ort_tensorrt.upper()}" }} }} ] }} }}'
        )
    return "\n".join(lines) + "\n"


def plan_name(compute_capability: str | None) -> str:
    """The plan's file name for its compute capability ("9.0" -> ``model_cc90.plan``)."""
    if not compute_capability or not all(part.isdigit() for part in compute_capability.split(".")):
        raise ValueError(f"the engine's sidecar names no compute capability ({compute_capability!r}); "
                         "build the engine again with san-export --trt on its GPU")
    return f"model_cc{compute_capability.replace('.', '')}.plan"


def require_within_profile(max_batch: int, profile_min: int, profile_max: int) -> None:
    """Refuse an engine profile that does not hold every batch Triton sends: with
    ``max_batch_size`` > 0 Triton runs any batch from 1 to ``max_batch_size`` (its model
    configuration documentation, "Maximum Batch Size"; a lone request is a batch of 1)."""
    if profile_min > 1:
        raise ValueError(f"--triton with an engine whose profile starts at --min-batch {profile_min}: Triton sends "
                         "batches of 1 (a lone request) that the engine refuses; build it with --min-batch 1")
    if max_batch > profile_max:
        raise ValueError(f"--triton-max-batch {max_batch} exceeds the engine's profile (--max-batch "
                         f"{profile_max}); Triton would send batches the engine refuses")


def write_onnx_model(repo: Path, onnx_path: Path, options: TritonOptions) -> Path:
    """``repo/<name>/`` for an ONNX file; returns the model folder."""
    folder = repo / options.name
    (folder / "1").mkdir(parents=True)
    shutil.copy2(onnx_path, folder / "1" / "model.onnx")
    config = model_config(options.name, "onnxruntime_onnx", read_contract(onnx_path),
                          read_input_convention(onnx_path), options)
    atomic_write_text(folder / "config.pbtxt", config)
    return folder


def write_plan_model(repo: Path, engine: Path, options: TritonOptions) -> Path:
    """``repo/<name>_trt/`` for a TensorRT engine and its sidecar; returns the model folder."""
    sidecar = EngineSidecar.read(engine)
    require_within_profile(options.max_batch, sidecar.batch.min, sidecar.batch.max)
    name = f"{options.name}_trt"
    capability = sidecar.built_for.compute_capability
    plan = plan_name(capability)
    folder = repo / name
    (folder / "1").mkdir(parents=True)
    shutil.copy2(engine, folder / "1" / plan)
    config = model_config(name, "tensorrt_plan", sidecar.spec, sidecar.convention, options, capability)
    atomic_write_text(folder / "config.pbtxt", config)
    version = sidecar.built_for.tensorrt_version
    serve = (f"""Serve it with a Triton release whose TensorRT is {version} or a later release that runs
version-compatible engines of it (the same major, or the next major TensorRT documents: 8 on 9 and 10,
9 on 10, 10 on 11): it was built version-compatible, so start tritonserver with
--backend-config=tensorrt,version-compatible=true
""" if sidecar.version_compatible else f"""Serve it with a Triton release whose TensorRT is {version}
""")
    atomic_write_text(folder / "README.txt", f"""\
1/{plan}: a TensorRT engine built by TensorRT {version} for compute capability {capability}
({sidecar.built_for.gpu_name}). {serve}(NVIDIA's framework support matrix lists the TensorRT of each Triton container); on any other GPU
architecture Triton finds no plan for it in cc_model_filenames and refuses to load the model.
Build again with san-export --trt on the serving machine for another GPU or TensorRT.
""")
    return folder


class TritonTarget(FolderTarget[TritonOptions]):
    """A model repository in ``--triton REPO``: the ONNX model, and the plan when the
    ``tensorrt`` target builds an engine."""

    name = "triton"
    option = "--triton"
    after = ("onnx", "tensorrt")

    @classmethod
    def add_arguments(cls, parser: CommandParser) -> None:
        group = parser.add_argument_group("Triton model repository")
        group.add_argument("--triton", type=output_folder, metavar="REPO", help="write a Triton model repository here")
        group.add_argument("--triton-name", default="san", help="model name (default san; the plan is NAME_trt)")
        group.add_argument("--triton-max-batch", type=count(1), default=64, metavar="N",
                           help="max_batch_size (default 64; at most the engine's --max-batch)")
        group.add_argument("--triton-delay-us", type=count(0), default=100, metavar="US",
                           help="dynamic batching max_queue_delay_microseconds (default 100)")
        group.add_argument("--triton-instances", type=count(1), default=1, metavar="N", help="instances (default 1)")
        group.add_argument("--triton-kind", default="auto", help="instance kind: auto (default), cpu or gpu")
        group.add_argument("--triton-ort-tensorrt", default="off",
                           help="onnxruntime's TensorRT accelerator for the ONNX model: off (default), fp32, fp16")
        parser.only_with("--triton", "--triton-name", "--triton-max-batch", "--triton-delay-us", "--triton-instances",
                         "--triton-kind", "--triton-ort-tensorrt")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> TritonOptions | None:
        if args.triton is None:
            return None
        return TritonOptions(args.triton_name, args.triton_max_batch, args.triton_delay_us, args.triton_instances,
                             args.triton_kind, args.triton_ort_tensorrt, args.triton)

    @classmethod
    def check(cls, options: TritonOptions, shared: SharedOptions, requested: Mapping[str, object]) -> None:
        super().check(options, shared, requested)
        engine = requested.get(TensorRTTarget.name)
        if isinstance(engine, TensorRTOptions):
            require_within_profile(options.max_batch, engine.profile.min, engine.profile.max)

    def write_into(self, job: ExportJob, options: TritonOptions, repo: Path) -> Written:
        folders = [write_onnx_model(repo, job.shared.onnx, options)]
        if TensorRTTarget.name in job.written:
            folders.append(write_plan_model(repo, job.written[TensorRTTarget.name].main, options))
        log.info(f"{options.folder}: Triton model repository with {', '.join(f.name for f in folders)}")
        return Written(self.name, repo, tuple(folders))
