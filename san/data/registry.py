"""Data-set name -> loader. Add a loader by adding one entry to ``DATASETS``."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from san.contract.artifact import read_checkpoint_header
from san.data.cuhk03 import cuhk03
from san.data.folder import folder
from san.data.layout import report
from san.data.market import dukemtmcreid, market1501
from san.data.msmt17 import msmt17
from san.data.records import ReidDataset
from san.data.synth import MANIFEST, ensure_synthetic, rendering_progress


def synthetic(root: str | Path, verbose: bool = True, **params: Any) -> ReidDataset:
    """The synthetic set at ``root``, generated first if absent (``params``: keywords of
    :class:`san.data.synth.SynthParams`; none: reuse whatever set is there). A set made with
    other ``params`` is refused, never replaced."""
    if params or not (Path(root) / MANIFEST).is_file():
        ensure_synthetic(Path(root), progress=rendering_progress(verbose), **params)
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
    _check_options(name, loader, kwargs)
    return loader(root, **kwargs)


def _same_kind(value: Any, default: Any) -> bool:
    """Whether ``value`` can stand where ``default`` does (an int for a float, a list for a tuple)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, tuple):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def _check_options(name: str, loader: Callable[..., ReidDataset], options: dict[str, Any]) -> None:
    """Refuse loader options the loader does not take, or of another type than its default."""
    if name == "synthetic":
        from san.data.synth import SynthParams

        defaults = {f.name: f.default for f in fields(SynthParams)}
    else:
        defaults = {k: p.default for k, p in inspect.signature(loader).parameters.items()
                    if p.default is not inspect.Parameter.empty}
    defaults.setdefault("verbose", True)
    for key, value in options.items():
        if key not in defaults:
            raise ValueError(f"--dataset-arg {key}: data set {name!r} takes {', '.join(sorted(defaults))}")
        default = defaults[key]
        if default is not None and not _same_kind(value, default):
            raise ValueError(f"--dataset-arg {key}={value!r}: expected {type(default).__name__}, like the "
                             f"default {default!r}")


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
