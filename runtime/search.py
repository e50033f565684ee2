"""Nearest neighbours over a ``san-embed`` output folder: exact NumPy top-k, or FAISS.

Two engines behind one call, :meth:`Searcher.search` (queries -> :class:`Hits`):

- ``numpy`` (default, nothing to install): exact brute force in query chunks, distances
  from :func:`san.metrics.euclidean_distance` in float64 (a float32 expansion
  |q|^2 + |g|^2 - 2 q.g puts an image ~1e-3 away from itself); holds a float64 copy;
- ``faiss`` (``pip install faiss-cpu``, the ``search`` extra): ``IndexFlatL2`` /
  ``IndexFlatIP``, also exact, faster on large galleries; ``san-search build`` saves it.

Metrics: ``l2`` (Euclidean, the paper's) reports the distance itself; ``cosine`` reports
1 - cosine similarity. Within the top k, equal distances keep the lower row first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.base import Backend
from runtime.embed import EMBEDDINGS, INDEX, TIMING, EmbedOptions, embed_batch, read_complete_meta, read_index
from san.atomic import atomic_write, atomic_write_text
from san.hashing import file_sha256
from san.metrics import euclidean_distance, smallest_k
from san.preprocess import load_image
from san.spec import ContractError, InputSpec

METRICS = ("l2", "cosine")
SEARCH_META, FAISS_INDEX = "search.json", "faiss.index"


class SearchError(RuntimeError):
    """A search that cannot run; the message names the file or argument and what to do."""


@dataclass(frozen=True)
class Hits:
    """Top-k result of a batch of queries, nearest first: gallery rows and distances, (nq, k) each."""

    rows: np.ndarray
    distances: np.ndarray


class Searcher(Protocol):
    """What an engine offers: the k nearest stored rows of every query."""

    def search(self, queries: np.ndarray, k: int) -> Hits: ...


def _unit(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as ``dtype``."""
    x = np.asarray(x, dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), dtype(1e-12))


def _check_k(k: int, size: int) -> int:
    if k < 1:
        raise SearchError(f"-k must be >= 1, got {k}")
    return min(k, size)


class NumpySearcher:
    """Exact brute-force search in float64, ``chunk`` queries at a time (memory: N x D + chunk x N)."""

    def __init__(self, vectors: np.ndarray, metric: str = "l2", chunk: int = 1024) -> None:
        if metric not in METRICS:
            raise SearchError(f"unknown metric {metric!r}; choose from {METRICS}")
        self.metric, self.chunk = metric, chunk
        self.vectors = _unit(vectors, np.float64) if metric == "cosine" else np.asarray(vectors, np.float64)

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """All distances (nq, N) under the metric."""
        if self.metric == "cosine":
            return 1.0 - _unit(queries, np.float64) @ self.vectors.T
        return euclidean_distance(np.asarray(queries, np.float64), self.vectors)

    def search(self, queries: np.ndarray, k: int) -> Hits:
        k = _check_k(k, len(self.vectors))
        rows, dists = [], []
        for start in range(0, len(queries), self.chunk):
            found, values = smallest_k(self.distances(queries[start : start + self.chunk]), k)
            rows.append(found)
            dists.append(values)
        return Hits(np.concatenate(rows).astype(np.int64), np.concatenate(dists).astype(np.float32))


