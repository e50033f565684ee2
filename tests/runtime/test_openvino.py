"""The OpenVINO backend, IR export and parity rows, with the real OpenVINO runtime."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from export.cli import main as san_export
from export.target_openvino import write_ir
from runtime import discover_images, open_backend
from runtime.cli_embed import main as san_embed
from runtime.parity import Artifact, run_parity
from san.contract.artifact import read_contract, read_input_convention, read_metadata, read_provenance
from san.contract.rules import RULES
from san.contract.spec import ContractError
from san.data.registry import load_dataset
from san.evaluation.metrics import paired_cosine
from san.io.preprocess import load_image
from support.int8_faults import scale_one_weight
from support.module_folders import ModuleFolders
from support.tampering import tampered_block
from support.tiny import make_images

SYNTH = {"ids": 8, "cameras": 3, "height": 64, "width": 32}


@pytest.fixture(scope="module")
def images(tiny: Path) -> np.ndarray:
    spec = read_contract(tiny / "model.onnx")
    return np.stack([load_image(tiny / "images" / p, spec) for p in discover_images(tiny / "images")])


@pytest.fixture(scope="module")
def exported(tiny: Path, module_tmp: ModuleFolders) -> Path:
    """``san-export --openvino``'s folder for the tiny model, with a TensorRT-style INT8 file."""
    from calibration.quantize import QuantizeOptions, quantize_onnx

    work = module_tmp.mktemp("openvino")
    images = [tiny / "images" / p for p in discover_images(tiny / "images")]
    int8 = quantize_onnx(tiny / "model.onnx", images, work / "model.int8.onnx",
                         options=QuantizeOptions(batch_size=4, progress=False)).out
    assert san_export(["--ckpt", str(tiny / "model.pt"), "--out", str(work / "model.onnx"),
                       "--openvino", str(work / "ir"), "--int8", str(int8)]) == 0
    return work


def _judged(reference: np.ndarray, got: np.ndarray, kind: str) -> list[str]:
    cos = paired_cosine(reference, got)
    return RULES[kind].breaches(kind, {"min_cosine_min": float(cos.min()), "min_cosine_mean": float(cos.mean())})


@pytest.mark.parametrize("batch", [4, 12])  # below and above the THROUGHPUT split
def test_the_backend_matches_onnxruntime_under_the_fp32_rule(tiny: Path, images: np.ndarray, batch: int) -> None:
    with open_backend(tiny / "model.onnx") as ort_backend, open_backend(tiny / "model.onnx", "openvino") as ov_backend:
        assert ov_backend.spec == ort_backend.spec and ov_backend.describe()["inference_precision"] == "f32"
        assert _judged(ort_backend.infer(images[:batch]), ov_backend.infer(images[:batch]), "fp32") == []


def test_the_ir_round_trips_the_contract_and_runs_within_the_fp32_rule(tiny: Path, exported: Path,
                                                                       images: np.ndarray) -> None:
    xml = exported / "ir" / "model.xml"
    assert sorted(p.name for p in (exported / "ir").iterdir()) == ["model.bin", "model.int8.bin", "model.int8.xml",
                                                                  "model.xml"]
    assert read_contract(xml) == read_contract(tiny / "model.onnx")
    assert read_input_convention(xml) == read_input_convention(tiny / "model.onnx")
    assert read_metadata(xml) == read_metadata(exported / "model.onnx") and read_provenance(xml).precision == "fp32"
    assert read_provenance(exported / "ir" / "model.int8.xml").precision == "int8"
    with open_backend(tiny / "model.onnx") as reference, open_backend(xml) as ir:
        assert ir.name == "openvino" and _judged(reference.infer(images), ir.infer(images), "fp32") == []


