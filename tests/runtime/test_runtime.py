"""Backends: registry, contract checks, torch vs onnxruntime agreement, torch-free ONNX path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from runtime import BackendError, discover_images, open_backend
from runtime.registry import backend_for
from san.contract.spec import ContractError
from san.io.preprocess import load_image
from support.tiny import N_IMAGES


def batch_of(tiny: Path, spec) -> np.ndarray:
    paths = [tiny / "images" / p for p in discover_images(tiny / "images")]
    return np.stack([load_image(p, spec) for p in paths])


def test_registry_chooses_by_suffix_or_name(tmp_path: Path) -> None:
    assert backend_for(Path("m.PT")) == "torch"
    assert backend_for(Path("m.onnx")) == "onnxruntime"
    assert backend_for(Path("m.engine")) == "tensorrt"
    with pytest.raises(ValueError, match=r"\.bin"):
        backend_for(Path("m.bin"))
    with pytest.raises(ValueError, match="unknown backend"):
        open_backend(tmp_path / "m.onnx", "tflite")
    with pytest.raises(ValueError, match="does not take option"):
        open_backend(tmp_path / "m.onnx", colour="red")


def test_missing_file_and_file_without_contract_are_refused(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="not found"):
        open_backend(tmp_path / "absent.onnx").activate()
    with pytest.raises(ContractError, match="no input contract"):
        open_backend(tiny / "nocontract.onnx").activate()


def test_infer_refuses_batches_that_break_the_contract(tiny: Path) -> None:
    backend = open_backend(tiny / "model.onnx", threads=1)
    with pytest.raises(BackendError, match="not active"):
        backend.infer(np.zeros((1, 3, 64, 32), np.uint8))
    with backend:
        assert (backend.spec.height, backend.spec.width) == (64, 32)
        for shape in ((2, 3, 128, 64), (3, 64, 32), (2, 64, 32, 3)):
            with pytest.raises(ContractError, match="N x 3 x 64 x 32"):
                backend.infer(np.zeros(shape, np.uint8))
        with pytest.raises(ContractError, match="uint8 or float32"):
            backend.infer(np.zeros((1, 3, 64, 32), np.int64))
        with pytest.raises(ContractError, match="whole numbers"):
            backend.infer(np.full((1, 3, 64, 32), 0.5, np.float32))
        batch = batch_of(tiny, backend.spec)
        out = backend.infer(batch)
        assert out.shape == (N_IMAGES, 128) and out.dtype == np.float32 and np.isfinite(out).all()
        np.testing.assert_array_equal(backend.infer(batch.astype(np.float32)), out)
    assert not backend.is_active


def test_torch_and_onnxruntime_backends_agree(tiny: Path) -> None:
    with open_backend(tiny / "model.pt", threads=1) as torch_backend, open_backend(tiny / "model.onnx") as ort:
        assert torch_backend.spec == ort.spec
        batch = batch_of(tiny, ort.spec)
        a, b = torch_backend.infer(batch), ort.infer(batch)
        assert torch_backend.describe() == {"name": "torch", "device": "cpu"}
        assert ort.describe()["providers"][-1] == "CPUExecutionProvider"
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_tensorrt_backend_without_tensorrt_says_what_is_missing(tmp_path: Path) -> None:
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match=r"backend 'tensorrt': (tensorrt|pycuda) is not installed: pip install"):
            open_backend(tmp_path / "model.engine")
    else:
        pytest.skip("tensorrt and pycuda are installed here")


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_tensorrt_backend_matches_onnxruntime(tiny: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    pytest.importorskip("pycuda.driver")
    build = pytest.importorskip("export.tensorrt_build")
    engine = tmp_path / "model.engine"
    build.build_engine(tiny / "model.onnx", engine, profile=build.BatchProfile(min=1, opt=8, max=16))
    with open_backend(engine) as trt_backend, open_backend(tiny / "model.onnx") as ort:
        assert trt_backend.batch_limits() == (1, 16)
        batch = batch_of(tiny, ort.spec)
        a, b = trt_backend.infer(batch), ort.infer(batch)
        np.testing.assert_allclose(trt_backend.infer(batch[:5]), a[:5], rtol=1e-3, atol=1e-3)  # reused buffers
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_runtime_embeds_with_onnx_while_torch_cannot_be_imported(tiny: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in ("torch", "torchvision"):
                    raise ImportError(f"{name} is blocked: runtime must not need it")
                return None

        sys.meta_path.insert(0, NoTorch())
        from runtime import LocalRunner, embed_folder, open_backend

        with open_backend(sys.argv[1], threads=1) as backend:
            result = embed_folder(sys.argv[2], backend, sys.argv[3], runner=LocalRunner(1), progress=False)
        assert result.ok == int(sys.argv[4]) and not result.failures, result
        assert "torch" not in sys.modules and "torchvision" not in sys.modules
        print("torch-free ok")
        """
    )
    args = [tiny / "model.onnx", tiny / "images", tmp_path / "out", N_IMAGES]
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "torch-free ok" in done.stdout
    assert np.load(tmp_path / "out" / "embeddings.npy").shape == (N_IMAGES, 128)


def test_discovery_is_recursive_sorted_case_insensitive_and_loop_safe(tmp_path: Path) -> None:
    for name in ("b.JPG", "a/z.webp", "a/Y.Png", "c.jpeg", "d.BMP", "notes.txt", ".hidden.jpg", ".cache/x.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    assert discover_images(tmp_path) == ["a/Y.Png", "a/z.webp", "b.JPG", "c.jpeg", "d.BMP"]
    with pytest.raises(NotADirectoryError, match="image folder not found"):
        discover_images(tmp_path / "missing")
