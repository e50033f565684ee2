"""ONNX export: parity with the PyTorch eval model, determinism, contract, CLI."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from export.cli import main as san_export
from export.errors import ExportError
from export.onnx_export import check_graph, export_onnx, random_ops
from export.verify import BlockFlips, VerifyReport, export_and_verify, synthetic_images, verify_onnx
from san.contract.artifact import BATCH_DIM, INPUT_NAME, OUTPUT_NAME, pi_name, read_contract, read_metadata
from san.contract.input_convention import InputConvention
from san.contract.rules import RULES, Rule
from san.contract.spec import METADATA_KEY, ContractError, InputSpec
from san.evaluation.metrics import paired_cosine
from san.io.hashing import file_sha256
from san.model.config import ModelConfig
from san.model.network import SAN, build_model
from san.training.checkpoint import load_checkpoint, save_checkpoint
from support.module_folders import ModuleFolders
from support.tampering import tampered_block

CFG = ModelConfig(backbone="resnet18", spec=InputSpec(height=64, width=32))
STAGES = CFG.active_stages


def _trained(model: SAN) -> SAN:
    """Move weights and BatchNorm statistics away from their initial values."""
    torch.manual_seed(1)
    images = torch.from_numpy(synthetic_images(model.spec, 6, seed=3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(2):
        emb = model(images)
        loss = -torch.pdist(emb).mean() + emb.pow(2).mean()  # spread embeddings apart, keep them bounded
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        for _ in range(2):
            model(images)  # more running-statistics updates
    return model.eval()


@pytest.fixture(scope="module")
def exported_by_cli(module_tmp: ModuleFolders) -> tuple[int, str, Path, Path]:
    """san-export on a random-weight checkpoint, verified on PNG files: (status, stdout, ckpt, onnx)."""
    root = module_tmp.mktemp("cli")
    torch.manual_seed(0)
    ckpt = root / "model.pt"
    save_checkpoint(ckpt, build_model(CFG))
    images = root / "images"
    images.mkdir()
    for i, array in enumerate(synthetic_images(CFG.spec, 3)):
        Image.fromarray(array.transpose(1, 2, 0)).resize((48, 100)).save(images / f"{i}.png")
    out = root / "deploy" / "san.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = san_export(["--ckpt", str(ckpt), "--out", str(out), "--verify-images", str(images)])
    return status, printed.getvalue(), ckpt, out


@pytest.fixture(scope="module")
def random_model(exported_by_cli: tuple[int, str, Path, Path]) -> SAN:
    return load_checkpoint(exported_by_cli[2])[0]


@pytest.fixture(scope="module")
def random_onnx(exported_by_cli: tuple[int, str, Path, Path]) -> Path:
    return exported_by_cli[3]


@pytest.fixture(scope="module")
def trained_model() -> SAN:
    torch.manual_seed(0)
    return _trained(build_model(CFG))


@pytest.fixture(scope="module")
def trained_onnx(trained_model: SAN, module_tmp: ModuleFolders) -> Path:
    return export_onnx(trained_model, module_tmp.mktemp("trained") / "model.onnx", with_masks=True)


def test_trained_fixture_really_moved_batchnorm(trained_model: SAN) -> None:
    bn = trained_model.stem[1]
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


@pytest.mark.parametrize("which", ["random", "trained"])
@pytest.mark.parametrize("batch", [1, 7, 32])
def test_onnxruntime_matches_pytorch_eval(which: str, batch: int, request: pytest.FixtureRequest) -> None:
    model, path = request.getfixturevalue(f"{which}_model"), request.getfixturevalue(f"{which}_onnx")
    images = synthetic_images(model.spec, batch, seed=batch)
    report = verify_onnx(model, path, images)
    assert report.passed, report.render()
    assert report.min_cosine >= 0.9999
    assert [b.stage for b in report.blocks] == list(STAGES)  # masks were compared in every block
    assert all(b.unexplained == 0 for b in report.blocks), report.render()
    assert sum(b.elements for b in report.blocks) > 0


@pytest.mark.parametrize(("attention", "hard"), [("soft", False), ("power", False), ("threshold", True)])
def test_every_attention_variant_verifies_block_by_block(attention: str, hard: bool, tmp_path: Path) -> None:
    """Continuous masks (soft, power) are reported per block without flip counts; the Table III
    thresholding mask is hard and its flips are counted like the sharp one's."""
    torch.manual_seed(0)
    model = _trained(build_model(replace(CFG, attention=attention)))
    path = export_onnx(model, tmp_path / f"{attention}.onnx")
    report = verify_onnx(model, path, synthetic_images(model.spec, 4))
    assert report.passed, report.render()
    assert [(b.stage, b.hard) for b in report.blocks] == [(s, hard) for s in STAGES]
    assert all(b.elements > 0 and b.max_pi_error < 1e-3 for b in report.blocks), report.render()