def test_an_ir_whose_weights_link_outside_its_folder_is_refused_before_openvino_reads_them(
        tiny: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The weights elsewhere are the IR's own, so OpenVINO would load them and embed."""
    shutil.copy(exported / "ir" / "model.bin", tmp_path / "elsewhere.bin")
    folder = tmp_path / "ir"
    folder.mkdir()
    shutil.copy(exported / "ir" / "model.xml", folder / "model.xml")
    (folder / "model.bin").symlink_to(tmp_path / "elsewhere.bin")
    with pytest.raises(ContractError, match="its weights file 'model.bin' resolves to .*elsewhere.bin, outside"):
        open_backend(folder / "model.xml", "openvino").activate()
    assert san_embed([str(tiny / "images"), "--model", str(folder / "model.xml"), "--out", str(tmp_path / "emb")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{folder / 'model.xml'}: refused" in err
    assert not (tmp_path / "emb").exists()


#: The one layer :func:`test_a_broken_int8_file_fails_the_int8_rule_on_each_runtime` breaks: stage 4's
#: projection shortcut, which every later feature passes through.
BROKEN_WEIGHT, BROKEN_FACTOR = "san.stages.3.0.downsample.0.weight_quantized", 10.0


@pytest.fixture(scope="module")
def judged_images(tiny: Path, module_tmp: ModuleFolders) -> np.ndarray:
    """48 images: enough that a mean cosine over them is a statistic, not a handful of draws."""
    spec = read_contract(tiny / "model.onnx")
    return np.stack([load_image(p, spec) for p in make_images(module_tmp.mktemp("judged"), 48, seed=3)])


def _int8_runs(exported: Path, int8: Path) -> list[tuple[Path, str]]:
    """Every way the toolkit runs an INT8 file: onnxruntime and OpenVINO on the Q/DQ file, and
    OpenVINO on the IR that ``san-export --openvino`` made of it."""
    return [(int8, "onnxruntime"), (int8, "openvino"), (exported / "ir" / "model.int8.xml", "openvino")]


def test_each_int8_runtime_meets_the_int8_rule_against_fp32(tiny: Path, exported: Path,
                                                           judged_images: np.ndarray) -> None:
    """Each INT8 runtime against the fp32 reference under the int8 rule, as san-parity judges it.
    Two INT8 kernels round differently (AVX2, VNNI and AMX-INT8 each have their own), so they
    are never compared with each other: on an AMX Xeon the two runtimes agreed to a minimum
    cosine of 0.979 while each met the rule."""
    with open_backend(tiny / "model.onnx") as reference:
        fp32 = reference.infer(judged_images)
    for path, backend in _int8_runs(exported, exported / "model.int8.onnx"):
        with open_backend(path, backend) as runtime:
            assert _judged(fp32, runtime.infer(judged_images), "int8") == [], (path, backend)


def test_a_broken_int8_file_fails_the_int8_rule_on_each_runtime(tiny: Path, exported: Path, tmp_path: Path,
                                                               judged_images: np.ndarray) -> None:
    """One convolution's weight scale 10x too large must breach the int8 rule on every runtime.
    The rule's floor (mean cosine 0.95) catches it with room on every CPU kind: measured on an
    AMX Xeon, the healthy file gives 0.996 (onnxruntime) and 0.984 (OpenVINO) on these images,
    the broken one 0.89 on both, and a CPU's INT8 rounding moves the mean by about 0.01."""
    broken = scale_one_weight(exported / "model.int8.onnx", tmp_path / "broken.onnx", BROKEN_WEIGHT, BROKEN_FACTOR)
    assert san_export(["--ckpt", str(tiny / "model.pt"), "--out", str(tmp_path / "model.onnx"), "--verify-count", "8",
                       "--openvino", str(tmp_path / "ir"), "--int8", str(broken)]) == 1  # export's own check refuses it
    with open_backend(tiny / "model.onnx") as reference:
        fp32 = reference.infer(judged_images)
    for path, backend in _int8_runs(tmp_path, broken)[:2]:
        with open_backend(path, backend) as runtime:
            breaches = _judged(fp32, runtime.infer(judged_images), "int8")
        assert [b.split(":")[0] for b in breaches] == ["int8.min_cosine_mean"], (backend, breaches)


def test_bf16_is_judged_by_its_own_rule_and_a_tampered_ir_fails_parity(tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "synth"
    dataset = load_dataset("synthetic", root, verbose=False, **SYNTH)
    tampered = write_ir(tampered_block(tiny / "model.onnx", tmp_path / "tampered.onnx", 2, "threshold"),
                        tmp_path / "tampered.xml")
    report = run_parity(tiny / "model.pt", dataset, [
        Artifact("openvino-onnx", tiny / "model.onnx", backend="openvino", options=(("precision", "bf16"),),
                 judged_as="bf16"),
        Artifact("ir", tampered),
    ], draws=0, options={"threads": 1})
    bf16, broken = report.results[1:]
    assert bf16.kind == "bf16" and "bf16" in report.rules and bf16.backend["precision"] == "bf16"
    assert bf16.breaches == RULES["bf16"].breaches("bf16", bf16.comparison.measured())
    assert broken.kind == "fp32" and any(b.startswith("fp32.min_cosine") for b in broken.breaches), broken.breaches


def test_san_embed_on_openvino_writes_the_index_onnxruntime_writes(exported: Path, tiny: Path, tmp_path: Path) -> None:
    model = exported / "model.int8.onnx"
    for backend in ("onnxruntime", "openvino"):
        assert san_embed([str(tiny / "images"), "--model", str(model), "--backend", backend,
                          "--out", str(tmp_path / backend), "--threads", "1"]) == 0
    index = {b: (tmp_path / b / "index.csv").read_text() for b in ("onnxruntime", "openvino")}
    assert index["openvino"] == index["onnxruntime"] and len(list(csv.reader(index["openvino"].splitlines()))) > 1
    rows = {b: np.concatenate([np.load(p) for p in sorted((tmp_path / b).glob("*.npy"))]) for b in index}
    assert _judged(rows["onnxruntime"], rows["openvino"], "int8") == []


def test_openvino_refuses_devices_and_precisions_it_does_not_have(tiny: Path) -> None:
    with pytest.raises(ValueError, match="--precision 'int4'"):
        open_backend(tiny / "model.onnx", "openvino", precision="int4")
    with pytest.raises(ValueError, match="the onnxruntime backend runs on cpu, cuda"):
        open_backend(tiny / "model.onnx", "onnxruntime", device="npu")


def test_a_second_start_loads_the_compiled_model_from_its_cache_and_a_change_compiles_afresh(
        tiny: Path, images: np.ndarray, tmp_path: Path) -> None:
    """OpenVINO's own cache (``ov::cache_dir``): the second start reads what the first compiled and
    embeds the same; a start at bf16 from that entry still computes at bf16 (where the CPU has it)."""
    cache = tmp_path / "cache"

    def start() -> tuple[dict, np.ndarray]:
        with open_backend(tiny / "model.onnx", "openvino", compile_cache=str(cache), threads=1) as backend:
            return backend.describe()["compile_cache"], backend.infer(images[:2])

    (first, a), (second, b) = start(), start()
    assert first == {"folder": str(cache), "loaded_from_cache": False} and second["loaded_from_cache"] is True
    assert np.array_equal(a, b) and any(cache.iterdir())
    with open_backend(tiny / "model.onnx", "openvino", compile_cache=str(cache), precision="bf16", threads=1) as backend:
        c = backend.infer(images[:2])
        bf16 = backend.describe()["inference_precision"] == "bf16"  # a CPU without BF16 computes in f32
    assert np.array_equal(a, c) != bf16
    with open_backend(tiny / "model.onnx", "openvino", compile_cache="none") as backend:
        assert backend.describe()["compile_cache"] is None


def test_the_default_cache_is_the_platform_cache_folder_and_an_unusable_one_is_one_line(
        tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.base import BackendError
    from runtime.openvino_backend import default_compile_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_compile_cache() == tmp_path / "xdg" / "san" / "openvino"
    (tmp_path / "file").write_text("")
    with pytest.raises(BackendError, match=r"--compile-cache .*file/cache: cannot be created .*--compile-cache none"):
        open_backend(tiny / "model.onnx", "openvino", compile_cache=str(tmp_path / "file" / "cache")).activate()


def _bf16_cpu() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.skipif(not _bf16_cpu(), reason="this CPU has no bf16 kernels: OpenVINO runs f32 whatever it is told")
def test_at_bf16_the_mask_paths_run_in_f32_and_the_stages_in_bf16(tiny: Path, exported: Path) -> None:
    """OpenVINO's own runtime model says which precision each kernel ran in: at bf16, every node
    of every mask path (Eq. 3's normalisation, the comparison, the mask applied, the context
    unit's ConvTranspose) runs in f32, from the ONNX file and from the exported IR, while the
    stages' convolutions run in bf16; unmarked, the same nodes run in bf16."""
    import onnx

    from runtime.openvino_backend import OpenVINOBackend
    from san.contract.precision import find_mask_paths, precision_sensitive_nodes

    proto = onnx.load(tiny / "model.onnx")
    sensitive = set(precision_sensitive_nodes(proto))
    paths = find_mask_paths(proto)
    assert {path.compare for path in paths} <= sensitive and len(paths) >= 2
    assert any(n.op_type == "ConvTranspose" and n.name in sensitive for n in proto.graph.node)
    for artifact, keep in ((tiny / "model.onnx", True), (exported / "ir" / "model.xml", True),
                           (tiny / "model.onnx", False)):
        with OpenVINOBackend(artifact, precision="bf16", threads=1, compile_cache="none",
                             keep_sensitive_f32=keep) as backend:
            kernels = backend.kernel_precisions()
        sensitive_kernels = {kernels[name] for name in sensitive if name in kernels}
        convolutions = {kernels[n.name] for n in proto.graph.node if n.op_type == "Conv" and n.name in kernels}
        assert "bf16" in convolutions, (artifact, convolutions)
        assert len(sensitive_kernels) >= 2  # the nodes were found in the runtime model
        if keep:
            assert "bf16" not in sensitive_kernels, (artifact, {n: kernels[n] for n in sensitive if n in kernels})
        else:
            assert "bf16" in sensitive_kernels


def test_keeping_the_mask_paths_in_f32_leaves_f32_arithmetic_as_it_was(tiny: Path, images: np.ndarray) -> None:
    """The marked model rewrites Eq. 3's Divide and Subtract as OpenVINO itself decomposes them, so
    at f32 it computes what the unmarked model computes."""
    import onnx
    import openvino as ov

    from san.contract.openvino_precision import keep_in_f32
    from san.contract.precision import precision_sensitive_nodes

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}
    plain = core.compile_model(core.read_model(tiny / "model.onnx"), "CPU", config)
    sensitive = precision_sensitive_nodes(onnx.load(tiny / "model.onnx"))
    marked_model = keep_in_f32(core.read_model(tiny / "model.onnx"), sensitive)
    kinds = {op.get_friendly_name(): op.get_type_name() for op in marked_model.get_ordered_ops()}
    assert {kinds[name] for name in sensitive if name in kinds} >= {"Multiply", "Add"}
    assert not {"Divide", "Subtract"} & {kinds[name] for name in sensitive if name in kinds}
    marked = core.compile_model(marked_model, "CPU", config)
    expected, got = plain(images)[0], marked(images)[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * float(np.abs(expected).max()))
