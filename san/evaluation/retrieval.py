"""The retrieval core: embed a split through any embedder, score it, compare two runs.

``san-eval``, ``san-parity``, ``san-calibrate``'s INT8 report and export verification all
go through here, so each measures the same way:

- :func:`embed_records` decodes images (threads; :func:`san.io.preprocess.decode_image`, the
  one decoder) into their test-time views (:func:`san.data.augment.eval_views`), embeds
  them through an :class:`san.evaluation.embedding.Embedder` (a runtime backend, a torch model, an
  instrumented session) and averages the views (:func:`san.evaluation.embedding.embed_views`);
  unreadable images are left out with their reason;
- :func:`score` ranks a query/gallery split by Euclidean distance (paper IV-A) and keeps
  CMC, mAP and each query's scores (Market-1501 protocol, or CUHK03 classic single-shot);
- :func:`compare` measures how a second run differs from a reference: deltas with their
  95 % intervals over queries, McNemar's test of rank-1 changes, paired cosines, top-10
  overlap, rank-1 flips, under the names :class:`san.contract.rules.Rule` judges;
- :class:`MaskFlips` counts hard-mask elements that differ between two runs, per block.

Torch-free: NumPy, PIL and :mod:`san.evaluation.metrics`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from san.contract.spec import InputSpec
from san.data.augment import eval_views
from san.data.records import ImageRecord, ReidDataset
from san.evaluation.embedding import Embedder, embed_views
from san.evaluation.metrics import (
    PairedDelta,
    QueryScores,
    Rank1Change,
    cuhk03_single_shot,
    euclidean_distance,
    euclidean_distance_chunks,
    evaluate_embeddings,
    evaluate_ranking,
    paired_cosine,
    paired_map_delta,
    paired_rank1_delta,
    smallest_k,
)
from san.evaluation.rerank import RerankParams, k_reciprocal_distances
from san.io.preprocess import ImageDecodeError, decode_image
from san.io.progress import progress_bar

#: CMC ranks that reports show (JSON reports keep the whole curve).
SHOWN_RANKS = (1, 5, 10)
#: Gallery entries per query whose overlap :func:`compare` measures.
TOP_K = 10


def default_workers() -> int:
    """Decode workers when none are asked for: half the CPUs this process may use (the model
    needs the rest), 1..8. The one default of every command's ``--workers``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cpus // 2))


@dataclass
class Embedded:
    """Embeddings of the readable records, and (path, reason) of the others."""

    features: np.ndarray  # (num_ok, D) float32
    records: list[ImageRecord]  # the num_ok records, in order
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def _decoded_chunks(records: Sequence[ImageRecord], spec: InputSpec, tta: str, chunk: int, workers: int
                    ) -> Iterator[list[np.ndarray | str]]:
    """Per chunk of ``records``, each one's views or the reason it cannot be read; with
    ``workers`` threads the next chunk decodes while the caller embeds this one (0: each chunk
    decodes in the calling thread, when it is asked for)."""
    def load(record: ImageRecord) -> np.ndarray | str:
        try:
            return eval_views(decode_image(record.path), spec, tta)
        except ImageDecodeError as exc:
            return exc.reason

    starts = range(0, len(records), chunk)
    if workers == 0:
        yield from ([load(r) for r in records[start : start + chunk]] for start in starts)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = None
        for start in starts:
            future = pool.map(load, records[start : start + chunk])
            if pending is not None:
                yield list(pending)
            pending = future
        if pending is not None:
            yield list(pending)


def embed_records(
    embedder: Embedder,
    records: Sequence[ImageRecord],
    *,
    tta: str = "none",
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
    desc: str = "embedding",
) -> Embedded:
    """Decode and embed ``records`` through ``embedder``, averaging the ``tta`` views."""
    started = time.perf_counter()
    features, kept, failures = [], [], []
    bar = progress_bar(enabled=progress, total=len(records), desc=desc, unit="img", leave=False)
    offset = 0
    for loaded in _decoded_chunks(records, embedder.spec, tta, batch_size,
                                  default_workers() if workers is None else workers):
        chunk = records[offset : offset + len(loaded)]
        offset += len(loaded)
        good = [(r, x) for r, x in zip(chunk, loaded) if not isinstance(x, str)]
        failures += [(r.path, x) for r, x in zip(chunk, loaded) if isinstance(x, str)]
        if good:
            features.append(embed_views(embedder, np.stack([x for _, x in good]), batch_size))
            kept += [r for r, _ in good]
        bar.update(len(loaded))
    bar.close()
    dim = embedder.spec.embedding_dim
    return Embedded(np.concatenate(features) if features else np.zeros((0, dim), np.float32), kept, failures,
                    time.perf_counter() - started)


