"""Embedding and retrieval evaluation of a torch SAN on a re-ID data set's query/gallery.

Images are decoded and resized by :mod:`san.preprocess` (via
:class:`~san.data.torch_dataset.ReidImageDataset`), embedded in eval mode (deterministic
masks), compared by Euclidean distance (paper IV-A) in query chunks, and scored with
:mod:`san.metrics` (Market-1501 protocol, or CUHK03 classic single-shot). Unreadable
images are skipped with their reason and listed in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from san.checkpoint import load_checkpoint
from san.data.records import ImageRecord, ReidDataset
from san.data.registry import load_dataset
from san.data.torch_dataset import ReidImageDataset
from san.metrics import RetrievalResult, cuhk03_single_shot, euclidean_distance, evaluate_embeddings
from san.model.network import SAN
from san.preprocess import printable_path
from san.progress import progress_bar

REPORTED_RANKS = (1, 5, 10, 20)


@dataclass
class Embedded:
    """Embeddings of the readable records, and (path, reason) of the others."""

    features: np.ndarray  # (num_ok, D) float32
    records: list[ImageRecord]  # the num_ok records, in order
    failures: list[tuple[str, str]] = field(default_factory=list)


@torch.inference_mode()
def embed_records(
    model: SAN,
    records: list[ImageRecord] | tuple[ImageRecord, ...],
    tta: str = "none",
    batch_size: int = 128,
    workers: int = 2,
    progress: bool = False,
    desc: str = "embedding",
) -> Embedded:
    """Embed ``records`` with ``model`` (on its own device) in eval mode.

    With test-time augmentation the embeddings of an image's views are averaged.
    The model's train/eval mode is restored afterwards.
    """
    device = next(model.parameters()).device
    dataset = ReidImageDataset(records, model.spec, tta=tta)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda"
    )
    was_training = model.training
    model.eval()
    features, kept, failures = [], [], []
    try:
        for images, indices, errors in progress_bar(loader, enabled=progress, desc=desc, leave=False):
            ok = torch.tensor([not e for e in errors])
            failures += [(dataset.records[int(i)].path, e) for i, e in zip(indices, errors) if e]
            if not ok.any():
                continue
            images = images[ok].to(device, non_blocking=True)  # B x V x 3 x H x W
            b, v = images.shape[:2]
            emb = model(images.flatten(0, 1)).float().view(b, v, -1).mean(1)  # B x D
            features.append(emb.cpu().numpy())
            kept += [dataset.records[int(i)] for i in indices[ok]]
    finally:
        model.train(was_training)
    dim = model.spec.embedding_dim
    return Embedded(np.concatenate(features) if features else np.zeros((0, dim), np.float32), kept, failures)


@dataclass
class EvalReport:
    """Retrieval quality of one model on one data set."""

    dataset: str
    protocol: str
    tta: str
    cmc: np.ndarray
    mAP: float
    num_query: int
    num_gallery: int
    valid_queries: int
    skipped_queries: int
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ranks(self) -> dict[int, float]:
        """CMC at the reported ranks (those within the curve)."""
        return {k: float(self.cmc[k - 1]) for k in REPORTED_RANKS if k <= len(self.cmc)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the CMC curve included)."""
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "tta": self.tta,
            "mAP": self.mAP,
            **{f"rank{k}": v for k, v in self.ranks.items()},
            "cmc": [float(c) for c in self.cmc],
            "num_query": self.num_query,
            "num_gallery": self.num_gallery,
            "valid_queries": self.valid_queries,
            "skipped_queries": self.skipped_queries,
            "unreadable": [{"path": p, "reason": r} for p, r in self.failures],
        }

    def format(self) -> str:
        """A few lines for humans."""
        ranks = "  ".join(f"rank-{k} {100 * v:5.1f}%" for k, v in self.ranks.items())
        lines = [
            f"{self.dataset} ({self.protocol}, tta={self.tta}): {self.num_query} queries "
            f"({self.valid_queries} with a true match, {self.skipped_queries} skipped), "
            f"{self.num_gallery} gallery images",
            f"  mAP {100 * self.mAP:5.1f}%  {ranks}",
        ]
        if self.failures:
            lines.append(f"  {len(self.failures)} unreadable images skipped:")
            lines += [f"    {printable_path(path)}: {reason}" for path, reason in self.failures]
        return "\n".join(lines)


