"""Untrusted artifacts: pickled code, engines for other machines, ONNX files without or against
their contract, and non-finite outputs. Each is refused or reported, never used silently.

(The library-level checks live beside their modules: pickled code and mismatched keys in
tests/test_checkpoint.py, ONNX contract reading in tests/test_export.py. Here every command
that opens such a file is checked end to end.)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from PIL import Image

from export.cli import main as san_export
from runtime import open_backend
from runtime.cli_embed import main as san_embed
from runtime.embed import NON_FINITE
from san.cli.eval import main as san_eval
from san.cli.train import main as san_train
from san.contract.engine_sidecar import BatchProfile, EngineSidecar, sidecar_path
from san.contract.input_convention import InputConvention
from san.contract.spec import METADATA_KEY, ContractError, InputSpec
from san.contract.tensorrt_target import EngineCompatibilityError, TargetEnvironment, check_engine_compatible
from san.io.preprocess import load_image

HERE = TargetEnvironment(tensorrt_version="10.13.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


class _Exploit:
    """Unpickling this creates ``marker``: proof that code inside the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.fixture()
def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A file that looks like a SAN checkpoint but runs code when unpickled; and its marker."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": "san-checkpoint", "version": 1, "state_dict": _Exploit(marker)}, path)
    torch.load(path, weights_only=False)  # the exploit is real: an unsafe load runs it
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_san_export_refuses_pickled_code_without_running_it(evil_checkpoint, capsys) -> None:
    path, marker = evil_checkpoint
    assert san_export(["--ckpt", str(path), "--out", str(path.with_suffix(".onnx"))]) == 2
    assert "refused: the file contains pickled code" in capsys.readouterr().err
    assert not marker.exists() and not path.with_suffix(".onnx").exists()


def _sidecar() -> EngineSidecar:
    return EngineSidecar(InputSpec(height=64, width=32), InputConvention(), "fp16", False, False, BatchProfile(1, 8, 32),
                         HERE, "0" * 64, "1" * 64, {"san.checkpoint_sha256": "2" * 64})


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"gpu_name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}, "GPU: engine 'NVIDIA A100-SXM4-80GB'"),
        ({"tensorrt_version": "10.3.0"}, "TensorRT version: engine '10.3.0', this machine '10.13.0'"),
        ({"compute_capability": "9.0a"}, "compute capability"),
        ({"gpu_name": ""}, "GPU: engine ''"),
    ],
)
def test_engine_for_another_gpu_or_tensorrt_is_refused(changes: dict[str, str], named: str) -> None:
    with pytest.raises(EngineCompatibilityError, match="built for another machine") as info:
        check_engine_compatible(TargetEnvironment(**{**HERE.__dict__, **changes}), False, HERE)
    assert named in str(info.value) and "rebuild it on this machine" in str(info.value)


@pytest.mark.parametrize(("change", "named"), [
    ({"gpu_name": None}, "field 'gpu_name' is missing or not a str"),
    ({"tensorrt_version": 10}, "field 'tensorrt_version' is missing or not a str (10)"),
    ({"profile": {"min": 8, "opt": 4, "max": 32}}, "field 'profile': batch 8..32 (opt 4) is not 1 <= min <= opt <= max"),
    ({"profile": {"min": True, "opt": 4, "max": 32}}, "field 'min' is missing or not a int (True)"),
    ({"version_compatible": "yes"}, "field 'version_compatible' is missing or not a bool"),
    ({"provenance": {"san.input_convention": 3}}, "field 'provenance' must map names to strings"),
    ({METADATA_KEY: {"height": 64}}, "input contract keys do not match"),
])
def test_an_engine_sidecar_with_a_field_missing_or_mistyped_is_refused_naming_it(
        tmp_path: Path, change: dict, named: str) -> None:
    engine = tmp_path / "model.engine"
    written = _sidecar()
    written.write(engine)
    assert EngineSidecar.read(engine) == written  # what the build writes reads back whole
    sidecar_path(engine).write_text(json.dumps({k: v for k, v in {**written.to_dict(), **change}.items() if v is not None}))
    with pytest.raises(ContractError) as refused:
        EngineSidecar.read(engine)
    assert str(refused.value).startswith(f"{sidecar_path(engine)}: ") and named in str(refused.value)


def test_missing_or_forged_sidecar_is_refused(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0" * 64)
    with pytest.raises(ContractError, match="sidecar not found"):
        EngineSidecar.read(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(ContractError, match="not valid JSON"):
        EngineSidecar.read(engine)
    sidecar_path(engine).write_text(json.dumps({"gpu_name": HERE.gpu_name}))
    with pytest.raises(ContractError, match="not a SAN engine sidecar"):
        EngineSidecar.read(engine)


# -- ONNX files through san-embed ---------------------------------------------------------------------------------


def _with_contract(source: Path, target: Path, contract: str | None) -> Path:
    """A copy of ``source`` whose stored contract is ``contract`` (None: no contract at all)."""
    proto = onnx.load(source)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    for key, value in kept + ([(METADATA_KEY, contract)] if contract is not None else []):
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, target)
    return target


@pytest.mark.parametrize(
    ("contract", "message"),
    [
        (None, "carries no input contract"),
        ("{not json", "input contract is not valid JSON"),
        ('{"height": 64}', "input contract keys do not match"),
        (InputSpec(height=128, width=64).to_json(), "but the contract says N x 3 x 128 x 64"),
        (InputSpec(height=64, width=32, embedding_dim=256).to_json(), "contradicts its own contract (N x 256)"),
    ],
)
def test_san_embed_refuses_onnx_without_or_against_its_contract(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], contract: str | None, message: str
) -> None:
    model = _with_contract(tiny / "model.onnx", tmp_path / "model.onnx", contract)
    out = tmp_path / "out"
    assert san_embed([str(tiny / "images"), "--model", str(model), "--out", str(out), "--workers", "0",
                      "--no-progress"]) == 2
    assert f"{model}: " in (err := capsys.readouterr().err) and message in err
    assert not out.exists()  # refused before anything was written


