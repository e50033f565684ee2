"""The Triton target: config.pbtxt parsed by Triton's own ModelConfig schema, every field
checked against the artifact it names."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from export.cli import main as san_export
from export.target_triton import TritonOptions, write_plan_model
from export.tensorrt_build import BatchProfile, build_engine
from san.contract.artifact import INPUT_NAME, OUTPUT_NAME, read_contract
from san.contract.tensorrt_target import TargetEnvironment
from san.io.hashing import file_sha256

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs the deploy extra")
text_format = pytest.importorskip("google.protobuf.text_format")

ONNX_TYPES = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}


def parse(path: Path):
    """``config.pbtxt`` through Triton's schema: unknown fields or bad values raise."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def type_name(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def assert_matches_onnx(config, model: Path) -> None:
    """Input and output of ``config`` are those of the ONNX graph, without the batch axis."""
    graph = onnx.load(model).graph
    (graph_in,), outputs = graph.input, {o.name: o for o in graph.output}
    shape = [d.dim_value or d.dim_param for d in graph_in.type.tensor_type.shape.dim]
    assert isinstance(shape[0], str)  # a dynamic batch axis, as max_batch_size > 0 requires
    (inp,), (out,) = config.input, config.output
    assert inp.name == graph_in.name == INPUT_NAME and list(inp.dims) == shape[1:]
    assert type_name(inp.data_type) == ONNX_TYPES[graph_in.type.tensor_type.elem_type]
    graph_out = outputs[OUTPUT_NAME].type.tensor_type
    assert out.name == OUTPUT_NAME and type_name(out.data_type) == ONNX_TYPES[graph_out.elem_type]
    assert list(out.dims) == [graph_out.shape.dim[1].dim_value]


@pytest.mark.parametrize("convention", [[], ["--input", "float", "--nhwc"]])
def test_onnx_model_repository_matches_the_file(convention: list[str], tiny: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    argv = ["--ckpt", str(tiny / "model.pt"), "--out", str(tmp_path / "model.onnx"), "--verify-count", "2",
            "--triton", str(repo), "--triton-name", "reid", "--triton-max-batch", "16", "--triton-delay-us", "250",
            "--triton-instances", "2", "--triton-kind", "cpu", "--triton-ort-tensorrt", "fp16", *convention]
    assert san_export(argv) == 0
    config = parse(repo / "reid" / "config.pbtxt")
    model = repo / "reid" / "1" / "model.onnx"
    assert file_sha256(model) == file_sha256(tmp_path / "model.onnx")
    assert config.name == "reid" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    assert_matches_onnx(config, model)
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    (group,) = config.instance_group
    assert group.count == 2 and model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) == "KIND_CPU"
    assert config.version_policy.latest.num_versions == 1
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"


def test_plan_model_names_its_engine_and_compute_capability(fake_trt, tiny: Path, tmp_path: Path) -> None:
    environment = TargetEnvironment("10.13.0", "NVIDIA H200", "9.0")
    engine = tmp_path / "model.engine"
    build_engine(tiny / "model.onnx", engine, profile=BatchProfile(1, 8, 32), environment=environment)
    folder = write_plan_model(tmp_path / "repo", engine, TritonOptions(max_batch=32))
    config = parse(folder / "config.pbtxt")
    assert config.name == folder.name == "san_trt" and config.platform == "tensorrt_plan"
    assert dict(config.cc_model_filenames) == {"9.0": "model_cc90.plan"}
    assert config.default_model_filename == ""  # no fallback: another GPU finds no plan rather than a wrong one
    assert sorted(p.name for p in (folder / "1").iterdir()) == ["model_cc90.plan"]
    assert (folder / "1" / "model_cc90.plan").read_bytes() == engine.read_bytes()
    readme = (folder / "README.txt").read_text()
    assert "TensorRT 10.13.0 for compute capability 9.0" in readme and "Triton release whose TensorRT is 10.13.0" in readme
    assert config.max_batch_size == 32
    spec = read_contract(tiny / "model.onnx")
    assert list(config.input[0].dims) == [3, spec.height, spec.width] and list(config.output[0].dims) == [128]
    with pytest.raises(ValueError, match="exceeds the engine's profile"):
        write_plan_model(tmp_path / "other", engine, TritonOptions(max_batch=64))
    assert "version-compatible" not in readme
    build_engine(tiny / "model.onnx", engine, profile=BatchProfile(1, 8, 32), environment=environment,
                 version_compatible=True)
    compatible = write_plan_model(tmp_path / "compatible", engine, TritonOptions(max_batch=32))
    readme = (compatible / "README.txt").read_text()
    assert "TensorRT is 10.13.0 or a later release" in readme and "--backend-config=tensorrt,version-compatible=true" in readme
    build_engine(tiny / "model.onnx", engine, profile=BatchProfile(4, 8, 32), environment=environment)
    with pytest.raises(ValueError, match="Triton sends batches of 1"):  # a lone request is a batch of 1
        write_plan_model(tmp_path / "min4", engine, TritonOptions(max_batch=32))


@pytest.mark.parametrize(("argv", "message"), [
    (["--trt", "--max-batch", "32", "--triton-max-batch", "64"], "exceeds the engine's profile"),
    (["--trt", "--min-batch", "2"], "Triton sends batches of 1"),
    (["--triton-kind", "tpu"], "--triton-kind must be one of"),
    (["--triton-name", "a b"], "one folder name"),
    (["--triton-trt-version-compatible"], "--trt-version-compatible only applies with --trt"),
])
def test_bad_triton_options_are_refused_in_one_line(argv: list[str], message: str, tiny: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--ckpt", str(tiny / "model.pt"), "--out", str(tmp_path / "m.onnx"), "--triton", str(tmp_path / "repo")]
    assert san_export([*base, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "m.onnx").exists()


def test_a_folder_in_use_needs_overwrite(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    (repo / "other").mkdir(parents=True)
    base = ["--ckpt", str(tiny / "model.pt"), "--out", str(tmp_path / "m.onnx"), "--verify-count", "2",
            "--triton", str(repo)]
    assert san_export(base) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert (repo / "other").is_dir() and not (tmp_path / "m.onnx").exists()
    assert san_export([*base, "--overwrite"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["san"]
