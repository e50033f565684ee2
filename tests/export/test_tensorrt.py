"""TensorRT engines: build and parity on a GPU (skipped without one); refusal paths everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.cli import main as san_export
from export.onnx_export import export_onnx
from export.tensorrt_build import BatchProfile, build_engine
from export.verify import synthetic_images
from san.contract.artifact import INPUT_NAME, OUTPUT_NAME
from san.contract.engine_sidecar import EngineSidecar, sidecar_path
from san.contract.input_convention import InputConvention
from san.contract.rules import RULES
from san.contract.spec import ContractError, InputSpec
from san.contract.tensorrt_target import (
    EngineCompatibilityError,
    TargetEnvironment,
    TensorRTUnavailable,
    check_engine_compatible,
)
from san.evaluation.metrics import paired_cosine
from san.model.config import ModelConfig
from san.model.network import build_model
from san.training.checkpoint import save_checkpoint
from support.module_folders import ModuleFolders

CFG = ModelConfig(backbone="resnet18", spec=InputSpec(height=64, width=32))
HERE = TargetEnvironment("10.13.0.35", "NVIDIA H100 80GB HBM3", "9.0")


def _tensorrt_available() -> bool:
    try:
        TargetEnvironment.detect()
    except TensorRTUnavailable:
        return False
    return True


def test_engine_for_this_machine_is_accepted() -> None:
    check_engine_compatible(HERE, False, HERE)


@pytest.mark.parametrize(
    ("built_on", "what"),
    [
        (TargetEnvironment("10.9.0.34", HERE.gpu_name, HERE.compute_capability), "TensorRT version"),
        (TargetEnvironment(HERE.tensorrt_version, "NVIDIA A100-SXM4-80GB", "8.0"), "GPU"),
        (TargetEnvironment(HERE.tensorrt_version, HERE.gpu_name, "8.9"), "compute capability"),
    ],
)
def test_engine_for_another_machine_is_refused_with_rebuild_advice(built_on: TargetEnvironment, what: str) -> None:
    with pytest.raises(EngineCompatibilityError) as refused:
        check_engine_compatible(built_on, False, HERE)
    message = str(refused.value)
    assert what in message and "san-export --ckpt" in message and "--trt" in message


@pytest.mark.parametrize(("built", "here", "runs"), [
    ("10.13.0.35", "10.13.0.35", True), ("10.13.0.35", "10.15.1.29", True), ("10.13.0.35", "10.9.0.34", False),
    ("10.13.0.35", "11.1.0.2", True),  # TensorRT 11's documents: TensorRT 10 engines run on 11
    ("8.6.1.6", "9.3.0.1", True), ("8.6.1.6", "10.3.0.26", True), ("9.3.0.1", "10.0.1.6", True),
    ("8.6.1.6", "11.1.0.2", False),  # no other combination across majors
    ("11.1.0.2", "10.15.1.29", False), ("8.5.3.1", "8.6.1.6", False),  # older runtime; before version compatibility
])
def test_a_version_compatible_engine_runs_where_tensorrt_documents_it(built: str, here: str, runs: bool) -> None:
    engine = TargetEnvironment(built, HERE.gpu_name, HERE.compute_capability)
    machine = TargetEnvironment(here, HERE.gpu_name, HERE.compute_capability)
    if runs:
        check_engine_compatible(engine, True, machine)
    else:
        with pytest.raises(EngineCompatibilityError, match="TensorRT version"):
            check_engine_compatible(engine, True, machine)
    with pytest.raises(EngineCompatibilityError, match="TensorRT version"):  # without the flag: its own release only
        check_engine_compatible(engine, False, TargetEnvironment("10.15.1.29", HERE.gpu_name, HERE.compute_capability))


def test_batch_profile_must_be_ordered() -> None:
    assert BatchProfile(1, 8, 32).opt == 8
    with pytest.raises(ValueError, match="min <= opt <= max"):
        BatchProfile(4, 2, 8)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        BatchProfile(0, 1, 1)


def test_read_sidecar_names_the_problem(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    with pytest.raises(ContractError, match="model.engine.json"):
        EngineSidecar.read(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ContractError, match="not a SAN engine sidecar"):
        EngineSidecar.read(engine)


def test_trt_fails_early_after_onnx_is_written_and_verified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if _tensorrt_available():
        pytest.skip("TensorRT and a GPU are available here; the engine would be built")
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, build_model(CFG))
    status = san_export(["--ckpt", str(ckpt), "--trt", "--fp16", "--verify-count", "4"])
    captured = capsys.readouterr()
    assert status == 3
    assert "PASSED" in captured.out and (tmp_path / "model.onnx").is_file()
    assert "--trt:" in captured.err and "written and verified" in captured.err
    assert not (tmp_path / "model.engine").exists() and not (tmp_path / "model.fp16.onnx").exists()


# --- on a GPU with TensorRT -------------------------------------------------------------


def _run_engine(engine_path: Path, images: np.ndarray) -> np.ndarray:
    trt = pytest.importorskip("tensorrt")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    context = engine.create_execution_context()
    batch = torch.from_numpy(images).cuda()
    context.set_input_shape(INPUT_NAME, tuple(batch.shape))
    out = torch.empty(tuple(context.get_tensor_shape(OUTPUT_NAME)), dtype=torch.float32, device="cuda")
    context.set_tensor_address(INPUT_NAME, batch.data_ptr())
    context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return out.cpu().numpy()


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnxruntime(precision: str, tmp_path: Path) -> None:
    """An fp32 engine (TF32 off) agrees with onnxruntime image by image as unflipped fp32 does; an
    fp16 engine is judged by the fp16 rule's cosine limits, whatever the GPU's fp16 kernels round."""
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    onnx_path = export_onnx(model, tmp_path / f"model.{precision}.onnx", precision=precision)
    engine = tmp_path / "model.engine"
    cache = tmp_path / "timing.cache"
    sidecar = build_engine(
        onnx_path, engine, profile=BatchProfile(1, 8, 32), workspace_mb=1024, timing_cache=cache
    )
    assert engine.is_file() and cache.stat().st_size > 0
    assert EngineSidecar.read(engine) == sidecar and sidecar.precision == precision
    assert sidecar.spec == model.spec and sidecar.batch == BatchProfile(1, 8, 32)
    check_engine_compatible(sidecar.built_for, sidecar.version_compatible)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for batch in (1, 7, 32):
        images = synthetic_images(model.spec, batch, seed=batch)
        got = _run_engine(engine, images)
        (want,) = session.run(None, {INPUT_NAME: images})
        assert np.isfinite(got).all()
        cos = paired_cosine(got, want)
        if precision == "fp32":
            assert cos.min() >= RULES["fp32"].min_cosine_unflipped, (batch, cos)
        else:
            cosines = {"min_cosine_min": float(cos.min()), "min_cosine_mean": float(cos.mean())}
            assert RULES["fp16"].breaches("fp16", cosines) == [], (batch, cos)
    cached = cache.stat().st_size  # a second build reuses and keeps the timing cache
    build_engine(onnx_path, engine, profile=BatchProfile(1, 8, 32), workspace_mb=1024, timing_cache=cache)
    assert cache.stat().st_size >= cached


# -- the build logic, against a recording stand-in for the tensorrt module ------------------


@pytest.fixture(scope="module")
def small_onnx(module_tmp: ModuleFolders) -> Path:
    torch.manual_seed(0)
    return export_onnx(build_model(CFG).eval(), module_tmp.mktemp("fake-trt") / "model.onnx")


def fake_trt_flag(name: str):
    from support.fake_tensorrt import BuilderFlag

    return BuilderFlag[name]


@pytest.mark.parametrize("tf32", [False, True])
def test_fp32_engines_are_built_without_tf32_unless_asked(fake_trt, small_onnx: Path, tmp_path: Path, tf32: bool) -> None:
    sidecar = build_engine(small_onnx, tmp_path / "m.engine", environment=HERE, tf32=tf32)
    (flags,) = [call[1] for call in fake_trt.calls if call[0] == "build"]
    assert (fake_trt_flag("TF32") in flags) == tf32  # TensorRT enables TF32 by default: cleared here
    assert sidecar.precision == ("tf32" if tf32 else "fp32") and sidecar.tf32 is tf32
    assert EngineSidecar.read(tmp_path / "m.engine") == sidecar


def test_version_compatible_engines_set_the_flag_where_tensorrt_has_it(fake_trt, small_onnx: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from export.tensorrt_build import EngineBuildError
    from support.fake_tensorrt import module

    sidecar = build_engine(small_onnx, tmp_path / "m.engine", environment=HERE, version_compatible=True)
    (flags,) = [call[1] for call in fake_trt.calls if call[0] == "build"]
    assert fake_trt_flag("VERSION_COMPATIBLE") in flags and sidecar.version_compatible is True
    assert build_engine(small_onnx, tmp_path / "p.engine", environment=HERE).version_compatible is False
    monkeypatch.setitem(sys.modules, "tensorrt", module(fake_trt, version="8.5.3.1"))
    with pytest.raises(EngineBuildError, match="TensorRT 8.5.3.1 cannot build version-compatible engines"):
        build_engine(small_onnx, tmp_path / "q.engine", environment=HERE, version_compatible=True)


def test_a_refused_timing_cache_is_replaced_and_said(fake_trt, small_onnx: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"from another GPU")
    fake_trt.cache_mismatch = True
    build_engine(small_onnx, tmp_path / "m.engine", environment=HERE, timing_cache=cache)
    said = capsys.readouterr().out.splitlines()
    attempts = [call for call in fake_trt.calls if call[0] == "set_timing_cache"]
    assert attempts == [("set_timing_cache", b"from another GPU", False), ("set_timing_cache", b"", True)]
    assert len(said) == 1 and "another GPU or TensorRT version" in said[0]
    assert cache.read_bytes() == b"fake timing cache" and (tmp_path / "m.engine").read_bytes() == b"fake engine"


def test_a_timing_cache_tensorrt_cannot_read_is_replaced_not_a_type_error(fake_trt, small_onnx: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"not a timing cache")
    fake_trt.cache_unreadable = True  # create_timing_cache returns None
    build_engine(small_onnx, tmp_path / "m.engine", environment=HERE, timing_cache=cache)
    said = capsys.readouterr().out.splitlines()
    assert [c for c in fake_trt.calls if c[0] == "set_timing_cache"] == [("set_timing_cache", b"", True)]
    assert len(said) == 1 and "not a timing cache" in said[0] and cache.read_bytes() == b"fake timing cache"


@pytest.mark.parametrize(("layout", "dims"), [("NCHW", (3, 64, 32)), ("NHWC", (64, 32, 3))])
def test_the_profile_follows_the_graph_inputs_layout(fake_trt, layout: str, dims: tuple, tmp_path: Path) -> None:
    torch.manual_seed(0)
    onnx_path = export_onnx(build_model(CFG).eval(), tmp_path / f"{layout}.onnx",
                            convention=InputConvention("uint8", layout=layout))
    assert tuple(onnx.load(onnx_path).graph.input[0].type.tensor_type.shape.dim[i].dim_value for i in (1, 2, 3)) == dims
    build_engine(onnx_path, tmp_path / "m.engine", environment=HERE, profile=BatchProfile(1, 4, 8))
    (shapes,) = [c[1] for c in fake_trt.calls if c[0] == "add_optimization_profile"]
    assert shapes == {INPUT_NAME: ((1, *dims), (4, *dims), (8, *dims))}


def test_a_cache_that_cannot_be_saved_keeps_the_engine(fake_trt, small_onnx: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    fake_trt.cache_serialize_fails = True
    build_engine(small_onnx, tmp_path / "m.engine", environment=HERE, timing_cache=tmp_path / "c")
    said = capsys.readouterr().out.splitlines()
    assert (tmp_path / "m.engine").read_bytes() == b"fake engine" and sidecar_path(tmp_path / "m.engine").is_file()
    assert len(said) == 1 and "not updated" in said[0]


def test_cuda_initialisation_failure_is_one_line_not_a_traceback(fake_trt, small_onnx: Path, tmp_path: Path) -> None:
    fake_trt.cuda_fails = True
    with pytest.raises(TensorRTUnavailable, match="could not initialise CUDA .*nvidia-smi"):
        build_engine(small_onnx, tmp_path / "m.engine", environment=HERE)
    assert not (tmp_path / "m.engine").exists()


def test_tensorrt_86_builds_fp32_with_explicit_batch_and_refuses_typed_precisions_in_one_line(
        fake_trt, small_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JetPack 6.0's TensorRT 8.6 has no STRONGLY_TYPED flag (an AttributeError before) and its
    ONNX parser needs an explicit-batch network."""
    import sys

    from export.tensorrt_build import EngineBuildError
    from support.fake_tensorrt import module

    monkeypatch.setitem(sys.modules, "tensorrt", module(fake_trt, version="8.6.2.3"))
    build_engine(small_onnx, tmp_path / "m.engine", environment=HERE)
    assert ("create_network", 1 << 0) in fake_trt.calls  # EXPLICIT_BATCH
    half = export_onnx(build_model(CFG).eval(), tmp_path / "half.onnx", precision="fp16")
    with pytest.raises(EngineBuildError, match="TensorRT 8.6.2.3 has no strongly typed networks") as refused:
        build_engine(half, tmp_path / "h.engine", environment=HERE)
    assert "\n" not in str(refused.value)
