"""Nearest neighbours over a ``san-embed`` output folder: exact NumPy top-k, or a FAISS index.

- ``numpy`` (nothing to install): exact brute force in query chunks, distances from
  :func:`san.evaluation.metrics.euclidean_distance` in float64 (a float32 expansion
  |q|^2 + |g|^2 - 2 q.g puts an image ~1e-3 away from itself); holds a float64 copy;
- FAISS (the ``search`` extra), any index ``faiss.index_factory`` makes: ``flat`` (exact),
  ``ivf`` (inverted lists, ``nprobe`` of them searched), ``hnsw`` (graph, ``efSearch``), or a
  factory string such as ``IVF1024,PQ32``. ``san-search build`` trains it on a sample of at
  least the size FAISS asks per centroid, measures its recall@10 against exact search on
  held-out stored rows and records both in ``search.json``. GPU FAISS is used where installed.

Metrics: ``l2`` (Euclidean, the paper's) reports the distance itself; ``cosine`` reports
1 - cosine similarity (FAISS: inner product over L2-normalised vectors). Within the top k,
equal distances keep the lower row first (numpy).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.base import Backend
from runtime.embed import EMBEDDINGS, INDEX, TIMING, EmbedError, EmbedOptions, embed_batch
from runtime.folder_schema import read_finished, read_json_object
from san.contract.limits import address_space_at_most, faiss_read_allowance
from san.contract.spec import ContractError, InputSpec
from san.evaluation.embedding import l2_normalize
from san.evaluation.metrics import euclidean_distance, smallest_k
from san.evaluation.rerank import RerankParams, Rows, SparseReranker
from san.io.atomic import atomic_write, atomic_write_json
from san.io.error_reason import reason
from san.io.errors import ToolkitError
from san.io.extras import missing_extra
from san.io.hashing import file_sha256
from san.io.preprocess import load_image
from san.io.progress import progress_bar

METRICS = ("l2", "cosine")
SEARCH_META, FAISS_INDEX = "search.json", "faiss.index"
#: ``--index`` names besides a factory string: exact NumPy, and FAISS factory templates.
INDEX_KINDS = {"numpy": "", "flat": "Flat", "ivf": "IVF{nlist},Flat", "hnsw": "HNSW{hnsw_m}"}
#: FAISS's k-means asks for 39..256 training points per centroid (ClusteringParameters).
MIN_POINTS_PER_CENTROID, MAX_POINTS_PER_CENTROID = 39, 256
RECALL_K = 10
#: Rows handed to FAISS's ``add`` at a time (memory-mapped embeddings are read a slice at a time).
ADD_ROWS = 65536

log = logging.getLogger(__name__)


class SearchError(ToolkitError, RuntimeError):
    """A search that cannot run; the message names the file or argument and what to do."""


@dataclass(frozen=True)
class Hits:
    """Top-k result of a batch of queries, nearest first: gallery rows and distances, (nq, k) each."""

    rows: np.ndarray
    distances: np.ndarray


class Searcher(Protocol):
    """What an engine offers: the k nearest stored rows of every query."""

    metric: str

    def search(self, queries: np.ndarray, k: int) -> Hits: ...


def _check_k(k: int, size: int) -> int:
    if k < 1:
        raise SearchError(f"-k must be >= 1, got {k}")
    return min(k, size)


def _check_dim(queries: np.ndarray, dim: int, what: str) -> None:
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise SearchError(f"queries of shape {tuple(queries.shape)} do not fit {what} of {dim}-dimensional "
                          "vectors; query with the model that made the embeddings")


class NumpySearcher:
    """Exact brute-force search in float64, ``chunk`` queries at a time (memory: N x D + chunk x N)."""

    def __init__(self, vectors: np.ndarray, metric: str = "l2", chunk: int = 1024) -> None:
        if metric not in METRICS:
            raise SearchError(f"unknown metric {metric!r}; choose from {METRICS}")
        self.metric, self.chunk = metric, chunk
        self.vectors = l2_normalize(np.asarray(vectors, np.float64)) if metric == "cosine" else np.asarray(vectors, np.float64)

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """All distances (nq, N) under the metric."""
        if self.metric == "cosine":
            return 1.0 - l2_normalize(np.asarray(queries, np.float64)) @ self.vectors.T
        return euclidean_distance(np.asarray(queries, np.float64), self.vectors)

    def search(self, queries: np.ndarray, k: int) -> Hits:
        k = _check_k(k, len(self.vectors))
        _check_dim(queries, self.vectors.shape[1], "embeddings")
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
    except ImportError as exc:
        raise SearchError(f"FAISS indexes: {missing_extra(exc) or exc}; --index numpy needs nothing") from None
    return faiss


@dataclass(frozen=True)
class IndexSpec:
    """What ``san-search build`` makes: ``kind`` (an :data:`INDEX_KINDS` name or a FAISS factory
    string), the metric, and the parameters of the approximate kinds (``nlist``: None = about
    4 sqrt(N), within what the training sample supports)."""

    kind: str = "flat"
    metric: str = "l2"
    nlist: int | None = None
    nprobe: int = 16
    ef_search: int = 64
    hnsw_m: int = 32

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise SearchError(f"--metric {self.metric!r}: choose from {METRICS}")
        for name in ("nprobe", "ef_search", "hnsw_m") + (("nlist",) if self.nlist is not None else ()):
            if getattr(self, name) < 1:
                raise SearchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    def factory(self, rows: int) -> str:
        """The ``index_factory`` string for ``rows`` stored vectors."""
        template = INDEX_KINDS.get(self.kind, self.kind)
        nlist = self.nlist or max(1, min(round(4 * rows**0.5), rows // MIN_POINTS_PER_CENTROID))
        return template.format(nlist=nlist, hnsw_m=self.hnsw_m)


def centroids_to_train(factory: str) -> int:
    """The largest k-means an index of ``factory`` trains: IVF lists, or 256 per PQ/SQ-free codebook."""
    ivf = [int(n) for n in re.findall(r"IVF(\d+)", factory)]
    pq = 2 ** max((int(bits) for bits in re.findall(r"PQ\d+x(\d+)", factory)), default=8) if "PQ" in factory else 0
    return max([*ivf, pq, 0])


def training_rows(factory: str, order: np.ndarray) -> np.ndarray:
    """The rows an index of ``factory`` trains on: the first 256 per centroid of the permutation
    ``order`` (all of it when shorter), sorted; none for an index without k-means."""
    centroids = centroids_to_train(factory)
    return np.sort(order[: min(len(order), MAX_POINTS_PER_CENTROID * centroids)]) if centroids else order[:0]


class FaissSearcher:
    """Search with any FAISS index; distances as the metric reports them."""

    def __init__(self, index: Any, metric: str, nprobe: int | None = None, ef_search: int | None = None) -> None:
        faiss = faiss_module()
        expected = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        if index.metric_type != expected:
            raise SearchError(f"the FAISS index measures {'inner product' if index.metric_type == faiss.METRIC_INNER_PRODUCT else 'L2'}"
                              f", not {metric}; build it again with --metric {metric}")
        self.index, self.metric = index, metric
        self.parameters = set_search_parameters(index, nprobe=nprobe, efSearch=ef_search)

    @classmethod
    def exact(cls, vectors: np.ndarray, metric: str = "l2") -> FaissSearcher:
        """An exact flat index over ``vectors``."""
        return cls(new_index(vectors.shape[1], "Flat", metric, vectors), metric)

    def search(self, queries: np.ndarray, k: int) -> Hits:
        k = _check_k(k, self.index.ntotal)
        _check_dim(queries, self.index.d, "an index")
        q = l2_normalize(np.asarray(queries, np.float32)) if self.metric == "cosine" else np.ascontiguousarray(queries, np.float32)
        scores, rows = self.index.search(q, k)
        dist = 1.0 - scores if self.metric == "cosine" else np.sqrt(np.maximum(scores, 0))  # L2 index: squared
        return Hits(rows.astype(np.int64), dist.astype(np.float32))


def set_search_parameters(index: Any, **values: int | None) -> dict[str, int]:
    """Set those search parameters (``nprobe``, ``efSearch``) that ``index`` has; the ones set."""
    space, applied = faiss_module().ParameterSpace(), {}
    for name, value in values.items():
        if value is None:
            continue
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError:  # this kind of index has no such parameter
            continue
        applied[name] = value
    return applied


def new_index(dim: int, factory: str, metric: str, vectors: np.ndarray | None = None, train: np.ndarray | None = None,
               gpu: bool = False, progress: bool = False) -> Any:
    """An index of ``factory``, trained on ``train`` and filled with ``vectors`` (as the metric wants them);
    ``progress``: a bar or log lines (:mod:`san.io.progress`) over the rows added."""
    faiss = faiss_module()
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2)
    except RuntimeError as exc:
        raise SearchError(f"--index {factory!r}: FAISS cannot make it ({reason(exc)}); give {', '.join(INDEX_KINDS)} "
                          "or a faiss.index_factory string such as IVF1024,PQ32") from None
    work = faiss.index_cpu_to_all_gpus(index) if gpu else index
    prepare = ((lambda x: l2_normalize(np.asarray(x, np.float32))) if metric == "cosine"
               else (lambda x: np.ascontiguousarray(x, np.float32)))
    if train is not None and not work.is_trained:
        if progress:
            log.info(f"training {factory} on {len(train)} rows")
        work.train(prepare(train))
    if vectors is not None:
        with progress_bar(enabled=progress, total=len(vectors), desc="indexing", unit="row") as bar:
            for start in range(0, len(vectors), ADD_ROWS):  # memory-mapped rows, a slice at a time
                work.add(prepare(vectors[start : start + ADD_ROWS]))
                bar.update(min(ADD_ROWS, len(vectors) - start))
    return faiss.index_gpu_to_cpu(work) if gpu else work


def _gpu_usable(factory: str) -> bool:
    """GPU FAISS is installed, sees a GPU, and has this kind of index (no HNSW on the GPU)."""
    faiss = faiss_module()
    return hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0 and "HNSW" not in factory


def make_searcher(vectors: np.ndarray, engine: str = "numpy", metric: str = "l2") -> Searcher:
    """An exact engine by name over ``vectors`` (N x D): ``numpy`` or ``faiss`` (flat)."""
    if engine == "numpy":
        return NumpySearcher(vectors, metric)
    if engine == "faiss":
        return FaissSearcher.exact(vectors, metric)
    raise SearchError(f"unknown engine {engine!r}; choose from {ENGINES}")


ENGINES = ("faiss", "numpy")


def default_engine() -> str:
    """``faiss`` when it is installed, else ``numpy``."""
    try:
        faiss_module()
    except SearchError:
        return "numpy"
    return "faiss"


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
        try:  # it says whether the run is unfinished, the folder another kind, or damaged
            folder = read_finished(root)
            timing = read_json_object(root / TIMING) if (root / TIMING).is_file() else {}
        except EmbedError as exc:
            raise SearchError(str(exc)) from exc
        paths = [path for row, path, status, _ in folder.entries if status == "ok"]
        if len(folder.vectors) == 0:
            raise SearchError(f"{root}: holds no embeddings ({len(folder.entries)} files listed in {INDEX}, none "
                              "embedded); nothing to search")
        return cls(root, folder.vectors, paths, folder.meta, timing)

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

    def searcher(self, engine: str | None = None, metric: str | None = None, nprobe: int | None = None,
                 ef_search: int | None = None) -> Searcher:
        """The index ``san-search build`` saved, or an exact one built in memory.

        ``engine``: ``numpy`` (exact, ignores a saved index) or ``faiss`` (the saved FAISS index,
        else an exact flat one); default: the saved choice, then :func:`default_engine`.
        ``metric`` defaults to the saved one, then ``l2``; asking a saved index for another
        metric is a :class:`SearchError`. ``nprobe``/``ef_search`` override the saved settings.
        """
        saved = self.saved_index()
        engine = engine or (saved or {}).get("engine") or default_engine()
        if saved and metric and metric != saved["metric"] and engine == saved["engine"]:
            raise SearchError(f"{self.root / SEARCH_META}: the index was built for the {saved['metric']} metric; "
                              f"query with --metric {saved['metric']}, or build again with --metric {metric}")
        metric = metric or (saved or {}).get("metric") or "l2"
        if saved and engine == "faiss" == saved["engine"]:
            path = self.root / FAISS_INDEX
            allowance = faiss_read_allowance(path.stat().st_size)
            faiss = faiss_module()
            try:
                with address_space_at_most(allowance):  # FAISS allocates what the file declares, then reads
                    index = faiss.read_index(str(path))
            except MemoryError:
                raise SearchError(f"{path}: asks for more than the {allowance / 2**30:.1f} GiB an index of "
                                  f"{path.stat().st_size} bytes may take to read (declared sizes beyond its "
                                  "content: damaged or forged); build it again with san-search build") from None
            except RuntimeError as exc:  # a truncated, foreign or damaged file
                raise SearchError(f"{path}: FAISS cannot read this index ({reason(exc)}); "
                                  "build it again with san-search build") from None
            if index.d != self.vectors.shape[1] or index.ntotal != len(self.vectors):
                raise SearchError(f"{self.root / FAISS_INDEX}: holds {index.ntotal} vectors of dimension {index.d}, "
                                  f"{EMBEDDINGS} {len(self.vectors)} of {self.vectors.shape[1]}; build it again")
            params = saved.get("search_parameters", {})
            return FaissSearcher(index, metric, nprobe or params.get("nprobe"), ef_search or params.get("efSearch"))
        if nprobe or ef_search:
            raise SearchError(f"--nprobe and --ef-search tune a saved FAISS index, and this search is exact ({engine} "
                              f"over {self.root / EMBEDDINGS}); build one with san-search build --index ivf or hnsw, "
                              "or leave them out")
        return make_searcher(self.vectors, engine, metric)

    def saved_index(self) -> dict[str, Any] | None:
        """``search.json`` when it describes these embeddings; refused once they changed."""
        path = self.root / SEARCH_META
        if not path.is_file():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("embeddings_sha256") != file_sha256(self.root / EMBEDDINGS):
            raise SearchError(f"{path}: was built for other embeddings (they changed since); "
                              "run `san-search build` again")
        return saved


def build_index(folder: EmbeddingFolder, spec: IndexSpec, recall_queries: int = 1000, seed: int = 0,
                progress: bool = False) -> dict[str, Any]:
    """Build the index ``spec`` asks for over ``folder``, measure its recall@10, and write
    ``search.json`` (and ``faiss.index`` for FAISS kinds); returns the record.

    The training sample holds what FAISS asks per centroid (39..256 points, all rows when there
    are fewer than 256 per centroid); recall@10 is measured on ``recall_queries`` stored rows,
    those outside the sample first, against exact search with the same metric (none: not measured).
    """
    started = time.perf_counter()
    vectors, rows = folder.vectors, len(folder.vectors)
    record: dict[str, Any] = {"index": spec.kind, "metric": spec.metric, "rows": rows, "dim": int(vectors.shape[1])}
    if spec.kind == "numpy":
        (folder.root / FAISS_INDEX).unlink(missing_ok=True)
        record.update(engine="numpy", recall_at_10={"value": 1.0, "queries": 0, "note": "exact search"})
    else:
        factory = spec.factory(rows)
        centroids = centroids_to_train(factory)
        if rows < MIN_POINTS_PER_CENTROID * centroids:
            raise SearchError(f"--index {spec.kind}: {factory} trains {centroids} centroids, which needs at least "
                              f"{MIN_POINTS_PER_CENTROID * centroids} rows (FAISS asks {MIN_POINTS_PER_CENTROID} per "
                              f"centroid); {folder.root} holds {rows}: use --index flat, hnsw or a smaller --nlist")
        rng = np.random.default_rng(seed)
        order = rng.permutation(rows)
        train_rows = training_rows(factory, order)
        gpu = _gpu_usable(factory)
        index = new_index(vectors.shape[1], factory, spec.metric, vectors,
                          np.asarray(vectors[train_rows]) if len(train_rows) else None, gpu, progress)
        searcher = FaissSearcher(index, spec.metric, spec.nprobe, spec.ef_search)
        queries = min(recall_queries, rows)  # rows outside the training sample first, then training rows
        probe = np.sort(np.concatenate([order[len(train_rows):], order[: len(train_rows)]])[:queries])
        held_out = min(queries, rows - len(train_rows))
        recall: dict[str, object] = {"value": None, "queries": 0, "note": "recall@10 not measured (0 queries asked)"}
        if queries:
            value = recall_at_k(searcher, FaissSearcher.exact(vectors, spec.metric), np.asarray(vectors[probe]))
            recall = {"value": round(value, 4), "queries": int(queries), "held_out": int(held_out)}
        atomic_write(folder.root / FAISS_INDEX, lambda tmp: faiss_module().write_index(index, str(tmp)))
        record.update(engine="faiss", factory=factory, gpu=gpu, train_rows=int(len(train_rows)),
                      search_parameters=searcher.parameters, recall_at_10=recall)
    record.update(build_seconds=round(time.perf_counter() - started, 3),
                  embeddings_sha256=file_sha256(folder.root / EMBEDDINGS))
    atomic_write_json(folder.root / SEARCH_META, record)
    return record


def recall_at_k(approximate: Searcher, exact: Searcher, queries: np.ndarray, k: int = RECALL_K) -> float:
    """Mean share of each query's exact top ``k`` that ``approximate`` also returns in its top ``k``."""
    found, truth = approximate.search(queries, k).rows, exact.search(queries, k).rows
    return float(np.mean([len(np.intersect1d(f, t)) / truth.shape[1] for f, t in zip(found, truth)]))


