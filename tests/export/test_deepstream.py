"""The DeepStream target: both configs parsed, DeepStream's documented preprocessing
y = scale * (x - offsets[c]) applied with the parsed values to resized crops, and the ONNX
they name run on the result, matching the uint8 model."""

from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.cli import main as san_export
from runtime import discover_images, open_backend
from san.contract.artifact import read_contract
from san.evaluation.metrics import paired_cosine
from san.io.preprocess import load_image
from support.module_folders import ModuleFolders

yaml = pytest.importorskip("yaml", reason="needs the deploy extra")


@pytest.fixture(scope="module")
def deepstream(tiny: Path, module_tmp: ModuleFolders) -> Path:
    folder = module_tmp.mktemp("ds") / "deepstream"
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


def tracker(folder: Path) -> dict:
    """The tracker config as the tracker reads it: NVIDIA's samples open with ``%YAML:1.0``, which
    the tracker's parser takes and PyYAML does not, then plain YAML."""
    first, rest = (folder / "config_tracker_reid.yml").read_text().split("\n", 1)
    assert first == "%YAML:1.0"
    return yaml.safe_load(rest)


def test_tracker_reid_section_reproduces_the_model(deepstream: Path, crops: np.ndarray, reference: np.ndarray,
                                                   tiny: Path) -> None:
    reid = tracker(deepstream)["ReID"]
    spec = read_contract(tiny / "model.onnx")
    assert reid["inferDims"] == [3, spec.height, spec.width] and reid["reidFeatureSize"] == spec.embedding_dim
    assert reid["keepAspc"] == 0 and reid["networkMode"] == 0 and reid["batchSize"] == 8
    batch = deepstream_input(crops, reid["inferDims"], reid["inputOrder"], reid["colorFormat"],
                             reid["netScaleFactor"], reid["offsets"])
    assert Path(reid["onnxFile"]) == (deepstream / "san_reid.onnx").resolve()  # absolute: where it was written
    features = run(Path(reid["onnxFile"]), batch)
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
    # NvBufSurfTransformInter_Bilinear on NvBufSurfTransformCompute_GPU: nvinfer's default filter is nearest
    assert prop.getint("scaling-filter") == 1 and prop.getint("scaling-compute-hw") == 1
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


@pytest.fixture(scope="module")
def deepstream_64(tiny: Path, module_tmp: ModuleFolders) -> Path:
    """The files for DeepStream 6.4 (TensorRT 8.6), for NvDeepSORT, on classes 0 and 2, to live in
    /opt/models/san on the DeepStream machine."""
    folder = module_tmp.mktemp("ds64") / "deepstream"
    argv = ["--ckpt", str(tiny / "model.pt"), "--out", str(folder.parent / "model.onnx"), "--verify-count", "2",
            "--deepstream", str(folder), "--deepstream-version", "6.4", "--deepstream-reid-type", "deepsort",
            "--deepstream-class-id", "0", "--deepstream-class-id", "2", "--deepstream-model-dir", "/opt/models/san"]
    assert san_export(argv) == 0
    return folder


def reduce_ops(path: Path) -> list[onnx.NodeProto]:
    return [n for n in onnx.load(path).graph.node if n.op_type.startswith("Reduce")]


def as_tensorrt_86_imports_it(path: Path) -> bytes:
    """The graph as TensorRT 8.6's parser builds it: a Reduce op's ``axes`` *input* is ignored and
    it reduces over every axis (onnx-tensorrt 8.6-GA); attribute axes are read."""
    model = onnx.load(path)
    del model.graph.value_info[:]  # shapes inferred for the graph as written no longer hold
    for node in model.graph.node:
        if node.op_type.startswith("Reduce") and node.op_type != "ReduceSum" and len(node.input) > 1:
            del node.input[1:]
    return model.SerializeToString()


