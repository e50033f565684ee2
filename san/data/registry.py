"""Data-set name -> loader. Add a loader by adding one entry to ``DATASETS``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from san.data.cuhk03 import cuhk03
from san.data.folder import folder
from san.data.layout import report
from san.data.market import dukemtmcreid, market1501
from san.data.msmt17 import msmt17
from san.data.records import ReidDataset
from san.data.synth import MANIFEST, ensure_synthetic


def synthetic(root: str | Path, verbose: bool = True, **params: Any) -> ReidDataset:
    """The synthetic set at ``root``, generated first if absent or made with other ``params``
    (keywords of :class:`san.data.synth.SynthParams`; none: reuse whatever set is there)."""
    if params or not (Path(root) / MANIFEST).is_file():
        ensure_synthetic(Path(root), **params)
    return report(replace(market1501(root, verbose=False), name="synthetic"), verbose)


DATASETS: dict[str, Callable[..., ReidDataset]] = {
    "market1501": market1501,
    "dukemtmcreid": dukemtmcreid,
    "cuhk03": cuhk03,  # variant="labeled"|"detected", protocol="classic"|"new", split=0
    "msmt17": msmt17,
    "folder": folder,
    "synthetic": synthetic,  # SynthParams keywords; generated under root when needed
}


def load_dataset(name: str, root: str | Path, **kwargs: Any) -> ReidDataset:
    """Load data set ``name`` from ``root``; ``kwargs`` go to its loader (e.g. ``verbose``)."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}") from None
    return loader(root, **kwargs)