@dataclass
class SplitEmbeddings:
    """Query and gallery embeddings of one run, with the labels of the kept images."""

    dataset: str
    query: Embedded
    gallery: Embedded
    single_shot: bool = False  # the data set's scoring protocol (ReidDataset.single_shot)

    @property
    def labels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(query pids, gallery pids, query cameras, gallery cameras)."""
        q, g = self.query.records, self.gallery.records
        return (np.array([r.pid for r in q]), np.array([r.pid for r in g]),
                np.array([r.camid for r in q]), np.array([r.camid for r in g]))

    @property
    def failures(self) -> list[tuple[str, str]]:
        return self.query.failures + self.gallery.failures

    @property
    def seconds(self) -> float:
        return self.query.seconds + self.gallery.seconds


def embed_split(embedder: Embedder, dataset: ReidDataset, *, tta: str = "none", batch_size: int = 64,
                workers: int | None = None, progress: bool = False) -> SplitEmbeddings:
    """Embed ``dataset``'s query and gallery; raises ``ValueError`` when either has no readable image."""
    query = embed_records(embedder, dataset.query, tta=tta, batch_size=batch_size, workers=workers,
                          progress=progress, desc="query")
    gallery = embed_records(embedder, dataset.gallery, tta=tta, batch_size=batch_size, workers=workers,
                            progress=progress, desc="gallery")
    if not query.records or not gallery.records:
        raise ValueError(f"{dataset.name}: no readable query or gallery image")
    return SplitEmbeddings(dataset.name, query, gallery, dataset.single_shot)


@dataclass(frozen=True)
class Retrieval:
    """mAP and CMC curve (fractions, 0..1) of one run, with each valid query's scores."""

    mAP: float
    cmc: tuple[float, ...]
    valid_queries: int
    skipped_queries: int
    per_query: QueryScores | None = field(default=None, compare=False, repr=False)

    def rank(self, k: int) -> float:
        return self.cmc[k - 1]

    def ranks(self, ks: Sequence[int] = SHOWN_RANKS) -> dict[int, float]:
        """CMC at the ranks ``ks`` that lie within the curve."""
        return {k: self.cmc[k - 1] for k in ks if k <= len(self.cmc)}

    def to_dict(self, ks: Sequence[int] = SHOWN_RANKS) -> dict[str, object]:
        """mAP, CMC at ``ks`` and the whole curve, in percent as every report prints them (the keys say so)."""
        return {"mAP_percent": 100 * self.mAP, **{f"rank{k}_percent": 100 * v for k, v in self.ranks(ks).items()},
                "cmc_percent": [100 * float(v) for v in self.cmc]}


def score(run: SplitEmbeddings, *, max_rank: int = 50, seed: int = 0, chunk: int = 1024,
          rerank: RerankParams | None = None) -> Retrieval:
    """CMC/mAP of ``run`` by Euclidean distance under its data set's protocol: Market-1501's,
    ``chunk`` queries at a time, or CUHK03 classic single-shot (20 gallery draws seeded by
    ``seed``). ``rerank`` ranks by k-reciprocal re-ranked distances instead (:mod:`san.evaluation.rerank`, dense)."""
    q, g, single_shot = run.query.features, run.gallery.features, run.single_shot
    if rerank is None and not single_shot:
        result = evaluate_embeddings(q, g, *run.labels, max_rank=max_rank, chunk=chunk)
    else:
        dist = euclidean_distance(q, g)
        if rerank is not None:
            dist = k_reciprocal_distances(dist, euclidean_distance(q, q), euclidean_distance(g, g), rerank)
        result = (cuhk03_single_shot(dist, *run.labels, repeats=20, seed=seed, max_rank=max_rank) if single_shot
                  else evaluate_ranking(dist, *run.labels, max_rank=max_rank))
    return Retrieval(float(result.mAP), tuple(float(c) for c in result.cmc), result.num_valid_queries,
                     result.num_skipped_queries, result.per_query)


