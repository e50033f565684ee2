"""The ``boxmot`` export target (``--boxmot DIR``): a ReID model BoxMOT's trackers load as it is.

BoxMOT's ONNX backend crops each box from the BGR frame, resizes it with OpenCV (linear),
converts it to RGB, scales to 0..1 and normalises with the ImageNet mean and std, then feeds
float NCHW and L2-normalises the output. So the graph written here takes exactly that
(:class:`san.input_convention.InputConvention` float32, normalised) and maps it back to the
model's pixels inside. BoxMOT reads the crop size from the graph's static H x W and the
``<file>.onnx.metadata.json`` sidecar written beside it (``model_name``, ``img_size``,
``preprocess``).
"""

from __future__ import annotations

import argparse
import logging

from san.atomic import atomic_write_json
from export.targets import ExportJob, ExportTarget, prepare_folder, require_bilinear
from san.arguments import output_folder
from san.input_convention import InputConvention
from san.spec import InputSpec

log = logging.getLogger(__name__)

ONNX_NAME = "san_reid.onnx"
#: The normalisation BoxMOT's backends apply to every crop (RGB order).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CONVENTION = InputConvention("float32", mean=IMAGENET_MEAN, std=IMAGENET_STD)


def sidecar(spec: InputSpec) -> dict[str, object]:
    """BoxMOT's artifact metadata (schema 1): the model's name, crop size and resize rule."""
    size = [spec.height, spec.width]
    return {"schema_version": 1, "model_name": "san", "img_size": size, "preprocess": "resize",
            "model_kwargs_schema_version": 1, "model_kwargs": {"img_size": size}}


class BoxMOTTarget(ExportTarget):
    """``--boxmot DIR``: ``san_reid.onnx`` and ``san_reid.onnx.metadata.json``."""

    flag = "boxmot"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("BoxMOT trackers (BotSort, DeepOcSort, StrongSort, ...)")
        group.add_argument("--boxmot", type=output_folder, metavar="DIR", help="write the BoxMOT ReID model here")

    @classmethod
    def check_arguments(cls, args: argparse.Namespace) -> None:
        if args.boxmot is not None:
            prepare_folder(args.boxmot, "--boxmot", args.overwrite, check_only=True)

    def write(self, job: ExportJob) -> int:
        spec = job.meta.spec
        require_bilinear(spec, "--boxmot", "BoxMOT resizes crops linearly (cv2.INTER_LINEAR)")
        folder = prepare_folder(job.args.boxmot, "--boxmot", job.args.overwrite)
        onnx_path = folder / ONNX_NAME
        if not job.export_verified(onnx_path, "fp32", CONVENTION):
            return 1
        meta = onnx_path.with_name(onnx_path.name + ".metadata.json")
        atomic_write_json(meta, sidecar(spec))
        job.written["boxmot"] = onnx_path
        log.info(f"{folder}: {ONNX_NAME} and {meta.name}; use BotSort(reid_weights=Path('{onnx_path}'), ...)")
        return 0