def evaluate_model(
    model: SAN,
    dataset: ReidDataset,
    tta: str = "none",
    single_shot: bool = False,
    batch_size: int = 128,
    workers: int = 2,
    max_rank: int = 50,
    chunk: int = 1024,
    progress: bool = False,
    seed: int = 0,
) -> EvalReport:
    """Embed query and gallery of ``dataset`` and score the ranking.

    ``single_shot``: CUHK03 classic protocol (one gallery image per id, from the other
    camera, averaged over 20 seeded draws); otherwise the Market-1501 protocol with
    distances computed ``chunk`` queries at a time, so a 20k x 20k evaluation fits in memory.
    """
    query = embed_records(model, dataset.query, tta, batch_size, workers, progress, "query")
    gallery = embed_records(model, dataset.gallery, tta, batch_size, workers, progress, "gallery")
    if not len(query.records) or not len(gallery.records):
        raise ValueError(f"{dataset.name}: no readable query or gallery image to evaluate")
    q_pids, q_cams = (np.array([getattr(r, a) for r in query.records]) for a in ("pid", "camid"))
    g_pids, g_cams = (np.array([getattr(r, a) for r in gallery.records]) for a in ("pid", "camid"))
    result: RetrievalResult
    if single_shot:
        dist = euclidean_distance(query.features, gallery.features)
        result = cuhk03_single_shot(dist, q_pids, g_pids, q_cams, g_cams, repeats=20, seed=seed, max_rank=max_rank)
    else:
        result = evaluate_embeddings(
            query.features, gallery.features, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank, chunk=chunk
        )
    return EvalReport(
        dataset.name,
        "cuhk03 single-shot x20" if single_shot else "market1501",
        tta,
        result.cmc,
        float(result.mAP),
        len(query.records),
        len(gallery.records),
        result.num_valid_queries,
        result.num_skipped_queries,
        query.failures + gallery.failures,
    )


def save_cmc_png(report: EvalReport, path: str | Path) -> None:
    """Plot the CMC curve to ``path`` (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(
            f"writing {path} needs matplotlib, which is not installed: pip install matplotlib "
            "(or pip install -e '.[search]')"
        ) from exc
    ranks = np.arange(1, len(report.cmc) + 1)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(ranks, 100 * report.cmc, marker=".")
    ax.set(xlabel="rank", ylabel="matching rate (%)", ylim=(0, 100),
           title=f"{report.dataset}: CMC (mAP {100 * report.mAP:.1f}%)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)



def is_single_shot(dataset: str, options: dict[str, Any]) -> bool:
    """CUHK03 under its classic protocol is scored single-shot (paper IV-A)."""
    return dataset == "cuhk03" and options.get("protocol", "classic") == "classic"


def evaluate_checkpoint(
    ckpt: str | Path,
    dataset: str | None = None,
    root: str | Path | None = None,
    options: dict[str, Any] | None = None,
    tta: str = "none",
    batch_size: int = 128,
    workers: int = 2,
    device: str = "auto",
    chunk: int = 1024,
    verbose: bool = True,
) -> EvalReport:
    """Evaluate a checkpoint on a data set's query/gallery.

    ``dataset`` defaults to the one the checkpoint was trained on; ``root`` (and the loader
    ``options``, e.g. the synthetic set's parameters) then default to the recorded ones.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, meta = load_checkpoint(ckpt, map_location=device)
    trained_on = meta.extra.get("data", {})
    name = dataset or trained_on.get("dataset")
    if name is None:
        raise ValueError(f"{ckpt} does not record the data set it was trained on; give --dataset")
    if root is None:
        if name != trained_on.get("dataset") or not trained_on.get("root"):
            raise ValueError(f"--root is required for data set {name!r} (not recorded in {ckpt})")
        root, options = trained_on["root"], options if options is not None else trained_on.get("options", {})
    options = options or {}
    data = load_dataset(name, root, verbose=verbose, **options)
    return evaluate_model(
        model, data, tta, is_single_shot(name, options), batch_size, workers, chunk=chunk, progress=verbose
    )