@dataclass(frozen=True)
class Comparison:
    """How one run's embeddings and ranking differ from a reference run's.

    ``map_change``: the mAP delta with its 95 % interval over queries
    (:func:`san.evaluation.metrics.paired_map_delta`); ``rank1_change``: the rank-1 delta with its
    interval, the queries that gained and lost rank 1, and McNemar's test that they are
    rounding noise (:func:`san.evaluation.metrics.paired_rank1_delta`).
    """

    delta_rank: dict[int, float]  # k -> points
    cosine_min: float
    cosine_mean: float
    top10_overlap: float
    rank1_flips: int
    queries: int
    map_change: PairedDelta
    rank1_change: Rank1Change

    @property
    def delta_map(self) -> float:
        """mAP minus the reference's, in points."""
        return self.map_change.delta

    @property
    def flip_fraction(self) -> float:
        return self.rank1_flips / self.queries if self.queries else 0.0

    def measured(self) -> dict[str, float]:
        """The measurements a :class:`san.contract.rules.Rule` judges, by its field names."""
        return {"max_delta_map": abs(self.delta_map), "max_delta_rank1": abs(self.delta_rank[1]),
                "min_cosine_min": self.cosine_min, "min_cosine_mean": self.cosine_mean,
                "min_top10_overlap": self.top10_overlap, "max_rank1_flips": self.flip_fraction}


def nearest(query: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Rows of each query's ``k`` nearest gallery entries (Euclidean; ties by row)."""
    k = min(k, len(gallery))
    return np.concatenate([smallest_k(dist, k)[0] for _, dist in euclidean_distance_chunks(query, gallery, chunk)])


def compare(reference: SplitEmbeddings, ref_retrieval: Retrieval, other: SplitEmbeddings,
            retrieval: Retrieval) -> Comparison:
    """Deltas, paired cosine, top-10 overlap and rank-1 flips of ``other`` against ``reference``
    (the same images: both embedded from the same records)."""
    rq, rg, q, g = reference.query.features, reference.gallery.features, other.query.features, other.gallery.features
    if rq.shape[0] != q.shape[0] or rg.shape[0] != g.shape[0]:
        raise ValueError("the two runs kept different images; compare runs over the same readable records")
    cos = paired_cosine(np.concatenate([rq, rg]), np.concatenate([q, g]))
    top_ref, top = nearest(rq, rg, TOP_K), nearest(q, g, TOP_K)
    shared = (top_ref[:, :, None] == top[:, None, :]).any(axis=2).sum(axis=1)
    return Comparison(
        delta_rank={k: 100 * (retrieval.rank(k) - ref_retrieval.rank(k)) for k in SHOWN_RANKS},
        cosine_min=float(cos.min()), cosine_mean=float(cos.mean()),
        top10_overlap=float(shared.mean() / top.shape[1]), rank1_flips=int((top_ref[:, 0] != top[:, 0]).sum()),
        queries=len(rq), map_change=paired_map_delta(ref_retrieval.per_query, retrieval.per_query),
        rank1_change=paired_rank1_delta(ref_retrieval.per_query, retrieval.per_query),
    )


class MaskFlips:
    """Hard-mask elements that differ between two runs of the same images, per block."""

    def __init__(self, stages: Sequence[int]) -> None:
        self.counts = {stage: [0, 0] for stage in stages}  # stage -> [flipped, total]

    def add(self, stage: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Count one batch of block ``stage``'s masks; returns where they differ."""
        flipped = a != b
        self.counts[stage][0] += int(flipped.sum())
        self.counts[stage][1] += flipped.size
        return flipped

    def rates(self) -> dict[int, float]:
        """Stage -> fraction of mask elements that flipped (0 when none were counted)."""
        return {stage: f / n if n else 0.0 for stage, (f, n) in self.counts.items()}


def sort_flips(flipped: np.ndarray, reference_pi: np.ndarray, threshold: float, margin: float | None,
               upstream: np.ndarray) -> tuple[int, int, np.ndarray]:
    """Sort one block's mask flips (N x C x H x W, blocks taken in graph order) by their cause:
    (propagated, unexplained, the images flipped so far). A flip whose reference pi lies within
    ``margin`` of ``threshold`` is rounding and counted in neither (``margin`` None: every flip is
    counted); of the others, one in an image that flipped in an earlier block (``upstream``,
    N x 1 x 1 x 1) is *propagated*, any other *unexplained*."""
    far = flipped if margin is None else flipped & (np.abs(reference_pi - threshold) >= margin)
    return (int((far & upstream).sum()), int((far & ~upstream).sum()),
            upstream | flipped.any(axis=(1, 2, 3), keepdims=True))
