"""Bad arguments to every command and subcommand, table-driven: each case ends with exit status 2
and one line on stderr that names the argument or path, never a traceback, and leaves every file
that existed before it byte-identical.

Classes of case: numeric ranges, finiteness and counts; options that need or exclude each other;
path kinds (a folder for a file, a missing file, an existing file for a folder, a read-only
destination, a full disk); files recognised by content (a checkpoint where an ONNX file is expected, an ONNX
file, an empty file or text where a checkpoint is expected); outputs that are, or hold, one of the
command's inputs; data a user made that a command would replace.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
import torch

from calibration.cli import main as san_calibrate
from export.cli import main as san_export
from runtime.cli_embed import main as san_embed
from runtime.cli_parity import main as san_parity
from runtime.cli_search import main as san_search
from runtime.cli_tune import main as san_tune
from san.cli.eval import main as san_eval
from san.cli.info import main as san_info
from san.cli.synth import main as san_synth
from san.cli.train import main as san_train
from san.data.synth import ensure_synthetic
from support.module_folders import ModuleFolders

COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "san-info": san_info, "san-synth": san_synth, "san-train": san_train, "san-eval": san_eval,
    "san-export": san_export, "san-calibrate": san_calibrate, "san-embed": san_embed, "san-parity": san_parity,
    "san-search": san_search, "san-tune": san_tune,
}
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class Case:
    """``command argv`` must fail in one line that contains ``names`` ({placeholders} filled in)."""

    command: str
    argv: tuple[str, ...]
    names: str
    read_only: bool = False  # needs a folder the test user cannot write (not as root)
    disk_full: bool = False  # every write fails with ENOSPC, as on a full disk

    @property
    def id(self) -> str:
        return f"{self.command} {' '.join(self.argv)}"


def case(command: str, argv: str, names: str, read_only: bool = False, disk_full: bool = False) -> Case:
    return Case(command, tuple(argv.split()), names, read_only, disk_full)


FULL = "cannot write there: no space left on device"


CASES = [
    # san-info: what a checkpoint is, and sizes
    case("san-info", "{dir}", "{dir} is a folder"),
    case("san-info", "{onnx}", "is an ONNX model"),
    case("san-info", "{empty}", "is empty"),
    case("san-info", "{junk}", "{junk}"),
    case("san-info", "--input-size 0x64", "--input-size"),
    case("san-train", "--out {new} --attention none --no-cross-feature", "--attention none builds the plain ResNet"),
    # san-synth: sizes, destinations, and a set someone made
    case("san-synth", "--out {new} --height 100000", "--height"),
    case("san-synth", "--out {new} --ids 0", "--ids"),
    case("san-synth", "--out {new} --test-fraction nan", "--test-fraction"),
    case("san-synth", "--out {text}", "{text} is a file"),
    case("san-synth", "--out {data} --ids 9", "other parameters"),
    case("san-synth", "--out {dir}", "{dir}"),
    case("san-synth", "--out {ro}/set", "read-only", read_only=True),
    case("san-synth", "--out {new} --ids 4", f"{{new}}: {FULL}", disk_full=True),
    Case("san-synth", ("--out", ""), "argument --out: empty path"),
    # san-train
    case("san-train", "--preset cpu-demo --out {new} --dataset-arg ids=abc", "--dataset-arg ids='abc'"),
    case("san-train", "--preset cpu-demo --out {new} --dataset-arg idz=4", "--dataset-arg idz"),
    case("san-train", "--preset cpu-demo --out {new} --epochs 0", "--epochs"),
    case("san-train", "--preset cpu-demo --out {new} --lr inf", "--lr"),
    case("san-train", "--preset cpu-demo --out {text}", "{text} is a file"),
    case("san-train", "--preset cpu-demo --out {new} --pretrained {missing}", "--pretrained"),
    case("san-train", "--preset cpu-demo --out {new} --root {data}", "other parameters"),
    case("san-train", "--preset cpu-demo --out {ro}/run", "read-only", read_only=True),
    # san-eval
    case("san-eval", "--ckpt {dir}", "{dir} is a folder"),
    case("san-eval", "--ckpt {onnx}", "is an ONNX model"),
    case("san-eval", "--ckpt {junk} --dataset synthetic --root {data}", "{junk}"),
    case("san-eval", "--ckpt {ckpt} --dataset synthetic --root {missing}", "{missing}: folder not found"),
    case("san-eval", "--ckpt {ckpt} --batch-size 0", "--batch-size"),
    case("san-eval", "--ckpt {ckpt} --chunk 0", "--chunk"),
    case("san-eval", "--ckpt {ckpt} --cmc-png {dir}", "--cmc-png"),
    # san-export
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --fp16", "--fp16 only applies with --trt"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --max-batch 64", "--max-batch only applies with --trt"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --triton-name x", "--triton-name only applies with --triton"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --deepstream-batch 4", "--deepstream-batch only applies with"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --openvino-fp16-weights", "--openvino-fp16-weights only"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --input normalized --input-mean 0.4,0.4,0.4", "--input-std"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --input normalized --input-mean nan,0.4,0.4 "
         "--input-std 1,1,1", "--input-mean"),
    case("san-export", "--ckpt {ckpt} --out {dir}", "{dir} is a folder"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --int8 {onnx}", "--int8"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --int8 {ckpt}", "is a PyTorch checkpoint"),
    case("san-export", "--check-tensorrt {empty}", "is empty"),
    case("san-export", "--check-tensorrt {text}", "{text}: not a readable ONNX file"),
    case("san-export", "--ckpt {onnx}", "is an ONNX model"),
    case("san-export", "--ckpt {junk} --out {new}.onnx", "{junk}"),
    case("san-export", "--ckpt {held}/model.pt --deepstream {held} --overwrite", "--deepstream"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --limit int16.min_cosine_min=1", "--limit"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --limit fp32.min_cosine_min=nan", "--limit"),
    case("san-export", "--ckpt {ckpt} --out {onnx} --input float", "--out {onnx}"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --triton {text}", "{text} is a file"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --opset 12", "--opset"),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --trt --min-batch 4 --max-batch 2", "--min-batch 4, --opt-batch 32"),
    case("san-export", "--ckpt {ckpt} --out {ro}/model.onnx", "read-only", read_only=True),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx", f"{{new}}.onnx: {FULL}", disk_full=True),
    case("san-export", "--ckpt {ckpt} --out {new}.onnx --boxmot {new}-boxmot", f"{{new}}.onnx: {FULL}",
         disk_full=True),
    # san-calibrate quantize / threshold
    case("san-calibrate", "--onnx {onnx} --images {images} --out {onnx}", "--out"),
    case("san-calibrate", "--onnx {onnx} --images {images} --out {new}.onnx --report {dir}", "--report"),
    case("san-calibrate", "--onnx {ckpt} --images {images}", "is a PyTorch checkpoint"),
    case("san-calibrate", "--onnx {onnx} --images {images} --batch-size 0", "--batch-size"),
    case("san-calibrate", "--onnx {onnx} --images {missing}", "--images"),
    case("san-calibrate", "--onnx {onnx} --images {images} --out {new}.onnx --float-precision fp16",
         "--float-precision"),
    case("san-calibrate", "--onnx {onnx} --images {images} --out {ro}/m.onnx", "read-only", read_only=True),
    case("san-calibrate", "--onnx {onnx} --images {images} --out {new}.onnx", f"{{new}}.onnx: {FULL}", disk_full=True),
    case("san-calibrate", "threshold --ckpt {ckpt} --dataset synthetic --root {data} --out {new}.pt "
         "--thresholds 0.5 nan", "--thresholds"),
    case("san-calibrate", "threshold --ckpt {ckpt} --dataset synthetic --root {data} --out {ckpt}", "--out"),
    case("san-calibrate", "threshold --ckpt {ckpt} --dataset synthetic --root {data} --out {new}.pt "
         "--dataset-arg idz=4", "--dataset-arg idz"),  # read, not dropped
    case("san-calibrate", "--onnx {onnx} --images {images} --out {text}", "--out {text}: exists; pass --overwrite"),
    case("san-calibrate", "threshold --ckpt {ckpt} --dataset synthetic --root {data} --out {text}",
         "--out {text}: exists; pass --overwrite"),
    case("san-calibrate", "threshold --ckpt {ckpt} --dataset synthetic --root {missing} --out {new}.pt", "--root"),
    # san-embed and san-embed merge
    case("san-embed", "{images} --model {onnx} --out {new} --ray-actors 2", "--ray-actors only applies with --ray"),
    case("san-embed", "{images} --model {onnx} --out {new} --resume --overwrite",
         "--resume and --overwrite contradict each other"),
    case("san-embed", "{images} --model {missing}.engine", "{missing}.engine: model file not found"),
    case("san-embed", "{images} --model {onnx} --batch-size 0", "--batch-size"),
    case("san-embed", "{images} --model {onnx} --workers -1", "--workers"),
    case("san-embed", "{images} --model {onnx} --chunk-size 0", "--chunk-size"),
    case("san-embed", "{images} --model {text}", "{text}: not a readable model file"),
    # sizes a file asks for, refused before anything is allocated for them
    case("san-embed", "{images} --model {huge_contract} --out {new}",
         "height 1000000 is over the limit of 2048 (san.contract.limits.MAX_IMAGE_SIDE; SAN_MAX_IMAGE_SIDE"),
    case("san-embed", "{images} --model {text_contract} --out {new}", "width must be an integer, got '128'"),
    case("san-info", "{huge_head}", "hidden_dim 1000000 is over the limit of 65536 (san.contract.limits.MAX_HIDDEN_DIM"),
    # a model that names files outside its own folder (its weights: a copy of the real ones)
    case("san-embed", "{images} --model {up}/model.onnx --out {new}",
         "{up}/model.onnx: refused: the external data of tensor"),
    case("san-embed", "{images} --model {absolute}/model.onnx --out {new}", "is not a plain path inside the model's folder"),
    case("san-embed", "{images} --model {linked}/model.onnx --out {new}", "outside the model's folder {linked}"),
    case("san-calibrate", "--onnx {up}/model.onnx --images {images} --out {new}.onnx", "{up}/model.onnx: refused"),
    case("san-calibrate", "--onnx {int8} --images {images} --out {new}.onnx",
         "{int8}: already quantized (precision 'int8' in its metadata); calibrate the fp32 export"),
    case("san-calibrate", "--onnx {nodata}/model.onnx --images {images} --out {new}.onnx",
         "{nodata}/model.onnx: its external data cannot be read (Data of TensorProto"),
    case("san-parity", "--ckpt {ckpt} --onnx {linked}/model.onnx --dataset synthetic --root {data}",
         "{linked}/model.onnx: refused"),
    case("san-embed", "{images} --model {onnx} --out {images} --overwrite", "--out"),
    case("san-embed", "{images} --model {onnx} --device npu", "--device npu"),
    case("san-embed", "{images} --model {onnx} --precision bf16 --out {new}", "option(s) --precision"),
    case("san-embed", "merge {emb} {emb2} --out {emb} --overwrite", "--out"),
    case("san-embed", "merge {emb} {missing} --out {new}", "{missing}: folder not found"),
    case("san-embed", "merge {emb} {emb2} --out {new}", "{emb}, {emb2}: not a shard's output"),
    case("san-embed", "{images} --model {onnx} --backend torch --out {new}",
         "{onnx} is an ONNX model; the torch backend runs a PyTorch checkpoint"),
    case("san-embed", "{images} --model {ckpt} --backend onnxruntime --out {new}",
         "{ckpt} is a PyTorch checkpoint; the onnxruntime backend runs an ONNX model"),
    Case("san-embed", ("", "--model", "{onnx}"), "argument images: empty path"),
    case("san-embed", "{images} --model {onnx} --out {new} --workers 0", f"{{new}}/embeddings.partial.npy: {FULL}",
         disk_full=True),
    # san-parity
    case("san-parity", "--ckpt {junk} --onnx {onnx}", "{junk}"),
    case("san-parity", "--ckpt {ckpt} --onnx {onnx} --report {dir}", "--report"),
    case("san-parity", "--ckpt {ckpt} --onnx {onnx} --report {ckpt}", "--report"),
    case("san-parity", "--ckpt {ckpt} --onnx {onnx} --limit fp32.min_cosine_min=nan", "--limit"),
    case("san-parity", "--ckpt {ckpt} --onnx {onnx} --batch-size 0", "--batch-size"),
    case("san-parity", "--ckpt {ckpt} --onnx {onnx} --precision bf16", "--precision"),
    case("san-parity", "--ckpt {ckpt} --onnx {ckpt}", "is a PyTorch checkpoint"),
    case("san-parity", "--ckpt {ckpt} --onnx {onnx} --json {ro}/p.json", "read-only", read_only=True),
    case("san-parity", "--ckpt {ckpt} --onnx {onnx} --dataset synthetic --root {data} --report {new}.json",
         f"{{new}}.json: {FULL}", disk_full=True),
    # san-tune (and san-embed's --profile)
    case("san-tune", "{ckpt} --images {images}", "{ckpt} is a PyTorch checkpoint"),
    case("san-tune", "{onnx} --images {image}", "--images"),
    case("san-tune", "{onnx} --images {images} --batches 1,0", "--batches"),
    case("san-tune", "{onnx} --images {images} --seconds 0", "--seconds"),
    case("san-tune", "{onnx} --images {images} --budget nan", "--budget"),
    case("san-tune", "{onnx} --images {images} --batches 1,8 --choose-at 4", "--choose-at 4: not one of --batches 1,8"),
    case("san-tune", "{onnx} --images {images} --engine {onnx}", "--engine"),
    case("san-tune", "{onnx} --images {images} --root {dir}", "--root and --dataset-arg describe a labelled split"),
    case("san-tune", "{onnx} --images {images} --dataset synthetic", "--dataset synthetic: give its folder with --root"),
    case("san-tune", "{onnx} --images {images} --profile {onnx}", "--profile"),
    case("san-tune", "{onnx} --images {images} --profile {image}", "--profile {image} is the --images image"),
    case("san-tune", "{onnx} --images {dir}", "--images {dir}: 0 image(s)"),
    case("san-embed", "{images} --profile {text} --out {new}", "{text}: not valid JSON"),
    case("san-embed", "{images} --profile {missing} --out {new}", "--profile"),
    case("san-embed", "{images} --profile {text} --model {onnx} --out {new}", "--model"),
    case("san-search", "query {emb} --images {image} --profile {text}", "{text}: not valid JSON"),
    # san-search build / query / masks
    case("san-search", "build {emb} --recall-queries -4", "--recall-queries"),
    case("san-search", "build {emb} --nprobe 0", "--nprobe"),
    case("san-search", "build {missing}", "{missing}: folder not found"),
    case("san-search", "build {emb}", f"{{emb}}/faiss.index: {FULL}", disk_full=True),
    case("san-search", "query {emb} --rows 0 --nprobe -1", "--nprobe"),
    # damaged folders: read against one schema, refused naming the file, merged from never
    case("san-search", "query {flat} --rows 0", "{flat}/embeddings.npy: holds float32 [12], but the contract's"),
    case("san-search", "query {pickled} --rows 0", "{pickled}/embeddings.npy: not a plain float32 array"),
    case("san-search", "query {nocontract} --rows 0", "{nocontract}/meta.json: no input contract"),
    case("san-embed", "merge {shard1} {narrow} --out {new}", "{narrow}/embeddings.npy: holds float32 ["),
    case("san-embed", "merge {shard1} {short} --out {new}", "{short}/index.csv: lists 8 embedded rows, {short}/embeddings.npy holds 7"),
    case("san-embed", "{images} --model {onnx} --out {emptyprogress} --resume",
         "{emptyprogress}/progress.json: 'plan' must be an object"),
    case("san-embed", "{images} --model {onnx} --out {hugeprogress} --resume",
         "{hugeprogress}/progress.json: records 0 rows and 1000000000000 index bytes"),
    case("san-search", "query {indexed} --rows 0", "{indexed}/faiss.index: FAISS cannot read this index (Error: 'ret"),
    case("san-search", "query {emb} --rows 0 --ef-search -3", "--ef-search"),
    case("san-search", "query {emb} --rows 0 --engine numpy --nprobe 4", "--nprobe and --ef-search tune a saved FAISS"),
    case("san-search", "query {emb} --rows 0 -k 0", "-k"),
    case("san-search", "query {images} --rows 0", "{images}: not san-embed output (no meta.json); give the --out"),
    case("san-search", "query {emb} --images {missing}.jpg --model {onnx}", "{missing}.jpg: file not found"),
    case("san-search", "masks --ckpt {onnx} --images {image} --out {new}", "is an ONNX model"),
]


@pytest.fixture(scope="module")
def world(tiny: Path, module_tmp: ModuleFolders) -> dict[str, str]:
    """Placeholder -> path of the files the cases point at (all made here, in one folder)."""
    from runtime import LocalRunner, embed_folder, open_backend
    from runtime.embed import EmbedOptions, Shard

    root = module_tmp.mktemp("bad-arguments")
    shutil.copy(tiny / "model.pt", root / "model.pt")
    shutil.copy(tiny / "model.onnx", root / "model.onnx")
    shutil.copytree(tiny / "images", root / "images")
    (root / "folder").mkdir()
    (root / "folder" / "notes.txt").write_text("a user's notes\n")
    held = root / "held"  # a folder holding a checkpoint and a user's file
    held.mkdir()
    shutil.copy(tiny / "model.pt", held / "model.pt")
    (held / "notes.txt").write_text("keep me\n")
    (root / "empty.pt").write_bytes(b"")
    (root / "notes.txt").write_text("not a model\n")
    (root / "junk.pt").write_bytes(pickle.dumps(5))
    ensure_synthetic(root / "data", ids=8, cameras=2, height=64, width=32)
    with open_backend(root / "model.onnx") as backend:
        embed_folder(root / "images", backend, root / "emb", EmbedOptions(), runner=LocalRunner(0), progress=False)
        for index in (1, 2):
            embed_folder(root / "images", backend, root / f"shard{index}", EmbedOptions(chunk_size=4),
                         shard=Shard(index, 2), runner=LocalRunner(0), progress=False)
    damaged = _damaged_folders(root)
    shutil.copytree(root / "emb", root / "emb2")
    shutil.copytree(root / "emb", root / "indexed")  # its FAISS index cut short, as by a failed copy
    assert san_search(["build", str(root / "indexed"), "--index", "flat"]) == 0
    index = root / "indexed" / "faiss.index"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    (root / "readonly").mkdir()
    (root / "readonly").chmod(0o555)
    image = next((root / "images").glob("*.png"))
    escapes = _models_whose_data_escape(root, onnx.load(tiny / "model.onnx"))
    _with_contract(tiny / "model.onnx", root / "huge_contract.onnx", height=10**6, width=10**6)
    _with_contract(tiny / "model.onnx", root / "text_contract.onnx", width="128")
    proto = onnx.load(tiny / "model.onnx")
    proto.metadata_props.add(key="san.precision", value="int8")  # as san-calibrate marks its output
    onnx.save(proto, root / "model.int8.onnx")
    checkpoint = torch.load(tiny / "model.pt", weights_only=True)
    checkpoint["config"]["hidden_dim"] = 10**6
    checkpoint["state_dict"] = {}  # a few KB that ask for a 10**6-wide head
    torch.save(checkpoint, root / "huge_head.pt")
    return {"ckpt": str(root / "model.pt"), "onnx": str(root / "model.onnx"), "images": str(root / "images"),
            "dir": str(root / "folder"), "held": str(held), "empty": str(root / "empty.pt"),
            "text": str(root / "notes.txt"), "junk": str(root / "junk.pt"), "data": str(root / "data"),
            "emb": str(root / "emb"), "emb2": str(root / "emb2"), "indexed": str(root / "indexed"), "ro": str(root / "readonly"),
            "missing": str(root / "missing"), "new": str(root / "new"), "image": str(image), "root": str(root),
            "huge_contract": str(root / "huge_contract.onnx"), "text_contract": str(root / "text_contract.onnx"),
            "huge_head": str(root / "huge_head.pt"), "int8": str(root / "model.int8.onnx"), "shard1": str(root / "shard1"),
            **escapes, **damaged}


def _damaged_folders(root: Path) -> dict[str, str]:
    """Copies of finished outputs, each damaged as a failing disk, a foreign tool or an attacker
    would leave it, and an interrupted run whose progress.json points past its partial files."""
    import numpy as np

    def copy(source: str, name: str) -> Path:
        shutil.copytree(root / source, root / name)
        return root / name

    vectors = np.load(root / "emb" / "embeddings.npy")
    np.save(copy("emb", "flat") / "embeddings.npy", vectors[:, 0])  # 1-D
    np.save(copy("emb", "pickled") / "embeddings.npy", np.array([{"rows": 1}], dtype=object), allow_pickle=True)
    meta = json.loads((root / "emb" / "meta.json").read_text())
    (copy("emb", "nocontract") / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "contract"}))
    shard = np.load(root / "shard2" / "embeddings.npy")
    np.save(copy("shard2", "narrow") / "embeddings.npy", shard[:, :-1])  # narrower than its contract
    np.save(copy("shard2", "short") / "embeddings.npy", shard[:-1])  # fewer rows than its index lists
    for name, progress in (("emptyprogress", {}),
                           ("hugeprogress", {"plan": {}, "chunks_done": 0, "rows": 0, "index_bytes": 10**12})):
        folder = root / name
        folder.mkdir()
        np.save(folder / "embeddings.partial.npy", np.zeros((4, vectors.shape[1]), np.float32))
        (folder / "index.partial.csv").write_text("row,path,status,error\n")
        (folder / "progress.json").write_text(json.dumps(progress))
    return {name: str(root / name)
            for name in ("flat", "pickled", "nocontract", "narrow", "short", "emptyprogress", "hugeprogress")}


def _with_contract(source: Path, out: Path, **changes: object) -> None:
    """``source`` with its contract's fields changed as another machine's file might have them."""
    from san.contract.spec import METADATA_KEY

    proto = onnx.load(source)
    entry = next(p for p in proto.metadata_props if p.key == METADATA_KEY)
    entry.value = json.dumps({**json.loads(entry.value), **changes})
    onnx.save(proto, out)


def _models_whose_data_escape(root: Path, proto: onnx.ModelProto) -> dict[str, str]:
    """Folders holding the model with its weights as external data outside the folder, named by
    ``../``, by an absolute path and by a symlink (each would load: the data is the real weights),
    and one whose data file is missing."""
    onnx.save_model(proto, root / "weights.onnx", save_as_external_data=True, location="weights.bin")
    stored = onnx.load(root / "weights.onnx", load_external_data=False)
    folders = {}
    for name, location in (("up", "../weights.bin"), ("absolute", str(root / "weights.bin")), ("linked", "w.bin"),
                           ("nodata", "missing.bin")):
        folder = root / name
        folder.mkdir()
        for tensor in stored.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save_model(stored, folder / "model.onnx")
        folders[name] = str(folder)
    (root / "linked" / "w.bin").symlink_to(root / "weights.bin")
    return folders


def _fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every commit of a write fail as on a full disk: ``os.fsync`` (each atomic write and
    appended log line ends in one) and ``Path.write_bytes``/``write_text`` (bulk writes)."""
    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for owner, name in ((os, "fsync"), (Path, "write_bytes"), (Path, "write_text")):
        monkeypatch.setattr(owner, name, full)


