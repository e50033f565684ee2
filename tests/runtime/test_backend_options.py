"""One option vocabulary for every backend: --device cpu|cuda|cuda:N, --threads, --providers."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.base import BackendError
from runtime.cli_embed import main as san_embed
from runtime.registry import open_backend
from san.contract.device import Device
from support.tiny import make_images


@pytest.mark.parametrize(("text", "device"), [
    ("cpu", Device("cpu")), ("cuda", Device("cuda", 0)), ("cuda:1", Device("cuda", 1)), ("CUDA:2", Device("cuda", 2)),
    ("auto", Device("auto")), ("gpu:1", Device("gpu", 1)), ("npu", Device("npu")),
])
def test_device_texts(text: str, device: Device) -> None:
    assert Device.parse(text) == device and Device.parse(str(device)) == device


@pytest.mark.parametrize("text", ["gpu:x", "cuda:", "cuda:x", "cpu:0", "0", ""])  # gpu[:N] is OpenVINO's
def test_bad_device_texts_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected cpu, cuda or cuda:N"):
        Device.parse(text)


def test_san_embed_takes_device_cpu_and_threads_for_onnx(tiny: Path, tmp_path: Path, capsys) -> None:
    make_images(tmp_path / "images", 4)
    argv = [str(tmp_path / "images"), "--model", str(tiny / "model.onnx"), "--device", "cpu", "--threads", "1",
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert san_embed(argv) == 0, capsys.readouterr().err
    assert "embedded 4/4 images" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", ["pt", "onnx"])
def test_device_cuda_parses_and_fails_only_for_want_of_a_gpu(tiny: Path, suffix: str) -> None:
    """Without a GPU, asking for one is refused for that reason, not for the option."""
    import onnxruntime
    import torch

    if torch.cuda.is_available() or "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine can run CUDA; the refusal path needs one that cannot")
    with pytest.raises(BackendError, match="(torch sees no CUDA GPU|not available in this install)"):
        open_backend(tiny / f"model.{suffix}", device="cuda:1").activate()


def test_onnxruntime_maps_device_to_providers(tiny: Path) -> None:
    backend = open_backend(tiny / "model.onnx", device="cpu", threads=1)
    assert backend.providers == ["CPUExecutionProvider"] and backend.threads == 1 and backend.notes == []


def test_an_option_a_backend_cannot_honour_is_one_note(tiny: Path) -> None:
    backend = open_backend(tiny / "model.pt", providers=["cpu"], threads=1)
    assert backend.notes == ["torch backend: --providers cpu ignored: execution providers are onnxruntime's"]


@pytest.fixture
def stand_in_tensorrt(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Minimal tensorrt and pycuda.driver modules, so the TensorRT backend can be constructed."""
    trt = types.ModuleType("tensorrt")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None})
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = types.ModuleType("pycuda.driver")
    for name, module in (("tensorrt", trt), ("pycuda", pycuda), ("pycuda.driver", pycuda.driver)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "runtime.tensorrt_backend", raising=False)
    yield
    sys.modules.pop("runtime.tensorrt_backend", None)  # imported against the stand-ins: not for later tests


def test_tensorrt_takes_the_same_vocabulary(stand_in_tensorrt: None, tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    assert open_backend(engine).device == Device("cuda", 0)  # its default
    backend = open_backend(engine, device="cuda:1", threads=4)
    assert backend.device == Device("cuda", 1)
    assert backend.notes == ["tensorrt backend: --threads 4 ignored: a TensorRT engine computes on the GPU"]
    with pytest.raises(BackendError, match="runs on an NVIDIA GPU; use --device cuda"):
        open_backend(engine, device="cpu")
