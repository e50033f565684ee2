"""The ``openvino`` export target (``--openvino DIR``): OpenVINO IR of the verified ONNX, and of
calibration's INT8 Q/DQ file with ``--int8``, for Intel CPUs, GPUs and NPUs.

``DIR/model.xml`` + ``model.bin`` come from OpenVINO's ONNX converter; the ONNX file's
``metadata_props`` (contract, input convention, precision, provenance) go into the model's
runtime info, section ``san``, where :mod:`san.contract.artifact` reads them. The precision-sensitive
nodes (mask paths, L2 tail) carry OpenVINO's ``precise`` attribute
(:mod:`san.contract.openvino_precision`), so a runtime told to compute in bf16 or fp16 keeps them in f32. Weights stay f32 unless
``--openvino-fp16-weights``. The INT8 file converts with its Q/DQ pairs (``model.int8.xml``):
OpenVINO runs the quantized layers in INT8 and keeps in float what calibration kept in float.
Each IR is run by OpenVINO on the CPU at f32 inference precision (:func:`ir_embedder`; export
does not depend on the runtime package) and verified against PyTorch under its rule (fp32; int8
for the INT8 file), like every export; a failing IR is renamed ``*.rejected.xml``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.targets import ExportJob, FolderTarget, Written
from san.cli.arguments import CommandParser, output_folder
from san.contract.artifact import IR_SECTION, OUTPUT_NAME, load_onnx, read_metadata, read_model_contract
from san.contract.openvino_precision import mark_precise, prepare_marks
from san.contract.precision import precision_sensitive_nodes

log = logging.getLogger(__name__)


def write_ir(onnx_path: Path, xml_path: Path, fp16_weights: bool = False) -> Path:
    """Convert ``onnx_path`` to OpenVINO IR at ``xml_path`` (+ ``.bin``), its metadata in the runtime
    info and its precision-sensitive nodes marked to stay in f32."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    marks = prepare_marks(model, precision_sensitive_nodes(load_onnx(onnx_path)))
    for key, value in read_metadata(onnx_path).items():
        model.set_rt_info(value, [IR_SECTION, key])
    ov.save_model(model, str(xml_path), compress_to_fp16=fp16_weights)
    mark_precise(xml_path, marks)
    return xml_path


def ir_embedder(xml_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 N x 3 x H x W images -> the IR's embeddings, on OpenVINO's CPU at f32 (the precision
    pinned: OpenVINO's default on BF16 CPUs would round in bf16), its input convention applied."""
    import openvino as ov
    import openvino.properties.hint as hints

    convention = read_model_contract(xml_path)[1]
    compiled = ov.Core().compile_model(str(xml_path), "CPU", {hints.inference_precision: ov.Type.f32})
    output = compiled.output(OUTPUT_NAME)
    return lambda images: compiled({0: convention.encode(images)})[output]


@dataclass(frozen=True)
class OpenVINOOptions:
    """Where the IR goes, and whether its weights are stored in fp16."""

    folder: Path
    fp16_weights: bool = False


class OpenVINOTarget(FolderTarget[OpenVINOOptions]):
    """``--openvino DIR``: ``model.xml``/``.bin`` (and ``model.int8.xml``/``.bin`` with ``--int8``)."""

    name = "openvino"
    option = "--openvino"
    reads_int8 = True

    @classmethod
    def add_arguments(cls, parser: CommandParser) -> None:
        group = parser.add_argument_group("OpenVINO IR (Intel CPU, GPU, NPU; `pip install '.[openvino]'`)")
        group.add_argument("--openvino", type=output_folder, metavar="DIR",
                           help="write OpenVINO IR here (with --int8 QDQ.onnx, the INT8 file too)")
        group.add_argument("--openvino-fp16-weights", action="store_true",
                           help="store weights in fp16 (half the size); the arithmetic is still what the runtime "
                           "is told: f32 unless san-embed, san-search or san-parity get --precision bf16|fp16")
        parser.only_with("--openvino", "--openvino-fp16-weights")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> OpenVINOOptions | None:
        return OpenVINOOptions(args.openvino, args.openvino_fp16_weights) if args.openvino is not None else None

    def write_into(self, job: ExportJob, options: OpenVINOOptions, folder: Path) -> Written:
        from export.verify import verify_embeddings

        sources = [(job.shared.onnx, folder / "model.xml", "fp32")]
        if job.shared.int8 is not None:
            sources.append((job.shared.int8, folder / "model.int8.xml", "int8"))
        files, passed = [], True
        for onnx_path, xml_path, kind in sources:
            write_ir(onnx_path, xml_path, options.fp16_weights)
            report = verify_embeddings(job.model, job.images, ir_embedder(xml_path), kind=kind, rule=job.rules[kind])
            log.info(f"{self.final(xml_path)}: {report.render()}")
            if report.passed:
                files += [xml_path, xml_path.with_suffix(".bin")]
            else:
                for path in (xml_path, xml_path.with_suffix(".bin")):
                    path.replace(path.with_name(f"{path.stem}.rejected{path.suffix}"))
                passed = False
        return Written(self.name, folder, tuple(files), passed)
