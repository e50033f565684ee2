"""Search benchmark: exact NumPy against FAISS flat, IVF and HNSW on clustered synthetic vectors.

Each index is built the way ``san-search build`` builds it (:class:`runtime.search.IndexSpec`,
the same training sample rule) over N L2-normalised 128-d vectors drawn around ``--clusters``
centres, as re-ID embeddings of many people cluster by identity. Fresh queries come from the
same centres. Per index: build time, query latency (ms per query, batches of ``--batch``),
recall@10 against exact NumPy search, and both as ratios to NumPy::

    python benchmarks/search.py                 # 1M vectors (about 25 min on 2 cores)
    python benchmarks/search.py --smoke         # 20k vectors: it runs
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import fmt, load_average, markdown_table, parse_args


def unit_centres(clusters: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``clusters`` random unit vectors."""
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def around(centres: np.ndarray, n: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors, each a random centre plus Gaussian noise of ``spread`` per dimension."""
    out = np.empty((n, centres.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        x = centres[rng.integers(0, len(centres), stop - start)] + rng.normal(0, spread, (stop - start, centres.shape[1]))
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def timed_search(searcher: object, queries: np.ndarray, k: int, batch: int) -> tuple[np.ndarray, float]:
    """Rows of the top ``k`` of every query, and the mean milliseconds per query over batches of ``batch``."""
    rows, started = [], time.perf_counter()
    for start in range(0, len(queries), batch):
        rows.append(searcher.search(queries[start : start + batch], k).rows)  # type: ignore[attr-defined]
    return np.concatenate(rows), 1000 * (time.perf_counter() - started) / len(queries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=10_000, help="identities the vectors cluster around")
    parser.add_argument("--spread", type=float, default=0.06, help="per-dimension spread around a centre")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100, help="queries per search call")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[32, 128])
    args = parse_args(parser, argv, smoke={"rows": 20_000, "clusters": 500, "queries": 200, "nlist": 64,
                                           "nprobe": [4], "ef_search": [32]})
    from runtime.search import RECALL_K, FaissSearcher, IndexSpec, NumpySearcher, new_index, training_rows

    rng = np.random.default_rng(0)
    centres = unit_centres(args.clusters, args.dim, rng)
    gallery, queries = around(centres, args.rows, args.spread, rng), around(centres, args.queries, args.spread, rng)
    print(f"{args.rows} x {args.dim} vectors around {args.clusters} centres, {args.queries} queries in batches of "
          f"{args.batch}, metric l2 on unit vectors; load average {load_average()}")

    started = time.perf_counter()
    exact = NumpySearcher(gallery, "l2", chunk=32)
    exact_build = time.perf_counter() - started
    truth, exact_ms = timed_search(exact, queries, RECALL_K, args.batch)
    del exact
    rows = [["numpy (exact)", fmt(exact_build, 1), "1.00x", fmt(exact_ms, 2), "1.00x", "1.0000"]]

    def add(name: str, factory: str, spec: IndexSpec) -> None:
        sample = training_rows(factory, rng.permutation(len(gallery)))
        train = gallery[sample] if len(sample) else None
        tic = time.perf_counter()
        index = new_index(args.dim, factory, "l2", gallery, train)
        build = time.perf_counter() - tic
        for label, nprobe, ef in settings(spec):
            found, ms = timed_search(FaissSearcher(index, "l2", nprobe, ef), queries, RECALL_K, args.batch)
            recall = np.mean([len(np.intersect1d(f, t)) / RECALL_K for f, t in zip(found, truth)])
            rows.append([f"{name}{label}", fmt(build, 1), fmt(build / exact_build, 1, "x"), fmt(ms, 3),
                         fmt(exact_ms / ms, 1, "x"), f"{recall:.4f}"])
            print(f"  {rows[-1][0]}: build {build:.1f} s, {ms:.3f} ms/query, recall@10 {recall:.4f}", flush=True)

    def settings(spec: IndexSpec) -> list[tuple[str, int | None, int | None]]:
        if spec.kind == "ivf":
            return [(f" nprobe {n}", n, None) for n in args.nprobe]
        if spec.kind == "hnsw":
            return [(f" efSearch {e}", None, e) for e in args.ef_search]
        return [("", None, None)]

    add("faiss flat", "Flat", IndexSpec("flat"))
    ivf = IndexSpec("ivf", nlist=args.nlist)
    add(f"faiss {ivf.factory(args.rows)}", ivf.factory(args.rows), ivf)
    hnsw = IndexSpec("hnsw")
    add(f"faiss {hnsw.factory(args.rows)}", hnsw.factory(args.rows), hnsw)
    print(markdown_table(["index", "build s", "build x numpy", "ms / query", "speed-up x numpy", "recall@10"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
