"""Data-set name -> loader. Add a loader by adding one entry to ``DATASETS``."""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from san.artifact import read_checkpoint_header
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


def parse_dataset_args(pairs: list[str]) -> dict[str, Any]:
    """``["variant=detected", "split=3"]`` -> ``{"variant": "detected", "split": 3}``."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--dataset-arg expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text
    return options


def dataset_for_checkpoint(ckpt: str | Path, name: str | None = None, root: str | Path | None = None,
                           options: dict[str, Any] | None = None) -> tuple[str, Path, dict[str, Any]]:
    """(name, root, loader options) of the data set to measure a checkpoint on: as given, and
    what is missing from the checkpoint's training record; ``synthetic`` without a recorded
    root lives in ``<checkpoint folder>/synthetic`` (generated when absent)."""
    ckpt = Path(ckpt)
    trained_on = read_checkpoint_header(ckpt).get("extra", {}).get("data", {})
    name = name or trained_on.get("dataset")
    if name is None:
        raise ValueError(f"{ckpt} does not record the data set it was trained on; give --dataset")
    if root is None:
        if name == trained_on.get("dataset") and trained_on.get("root"):
            root, options = trained_on["root"], options if options is not None else trained_on.get("options", {})
        elif name == "synthetic":
            root = ckpt.parent / "synthetic"
        else:
            raise ValueError(f"--root is required for data set {name!r} ({ckpt} does not record one)")
    return name, Path(root), dict(options or {})