def faiss_module() -> Any:
    """The ``faiss`` module, or a :class:`SearchError` saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise SearchError(
            "the faiss engine needs faiss-cpu, which is not installed: pip install faiss-cpu "
            "(or pip install -e '.[search]'); the default numpy engine needs nothing"
        ) from None
    return faiss


class FaissSearcher:
    """Exact FAISS search: ``IndexFlatL2`` (l2) or ``IndexFlatIP`` over unit vectors (cosine)."""

    def __init__(self, vectors: np.ndarray | None = None, metric: str = "l2", index: Any = None) -> None:
        if metric not in METRICS:
            raise SearchError(f"unknown metric {metric!r}; choose from {METRICS}")
        faiss = faiss_module()
        self.metric = metric
        if index is None:
            data = _unit(vectors) if metric == "cosine" else np.ascontiguousarray(vectors, np.float32)
            index = (faiss.IndexFlatIP if metric == "cosine" else faiss.IndexFlatL2)(data.shape[1])
            index.add(data)
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> Hits:
        k = _check_k(k, self.index.ntotal)
        q = _unit(queries) if self.metric == "cosine" else np.ascontiguousarray(queries, np.float32)
        scores, rows = self.index.search(q, k)
        dist = 1.0 - scores if self.metric == "cosine" else np.sqrt(np.maximum(scores, 0))  # L2 index: squared
        return Hits(rows.astype(np.int64), dist.astype(np.float32))


ENGINES = {"numpy": NumpySearcher, "faiss": FaissSearcher}


def default_engine() -> str:
    """``faiss`` when it is installed, else ``numpy``."""
    try:
        faiss_module()
    except SearchError:
        return "numpy"
    return "faiss"


def make_searcher(vectors: np.ndarray, engine: str = "numpy", metric: str = "l2") -> Searcher:
    """An engine by name over ``vectors`` (N x D)."""
    if engine not in ENGINES:
        raise SearchError(f"unknown engine {engine!r}; choose from {sorted(ENGINES)}")
    return ENGINES[engine](vectors, metric)


# -- embedding folders ------------------------------------------------------------------------
@dataclass
class EmbeddingFolder:
    """A finished ``san-embed`` output: vectors (memory-mapped), one relative path per row, its meta."""

    root: Path
    vectors: np.ndarray
    paths: list[str]
    meta: dict[str, Any]
    timing: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path) -> EmbeddingFolder:
        """Read ``embeddings.npy``, ``index.csv`` and ``meta.json`` of ``root``."""
        root = Path(root)
        if not root.is_dir():
            raise SearchError(f"{root}: embeddings folder not found (the --out folder of san-embed)")
        try:
            meta = read_complete_meta(root)
            vectors = np.load(root / EMBEDDINGS, mmap_mode="r")
            entries = read_index(root / INDEX)
        except (OSError, ValueError, RuntimeError) as exc:
            raise SearchError(f"{root}: not a finished san-embed output: {exc}") from exc
        paths = [path for row, path, status, _ in entries if status == "ok"]
        if len(paths) != len(vectors) or [int(e[0]) for e in entries if e[2] == "ok"] != list(range(len(paths))):
            raise SearchError(f"{root / INDEX}: lists {len(paths)} embedded rows, {root / EMBEDDINGS} holds "
                              f"{len(vectors)}; the folder is inconsistent, embed it again")
        timing_file = root / TIMING
        timing = json.loads(timing_file.read_text(encoding="utf-8")) if timing_file.is_file() else {}
        return cls(root, vectors, paths, meta, timing)

    @property
    def spec(self) -> InputSpec:
        """The input contract of the model that made the embeddings."""
        return InputSpec.from_dict(self.meta["contract"])

    @property
    def options(self) -> EmbedOptions:
        """The options the embeddings were made with (queries must use the same)."""
        return EmbedOptions(**self.meta["options"])

    def image_root(self, override: str | Path | None = None) -> Path:
        """Folder the relative paths start from: ``override``, else the one san-embed recorded."""
        if override is not None:
            return Path(override)
        if "images" not in self.timing:
            raise SearchError(f"{self.root / TIMING} does not record the image folder (merged shards?); "
                              "give it with --image-root")
        return Path(self.timing["images"])

    def searcher(self, engine: str | None = None, metric: str | None = None) -> Searcher:
        """The saved index when ``san-search build`` wrote one that fits; else one built in memory.

        ``engine``/``metric`` default to the saved choice, then to :func:`default_engine` / ``l2``.
        """
        saved = self._saved()
        engine = engine or (saved or {}).get("engine") or default_engine()
        metric = metric or (saved or {}).get("metric") or "l2"
        if saved and engine == "faiss" == saved["engine"] and metric == saved["metric"]:
            return FaissSearcher(metric=metric, index=faiss_module().read_index(str(self.root / FAISS_INDEX)))
        return make_searcher(self.vectors, engine, metric)

    def _saved(self) -> dict[str, Any] | None:
        path = self.root / SEARCH_META
        if not path.is_file():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("embeddings_sha256") != file_sha256(self.root / EMBEDDINGS):
            raise SearchError(f"{path}: was built for other embeddings (they changed since); "
                              "run `san-search build` again")
        return saved


def build_index(folder: EmbeddingFolder, engine: str | None = None, metric: str = "l2") -> dict[str, Any]:
    """Write ``search.json`` (engine, metric, embeddings sha256) and, for faiss, ``faiss.index``."""
    engine = engine or default_engine()
    searcher = make_searcher(folder.vectors, engine, metric)
    if isinstance(searcher, FaissSearcher):
        atomic_write(folder.root / FAISS_INDEX, lambda tmp: faiss_module().write_index(searcher.index, str(tmp)))
    else:
        (folder.root / FAISS_INDEX).unlink(missing_ok=True)
    record = {"engine": engine, "metric": metric, "rows": len(folder.vectors),
              "embeddings_sha256": file_sha256(folder.root / EMBEDDINGS)}
    atomic_write_text(folder.root / SEARCH_META, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def embed_arrays(backend: Backend, images: np.ndarray, options: EmbedOptions = EmbedOptions()) -> np.ndarray:
    """Embed decoded images (uint8 N x 3 x H x W) in batches, with ``options``' TTA and normalisation."""
    low, high = backend.batch_limits()
    size = max(low, min(options.batch_size, high))
    parts = [embed_batch(backend, options, images[i : i + size]) for i in range(0, len(images), size)]
    return np.concatenate(parts) if parts else np.zeros((0, backend.spec.embedding_dim), np.float32)


def embed_query_images(folder: EmbeddingFolder, backend: Backend, paths: Sequence[str | Path]) -> np.ndarray:
    """Embed query image files exactly as ``folder`` was embedded (same contract and options)."""
    if backend.spec != folder.spec:
        raise ContractError(f"{backend.artifact}: its input contract differs from the one {folder.root} was "
                            f"embedded with ({folder.spec} vs {backend.spec}); query with the same model")
    images = np.stack([load_image(p, backend.spec) for p in paths])
    return embed_arrays(backend, images, folder.options)