def test_graph_is_deterministic_and_valid(random_onnx: Path) -> None:
    proto = onnx.load(random_onnx)
    assert random_ops(proto) == set()
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    (out,) = inferred.graph.output
    assert out.name == OUTPUT_NAME and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == [BATCH_DIM, 128]
    (inp,) = proto.graph.input
    assert inp.name == INPUT_NAME and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [BATCH_DIM, 3, 64, 32]
    assert min(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    # each context unit's upsampling is exported as the one ConvTranspose onnxruntime runs
    # fastest, not as the Conv + Pad that eager PyTorch computes (san.model.context.SparseUpsample)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("ConvTranspose") == 3 and "Pad" not in ops


def test_random_ops_are_found_and_refused() -> None:
    node = onnx.helper.make_node("RandomUniformLike", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
    )
    proto = onnx.helper.make_model(graph)
    assert random_ops(proto) == {"RandomUniformLike"}
    with pytest.raises(ExportError, match="random ops"):
        check_graph(proto)


def test_contract_and_provenance_read_back(random_model: SAN, random_onnx: Path) -> None:
    assert read_contract(random_onnx) == random_model.spec
    meta = read_metadata(random_onnx)
    assert ModelConfig.from_dict(json.loads(meta["san.model_config"])) == random_model.cfg
    assert meta["san.torch_version"] == torch.__version__
    assert meta["san.exporter"].startswith("torch.onnx.export(dynamo=True)")


def test_deployed_file_lists_only_embeddings_but_masks_file_lists_pi(
    random_onnx: Path, trained_model: SAN, trained_onnx: Path
) -> None:
    assert not trained_model.training  # export left the caller's model in the mode it had
    assert [o.name for o in onnx.load(random_onnx).graph.output] == [OUTPUT_NAME]
    assert [o.name for o in onnx.load(trained_onnx).graph.output] == [OUTPUT_NAME, *(pi_name(s) for s in STAGES)]


def test_black_and_constant_images_give_finite_embeddings(random_onnx: Path) -> None:
    images = synthetic_images(CFG.spec, 2)
    assert not images[0].any() and (images[1] == images[1].flat[0]).all()  # all-black, constant grey
    session = ort.InferenceSession(str(random_onnx), providers=["CPUExecutionProvider"])
    (emb,) = session.run(None, {INPUT_NAME: images})
    assert emb.shape == (2, 128) and np.isfinite(emb).all()


def test_read_contract_refuses_missing_or_invalid_contract(random_onnx: Path, tmp_path: Path) -> None:
    proto = onnx.load(random_onnx)
    del proto.metadata_props[:]
    onnx.save(proto, tmp_path / "bare.onnx")
    with pytest.raises(ContractError, match="no input contract.*san-export"):
        read_contract(tmp_path / "bare.onnx")
    proto.metadata_props.add(key=METADATA_KEY, value='{"height": 64}')
    onnx.save(proto, tmp_path / "broken.onnx")
    with pytest.raises(ContractError, match="broken.onnx.*missing"):
        read_contract(tmp_path / "broken.onnx")
    proto.metadata_props[0].value = InputSpec(height=128, width=64).to_json()
    onnx.save(proto, tmp_path / "other.onnx")
    with pytest.raises(ContractError, match="contract says N x 3 x 128 x 64"):
        read_contract(tmp_path / "other.onnx")
    with pytest.raises(ContractError, match="not found"):
        read_contract(tmp_path / "absent.onnx")


def test_verify_fails_beyond_tolerance(random_model: SAN, random_onnx: Path) -> None:
    images = synthetic_images(random_model.spec, 3)
    strict = Rule(min_cosine_min=1.5, min_cosine_unflipped=1.5, flip_margin=1e-5)
    report = verify_onnx(random_model, random_onnx, images, rule=strict)
    assert not report.passed
    assert any("fp32.min_cosine_min" in p for p in report.problems)
    assert any("fp32.min_cosine_unflipped" in p for p in report.problems)
    with pytest.raises(ContractError, match="uint8"):
        verify_onnx(random_model, random_onnx, images.astype(np.float32))


def test_verify_catches_masks_that_disagree(random_model: SAN, random_onnx: Path) -> None:
    images = synthetic_images(random_model.spec, 4)
    random_model.set_mask_threshold(0.4)  # the graph still thresholds at 0.5
    try:
        report = verify_onnx(random_model, random_onnx, images)
    finally:
        random_model.set_mask_threshold(0.5)
    assert not report.passed and any("unexplained mask flips" in p for p in report.problems), report.render()


@pytest.mark.parametrize("how", ["threshold", "bypassed", "removed"])
def test_verify_refuses_a_tampered_block_and_names_it(
    how: str, trained_model: SAN, trained_onnx: Path, tmp_path: Path
) -> None:
    stage = 2
    tampered = tampered_block(trained_onnx, tmp_path / f"{how}.onnx", stage, how)
    report = verify_onnx(trained_model, tampered, synthetic_images(trained_model.spec, 8))
    assert not report.passed, report.render()
    expected = {"threshold": "unexplained mask flips", "bypassed": "does not reach", "removed": "has no mask"}[how]
    named = [p for p in report.problems if p.startswith(f"block after stage {stage}:")]
    assert named and expected in named[0], report.render()
    upstream = [p for p in report.problems if p.startswith("block after stage 1:")]
    assert not upstream, report.render()  # the blocks before the tampered one are not blamed


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_randomly_initialised_resnet50_sans_export_with_default_flags(
    seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The paper's model (default ModelConfig) at random weights, four seeds: near-threshold
    mask flips, where a seed has them, are classified as rounding, not errors."""
    torch.manual_seed(seed)
    save_checkpoint(tmp_path / "model.pt", build_model(ModelConfig()))
    assert san_export(["--ckpt", str(tmp_path / "model.pt")]) == 0, capsys.readouterr()
    assert "PASSED" in capsys.readouterr().out and (tmp_path / "model.onnx").is_file()
    assert not (tmp_path / "model.onnx.rejected").exists()


def test_cli_exports_and_verifies_a_checkpoint(exported_by_cli: tuple[int, str, Path, Path]) -> None:
    status, printed, ckpt, out = exported_by_cli
    assert status == 0
    assert "verified on 3 images" in printed and "PASSED" in printed
    assert read_contract(out) == load_checkpoint(ckpt)[1].spec
    assert read_metadata(out)["san.checkpoint_sha256"] == file_sha256(ckpt)


def test_cli_reports_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert san_export(["--ckpt", str(tmp_path / "absent.pt")]) == 2
    assert "absent.pt: checkpoint file not found" in capsys.readouterr().err
    torch.save({"not": "a SAN checkpoint"}, tmp_path / "plain.pt")
    assert san_export(["--ckpt", str(tmp_path / "plain.pt")]) == 2
    assert "not a SAN checkpoint" in capsys.readouterr().err
    assert san_export(["--ckpt", str(tmp_path / "plain.pt"), "--trt", "--min-batch", "8", "--max-batch", "4"]) == 2
    assert "min <= opt <= max" in capsys.readouterr().err


def test_contract_and_engine_check_work_without_torch(random_onnx: Path) -> None:
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in ("torch", "torchvision"):
                    raise ImportError("torch is blocked in this test")

        sys.meta_path.insert(0, NoTorch())
        from san.contract.artifact import read_contract
        from san.contract.engine_sidecar import EngineSidecar
        from san.contract.tensorrt_target import TargetEnvironment, check_engine_compatible

        here = TargetEnvironment("10.0", "GPU", "9.0")
        check_engine_compatible(here, False, here)
        print(read_contract({str(random_onnx)!r}).height)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "64"


def test_fp16_export_from_a_model_in_train_mode(random_model: SAN, tmp_path: Path) -> None:
    random_model.train()
    try:
        path = export_onnx(random_model, tmp_path / "model.fp16.onnx", precision="fp16")
        assert random_model.training  # the caller's mode is restored
    finally:
        random_model.eval()
    proto = onnx.load(path)
    assert random_ops(proto) == set()  # exported in eval mode: hard masks, no Gumbel noise
    assert read_metadata(path)["san.precision"] == "fp16"
    weight_types = {t.data_type for t in proto.graph.initializer if t.dims} - {onnx.TensorProto.INT64}
    assert weight_types == {onnx.TensorProto.FLOAT16}
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # FP16 rounding flips masks near the threshold; only the embedding direction is held.
    report = verify_onnx(random_model, path, synthetic_images(CFG.spec, 8), kind="fp16")
    assert report.passed, report.render()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_zero_embedding_exports_as_zeros_not_nan(precision: str, trained_model: SAN, tmp_path: Path) -> None:
    """L2 normalisation of an all-zero embedding: 0 / max(0, eps), with an eps that float16 holds
    (a smaller one would round to 0 there and divide 0 by 0)."""
    import copy

    model = copy.deepcopy(trained_model)
    model.cfg = model.cfg.with_spec(l2_normalize=True)  # the contract's output normalisation
    last = model.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    path = export_onnx(model, tmp_path / f"zero.{precision}.onnx", precision=precision)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: synthetic_images(model.spec, 4)})
    assert np.isfinite(out).all() and not out.any()


def test_a_file_that_fails_verification_is_moved_aside(
    random_model: SAN, random_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def copy_export(model: SAN, out: Path, **kwargs: object) -> Path:  # reuse the module's export
        return Path(shutil.copyfile(random_onnx, out))

    monkeypatch.setattr("export.verify.export_onnx", copy_export)
    out = tmp_path / "model.onnx"
    report = export_and_verify(random_model, out, synthetic_images(CFG.spec, 2), rule=Rule(min_cosine_min=1.5))
    assert not report.passed and "moved to" in report.problems[-1]
    assert not out.exists() and (tmp_path / "model.onnx.rejected").is_file()


def test_a_calibrated_threshold_moves_contract_graph_and_embeddings(
    trained_model: SAN, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint whose contract holds 0.6 (as san-calibrate threshold writes) exports at 0.6."""
    save_checkpoint(tmp_path / "half.pt", trained_model)
    model = load_checkpoint(tmp_path / "half.pt")[0].eval()  # a copy: the module fixture stays at 0.5
    images = synthetic_images(CFG.spec, 8, seed=11)
    with torch.no_grad():
        at_half = model(torch.from_numpy(images)).numpy()
        model.set_mask_threshold(0.6)
        at_060 = model(torch.from_numpy(images)).numpy()
    assert np.abs(at_060 - at_half).max() > 1e-3  # 0.6 really moves masks of this model
    ckpt, out = tmp_path / "model.thr.pt", tmp_path / "model.thr.onnx"
    save_checkpoint(ckpt, model)
    assert san_export(["--ckpt", str(ckpt), "--out", str(out)]) == 0, capsys.readouterr()
    assert read_contract(out).mask_threshold == pytest.approx(0.6)
    proto = onnx.load(out)
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    constants |= {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in proto.graph.node
                  if n.op_type == "Constant" and n.attribute[0].name == "value"}
    compared = [float(constants[i]) for n in proto.graph.node if n.op_type == "Greater"
                for i in n.input if i in constants]
    assert len(compared) == len(STAGES) and all(c == pytest.approx(0.6) for c in compared)
    onnx_out = ort.InferenceSession(str(out)).run(None, {INPUT_NAME: images})[0]
    # the graph computes the model at 0.6, judged as the fp32 rule judges an image whose masks agree,
    # and not the model at 0.5
    to_060, to_half = paired_cosine(onnx_out, at_060), paired_cosine(onnx_out, at_half)
    assert to_060.min() >= RULES["fp32"].min_cosine_unflipped and (to_060 > to_half).all()


@pytest.mark.parametrize(("upsample", "kernel"), [("sparse", 1), ("nearest", 2)])
def test_both_context_unit_upsamplings_export_verify_pass_the_lint_and_quantize(upsample: str, kernel: int,
                                                                               tmp_path: Path) -> None:
    """Each context unit's upsampling is one ConvTranspose of stride 2: sparse with the 1x1 weight,
    nearest with a 2x2 kernel whose four taps are the 1x1 weight. The fp32 and fp16 files verify
    block by block against PyTorch, an input convention computes the same embeddings, TensorRT's
    parser rules hold for fp32, fp16 and the TensorRT INT8 file, and onnxruntime runs that INT8 file."""
    from calibration.quantize import QuantizeOptions, quantize_onnx
    from export.tensorrt_lint import lint_tensorrt_file

    torch.manual_seed(0)
    model = _trained(build_model(replace(CFG, cu_upsample=upsample)))
    path = export_onnx(model, tmp_path / f"{upsample}.onnx")
    graph = onnx.load(path).graph
    ups = [n for n in graph.node if n.op_type == "ConvTranspose"]
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    assert len(ups) == 3
    for node, block in zip(ups, ("1", "2", "3")):
        attrs = {a.name: list(a.ints) for a in node.attribute if a.ints}
        assert attrs.get("strides") == [2, 2], attrs
        w = weights[node.input[1]]
        one = model.attention[block].context.up.weight.detach().numpy()
        assert w.shape == (*one.shape[:2], kernel, kernel) and np.array_equal(w, np.broadcast_to(one, w.shape))
    images = synthetic_images(model.spec, 5, seed=2)
    report = verify_onnx(model, path, images)
    assert report.passed and [b.stage for b in report.blocks] == list(STAGES), report.render()
    assert lint_tensorrt_file(path) == []
    half = export_onnx(model, tmp_path / f"{upsample}.fp16.onnx", precision="fp16")
    half_report = verify_onnx(model, half, images, kind="fp16")
    assert half_report.passed and lint_tensorrt_file(half) == []
    assert "unexplained" not in half_report.render() and all(not b.classified for b in half_report.blocks)
    convention = InputConvention("float32", "BGR", "NHWC")  # as a deployment target may take it
    adapted = export_onnx(model, tmp_path / f"{upsample}.bgr.onnx", convention=convention)
    session = ort.InferenceSession(str(adapted), providers=["CPUExecutionProvider"])
    bgr = np.ascontiguousarray(images[:, ::-1].transpose(0, 2, 3, 1)).astype(np.float32)
    reference = model(torch.from_numpy(images)).detach().numpy()
    # float32 rounding of sums over thousands of terms: each element to a millionth of the
    # embedding's largest, whatever the thread count's summation order
    np.testing.assert_allclose(session.run(None, {INPUT_NAME: bgr})[0], reference, rtol=1e-4,
                               atol=1e-6 * np.abs(reference).max())
    images = tmp_path / "calibration"
    images.mkdir()
    for i, array in enumerate(synthetic_images(model.spec, 8, seed=7)):
        Image.fromarray(array.transpose(1, 2, 0)).save(images / f"{i}.png")
    int8 = quantize_onnx(path, sorted(images.iterdir()), tmp_path / f"{upsample}.trt.int8.onnx",
                         options=QuantizeOptions(target="tensorrt", batch_size=4, progress=False)).out
    assert lint_tensorrt_file(int8) == []
    batch = synthetic_images(model.spec, 34, seed=9)[2:]  # structured ones: a constant image has no mask to speak of
    ours = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: batch})[0]
    reference = model(torch.from_numpy(batch)).detach().numpy()
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert RULES["int8"].breaches("int8", {"min_cosine_mean": float(cosine.mean())}) == [], cosine  # as san-parity


