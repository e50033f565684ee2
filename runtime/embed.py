"""Embedding an image folder: resumable, shardable, byte-identical across runs.

Output folder::

    embeddings.npy  float32 rows x D, one row per image that embedded (status ok)
    index.csv       row,path,status,error for every discovered file, in discovery order;
                    row is the embeddings row, -1 for a file that failed
    meta.json       deterministic: contract, model sha256, backend, options, file-list
                    digest, shard, counts (two runs of the same folder give the same bytes)
    timing.json     what varies between runs: wall time, img/s, workers, paths, host

The work follows a fixed plan: the sorted file list is cut into chunks of ``chunk_size``
files, each chunk into batches of ``batch_size`` readable images. Every chunk is committed
(embedding rows and index lines written and fsynced, then ``progress.json`` replaced atomically), so
an interrupted run resumes at the first uncommitted chunk and computes exactly the batches
an uninterrupted run would. ``--shard i/n`` takes a contiguous range of whole chunks,
so merged shards also repeat the unsharded batches. ``meta.json`` appears last: a folder
with ``meta.json`` and no ``progress.json`` is complete.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from runtime.base import Backend
from runtime.folder_schema import (
    EMBEDDINGS,
    INDEX,
    META,
    PARTIAL_EMBEDDINGS,
    PARTIAL_INDEX,
    PROGRESS,
    TIMING,
    EmbedError,
    check_progress,
    read_finished,
    read_index,
    read_json_object,
)
from san.contract.spec import InputSpec
from san.evaluation.embedding import TTA_MODES as EVALUATION_TTA_MODES
from san.evaluation.embedding import embed_images
from san.evaluation.retrieval import default_workers
from san.io.atomic import atomic_path, atomic_write, atomic_write_json, remove_stale_temporaries, writing
from san.io.discovery import discover_images, list_digest
from san.io.failpoints import failpoint
from san.io.output_lock import exclusive_output
from san.io.preprocess import ImageDecodeError, load_image
from san.io.progress import progress_bar

FORMAT, VERSION = "san-embeddings", 1
OUTPUT_FILES = (EMBEDDINGS, INDEX, META, TIMING, PROGRESS, PARTIAL_EMBEDDINGS, PARTIAL_INDEX)
INDEX_HEADER = ("row", "path", "status", "error")
NON_FINITE = "non-finite embedding (NaN or Inf) from the backend; not written"
#: Folder embedding decodes each image at the contract size, so it takes none or flip (tencrop
#: needs the original image; san-eval has it).
TTA_MODES = EVALUATION_TTA_MODES[:2]
TASK_SIZE = 8  # files per decode task: amortises IPC, keeps the prefetch window fine-grained

#: What became of one file: its embedding row, or None and the reason it failed.
FileResult = tuple[np.ndarray | None, str]
#: What became of one file before embedding: its decoded image, or None and the reason.
Decoded = tuple[np.ndarray | None, str]


@dataclass(frozen=True)
class EmbedOptions:
    """Everything besides the model and the files that decides the output bytes."""

    batch_size: int = 32
    chunk_size: int = 1024
    tta: str = "none"
    l2_normalize: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.chunk_size < 1:
            raise ValueError(f"batch_size and chunk_size must be >= 1, got {self.batch_size}, {self.chunk_size}")
        if self.tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {TTA_MODES}, got {self.tta!r}")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based, as in ``--shard 2/4``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard must be i/n with 1 <= i <= n, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``"i/n"``."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like i/n (e.g. 2/4), got {text!r}") from None
        return cls(index, count)

    def chunk_range(self, chunks: int) -> range:
        """The contiguous chunks of ``chunks`` that belong to this shard."""
        return range((self.index - 1) * chunks // self.count, self.index * chunks // self.count)


@dataclass
class EmbedResult:
    """What a run (or a merge) produced."""

    out: Path
    images: int
    ok: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    processed: int = 0
    seconds: float = 0.0
    finished_before: bool = False  # --resume of a finished run: nothing was embedded or written

    @property
    def images_per_second(self) -> float:
        """Throughput of this invocation (images processed / wall seconds)."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Progress:
    """What ``progress.json`` records after each committed chunk: the run's plan, the chunks
    and embedding rows written, and the valid length of the index file."""

    plan: dict[str, Any]
    chunks_done: int
    rows: int
    index_bytes: int

    def after_chunk(self, rows: int, index_bytes: int) -> Progress:
        return replace(self, chunks_done=self.chunks_done + 1, rows=self.rows + rows, index_bytes=index_bytes)

    @classmethod
    def read(cls, out: Path) -> Progress:
        """``out``'s ``progress.json``, checked against the partial files it points into."""
        return cls(**check_progress(read_json_object(out / PROGRESS), out))

    def write(self, path: Path) -> None:
        atomic_write_json(path, asdict(self))