def test_san_embed_refuses_files_that_are_not_onnx(tiny: Path, tmp_path: Path, capsys) -> None:
    whole = (tiny / "model.onnx").read_bytes()
    for name, content, said in (("garbage.onnx", b"\x00not a model" * 100, "not a readable model file"),
                                ("truncated.onnx", whole[: len(whole) // 2], "not a readable ONNX file (Error parsing message")):
        (tmp_path / name).write_bytes(content)
        out = tmp_path / f"{name}.out"
        assert san_embed([str(tiny / "images"), "--model", str(tmp_path / name), "--out", str(out),
                          "--no-progress"]) == 2
        assert f"{name}: {said}" in capsys.readouterr().err and not out.exists()


def _poisoned(source: Path, target: Path) -> Path:
    """``source`` plus log(mean pixel - 127.5) on every output: NaN rows for images darker than mid-grey."""
    proto = onnx.load(source)
    graph = proto.graph
    (last,) = [n for n in graph.node if "embeddings" in n.output]
    last.output[list(last.output).index("embeddings")] = "clean_embeddings"
    graph.initializer.extend([
        numpy_helper.from_array(np.array([1], np.int64), "poison_axes"),
        numpy_helper.from_array(np.array(127.5, np.float32), "poison_grey"),
    ])
    graph.node.extend([
        helper.make_node("Cast", ["images"], ["poison_float"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Flatten", ["poison_float"], ["poison_flat"], axis=1),
        helper.make_node("ReduceMean", ["poison_flat", "poison_axes"], ["poison_mean"], keepdims=1),
        helper.make_node("Sub", ["poison_mean", "poison_grey"], ["poison_offset"]),
        helper.make_node("Log", ["poison_offset"], ["poison"]),
        helper.make_node("Add", ["clean_embeddings", "poison"], ["embeddings"]),
    ])
    onnx.checker.check_model(proto)
    onnx.save(proto, target)
    return target


def test_non_finite_outputs_are_reported_with_their_files_and_never_written(tiny: Path, tmp_path: Path,
                                                                          capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        base = 40 if i % 3 == 0 else 200  # every third image is dark
        pixels = np.clip(base + rng.normal(0, 20, (70, 30, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"im{i}.png")
    (images / "broken.jpg").write_bytes(b"")
    model = _poisoned(tiny / "model.onnx", tmp_path / "poisoned.onnx")
    out = tmp_path / "out"
    assert san_embed([str(images), "--model", str(model), "--out", str(out), "--batch-size", "4", "--workers", "0",
                      "--no-progress"]) == 1
    err = capsys.readouterr().err
    dark = [f"im{i}.png" for i in range(10) if i % 3 == 0]
    for name in dark:
        assert f"  {name}: {NON_FINITE}" in err
    with open(out / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["path"] for r in rows if r["error"] == NON_FINITE) == dark
    assert [r["error"] for r in rows if r["path"] == "broken.jpg"] == ["empty file (0 bytes)"]
    bright = [r for r in rows if r["status"] == "ok"]
    embeddings = np.load(out / "embeddings.npy")
    assert len(embeddings) == len(bright) == 6 and np.isfinite(embeddings).all()
    with open_backend(model) as backend:  # the rows written are the poisoned model's finite outputs
        direct = backend.infer(np.stack([load_image(images / r["path"], backend.spec) for r in bright]))
    np.testing.assert_allclose(embeddings[[int(r["row"]) for r in bright]], direct, rtol=1e-4, atol=1e-5)


# -- pickled code through every command that opens a checkpoint -------------------------------------------------


def test_san_embed_and_san_eval_refuse_pickled_code_without_running_it(evil_checkpoint, tiny: Path, tmp_path: Path,
                                                                        capsys) -> None:
    path, marker = evil_checkpoint
    assert san_embed([str(tiny / "images"), "--model", str(path), "--out", str(tmp_path / "out"),
                      "--no-progress"]) == 2
    assert "refused: the file contains pickled code" in capsys.readouterr().err
    assert san_eval(["--ckpt", str(path), "--dataset", "folder", "--root", str(tmp_path)]) == 2
    assert "refused: the file contains pickled code" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_san_train_refuses_to_resume_from_pickled_code(evil_checkpoint, tmp_path: Path, capsys) -> None:
    path, marker = evil_checkpoint
    root = tmp_path / "market"
    for split in ("bounding_box_train", "bounding_box_test", "query"):
        (root / split).mkdir(parents=True)
        (root / split / "0001_c1s1_000001_00.jpg").write_bytes(b"")
    run = tmp_path / "run"
    run.mkdir()
    path.rename(run / "last.pt")
    assert san_train(["--preset", "cpu-demo", "--dataset", "market1501", "--root", str(root), "--out", str(run),
                      "--resume", "--workers", "0", "--no-progress"]) == 2
    assert "refused: the file contains pickled code" in capsys.readouterr().err
    assert not marker.exists()
