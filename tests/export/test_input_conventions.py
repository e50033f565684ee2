"""Input adapters: every input convention computes the uint8 graph's embeddings, and every
backend feeds each one correctly from decoded images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export.cli import main as san_export
from export.onnx_export import export_onnx
from export.tensorrt_lint import lint_tensorrt_file
from runtime import discover_images, open_backend
from san.contract.artifact import INPUT_NAME, OUTPUT_NAME, read_contract, read_input_convention
from san.contract.input_convention import InputConvention
from san.contract.rules import RULES
from san.evaluation.metrics import paired_cosine
from san.io.preprocess import load_image
from san.training.checkpoint import load_checkpoint
from support.module_folders import ModuleFolders

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CONVENTIONS = {
    "float": InputConvention("float32"),
    "normalized": InputConvention("float32", mean=IMAGENET[0], std=IMAGENET[1]),
    "bgr": InputConvention("uint8", channels="BGR"),
    "nhwc": InputConvention("uint8", layout="NHWC"),
    "normalized-bgr-nhwc": InputConvention("float32", "BGR", "NHWC", IMAGENET[0][::-1], IMAGENET[1][::-1]),
}


def by_hand(images: np.ndarray, convention: InputConvention) -> np.ndarray:
    """The documented encoding written out: channel order, scale, layout."""
    x = images.astype(np.float64)
    if convention.channels == "BGR":
        x = x[:, [2, 1, 0]]
    if convention.normalized:
        mean, std = np.array(convention.mean)[:, None, None], np.array(convention.std)[:, None, None]
        x = (x / 255.0 - mean) / std
    if convention.layout == "NHWC":
        x = np.moveaxis(x, 1, -1)
    return x.astype(np.uint8 if convention.dtype == "uint8" else np.float32)


@pytest.fixture(scope="module")
def images(tiny: Path) -> np.ndarray:
    spec = read_contract(tiny / "model.onnx")
    return np.stack([load_image(tiny / "images" / p, spec) for p in discover_images(tiny / "images")])


@pytest.fixture(scope="module")
def exports(tiny: Path, module_tmp: ModuleFolders) -> dict[str, Path]:
    model, _ = load_checkpoint(tiny / "model.pt")
    folder = module_tmp.mktemp("conventions")
    return {name: export_onnx(model, folder / f"{name}.onnx", convention=c) for name, c in CONVENTIONS.items()}


def run(path: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


@pytest.mark.parametrize("name", CONVENTIONS)
def test_each_convention_computes_the_uint8_graphs_embeddings(name: str, exports: dict[str, Path], tiny: Path,
                                                              images: np.ndarray) -> None:
    convention = CONVENTIONS[name]
    assert read_input_convention(exports[name]) == convention
    assert read_contract(exports[name]) == read_contract(tiny / "model.onnx")
    reference = run(tiny / "model.onnx", images)
    got = run(exports[name], by_hand(images, convention))
    assert paired_cosine(reference, got).min() >= 0.9999


@pytest.mark.parametrize("name", CONVENTIONS)
def test_backends_feed_each_convention_from_decoded_images(name: str, exports: dict[str, Path], tiny: Path,
                                                           images: np.ndarray) -> None:
    with open_backend(tiny / "model.onnx") as plain, open_backend(exports[name]) as adapted:
        assert adapted.convention == CONVENTIONS[name] and adapted.spec == plain.spec
        assert paired_cosine(plain.infer(images), adapted.infer(images)).min() >= 0.9999


@pytest.mark.parametrize("name", CONVENTIONS)
def test_openvino_runs_each_convention_as_onnxruntime_does_under_the_fp32_rule(name: str, exports: dict[str, Path],
                                                                              images: np.ndarray) -> None:
    with open_backend(exports[name]) as reference, open_backend(exports[name], "openvino") as openvino:
        assert openvino.convention == CONVENTIONS[name] and openvino.spec == reference.spec
        cos = paired_cosine(reference.infer(images), openvino.infer(images))
    assert RULES["fp32"].breaches("fp32", {"min_cosine_min": cos.min(), "min_cosine_mean": cos.mean()}) == []


@pytest.mark.parametrize("name", CONVENTIONS)
def test_adapted_graphs_stay_within_tensorrts_parser_rules(name: str, exports: dict[str, Path]) -> None:
    assert lint_tensorrt_file(exports[name]) == []


def test_san_export_writes_and_verifies_a_convention(tiny: Path, tmp_path: Path, images: np.ndarray,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "boxmot-style.onnx"
    argv = ["--ckpt", str(tiny / "model.pt"), "--out", str(out), "--verify-count", "4", "--input", "normalized",
            "--input-mean", "0.485,0.456,0.406", "--input-std", "0.229,0.224,0.225"]
    assert san_export(argv) == 0, capsys.readouterr().err
    assert read_input_convention(out) == CONVENTIONS["normalized"]
    assert "PASSED" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["--input", "fp8"], "unknown input convention"),
    (["--input", "normalized"], "needs --input-mean and --input-std"),
    (["--input", "float", "--input-mean", "0.5,0.5,0.5", "--input-std", "0.2,0.2,0.2"], "only it takes them"),
])
def test_bad_conventions_are_refused_in_one_line(argv: list[str], message: str, tiny: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert san_export(["--ckpt", str(tiny / "model.pt"), "--out", str(tmp_path / "m.onnx"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "m.onnx").exists()