class Runner(Protocol):
    """Where decoding and embedding happen; the driver only commits what comes back."""

    @property
    def name(self) -> str:
        """Recorded in the plan: runners batch differently, so resuming must keep the runner."""
        ...

    def results(self, root: Path, paths: list[str], spans: list[tuple[int, int]], backend: Backend,
                options: EmbedOptions) -> Generator[FileResult, None, None]:
        """One :data:`FileResult` per file of ``spans`` (``[start, end)`` ranges of ``paths``), in order."""
        ...

    def describe(self) -> dict[str, Any]:
        """How the work was spread (for ``timing.json``)."""
        ...


@dataclass(frozen=True)
class LocalRunner:
    """This process embeds; ``workers`` processes decode ahead of it (0 = decode inline).

    Batches are cut per chunk from its readable images, so the bytes do not depend on the
    workers, on sharding or on where a run was resumed.
    """

    workers: int = field(default_factory=default_workers)
    name: str = "local"

    def results(self, root: Path, paths: list[str], spans: list[tuple[int, int]], backend: Backend,
                options: EmbedOptions) -> Generator[FileResult, None, None]:
        decoded = _decode_stream(root, paths[spans[0][0] : spans[-1][1]] if spans else [], backend.spec,
                                 self.workers)
        try:
            for start, end in spans:
                yield from embed_decoded(backend, options, [next(decoded) for _ in range(end - start)])
        finally:
            decoded.close()

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name, "workers": self.workers}


