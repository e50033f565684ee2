"""Re-ranking benchmark: Euclidean ranking vs k-reciprocal re-ranking of the same embeddings.

A checkpoint's query and gallery are embedded once (the retrieval core, :mod:`san.evaluation.retrieval`)
and scored both ways; the table gives mAP and rank-1 of each, the paired deltas with their 95 %
intervals over queries and McNemar's test of the rank-1 changes (as ``san-parity`` reports
them), and the time each ranking takes, as a ratio::

    python benchmarks/rerank.py --ckpt runs/demo/model.pt     # the data set it was trained on
    python benchmarks/rerank.py --smoke                        # a tiny model and set: it runs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import fmt, load_average, markdown_table, parse_args


def smoke_checkpoint(work: Path) -> Path:
    """A small looks-trained checkpoint that records a small synthetic set."""
    import torch

    from san import ModelConfig, build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18").with_spec(height=64, width=32))
    with torch.no_grad():  # BatchNorm statistics of real inputs, as a trained model has
        model.train()(torch.randint(0, 256, (8, 3, 64, 32), dtype=torch.uint8))
    path = work / "model.pt"
    save_checkpoint(path, model.eval(), extra={"data": {"dataset": "synthetic", "root": str(work / "synth"),
                                                        "options": {"ids": 12, "cameras": 3, "height": 64,
                                                                    "width": 32}}})
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="checkpoint (its recorded data set is used)")
    parser.add_argument("--k1", type=int, default=20)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--lambda", dest="lam", type=float, default=0.3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/san-bench-rerank"), help="for --smoke's files")
    args = parse_args(parser, argv, smoke={"k1": 6, "k2": 3})
    from san.data.registry import dataset_for_checkpoint, load_dataset
    from san.evaluation.evaluate import ModelEmbedder
    from san.evaluation.metrics import paired_map_delta, paired_rank1_delta
    from san.evaluation.rerank import RerankParams
    from san.evaluation.retrieval import embed_split, score
    from san.training.checkpoint import load_checkpoint

    if args.smoke:
        args.work.mkdir(parents=True, exist_ok=True)
        args.ckpt = smoke_checkpoint(args.work)
    if args.ckpt is None:
        parser.error("--ckpt is required (or --smoke)")
    name, root, options = dataset_for_checkpoint(args.ckpt)
    dataset = load_dataset(name, root, verbose=False, **options)
    model, _ = load_checkpoint(args.ckpt)
    print(f"{args.ckpt} on {name}: {len(dataset.query)} queries, {len(dataset.gallery)} gallery images; "
          f"load average {load_average()}")
    run = embed_split(ModelEmbedder(model), dataset)
    params = RerankParams(args.k1, args.k2, args.lam)
    started = time.perf_counter()
    plain = score(run)
    plain_s = time.perf_counter() - started
    started = time.perf_counter()
    reranked = score(run, rerank=params)
    rerank_s = time.perf_counter() - started
    m, r1 = paired_map_delta(plain.per_query, reranked.per_query), paired_rank1_delta(plain.per_query,
                                                                                       reranked.per_query)
    rows = [["Euclidean", fmt(100 * plain.mAP, 2), fmt(100 * plain.rank(1), 2), "", "", fmt(plain_s, 2), "1.00x"],
            [f"k-reciprocal (k1 {params.k1}, k2 {params.k2}, lambda {params.lam:g})", fmt(100 * reranked.mAP, 2),
             fmt(100 * reranked.rank(1), 2), f"{m.delta:+.2f} [{m.low:+.2f}, {m.high:+.2f}]",
             f"{r1.delta.delta:+.2f} [{r1.delta.low:+.2f}, {r1.delta.high:+.2f}]", fmt(rerank_s, 2),
             fmt(rerank_s / plain_s, 1, "x")]]
    print(markdown_table(["ranking", "mAP %", "rank-1 %", "ΔmAP [95 %]", "Δrank-1 [95 %]", "seconds",
                          "time x Euclidean"], rows))
    print(f"rank-1 gained by {r1.gained} queries, lost by {r1.lost} (McNemar p = {r1.p_value:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
