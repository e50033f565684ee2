"""The ``boxmot`` export target (``--boxmot DIR``): a ReID model BoxMOT's trackers load as it is.

BoxMOT's ONNX backend crops each box from the BGR frame, resizes it with OpenCV (linear),
converts it to RGB, scales to 0..1 and normalises with the ImageNet mean and std, then feeds
float NCHW and L2-normalises the output. So the graph written here takes exactly that
(:class:`san.contract.input_convention.InputConvention` float32, normalised) and maps it back to the
model's pixels inside. BoxMOT reads the crop size from the graph's static H x W and the
``<file>.onnx.metadata.json`` sidecar written beside it (``model_name``, ``img_size``,
``preprocess``).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from export.targets import ExportJob, FolderTarget, Written
from san.cli.arguments import CommandParser, output_folder
from san.contract.input_convention import InputConvention
from san.contract.spec import InputSpec
from san.io.atomic import atomic_write_json

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


@dataclass(frozen=True)
class BoxMOTOptions:
    """Where the BoxMOT ReID model goes; its input convention is BoxMOT's own."""

    folder: Path


class BoxMOTTarget(FolderTarget[BoxMOTOptions]):
    """``--boxmot DIR``: ``san_reid.onnx`` and ``san_reid.onnx.metadata.json``."""

    name = "boxmot"
    option = "--boxmot"

    @classmethod
    def add_arguments(cls, parser: CommandParser) -> None:
        group = parser.add_argument_group("BoxMOT trackers (BotSort, DeepOcSort, StrongSort, ...)")
        group.add_argument("--boxmot", type=output_folder, metavar="DIR", help="write the BoxMOT ReID model here")

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> BoxMOTOptions | None:
        return BoxMOTOptions(args.boxmot) if args.boxmot is not None else None

    def write_into(self, job: ExportJob, options: BoxMOTOptions, folder: Path) -> Written:
        onnx_path = self.export_for_consumer(job, folder, ONNX_NAME, CONVENTION,
                                             "BoxMOT resizes crops linearly (cv2.INTER_LINEAR)")
        if onnx_path is None:
            return Written(self.name, folder / ONNX_NAME, passed=False)
        meta = onnx_path.with_name(onnx_path.name + ".metadata.json")
        atomic_write_json(meta, sidecar(job.meta.spec))
        log.info(f"{options.folder}: {ONNX_NAME} and {meta.name}; use BotSort(reid_weights=Path('{self.final(onnx_path)}'), ...)")
        return Written(self.name, onnx_path, (onnx_path, meta))