def embed_folder(
    images: str | Path,
    backend: Backend,
    out: str | Path,
    options: EmbedOptions = EmbedOptions(),
    *,
    shard: Shard | None = None,
    runner: Runner | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> EmbedResult:
    """Embed every image under ``images`` into the folder ``out`` (see the module doc).

    ``backend`` is activated if needed (it supplies the contract and the plan); the caller
    deactivates it. ``runner`` decodes and embeds (default: :class:`LocalRunner`). ``resume``
    continues an interrupted run with the same plan (starts afresh when there is nothing to
    resume); ``overwrite`` discards earlier output. Unreadable files and non-finite
    embeddings are listed in ``index.csv`` and in ``EmbedResult.failures``; they never stop
    the run. The folder is held by this run while it writes (:func:`san.io.output_lock.exclusive_output`):
    a second run on it is refused.
    """
    with exclusive_output(out):
        return _embed_folder(Path(images), backend, Path(out), options, shard, runner or LocalRunner(), resume,
                             overwrite, progress)


def _embed_folder(root: Path, backend: Backend, out: Path, options: EmbedOptions, shard: Shard | None, runner: Runner,
                  resume: bool, overwrite: bool, progress: bool) -> EmbedResult:
    started = time.time()
    backend.activate()
    paths = discover_images(root)
    plan = _plan(root, paths, backend, options, shard, runner.name)
    spans = _chunk_spans(len(paths), options.chunk_size, shard)
    first, stop = (spans[0][0], spans[-1][1]) if spans else (0, 0)
    state = _prepare_output(out, plan, stop - first, backend.spec.embedding_dim, resume, overwrite)
    if state is None:  # already complete with this plan
        return replace(_result(out, seconds=time.time() - started), finished_before=True)
    todo = spans[state.chunks_done :]
    done_before = todo[0][0] - first if todo else stop - first
    with progress_bar(enabled=progress, total=stop - first, initial=done_before, desc="embedding", unit="img",
                      dynamic_ncols=True) as bar:
        results = runner.results(root, paths, todo, backend, options)
        try:
            state = _commit_chunks(paths, todo, results, out, state, bar)
        finally:
            results.close()
    seconds, processed = time.time() - started, stop - first - done_before
    _finalize(out, plan, state, {
        "images": str(root.resolve()), "model": str(backend.artifact.resolve()), "host": socket.gethostname(),
        **runner.describe(), "processed": processed, "seconds": round(seconds, 3),
        "images_per_second": round(processed / seconds, 2) if seconds > 0 else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return _result(out, processed=processed, seconds=seconds)


def _commit_chunks(paths: list[str], todo: list[tuple[int, int]], results: Iterator[FileResult], out: Path,
                   state: Progress, bar: tqdm) -> Progress:
    """Commit the chunks ``todo`` one by one from the runner's ``results``; the final progress state."""
    first_row, dim = _npy_layout(out / PARTIAL_EMBEDDINGS)
    with open(out / PARTIAL_EMBEDDINGS, "r+b") as embeddings, open(out / PARTIAL_INDEX, "r+b") as index:
        index.truncate(state.index_bytes)  # drop lines of a chunk that was never committed
        index.seek(state.index_bytes)
        for start, end in todo:
            chunk = [next(results) for _ in range(end - start)]
            rows, lines = _chunk_output(paths[start:end], chunk, state.rows, dim)
            with writing(out / PARTIAL_EMBEDDINGS):  # plain writes: a full disk is ENOSPC, not a memory map's SIGBUS
                embeddings.seek(first_row + state.rows * dim * 4)
                embeddings.write(np.ascontiguousarray(rows, "<f4").tobytes())
                embeddings.flush()
                os.fsync(embeddings.fileno())
            with writing(out / PARTIAL_INDEX):
                index.write(_encode(lines))
                index.flush()
                os.fsync(index.fileno())
            state = state.after_chunk(len(rows), index.tell())
            state.write(out / PROGRESS)  # the commit point of this chunk
            failpoint("embed.chunk_committed")
            bar.update(end - start)
    return state


def _npy_layout(path: Path) -> tuple[int, int]:
    """The byte offset of row 0 of a float32 [N, D] ``.npy`` file, and D."""
    array = np.load(path, mmap_mode="r")
    return array.offset, array.shape[1]


def _write_npy(path: Path, parts: Sequence[np.ndarray], dim: int) -> None:
    """A float32 [rows, ``dim``] ``.npy`` holding ``parts`` one after another, with plain writes
    (a full disk is then ENOSPC, where a memory map would die of SIGBUS)."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (sum(len(p) for p in parts), dim)}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for part in parts:
            np.ascontiguousarray(part, "<f4").tofile(fh)


def merge_shards(parts: Sequence[str | Path], out: str | Path, *, overwrite: bool = False) -> EmbedResult:
    """Merge the outputs of ``--shard 1/n`` .. ``n/n`` into what an unsharded run writes (holding
    ``out`` while it writes, as :func:`embed_folder` does)."""
    with exclusive_output(out):
        return _merge_shards(parts, Path(out), overwrite)


def _merge_shards(parts: Sequence[str | Path], out: Path, overwrite: bool) -> EmbedResult:
    started = time.time()
    folders = [read_finished(Path(p)) for p in parts]  # each shard checked whole before anything is written
    metas = [f.meta for f in folders]
    common = [{k: v for k, v in m.items() if k not in ("shard", "counts")} for m in metas]
    if any(c != common[0] for c in common[1:]):
        raise EmbedError(f"shard outputs {list(map(str, parts))} were made with different plans "
                         "(files, model, backend or options differ); embed all shards with the same command")
    unsharded = [str(p) for m, p in zip(metas, parts) if not m["shard"]]
    if unsharded:
        raise EmbedError(f"{', '.join(unsharded)}: not a shard's output (embedded without --shard); merge takes "
                         "the outputs of --shard 1/n .. n/n")
    shards = sorted(((m["shard"]["index"], Path(p), f) for m, p, f in zip(metas, parts, folders)),
                    key=lambda shard: shard[0])
    count = metas[0]["shard"]["count"]
    got = [f"{i}/{n}" for i, n in sorted((m["shard"]["index"], m["shard"]["count"]) for m in metas)]
    if [i for i, _, _ in shards] != list(range(1, count + 1)) or any(m["shard"]["count"] != count for m in metas):
        raise EmbedError(f"merge needs each of the shards 1/n .. n/n of one run once, got {', '.join(got)}")
    _clear_output(out, overwrite)
    dim = common[0]["contract"]["embedding_dim"]
    sources = [folder.vectors for _, _, folder in shards]
    with atomic_path(out / EMBEDDINGS) as tmp:
        _write_npy(tmp, sources, dim)
    buffer, offset = io.StringIO(), 0
    writer = _index_writer(buffer)
    writer.writerow(INDEX_HEADER)
    for _, _, folder in shards:
        for row, path, status, error in folder.entries:
            writer.writerow((int(row) + offset if status == "ok" else -1, path, status, error))
        offset += len(folder.vectors)
    _write_bytes(out / INDEX, _encode(buffer.getvalue()))
    counts = {k: sum(m["counts"][k] for m in metas) for k in metas[0]["counts"]}
    atomic_write_json(out / META, {**common[0], "shard": None, "counts": counts})
    atomic_write_json(out / TIMING, {"merged_from": [str(p.resolve()) for _, p, _ in shards],
                                     "seconds": round(time.time() - started, 3)})
    return _result(out, seconds=time.time() - started)


# -- plan and output folder ------------------------------------------------------------
def _plan(root: Path, paths: list[str], backend: Backend, options: EmbedOptions, shard: Shard | None,
          runner: str) -> dict[str, Any]:
    """What decides the output bytes; a resumed run must match it exactly."""
    spans = _chunk_spans(len(paths), options.chunk_size, shard)
    return {
        "runner": runner,
        "format": FORMAT,
        "version": VERSION,
        "contract": backend.spec.to_dict(),
        "model_sha256": backend.sha256,
        "backend": backend.describe(),
        "options": asdict(options),
        "files": {"count": len(paths), "sha256": list_digest(root, paths)},
        "shard": None if shard is None else {
            "index": shard.index, "count": shard.count,
            "files": [spans[0][0], spans[-1][1]] if spans else [0, 0],
        },
    }


def _chunk_spans(n_files: int, chunk_size: int, shard: Shard | None) -> list[tuple[int, int]]:
    """[start, end) file ranges of the chunks this run processes, in order."""
    chunks = -(-n_files // chunk_size)
    indices = shard.chunk_range(chunks) if shard else range(chunks)
    return [(c * chunk_size, min((c + 1) * chunk_size, n_files)) for c in indices]


def _prepare_output(out: Path, plan: dict[str, Any], n_files: int, dim: int, resume: bool,
                    overwrite: bool) -> Progress | None:
    """Create or reopen the output folder; the progress state, or None when already complete."""
    if resume and (out / PROGRESS).exists():
        state = Progress.read(out)
        _check_same_plan(out / PROGRESS, state.plan, plan)
        return state
    if resume and (out / META).exists():
        _check_same_plan(out / META, {k: v for k, v in read_complete_meta(out).items() if k != "counts"}, plan)
        _drop_leftovers(out)  # of a run killed while it cleaned up
        return None
    _clear_output(out, overwrite or resume)  # resuming with nothing committed: start afresh
    with atomic_path(out / PARTIAL_EMBEDDINGS) as tmp:
        np.lib.format.open_memmap(tmp, mode="w+", dtype="<f4", shape=(n_files, dim)).flush()
    header = io.StringIO()
    _index_writer(header).writerow(INDEX_HEADER)
    _write_bytes(out / PARTIAL_INDEX, _encode(header.getvalue()))
    state = Progress(plan, chunks_done=0, rows=0, index_bytes=len(_encode(header.getvalue())))
    state.write(out / PROGRESS)
    return state


def _check_same_plan(where: Path, saved: dict[str, Any], plan: dict[str, Any]) -> None:
    differ = sorted(k for k in set(saved) | set(plan) if saved.get(k) != plan.get(k))
    if differ:
        raise EmbedError(
            f"{where}: refused to resume: this run's {', '.join(differ)} differ from the interrupted run's "
            "(the image files, model, backend, options or shard changed); rerun with the original arguments, "
            "or pass --overwrite to start over"
        )


def _clear_output(out: Path, overwrite: bool) -> None:
    present = [name for name in OUTPUT_FILES if (out / name).exists()]
    if present and not overwrite:
        hint = "--resume to continue it or " if PROGRESS in present else ""
        raise EmbedError(f"{out}: already holds embedding output ({', '.join(present)}); pass {hint}--overwrite "
                         "to replace it, or choose another --out")
    for name in present:
        (out / name).unlink()


def _finalize(out: Path, plan: dict[str, Any], state: Progress, timing: dict[str, Any]) -> None:
    """Write the final files from the committed partial ones, then drop the partial files."""
    partial = np.load(out / PARTIAL_EMBEDDINGS, mmap_mode="r")
    with atomic_path(out / EMBEDDINGS) as tmp:
        _write_npy(tmp, [partial[: state.rows]], partial.shape[1])
    del partial
    with open(out / PARTIAL_INDEX, "rb") as fh:
        _write_bytes(out / INDEX, fh.read(state.index_bytes))
    entries = read_index(out / INDEX)
    counts = {"images": len(entries), "ok": state.rows, "failed": sum(e[2] != "ok" for e in entries)}
    atomic_write_json(out / META, {**plan, "counts": counts})
    atomic_write_json(out / TIMING, timing)
    _drop_leftovers(out)


def _drop_leftovers(out: Path) -> None:
    """Remove what a finished run no longer needs: progress.json first (the run is then complete),
    the partial files, and temporaries of atomic writes that a kill interrupted."""
    for name in (PROGRESS, PARTIAL_EMBEDDINGS, PARTIAL_INDEX):
        (out / name).unlink(missing_ok=True)
    for name in OUTPUT_FILES:
        remove_stale_temporaries(out / name)


def read_complete_meta(out: Path) -> dict[str, Any]:
    """``meta.json`` of a finished, consistent run (:func:`runtime.folder_schema.read_finished`); an
    unfinished, foreign or damaged folder is an :class:`EmbedError` that says which it is."""
    return read_finished(out).meta


def _result(out: Path, processed: int = 0, seconds: float = 0.0) -> EmbedResult:
    folder = read_finished(out)
    failures = [(path, error) for _, path, status, error in folder.entries if status != "ok"]
    return EmbedResult(out, folder.meta["counts"]["images"], folder.meta["counts"]["ok"], failures, processed, seconds)


def _decode_stream(
    root: Path, paths: list[str], spec: InputSpec, workers: int
) -> Generator[Decoded, None, None]:
    """(uint8 image or None, error) per path, in order; decoded by ``workers`` processes ahead of use."""
    tasks = [paths[i : i + TASK_SIZE] for i in range(0, len(paths), TASK_SIZE)]
    if workers <= 0:
        for task in tasks:
            yield from load_task(str(root), task, spec)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),))
    pending: deque[Future] = deque()
    try:
        remaining: Iterator[list[str]] = iter(tasks)
        for task in remaining:  # bounded prefetch: a few tasks per worker in flight
            pending.append(pool.submit(load_task, str(root), task, spec))
            if len(pending) >= 4 * workers:
                break
        while pending:
            done = pending.popleft().result()
            following = next(remaining, None)
            if following is not None:
                pending.append(pool.submit(load_task, str(root), following, spec))
            yield from done
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _exit_with(parent: int) -> None:
    """Worker initializer: exit when ``parent`` is gone (killed runs must not leave workers behind)."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, owned by another user after PID reuse: keep going
                pass

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def load_task(root: str, paths: Sequence[str], spec: InputSpec) -> list[Decoded]:
    """Decode + resize ``paths`` (worker side); a failure becomes its reason, with the path made relative."""
    results: list[Decoded] = []
    for rel in paths:
        full = os.path.join(root, rel)
        try:
            results.append((load_image(full, spec), ""))
        except ImageDecodeError as exc:
            results.append((None, exc.reason.replace(full, rel)))
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop the run
            results.append((None, f"unexpected {type(exc).__name__}: {exc}".replace(full, rel)))
    return results


def embed_decoded(backend: Backend, options: EmbedOptions, decoded: Sequence[Decoded]) -> list[FileResult]:
    """Embed the readable images of ``decoded`` in batches of ``options.batch_size``, in order."""
    ok = [(i, image) for i, (image, _) in enumerate(decoded) if image is not None]
    results: list[FileResult] = [(None, error) for _, error in decoded]
    for b in range(0, len(ok), options.batch_size):
        batch = [i for i, _ in ok[b : b + options.batch_size]]
        rows = embed_batch(backend, options, np.stack([image for _, image in ok[b : b + options.batch_size]]))
        for i, row in zip(batch, rows):
            results[i] = (row, "")
    return results


def _chunk_output(paths: list[str], results: list[FileResult], first_row: int, dim: int) -> tuple[np.ndarray, str]:
    """One chunk's finite rows and its index.csv lines; a non-finite row fails its file."""
    rows, buffer, row = [], io.StringIO(), first_row
    writer = _index_writer(buffer)
    for path, (embedding, error) in zip(paths, results, strict=True):
        if embedding is not None and not np.isfinite(embedding).all():
            embedding, error = None, NON_FINITE
        if embedding is None:
            writer.writerow((-1, path, "error", error))
        else:
            rows.append(embedding)
            writer.writerow((row, path, "ok", ""))
            row += 1
    return (np.stack(rows).astype(np.float32, copy=False) if rows else np.empty((0, dim), np.float32)), buffer.getvalue()


def embed_batch(backend: Backend, options: EmbedOptions, images: np.ndarray) -> np.ndarray:
    """Embeddings of decoded images with the options' test-time augmentation and normalisation."""
    return embed_images(backend, images, options.batch_size, options.tta, options.l2_normalize)


# -- small file helpers -----------------------------------------------------------------
def _index_writer(fh: Any) -> Any:
    return csv.writer(fh, lineterminator="\n")


def _encode(text: str) -> bytes:
    """UTF-8; file names that are not valid UTF-8 keep their original bytes."""
    return text.encode("utf-8", "surrogateescape")


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


