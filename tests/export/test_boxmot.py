"""The BoxMOT target, through BoxMOT's own ReID runtime and its BotSort tracker (in BoxMOT's
own environment, see :mod:`support.boxmot_probe`): crops cut by boxes from a synthetic frame
embed like san-embed embeds the same crops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.cli import main as san_export
from runtime import LocalRunner, embed_folder, open_backend
from runtime.embed import EmbedOptions
from san.data.synth import ensure_synthetic
from san.evaluation.metrics import paired_cosine
from support.module_folders import ModuleFolders

PROBE = Path(__file__).resolve().parents[1] / "support" / "boxmot_probe.py"
BOXMOT_PYTHON = Path(sys.prefix + "-boxmot") / "bin" / "python"
#: x1, y1, x2, y2 of three people in the frame
BOXES = np.array([[12, 20, 52, 110], [90, 8, 150, 150], [180, 40, 204, 100]], np.float32)

pytestmark = pytest.mark.skipif(not BOXMOT_PYTHON.exists(),
                                reason=f"BoxMOT's environment {BOXMOT_PYTHON.parents[1]} is made by scripts/test.sh")


@pytest.fixture(scope="module")
def people(module_tmp: ModuleFolders) -> Path:
    """Rendered people of the synthetic set (smooth like camera crops, unlike pixel noise)."""
    root = module_tmp.mktemp("bm-people") / "synth"
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


@pytest.fixture(scope="module")
def exported(tiny: Path, people: Path, module_tmp: ModuleFolders) -> Path:
    """A folder with the BoxMOT target's files (``boxmot/``), a frame and its boxes."""
    work = module_tmp.mktemp("bm")
    argv = ["--ckpt", str(tiny / "model.pt"), "--out", str(work / "model.onnx"), "--verify-count", "2",
            "--boxmot", str(work / "boxmot")]
    assert san_export(argv) == 0
    np.save(work / "frame.npy", np.ascontiguousarray(synthetic_frame(people)[:, :, ::-1]))  # BoxMOT takes BGR
    np.save(work / "boxes.npy", BOXES)
    return work


def probe(work: Path, model: Path, name: str) -> dict:
    """What BoxMOT computes from ``model`` on the folder's frame and boxes."""
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": os.devnull}  # BoxMOT may install nothing
    done = subprocess.run([str(BOXMOT_PYTHON), str(PROBE), str(model), str(work / "frame.npy"),
                           str(work / "boxes.npy"), str(work / f"{name}.npz")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(work / f"{name}.npz") as out:
        return {key: out[key] for key in out.files}


@pytest.fixture(scope="module")
def probed(exported: Path, people: Path) -> tuple[np.ndarray, dict]:
    """(the RGB frame, what BoxMOT computed from the exported model)."""
    return synthetic_frame(people), probe(exported, exported / "boxmot" / "san_reid.onnx", "onnx")


def test_boxmot_loads_the_file_with_its_onnx_backend(probed: tuple[np.ndarray, dict]) -> None:
    assert str(probed[1]["backend"]) == "ONNXBackend"


def test_boxmot_features_are_the_models_on_boxmots_own_preprocessing(probed: tuple[np.ndarray, dict],
                                                                    tiny: Path) -> None:
    """With BoxMOT's documented preprocessing (cv2 linear resize of the RGB crop) the uint8 model
    gives BoxMOT's features: the exported graph and its sidecar add nothing."""
    _, out = probed
    with open_backend(tiny / "model.onnx") as backend:
        reference = backend.infer(out["crops"])
    assert paired_cosine(out["features"], reference).min() >= 0.9999


def test_boxmot_matches_san_embed_on_the_same_crops(probed: tuple[np.ndarray, dict], tiny: Path,
                                                    tmp_path: Path) -> None:
    frame, out = probed
    crops = tmp_path / "crops"
    crops.mkdir()
    for i, (x1, y1, x2, y2) in enumerate(BOXES.astype(int)):
        Image.fromarray(frame[y1:y2, x1:x2]).save(crops / f"crop{i}.png")
    with open_backend(tiny / "model.onnx") as backend:
        embed_folder(crops, backend, tmp_path / "emb", EmbedOptions(l2_normalize=True), runner=LocalRunner(0), progress=False)
    embedded = np.load(tmp_path / "emb" / "embeddings.npy")
    assert out["features"].shape == embedded.shape == (len(BOXES), 128)
    # They differ by the resize alone (san-embed: PIL's antialiased bilinear; BoxMOT: cv2's linear),
    # so BoxMOT's features stand to san-embed's as the model run on BoxMOT's crops does.
    with open_backend(tiny / "model.onnx") as backend:
        on_cv2_crops = backend.infer(out["crops"])
    assert np.allclose(paired_cosine(out["features"], embedded), paired_cosine(on_cv2_crops, embedded), atol=1e-4)
    assert paired_cosine(out["features"], embedded).mean() >= 0.95  # a resize, not another model


def test_botsort_tracks_every_person_and_keeps_their_identities(probed: tuple[np.ndarray, dict]) -> None:
    ids = probed[1]["ids"]
    assert (ids[-1] >= 0).all() and len(set(ids[-1])) == len(BOXES)
    assert (ids[-1] == ids[-2]).all()


@pytest.fixture(scope="module")
def probed_openvino(exported: Path) -> dict:
    """What BoxMOT's OpenVINO backend computes from the IR target's conversion of the BoxMOT
    target's graph (BoxMOT's input convention), in a ``*_openvino_model/`` folder with BoxMOT's
    metadata sidecar beside the .xml for the crop size."""
    from export.target_boxmot import sidecar
    from export.target_openvino import write_ir
    from san.contract.artifact import read_contract

    folder = exported / "san_reid_openvino_model"
    folder.mkdir()
    xml = write_ir(exported / "boxmot" / "san_reid.onnx", folder / "model.xml")
    xml.with_name("model.xml.metadata.json").write_text(json.dumps(sidecar(read_contract(xml))), encoding="utf-8")
    return probe(exported, xml, "openvino")


def test_boxmots_openvino_backend_runs_the_ir_target_as_the_model(probed_openvino: dict, tiny: Path) -> None:
    out = probed_openvino
    assert str(out["backend"]) == "OpenVinoBackend"
    with open_backend(tiny / "model.onnx") as backend:
        reference = backend.infer(out["crops"])
    assert paired_cosine(out["features"], reference).min() >= 0.9999