#: Content hashes by file and stat signature: a file whose size, mtime and ctime are unchanged
#: holds the bytes it held (every write moves its ctime, which no call can set back), so each look
#: after the first hashes only the files that were written.
_HASHES: dict[tuple[Path, int, int, int, int], str] = {}


def _files(root: Path) -> dict[Path, str]:
    """Every file under ``root`` and its content hash."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            key = (path, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
            if key not in _HASHES:
                _HASHES[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            files[path] = _HASHES[key]
    return files


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_arguments_end_in_one_line_and_change_nothing(bad: Case, world: dict[str, str],
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if bad.read_only and AS_ROOT:
        pytest.skip("root writes into read-only folders")
    argv = [part.format(**world) for part in bad.argv]
    before = _files(Path(world["root"]))
    if bad.disk_full:
        _fill_the_disk(monkeypatch)
    try:
        status = COMMANDS[bad.command](argv)
    except SystemExit as exit_:
        status = exit_.code
    monkeypatch.undo()
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, (status, out, err)
    assert len(lines) == 1 and bad.names.format(**world) in lines[0], err
    assert "Traceback" not in out + err
    after = _files(Path(world["root"]))
    assert {p: h for p, h in after.items() if p in before} == before, "a file that existed was changed or removed"
    for path in set(after) - set(before):  # what a refused command may leave: nothing
        raise AssertionError(f"{bad.id} wrote {path}")


def test_the_table_covers_every_command_and_subcommand() -> None:
    covered = {(c.command, c.argv[0] if c.argv[0] in ("merge", "threshold", "build", "query", "masks") else "")
               for c in CASES}
    assert covered >= {("san-info", ""), ("san-synth", ""), ("san-train", ""), ("san-eval", ""), ("san-export", ""),
                       ("san-calibrate", ""), ("san-calibrate", "threshold"), ("san-embed", ""),
                       ("san-embed", "merge"), ("san-parity", ""), ("san-tune", ""), ("san-search", "build"),
                       ("san-search", "query"), ("san-search", "masks")}


def test_threshold_still_works_for_one_release_and_says_it_is_now_limit(tiny: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from export.cli import build_parser

    argv = ["--ckpt", str(tiny / "model.pt"), "--out", str(tmp_path / "m.onnx")]
    args = build_parser().parse_args([*argv, "--threshold", "fp32.min_cosine_min=0.5", "--limit", "fp32.max_delta_map=1",
                                      "--threshold", "int8.max_delta_map=2"])
    assert args.limit == ["fp32.min_cosine_min=0.5", "fp32.max_delta_map=1", "int8.max_delta_map=2"]
    notes = capsys.readouterr().err.splitlines()
    assert notes == ["san-export: note: --threshold is deprecated and will be removed in the next release; use --limit"]
    assert san_export([*argv, "--threshold", "int16.min_cosine_min=1"]) == 2
    assert "--limit 'int16.min_cosine_min=1'" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()


def test_a_model_whose_external_data_stays_in_its_folder_runs_as_the_inline_one(world: dict[str, str]) -> None:
    import numpy as np

    from runtime import open_backend
    from san.io.preprocess import load_image

    with open_backend(world["onnx"]) as inline, open_backend(Path(world["root"]) / "weights.onnx") as external:
        batch = np.stack([load_image(p, inline.spec) for p in sorted(Path(world["images"]).rglob("*.png"))])
        np.testing.assert_array_equal(external.infer(batch), inline.infer(batch))


#: Every command that writes an output, and the output it holds while it writes.
WRITERS = [
    ("san-export", "--ckpt {ckpt} --out {new}.onnx", "{new}.onnx"),
    ("san-export", "--ckpt {ckpt} --out {new}.onnx --triton {new}-repo", "{new}-repo"),
    ("san-calibrate", "--onnx {onnx} --images {images} --out {new}.onnx", "{new}.onnx"),
    ("san-calibrate", "threshold --ckpt {ckpt} --dataset synthetic --root {data} --out {new}.pt", "{new}.pt"),
    ("san-train", "--preset cpu-demo --dataset synthetic --root {data} --epochs 1 --out {new}", "{new}"),
    ("san-search", "build {emb}", "{emb}"),
    ("san-synth", "--out {new} --ids 8", "{new}"),
    ("san-embed", "{images} --model {onnx} --out {new}", "{new}"),
    ("san-embed", "merge {emb} {emb2} --out {new}", "{new}"),
]


@pytest.mark.parametrize("writer", WRITERS, ids=[f"{c} {a}" for c, a, _ in WRITERS])
def test_an_output_another_run_is_writing_is_refused_in_one_line(writer: tuple[str, str, str], world: dict[str, str],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from san.io.output_lock import exclusive_output

    name, argv, held = writer
    held = held.format(**world)
    before = _files(Path(world["root"]))
    with exclusive_output(held):  # as another process's run would hold it (flock: one holder per file)
        status = COMMANDS[name]([part.format(**world) for part in argv.split()])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert f"{held}: cannot write there: another run is writing it (pid {os.getpid()}: " in err
    assert _files(Path(world["root"])) == before


@pytest.mark.parametrize("module", ["san.cli.info", "export.cli"])
def test_a_junk_pickle_is_one_line_on_the_real_stderr(module: str, world: dict[str, str]) -> None:
    """In a real process, where PyTorch's warnings reach stderr (pytest captures them in-process)."""
    import subprocess
    import sys

    argv = [world["junk"]] if module == "san.cli.info" else ["--ckpt", world["junk"], "--out", world["new"] + ".onnx"]
    done = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("san-") and f"{world['junk']}: truncated or corrupt checkpoint" in done.stderr
