"""Retrieval computed directly, as an independent truth for the commands that score a split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime import open_backend
from san.data.registry import load_dataset
from san.evaluation.metrics import evaluate_embeddings
from san.io.preprocess import load_image


def independent(artifact: Path, synth: Path, **options: object) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(query, gallery embeddings, mAP, rank-1) of ``artifact`` on the synthetic set at ``synth``:
    decode, one backend call per split, san.evaluation.metrics."""
    data = load_dataset("synthetic", synth, verbose=False)
    with open_backend(artifact, threads=1, **options) as backend:
        q, g = (backend.infer(np.stack([load_image(r.path, backend.spec) for r in split]))
                for split in (data.query, data.gallery))
    labels = [np.array([getattr(r, a) for r in s]) for a in ("pid", "camid") for s in (data.query, data.gallery)]
    result = evaluate_embeddings(q, g, *labels)
    return q, g, result.mAP, float(result.cmc[0])
