"""What a san-embed output folder must hold, checked when it is read.

Folders are copied between machines and runs are killed, so every file is read against one
schema: JSON files are objects with the keys and types below, ``embeddings.npy`` is a plain
float32 [rows, dim] array (never a pickle) whose width is the contract's and whose rows are the
index's embedded rows, and ``progress.json`` points inside the partial files. A folder that
fails is refused with an :class:`EmbedError` naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from san.contract.spec import ContractError, InputSpec
from san.io.errors import ToolkitError

EMBEDDINGS, INDEX, META, TIMING, PROGRESS = "embeddings.npy", "index.csv", "meta.json", "timing.json", "progress.json"
PARTIAL_EMBEDDINGS, PARTIAL_INDEX = "embeddings.partial.npy", "index.partial.csv"
COUNTS = ("images", "ok", "failed")


class EmbedError(ToolkitError, RuntimeError):
    """An embedding run or folder that cannot be used; the message says what to do."""


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; :class:`EmbedError` naming it when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EmbedError(f"{path}: not readable JSON ({exc}); the folder is damaged, embed it again") from None
    if not isinstance(data, dict):
        raise EmbedError(f"{path}: holds {type(data).__name__}, not a JSON object; the folder is damaged")
    return data


def _count(data: dict[str, Any], key: str, path: Path) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EmbedError(f"{path}: {key!r} must be a count (an integer >= 0), got {value!r}; the folder is damaged")
    return value


def check_meta(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """``meta`` when it has a valid contract, counts that add up, options and a shard record."""
    if not isinstance(meta.get("contract"), dict):
        raise EmbedError(f"{path}: no input contract ('contract' is missing); not san-embed output, or damaged")
    try:
        InputSpec.from_dict(meta["contract"])
    except ContractError as exc:
        raise EmbedError(f"{path}: {exc}") from None
    counts = meta.get("counts")
    if not isinstance(counts, dict):
        raise EmbedError(f"{path}: 'counts' must be an object with {', '.join(COUNTS)}, got {counts!r}")
    images, ok, failed = (_count(counts, key, path) for key in COUNTS)
    if ok + failed != images:
        raise EmbedError(f"{path}: counts do not add up: {ok} ok + {failed} failed != {images} images")
    if not isinstance(meta.get("options"), dict):
        raise EmbedError(f"{path}: 'options' must be an object, got {meta.get('options')!r}")
    shard = meta.get("shard")
    if shard is not None and (not isinstance(shard, dict) or min(_count(shard, k, path) for k in ("index", "count")) < 1):
        raise EmbedError(f"{path}: 'shard' must be null or an object with index and count, got {shard!r}")
    return meta


def read_index(path: Path) -> list[list[str]]:
    """Rows of ``index.csv`` (row, path, status, error), header dropped; each row checked."""
    try:
        with open(path, encoding="utf-8", newline="", errors="surrogateescape") as fh:
            rows = list(csv.reader(fh))[1:]
    except (OSError, csv.Error) as exc:
        raise EmbedError(f"{path}: not a readable index ({exc})") from None
    for number, row in enumerate(rows, 2):
        if len(row) != 4 or not row[0].lstrip("-").isdigit():
            raise EmbedError(f"{path}: line {number} is not 'row,path,status,error'; the folder is damaged")
    return rows


def load_embeddings(path: Path, dim: int) -> np.ndarray:
    """``path`` memory-mapped: a float32 [rows, ``dim``] array, never a pickle."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise EmbedError(f"{path}: not a plain float32 array ({exc}); the folder is damaged") from None
    if array.ndim != 2 or array.dtype != np.float32 or array.shape[1] != dim:
        raise EmbedError(f"{path}: holds {array.dtype} {list(array.shape)}, but the contract's embeddings are float32 "
                         f"[rows, {dim}]; the folder is damaged")
    return array


@dataclass(frozen=True)
class FinishedFolder:
    """A finished san-embed output, every file checked against the others."""

    meta: dict[str, Any]
    vectors: np.ndarray  # float32 [rows, dim], memory-mapped
    entries: list[list[str]]  # index.csv rows


def read_finished(out: Path) -> FinishedFolder:
    """``out`` when it is a finished, consistent san-embed output (see the module doc)."""
    if (out / PROGRESS).exists():
        raise EmbedError(f"{out}: an unfinished san-embed run ({PROGRESS} is there); finish it with san-embed "
                         "--resume and the same arguments")
    if not (out / META).exists():
        raise EmbedError(f"{out}: not san-embed output (no {META}); give the --out folder of a finished san-embed run")
    meta = check_meta(read_json_object(out / META), out / META)
    vectors = load_embeddings(out / EMBEDDINGS, meta["contract"]["embedding_dim"])
    entries = read_index(out / INDEX)
    ok_rows = [int(row) for row, _, status, _ in entries if status == "ok"]
    if ok_rows != list(range(len(vectors))) or len(vectors) != meta["counts"]["ok"]:
        raise EmbedError(f"{out / INDEX}: lists {len(ok_rows)} embedded rows, {out / EMBEDDINGS} holds {len(vectors)} "
                         f"and {out / META} counts {meta['counts']['ok']}; the folder is inconsistent, embed it again")
    return FinishedFolder(meta, vectors, entries)


def check_progress(data: dict[str, Any], out: Path) -> dict[str, Any]:
    """``progress.json`` when its offsets lie inside the partial files it describes."""
    path = out / PROGRESS
    if not isinstance(data.get("plan"), dict):
        raise EmbedError(f"{path}: 'plan' must be an object; the run cannot be resumed, start over with --overwrite")
    chunks, rows, index_bytes = (_count(data, key, path) for key in ("chunks_done", "rows", "index_bytes"))
    try:
        index_size = (out / PARTIAL_INDEX).stat().st_size
        partial_rows = len(np.load(out / PARTIAL_EMBEDDINGS, mmap_mode="r", allow_pickle=False))
    except (OSError, ValueError, EOFError) as exc:
        raise EmbedError(f"{out}: the partial files of the interrupted run are missing or damaged ({exc}); start "
                         "over with --overwrite") from None
    if index_bytes > index_size or rows > partial_rows:
        raise EmbedError(f"{path}: records {rows} rows and {index_bytes} index bytes, but the partial files hold "
                         f"{partial_rows} rows and {index_size} bytes; start over with --overwrite")
    return {"plan": data["plan"], "chunks_done": chunks, "rows": rows, "index_bytes": index_bytes}
