"""The BoxMOT target, through BoxMOT's own ReID runtime and its BotSort tracker: crops cut by
boxes from a synthetic frame embed like san-embed embeds the same crops."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.cli import main as san_export
from runtime import embed_folder, open_backend
from runtime.embed import EmbedOptions
from san.data.synth import ensure_synthetic
from san.metrics import paired_cosine

boxmot = pytest.importorskip("boxmot", reason="needs the boxmot extra")

#: What BoxMOT 25's ONNX backend insists on; anything else and it pip-installs this version.
ORT_PIN = "onnxruntime==1.24.3"
#: x1, y1, x2, y2 of three people in the frame
BOXES = np.array([[12, 20, 52, 110], [90, 8, 150, 150], [180, 40, 204, 100]], np.float32)


@pytest.fixture(autouse=True)
def no_installs_behind_our_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """BoxMOT may never change this environment: its runtime pin must already hold, and any
    pip it starts finds no index."""
    from boxmot.utils.checks import requirement_satisfied

    assert requirement_satisfied(ORT_PIN), f"{ORT_PIN} is not installed; BoxMOT would install it (see [boxmot])"
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", os.devnull)


@pytest.fixture(scope="module")
def exported(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bm") / "boxmot"
    argv = ["--ckpt", str(tiny / "model.pt"), "--out", str(folder.parent / "model.onnx"), "--verify-count", "2",
            "--boxmot", str(folder)]
    assert san_export(argv) == 0
    return folder / "san_reid.onnx"


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered people of the synthetic set (smooth like camera crops, unlike pixel noise)."""
    root = tmp_path_factory.mktemp("bm-people") / "synth"
    ensure_synthetic(root, ids=4, cameras=2, seed=0)
    return root / "query"


def synthetic_frame(people: Path) -> np.ndarray:
    """A 240 x 320 RGB frame: a shaded wall, with three people pasted at :data:`BOXES`."""
    rows, cols = np.mgrid[0:240, 0:320]
    frame = np.stack([90 + rows // 4, 110 + cols // 8, 130 + (rows + cols) // 12], axis=-1).astype(np.uint8)
    for (x1, y1, x2, y2), path in zip(BOXES.astype(int), sorted(people.glob("*.jpg"))):
        person = Image.open(path).convert("RGB").resize((x2 - x1, y2 - y1), Image.Resampling.BILINEAR)
        frame[y1:y2, x1:x2] = np.asarray(person)
    return frame


def test_boxmot_reid_backend_matches_san_embed_on_the_same_crops(exported: Path, tiny: Path, people: Path,
                                                                 tmp_path: Path) -> None:
    from boxmot.reid.core.runtime import ReID

    frame = synthetic_frame(people)
    reid = ReID(exported, device="cpu")
    assert type(reid.model).__name__ == "ONNXBackend"
    features = reid.model.get_features(BOXES, np.ascontiguousarray(frame[:, :, ::-1]))  # BoxMOT takes BGR frames
    crops = tmp_path / "crops"
    crops.mkdir()
    for i, (x1, y1, x2, y2) in enumerate(BOXES.astype(int)):
        Image.fromarray(frame[y1:y2, x1:x2]).save(crops / f"crop{i}.png")
    with open_backend(tiny / "model.onnx") as backend:
        embed_folder(crops, backend, tmp_path / "emb", EmbedOptions(l2_normalize=True), workers=0, progress=False)
    embedded = np.load(tmp_path / "emb" / "embeddings.npy")
    assert features.shape == embedded.shape == (len(BOXES), 128)
    assert paired_cosine(features, embedded).min() >= 0.99  # PIL vs cv2 resize of the same crops


def test_boxmot_features_are_the_models_on_boxmots_own_resize(exported: Path, tiny: Path, people: Path) -> None:
    """With BoxMOT's documented preprocessing done by hand (cv2 linear resize of the RGB crop),
    the uint8 model gives BoxMOT's features: the exported graph and sidecar add nothing."""
    import cv2
    from boxmot.reid.core.runtime import ReID

    frame = synthetic_frame(people)
    features = ReID(exported, device="cpu").model.get_features(BOXES, np.ascontiguousarray(frame[:, :, ::-1]))
    with open_backend(tiny / "model.onnx") as backend:
        h, w = backend.spec.height, backend.spec.width
        crops = np.stack([cv2.resize(frame[y1:y2, x1:x2], (w, h), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
                          for x1, y1, x2, y2 in BOXES.astype(int)])
        reference = backend.infer(crops)
    assert paired_cosine(features, reference).min() >= 0.9999


def test_botsort_tracks_people_with_the_exported_reid(exported: Path, people: Path) -> None:
    from boxmot import BotSort

    frame = np.ascontiguousarray(synthetic_frame(people)[:, :, ::-1])
    tracker = BotSort(reid_weights=exported, device="cpu", half=False)
    ids = []
    for step in range(4):
        detections = np.column_stack([BOXES + [step, 0, step, 0], np.full(len(BOXES), 0.9), np.zeros(len(BOXES))])
        tracks = tracker.update(detections.astype(np.float32), frame)
        ids.append(sorted(int(t) for t in tracks[:, 4]) if len(tracks) else [])
    assert len(ids[-1]) == len(BOXES) and ids[-1] == ids[-2]  # every person tracked, identities kept