class _UnitRows:
    """Rows of ``vectors`` scaled to unit length as they are read (cosine search's space)."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def __len__(self) -> int:
        return len(self.vectors)

    def __getitem__(self, rows: int | slice) -> np.ndarray:
        return l2_normalize(np.asarray(self.vectors[rows], np.float64))


def reranked_search(searcher: Searcher, vectors: np.ndarray, queries: np.ndarray, k: int, candidates: int,
                    params: RerankParams = RerankParams()) -> Hits:
    """The top ``k`` of each query after k-reciprocal re-ranking (sparse form) of its top
    ``candidates`` from ``searcher``, whose neighbour lists come from the same searcher.
    Distances are the re-ranked ones."""
    if candidates < k:
        raise SearchError(f"--candidates {candidates} must be at least -k {k}")
    space: Rows = _UnitRows(vectors) if searcher.metric == "cosine" else vectors
    reranker = SparseReranker(space, lambda x, n: searcher.search(x, n).rows, params)
    shortlist = searcher.search(queries, candidates)
    query_space = l2_normalize(np.asarray(queries, np.float64)) if searcher.metric == "cosine" else np.asarray(queries, np.float64)
    rows, distances = [], []
    for query, found in zip(query_space, shortlist.rows):
        d = reranker.rerank(query, found)
        order = np.argsort(d, kind="stable")[:k]
        rows.append(found[order])
        distances.append(d[order])
    return Hits(np.stack(rows).astype(np.int64), np.stack(distances).astype(np.float32))


def embed_query_images(folder: EmbeddingFolder, backend: Backend, paths: Sequence[str | Path]) -> np.ndarray:
    """Embed query image files exactly as ``folder`` was embedded (same contract and options)."""
    if backend.spec != folder.spec:
        raise ContractError(f"{backend.artifact}: its input contract differs from the one {folder.root} was "
                            f"embedded with ({folder.spec} vs {backend.spec}); query with the same model")
    images = np.stack([load_image(p, backend.spec) for p in paths])
    return embed_batch(backend, folder.options, images)
