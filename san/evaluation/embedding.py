"""The embedding kernel every consumer shares (torch-free): the embedder interface, batching within
an embedder's limits, test-time views and their averaging, and L2 normalisation.

Evaluation (:mod:`san.evaluation.retrieval`), every runtime backend, ``san-embed``, ``san-search`` and
parity embed through these functions, so a flip, a mean over views or a unit-length row means
the same everywhere.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from san.contract.spec import InputSpec

#: Batch limits of an embedder that takes any batch size.
ANY_BATCH = (1, 2**31 - 1)
#: Test-time augmentation: ``flip`` averages an image with its mirror; ``tencrop`` averages the
#: standard ten crops (:func:`san.data.augment.eval_views`, from the decoded image).
TTA_MODES = ("none", "flip", "tencrop")


class Embedder(Protocol):
    """Anything that embeds uint8 RGB NCHW batches at its contract's size: runtime backends,
    a torch model (:class:`san.torch_embedder.TorchEmbedder`), an instrumented session."""

    @property
    def spec(self) -> InputSpec: ...

    def batch_limits(self) -> tuple[int, int]: ...

    def infer(self, batch: np.ndarray) -> np.ndarray: ...


def mirrored(images: np.ndarray) -> np.ndarray:
    """``images`` (... x H x W, channels first) flipped left to right."""
    return images[..., ::-1]


def flip_views(images: np.ndarray) -> np.ndarray:
    """N x 3 x H x W images -> N x 2 x 3 x H x W: each image and its mirror (flip TTA)."""
    return np.stack([images, mirrored(images)], axis=1)


def embed_views(embedder: Embedder, views: np.ndarray, batch_size: int) -> np.ndarray:
    """Embeddings of N images given as uint8 N x V x 3 x H x W views: the mean over each
    image's V views, ``batch_size`` views per call within the embedder's batch limits."""
    n, v = views.shape[:2]
    low, high = embedder.batch_limits()
    per_call = max(1, max(low, min(batch_size, high)) // v)
    parts = []
    for start in range(0, n, per_call):
        chunk = views[start : start + per_call]
        flat = np.ascontiguousarray(chunk.reshape(-1, *views.shape[2:]))
        parts.append(embedder.infer(flat).reshape(len(chunk), v, -1).mean(axis=1, dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.spec.embedding_dim), np.float32)


def l2_normalize(rows: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length along the last axis (a zero row stays zero; NaN stays NaN)."""
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.linalg.norm(rows, axis=-1, keepdims=True)
        return rows / np.maximum(norms, rows.dtype.type(1e-12) if rows.dtype.kind == "f" else 1e-12)


def embed_images(embedder: Embedder, images: np.ndarray, batch_size: int, tta: str = "none",
                 normalize: bool = False) -> np.ndarray:
    """float32 embeddings of decoded uint8 N x 3 x H x W images: with ``tta="flip"`` the mean of
    each image and its mirror, unit length with ``normalize``."""
    if tta not in ("none", "flip"):
        raise ValueError(f"tta {tta!r}: decoded images take none or flip (tencrop needs the original image)")
    views = flip_views(images) if tta == "flip" else images[:, None]
    embeddings = embed_views(embedder, views, batch_size * views.shape[1])
    return (l2_normalize(embeddings) if normalize else embeddings).astype(np.float32, copy=False)
