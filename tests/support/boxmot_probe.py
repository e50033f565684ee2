"""Runs in BoxMOT's own environment (``<venv>-boxmot``, made by scripts/env.sh): loads an
exported ReID model through BoxMOT's ReID runtime and its BotSort tracker.

Usage: ``python boxmot_probe.py MODEL.onnx FRAME.npy BOXES.npy OUT.npz``. The frame is BGR, as
BoxMOT takes it. Writes the features BoxMOT computes, the crops its documented preprocessing
feeds (cv2 linear resize of the RGB crop, uint8 N x 3 x H x W) and BotSort's track ids per frame.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from boxmot import BotSort
from boxmot.reid.core.runtime import ReID
from boxmot.utils.checks import requirement_satisfied

#: What BoxMOT 25's ONNX backend insists on; anything else and it pip-installs this version.
ORT_PIN = "onnxruntime==1.24.3"


def main(model: Path, frame_path: Path, boxes_path: Path, out: Path) -> None:
    if not requirement_satisfied(ORT_PIN):
        raise SystemExit(f"{ORT_PIN} is not installed here; BoxMOT would install it (see the boxmot extra)")
    frame, boxes = np.load(frame_path), np.load(boxes_path)
    reid = ReID(model, device="cpu")
    features = reid.model.get_features(boxes, frame)
    h, w = reid.model.input_shape
    rgb = frame[:, :, ::-1]
    crops = np.stack([cv2.resize(np.ascontiguousarray(rgb[y1:y2, x1:x2]), (w, h), interpolation=cv2.INTER_LINEAR)
                      .transpose(2, 0, 1) for x1, y1, x2, y2 in boxes.astype(int)])
    tracker = BotSort(reid_weights=model, device="cpu", half=False)
    ids = []
    for step in range(4):
        detections = np.column_stack([boxes + [step, 0, step, 0], np.full(len(boxes), 0.9), np.zeros(len(boxes))])
        tracks = tracker.update(detections.astype(np.float32), frame)
        ids.append(sorted(int(t) for t in tracks[:, 4]) if len(tracks) else [])
    np.savez(out, features=features, crops=crops, backend=type(reid.model).__name__,
             ids=np.array([row + [-1] * (len(boxes) - len(row)) for row in ids]))


if __name__ == "__main__":
    main(*map(Path, sys.argv[1:5]))