def batch_dependence(model: bytes | str, crops: np.ndarray) -> float:
    """The largest change of a crop's embedding between running it alone and beside other crops."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = crops.astype(np.float32)
    together = session.run(None, {session.get_inputs()[0].name: x})[0]
    alone = np.concatenate([session.run(None, {session.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(len(x))])
    return float(np.abs(together - alone).max() / np.abs(alone).max())


def test_deepstream_64_gets_attribute_axes_that_tensorrt_86_reads_and_the_default_graph_fails_that_check(
    deepstream: Path, deepstream_64: Path, crops: np.ndarray, reference: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    old = deepstream_64 / "san_reid.onnx"
    assert {o.version for o in onnx.load(old).opset_import if o.domain in ("", "ai.onnx")} == {17}
    assert reduce_ops(old) and all(len(n.input) == 1 for n in reduce_ops(old))  # no axes input anywhere
    assert paired_cosine(run(old, crops.astype(np.float32)), reference).min() >= 0.9999
    assert read_contract(old) == read_contract(deepstream / "san_reid.onnx")  # the contract survives
    assert san_export(["--check-tensorrt", str(old), "--tensorrt", "8.6"]) == 0
    assert "compatible with TensorRT 8.6's ONNX parser rules" in capsys.readouterr().out
    new = deepstream / "san_reid.onnx"
    assert san_export(["--check-tensorrt", str(new), "--tensorrt", "8.6", "--verbose"]) == 1
    out = capsys.readouterr().out
    first = next(n for n in reduce_ops(new) if len(n.input) > 1)
    assert f"{first.name} ({first.op_type}): axes given as an input" in out and "ONNX opset 18" in out
    assert "to fix all" in out and "export at opset 17" in out  # the summary names the one fix


def test_each_crops_embedding_does_not_depend_on_its_batch_mates_as_tensorrt_86_imports_the_graph(
    deepstream: Path, deepstream_64: Path, crops: np.ndarray
) -> None:
    """onnxruntime reads both graphs right. Imported as TensorRT 8.6 does, the 6.4 graph is
    unchanged, while the opset-18 graph's reductions span the batch: Eq. 3's min/max and the
    pooling no longer describe one crop, and the graph cannot give per-crop embeddings."""
    for folder in (deepstream, deepstream_64):
        assert batch_dependence(str(folder / "san_reid.onnx"), crops) < 1e-5
    assert batch_dependence(as_tensorrt_86_imports_it(deepstream_64 / "san_reid.onnx"), crops) < 1e-5
    try:
        broken = batch_dependence(as_tensorrt_86_imports_it(deepstream / "san_reid.onnx"), crops)
    except ort.capi.onnxruntime_pybind11_state.Fail:  # the pooled map no longer has one row per crop
        broken = float("inf")
    assert broken > 1e-2


def test_configs_name_their_release_reassociation_deepsort_and_classes(deepstream: Path, deepstream_64: Path) -> None:
    reassoc = tracker(deepstream)
    assert reassoc["ReID"]["reidType"] == 2 and reassoc["TrajectoryManagement"]["enableReAssoc"] == 1
    deepsort = tracker(deepstream_64)
    assert deepsort["ReID"]["reidType"] == 1 and "enableReAssoc" not in deepsort["TrajectoryManagement"]
    for folder, classes in ((deepstream, "0"), (deepstream_64, "0;2")):
        parser = configparser.ConfigParser()
        parser.read(folder / "config_infer_secondary_reid.txt")
        assert parser["property"]["operate-on-class-ids"] == classes
    assert "DeepStream 9.2 (TensorRT 10.16): ONNX opset 18" in (deepstream / "README.txt").read_text()
    assert "DeepStream 6.4 (TensorRT 8.6): ONNX opset 17" in (deepstream_64 / "README.txt").read_text()


def test_each_tracker_config_is_complete_and_gives_the_features_weight(deepstream: Path, deepstream_64: Path,
                                                                       tmp_path: Path, tiny: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Every section of NVIDIA's sample for the tracker kind is there, so the file loads as it
    is; the association that uses the features has a positive ReID weight and threshold
    (NvDeepSORT: the DataAssociator's; re-association: the TrajectoryManagement's), and the
    model paths are absolute under --deepstream-model-dir (a relative one is refused)."""
    from pathlib import PurePosixPath

    from export.target_deepstream import tracker_config

    sections = {"BaseConfig", "TargetManagement", "TrajectoryManagement", "DataAssociator", "StateEstimator", "ReID"}
    text = tracker_config(read_contract(tiny / "model.onnx"), "both", 16, "fp32", PurePosixPath("/opt/models/san"), "9.2")
    (tmp_path / "config_tracker_reid.yml").write_text(text)
    both = tracker(tmp_path)
    for config, kind in ((tracker(deepstream), "reassoc"), (tracker(deepstream_64), "deepsort"), (both, "both")):
        assert sections | ({"VisualTracker"} if kind == "reassoc" else set()) == set(config), kind
        if kind != "reassoc":  # NvDeepSORT's association: a Mahalanobis gate and the ReID score
            associator = config["DataAssociator"]
            assert associator["thresholdMahalanobis"] > 0 and associator["matchingScoreWeight4ReidSimilarity"] > 0
            assert associator["minMatchingScore4ReidSimilarity"] > 0
        if kind != "deepsort":
            trajectory = config["TrajectoryManagement"]
            assert trajectory["enableReAssoc"] == 1 and trajectory["matchingScoreWeight4ReidSimilarity"] > 0
            assert trajectory["minMatchingScore4ReidSimilarity"] > 0 and trajectory["reidExtractionInterval"] > 0
    assert both["ReID"]["reidType"] == 3
    assert both["ReID"]["onnxFile"] == "/opt/models/san/san_reid.onnx"
    assert both["ReID"]["modelEngineFile"] == "/opt/models/san/san_reid.onnx_b16_gpu0_fp32.engine"
    assert tracker(deepstream_64)["ReID"]["onnxFile"] == "/opt/models/san/san_reid.onnx"
    assert "ll-config-file=/opt/models/san/config_tracker_reid.yml" in (deepstream_64 / "README.txt").read_text()
    argv = ["--ckpt", str(tiny / "model.pt"), "--out", str(tmp_path / "m.onnx"), "--deepstream", str(tmp_path / "ds"),
            "--deepstream-model-dir", "models/san"]
    assert san_export(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--deepstream-model-dir must be an absolute path" in err[0]


def test_fp16_deepstream_is_refused_for_a_model_that_does_not_hold_in_fp16(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A head whose weights exceed fp16's range (65504) computes infinities in half precision:
    DeepStream's FP16 engine could not reproduce it, while fp32 can."""
    import torch

    from san import ModelConfig, build_model, save_checkpoint
    from support.looks_trained import looks_trained

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", attention="none").with_spec(height=64, width=32)
    model = looks_trained(build_model(cfg))  # the plain ResNet: the head alone is at stake
    with torch.no_grad():
        model.head[-1].weight.mul_(1e7)  # the L2 normalisation makes fp32 blind to the scale
    assert float(model.head[-1].weight.detach().abs().max()) > torch.finfo(torch.float16).max
    save_checkpoint(tmp_path / "wide.pt", model)
    argv = ["--ckpt", str(tmp_path / "wide.pt"), "--verify-count", "2"]
    assert san_export([*argv, "--deepstream", str(tmp_path / "fp16")]) == 1
    assert "--deepstream-precision fp32" in capsys.readouterr().out
    assert not (tmp_path / "fp16" / "config_tracker_reid.yml").exists()
    assert san_export([*argv, "--deepstream", str(tmp_path / "fp32"), "--deepstream-precision", "fp32"]) == 0
    assert (tmp_path / "fp32" / "config_tracker_reid.yml").is_file()
