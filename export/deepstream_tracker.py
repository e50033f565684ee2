"""A complete low-level config for DeepStream's NvMultiObjectTracker with this model as its ReID
network: the file that nvtracker's ``ll-config-file`` names, loadable as it is.

The values of every section but ``ReID`` are NVIDIA's shipped samples for the tracker kind:
``config_tracker_NvDCF_accuracy.yml`` (NvDCF with ReID-based re-association) and
``config_tracker_NvDeepSORT.yml``. The same values appear in the DeepStream 6.4/7.0 sample
files and in the tracker reference of NVIDIA's DeepStream 9.x sources
(``skills/deepstream-dev/references/tracker_config.md``); the DeepStream 7.1 and 8.0 samples
were not available to check. Where the two differ, the older form is kept: ``visualTrackerType:
1`` (NvDCF on CUDA; 9.x samples pick 2, its PVA backend, which limits the feature settings),
and no ``useVPICropScaler`` (9.x only). The ReID weights are what make the features count:
``matchingScoreWeight4ReidSimilarity`` and ``minMatchingScore4ReidSimilarity`` in
``DataAssociator`` for NvDeepSORT, in ``TrajectoryManagement`` for re-association. NVIDIA tuned
them for its ResNet-50 Market-1501 model; the README says to tune them for this one.

``ReID`` comes from the contract. ``onnxFile`` is documented for the tracker's ReID section in
NVIDIA's 9.x sources (``tracker_ReID/README``: "Custom ONNX Model"); no document of how the
tracker resolves a relative path was found, so model paths are written absolute (the folder's
place on the DeepStream machine: ``--deepstream-model-dir``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import NamedTuple

from san.contract.spec import InputSpec


class ReidUse(NamedTuple):
    """What the tracker uses the features for: its ``reidType`` and the tracker it runs in."""

    reid_type: int
    tracker: str


#: ``--deepstream-reid-type`` -> its ``reidType`` (tracker reference) and tracker.
REID_TYPES = {"deepsort": ReidUse(1, "NvDeepSORT"), "reassoc": ReidUse(2, "NvDCF with ReID re-association"),
              "both": ReidUse(3, "NvDeepSORT with ReID re-association")}
#: The tracker's ``networkMode`` codes (0 fp32, 1 fp16, 2 int8): not nvinfer's numbering.
TRACKER_MODES = {"fp32": 0, "fp16": 1}

Section = Mapping[str, object]

#: NvDCF with re-association (``config_tracker_NvDCF_accuracy.yml``), every section but ReID.
NVDCF_REASSOC: dict[str, Section] = {
    "BaseConfig": {"minDetectorConfidence": 0.1894},
    "TargetManagement": {
        "enableBboxUnClipping": 1, "preserveStreamUpdateOrder": 0, "maxTargetsPerStream": 150,
        "minIouDiff4NewTarget": 0.3686, "minTrackerConfidence": 0.1513, "probationAge": 2,
        "maxShadowTrackingAge": 42, "earlyTerminationAge": 1,
    },
    "TrajectoryManagement": {"useUniqueID": 0},  # + REASSOCIATION
    "DataAssociator": {
        "dataAssociatorType": 0, "associationMatcherType": 1, "checkClassMatch": 1,
        "minMatchingScore4Overall": 0.0222, "minMatchingScore4SizeSimilarity": 0.3552,
        "minMatchingScore4Iou": 0.0548, "minMatchingScore4VisualSimilarity": 0.5043,
        "matchingScoreWeight4VisualSimilarity": 0.3951, "matchingScoreWeight4SizeSimilarity": 0.6003,
        "matchingScoreWeight4Iou": 0.4033, "tentativeDetectorConfidence": 0.1024,
        "minMatchingScore4TentativeIou": 0.2852,
    },
    "StateEstimator": {
        "stateEstimatorType": 1, "processNoiseVar4Loc": 6810.8668, "processNoiseVar4Size": 1541.8647,
        "processNoiseVar4Vel": 1348.4874, "measurementNoiseVar4Detector": 100.0,
        "measurementNoiseVar4Tracker": 293.3238,
    },
    "VisualTracker": {
        "visualTrackerType": 1, "useColorNames": 1, "useHog": 1, "featureImgSizeLevel": 3,
        "featureFocusOffsetFactor_y": -0.1054, "filterLr": 0.0767, "filterChannelWeightsLr": 0.0339,
        "gaussianSigma": 0.5687,
    },
}
#: ReID-based re-association (``TrajectoryManagement`` of the NvDCF accuracy sample).
REASSOCIATION: Section = {
    "enableReAssoc": 1, "minMatchingScore4Overall": 0.6622, "minTrackletMatchingScore": 0.2940,
    "minMatchingScore4ReidSimilarity": 0.0771, "matchingScoreWeight4TrackletSimilarity": 0.7981,
    "matchingScoreWeight4ReidSimilarity": 0.3848, "minTrajectoryLength4Projection": 34,
    "prepLength4TrajectoryProjection": 58, "trajectoryProjectionLength": 33, "maxAngle4TrackletMatching": 67,
    "minSpeedSimilarity4TrackletMatching": 0.0574, "minBboxSizeSimilarity4TrackletMatching": 0.1013,
    "maxTrackletMatchingTimeSearchRange": 27, "trajectoryProjectionProcessNoiseScale": 0.01,
    "trajectoryProjectionMeasurementNoiseScale": 100, "trackletSpacialSearchRegionScale": 0.01,
    "reidExtractionInterval": 8,
}
#: NvDeepSORT (``config_tracker_NvDeepSORT.yml``), every section but ReID.
NVDEEPSORT: dict[str, Section] = {
    "BaseConfig": {"minDetectorConfidence": 0.0762},
    "TargetManagement": {
        "preserveStreamUpdateOrder": 0, "maxTargetsPerStream": 150, "minIouDiff4NewTarget": 0.9847,
        "minTrackerConfidence": 0.4314, "probationAge": 2, "maxShadowTrackingAge": 68, "earlyTerminationAge": 1,
    },
    "TrajectoryManagement": {"useUniqueID": 0},
    "DataAssociator": {
        "dataAssociatorType": 0, "associationMatcherType": 1, "checkClassMatch": 1,
        "thresholdMahalanobis": 12.1875, "minMatchingScore4Overall": 0.1794,
        "minMatchingScore4SizeSimilarity": 0.3291, "minMatchingScore4Iou": 0.2364,
        "minMatchingScore4ReidSimilarity": 0.7505, "matchingScoreWeight4SizeSimilarity": 0.7178,
        "matchingScoreWeight4Iou": 0.4551, "matchingScoreWeight4ReidSimilarity": 0.3197,
        "tentativeDetectorConfidence": 0.2479, "minMatchingScore4TentativeIou": 0.2376,
    },
    "StateEstimator": {"stateEstimatorType": 2, "noiseWeightVar4Loc": 0.0503, "noiseWeightVar4Vel": 0.0037,
                       "useAspectRatio": 1},
}


def tracker_sections(reid_type: str) -> dict[str, Section]:
    """Every section but ReID for ``reid_type``: NvDCF with re-association for ``reassoc``,
    NvDeepSORT for ``deepsort``, NvDeepSORT with re-association for ``both``."""
    base = NVDCF_REASSOC if reid_type == "reassoc" else NVDEEPSORT
    sections = {name: dict(values) for name, values in base.items()}
    if reid_type != "deepsort":
        sections["TrajectoryManagement"].update(REASSOCIATION)
    typed: dict[str, Section] = dict(sections)
    return typed


def reid_section(spec: InputSpec, reid_type: str, batch_size: int, precision: str, onnx_file: PurePosixPath,
                 engine_file: PurePosixPath) -> Section:
    """The ``ReID`` section: the contract's input, raw RGB pixels (the graph normalises inside),
    stretched to H x W as in training, and the features normalised by the tracker unless the
    graph does."""
    return {
        "reidType": REID_TYPES[reid_type].reid_type, "batchSize": batch_size, "workspaceSize": 1000,
        "reidFeatureSize": spec.embedding_dim, "reidHistorySize": 100,
        "inferDims": [3, spec.height, spec.width], "networkMode": TRACKER_MODES[precision],
        "inputOrder": 0, "colorFormat": 0, "offsets": [0.0, 0.0, 0.0], "netScaleFactor": 1.0,
        "keepAspc": 0, "addFeatureNormalization": 0 if spec.l2_normalize else 1,
        "onnxFile": str(onnx_file), "modelEngineFile": str(engine_file),
    }


#: Comments written beside ReID keys whose values differ from NVIDIA's ReID sample.
_REID_NOTES = {
    "offsets": "raw RGB pixels: mean and std are inside the graph",
    "keepAspc": "crops stretched to H x W, as the model was trained, not letterboxed",
    "addFeatureNormalization": "0 when the graph already L2-normalises",
    "networkMode": "0 fp32, 1 fp16, 2 int8",
}


def render(sections: Mapping[str, Section], header: str) -> str:
    """The tracker's YAML (``%YAML:1.0``, as its parser expects), one ``key: value`` per line."""
    lines = ["%YAML:1.0", *(f"# {line}" if line else "#" for line in header.splitlines())]
    for name, values in sections.items():
        lines += ["", f"{name}:"]
        for key, value in values.items():
            text = f"[{', '.join(map(_scalar, value))}]" if isinstance(value, list) else _scalar(value)
            note = _REID_NOTES.get(key) if name == "ReID" else None
            lines.append(f"  {key}: {text}" + (f"  # {note}" if note else ""))
    return "\n".join(lines) + "\n"


def _scalar(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value) if isinstance(value, float) else str(value)
