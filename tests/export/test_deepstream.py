"""The DeepStream target: both configs parsed, DeepStream's documented preprocessing
y = scale * (x - offsets[c]) applied with the parsed values to resized crops, and the ONNX
they name run on the result, matching the uint8 model."""

from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export.cli import main as san_export
from runtime import discover_images, open_backend
from san.artifact import read_contract
from san.metrics import paired_cosine
from san.preprocess import load_image

yaml = pytest.importorskip("yaml", reason="needs the deploy extra")


@pytest.fixture(scope="module")
def deepstream(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ds") / "deepstream"
    argv = ["--ckpt", str(tiny / "model.pt"), "--out", str(folder.parent / "model.onnx"), "--verify-count", "2",
            "--deepstream", str(folder), "--deepstream-batch", "8", "--deepstream-precision", "fp32"]
    assert san_export(argv) == 0
    return folder


@pytest.fixture(scope="module")
def crops(tiny: Path) -> np.ndarray:
    """Object crops resized to the network size: uint8 RGB N x 3 x H x W."""
    spec = read_contract(tiny / "model.onnx")
    return np.stack([load_image(tiny / "images" / p, spec) for p in discover_images(tiny / "images")])


@pytest.fixture(scope="module")
def reference(tiny: Path, crops: np.ndarray) -> np.ndarray:
    with open_backend(tiny / "model.onnx") as model:
        return model.infer(crops)


def deepstream_input(crops: np.ndarray, dims: list[int], order: int, color: int, scale: float,
                     offsets: list[float]) -> np.ndarray:
    """What DeepStream feeds the network: y = scale * (x - offsets[c]) on the crops in the
    configured colour order (0 RGB, 1 BGR) and layout (0 NCHW, 1 NHWC)."""
    x = crops.astype(np.float32)
    if color == 1:
        x = x[:, ::-1]
    y = scale * (x - np.asarray(offsets, np.float32)[None, :, None, None])
    assert list(y.shape[1:]) == dims
    return np.ascontiguousarray(y.transpose(0, 2, 3, 1) if order == 1 else y)


def run(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def test_tracker_reid_section_reproduces_the_model(deepstream: Path, crops: np.ndarray, reference: np.ndarray,
                                                   tiny: Path) -> None:
    reid = yaml.safe_load((deepstream / "config_tracker_reid.yml").read_text())["ReID"]
    spec = read_contract(tiny / "model.onnx")
    assert reid["inferDims"] == [3, spec.height, spec.width] and reid["reidFeatureSize"] == spec.embedding_dim
    assert reid["keepAspc"] == 0 and reid["networkMode"] == 0 and reid["batchSize"] == 8
    batch = deepstream_input(crops, reid["inferDims"], reid["inputOrder"], reid["colorFormat"],
                             reid["netScaleFactor"], reid["offsets"])
    features = run(deepstream / reid["onnxFile"], batch)
    assert paired_cosine(features, reference).min() >= 0.9999
    # the tracker normalises the features unless the graph's are unit vectors already
    unit = bool(np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-5))
    assert reid["addFeatureNormalization"] == (0 if unit else 1) and unit == spec.l2_normalize
    assert reid["modelEngineFile"].startswith(reid["onnxFile"])


def test_nvinfer_secondary_config_reproduces_the_model(deepstream: Path, crops: np.ndarray,
                                                       reference: np.ndarray) -> None:
    parser = configparser.ConfigParser()
    parser.read(deepstream / "config_infer_secondary_reid.txt")
    prop = parser["property"]
    assert prop.getint("network-type") == 100 and prop.getint("output-tensor-meta") == 1
    assert prop.getint("process-mode") == 2 and prop.getint("network-mode") == 0  # nvinfer's FP32
    assert prop.getint("maintain-aspect-ratio") == 0
    dims = [int(v) for v in prop["infer-dims"].split(";")]
    offsets = [float(v) for v in prop["offsets"].split(";")]
    batch = deepstream_input(crops, dims, 0, prop.getint("model-color-format"), prop.getfloat("net-scale-factor"),
                             offsets)
    assert paired_cosine(run(deepstream / prop["onnx-file"], batch), reference).min() >= 0.9999


def test_readme_names_every_file(deepstream: Path) -> None:
    text = (deepstream / "README.txt").read_text()
    for path in deepstream.iterdir():
        if path.name != "README.txt":
            assert path.name in text


def test_a_contract_deepstream_cannot_reproduce_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from san import ModelConfig, build_model, save_checkpoint
    from support.looks_trained import looks_trained

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18").with_spec(height=64, width=32, interpolation="bicubic")
    save_checkpoint(tmp_path / "bicubic.pt", looks_trained(build_model(cfg)))
    argv = ["--ckpt", str(tmp_path / "bicubic.pt"), "--verify-count", "2", "--deepstream", str(tmp_path / "ds")]
    assert san_export(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scales object crops bilinearly" in err[0]