@pytest.mark.parametrize("case", ["--out is the checkpoint", "folder target holds the checkpoint",
                                  "folder target is the verification images"])
def test_no_output_replaces_or_deletes_an_input(case: str, random_model: SAN, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "model.pt", random_model)
    (run / "notes.txt").write_text("mine")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(synthetic_images(random_model.spec, 1)[0].transpose(1, 2, 0)).save(images / "a.png")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    base = ["--ckpt", str(run / "model.pt"), "--verify-images", str(images)]
    argv, named = {
        "--out is the checkpoint": ([*base, "--out", str(run / ".." / "run" / "model.pt")], "--out"),
        "folder target holds the checkpoint": ([*base, "--out", str(tmp_path / "m.onnx"), "--deepstream", str(run),
                                                "--overwrite"], "--deepstream"),
        "folder target is the verification images": ([*base, "--out", str(tmp_path / "m.onnx"), "--triton",
                                                      str(images), "--overwrite"], "--triton"),
    }[case]
    assert san_export(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"error: {named} " in err[0] and "choose another output path" in err[0], err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_the_report_says_what_it_measured_and_what_it_could_not() -> None:
    """Flips of a rule without a margin are counted, not called unexplained; a block where every
    image flipped earlier has no pi error to show."""
    report = VerifyReport(8, 0.999, 8, [
        BlockFlips(1, 1000, 3, 1, 1, 2e-4),
        BlockFlips(2, 1000, 71, 71, 71, 0.01, classified=False),
        BlockFlips(3, 1000, 9, 9, 0, None),
    ])
    lines = report.render().splitlines()
    assert lines[1] == ("  block after stage 1: 3/1000 mask flips (rate 3.00e-03; near threshold 1, propagated 1, "
                        "unexplained 1), max |pi error| 0.0002 (images without an earlier flip)")
    assert "71/1000 mask flips" in lines[2] and "not sorted into rounding and errors" in lines[2]
    assert "unexplained" not in lines[2] and "propagated" not in lines[2]
    assert lines[3].endswith("no image without an earlier flip") and lines[-1] == "PASSED"
