"""Retrieval evaluation of a torch SAN on a re-ID data set's query/gallery (``san-eval``).

The model is wrapped as an :class:`~san.evaluation.embedding.Embedder` and measured by the retrieval
core (:mod:`san.evaluation.retrieval`), as every exported artifact is: images decoded and resized by
:mod:`san.io.preprocess`, embedded in eval mode (deterministic masks), compared by Euclidean
distance (paper IV-A) and scored by :mod:`san.evaluation.metrics` (Market-1501 protocol, or CUHK03
classic single-shot). Unreadable images are skipped with their reason and listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from san.contract.device import Device
from san.contract.spec import InputSpec
from san.data.records import ReidDataset
from san.data.registry import dataset_for_checkpoint, load_dataset
from san.evaluation.embedding import ANY_BATCH
from san.evaluation.rerank import RerankParams
from san.evaluation.retrieval import Retrieval, embed_split, score
from san.io.errors import ToolkitError
from san.io.extras import missing_extra
from san.io.preprocess import printable_path
from san.training.checkpoint import load_checkpoint

REPORTED_RANKS = (1, 5, 10, 20)


def torch_device_name(device: Device | str, local_rank: int = 0) -> str:
    """``--device`` for torch: ``auto`` is this process's CUDA GPU when there is one, else the
    CPU; OpenVINO's ``gpu`` and ``npu`` are refused in one line (``ValueError``)."""
    parsed = device if isinstance(device, Device) else Device.parse(device)
    if parsed.kind in ("gpu", "npu"):
        raise ValueError(f"--device {device} is OpenVINO's; a PyTorch model runs on cpu, cuda[:N] or auto")
    return str(parsed.resolved(lambda: f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"))


class ModelEmbedder:
    """A torch model (a SAN, or a wrapper with its ``spec``) as an embedder: eval mode on its
    own device, uint8 batches in, float32 embeddings out; the model's mode is restored. The
    runtime's torch backend runs checkpoints through it too."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.device = next(model.parameters()).device

    @property
    def spec(self) -> InputSpec:
        return cast(InputSpec, self.model.spec)

    def batch_limits(self) -> tuple[int, int]:
        return ANY_BATCH

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        try:
            images = torch.from_numpy(batch).to(self.device, non_blocking=True)
            return self.model(images).float().cpu().numpy()
        finally:
            self.model.train(was_training)


@dataclass
class EvalReport:
    """Retrieval quality of one model on one data set."""

    dataset: str
    protocol: str
    tta: str
    retrieval: Retrieval
    num_query: int
    num_gallery: int
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def mAP(self) -> float:
        return self.retrieval.mAP

    @property
    def cmc(self) -> np.ndarray:
        return np.asarray(self.retrieval.cmc)

    @property
    def valid_queries(self) -> int:
        return self.retrieval.valid_queries

    @property
    def ranks(self) -> dict[int, float]:
        """CMC at the reported ranks (those within the curve)."""
        return self.retrieval.ranks(REPORTED_RANKS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the CMC curve included), in percent as :meth:`render` prints it;
        the key names say so."""
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "tta": self.tta,
            **self.retrieval.to_dict(REPORTED_RANKS),
            "num_query": self.num_query,
            "num_gallery": self.num_gallery,
            "valid_queries": self.retrieval.valid_queries,
            "skipped_queries": self.retrieval.skipped_queries,
            "unreadable": [{"path": p, "reason": r} for p, r in self.failures],
        }

    def render(self) -> str:
        """A few lines for humans."""
        ranks = "  ".join(f"rank-{k} {100 * v:5.1f}%" for k, v in self.ranks.items())
        lines = [
            f"{self.dataset} ({self.protocol}, tta={self.tta}): {self.num_query} queries "
            f"({self.retrieval.valid_queries} with a true match, {self.retrieval.skipped_queries} skipped), "
            f"{self.num_gallery} gallery images",
            f"  mAP {100 * self.mAP:5.1f}%  {ranks}",
        ]
        if self.failures:
            lines.append(f"  {len(self.failures)} unreadable images skipped:")
            lines += [f"    {printable_path(path)}: {reason}" for path, reason in self.failures]
        return "\n".join(lines)


def evaluate_model(
    model: nn.Module,
    dataset: ReidDataset,
    tta: str = "none",
    batch_size: int = 128,
    workers: int | None = None,
    max_rank: int = 50,
    chunk: int = 1024,
    progress: bool = False,
    seed: int = 0,
    rerank: RerankParams | None = None,
) -> EvalReport:
    """Embed query and gallery of ``dataset`` with ``model`` and score the ranking under the data
    set's protocol (:attr:`ReidDataset.single_shot`; Market-1501's computes distances ``chunk``
    queries at a time, so a 20k x 20k evaluation fits in memory).
    """
    run = embed_split(ModelEmbedder(model), dataset, tta=tta, batch_size=batch_size, workers=workers,
                      progress=progress)
    retrieval = score(run, max_rank=max_rank, seed=seed, chunk=chunk, rerank=rerank)
    protocol = dataset.protocol
    if rerank is not None:
        protocol += f", k-reciprocal re-ranking (k1 {rerank.k1}, k2 {rerank.k2}, lambda {rerank.lam:g})"
    return EvalReport(dataset.name, protocol, tta, retrieval,
                      len(run.query.records), len(run.gallery.records), run.failures)


def save_cmc_png(report: EvalReport, path: str | Path) -> None:
    """Plot the CMC curve to ``path`` (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ToolkitError(f"writing {path}: {missing_extra(exc) or exc}") from exc
    ranks = np.arange(1, len(report.cmc) + 1)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(ranks, 100 * report.cmc, marker=".")
    ax.set(xlabel="rank", ylabel="matching rate (%)", ylim=(0, 100),
           title=f"{report.dataset}: CMC (mAP {100 * report.mAP:.1f}%)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)



def evaluate_checkpoint(
    ckpt: str | Path,
    dataset: str | None = None,
    root: str | Path | None = None,
    options: dict[str, Any] | None = None,
    tta: str = "none",
    batch_size: int = 128,
    workers: int | None = None,
    device: Device | str = "auto",
    chunk: int = 1024,
    verbose: bool = True,
    rerank: RerankParams | None = None,
) -> EvalReport:
    """Evaluate a checkpoint on a data set's query/gallery (chosen by
    :func:`san.data.registry.dataset_for_checkpoint`)."""
    device = torch_device_name(device)
    name, root, options = dataset_for_checkpoint(ckpt, dataset, root, options)
    data = load_dataset(name, root, verbose=verbose, **options)
    model, _ = load_checkpoint(ckpt, map_location=device)
    return evaluate_model(model, data, tta, batch_size, workers,
                          chunk=chunk, progress=verbose, rerank=rerank)
