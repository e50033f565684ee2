"""Backbone initialisation from a local torchvision ResNet state-dict file (ImageNet weights,
or a trained SAN's backbone written back in that layout)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from san.io.errors import ToolkitError
from san.model.state import describe_mismatch
from san.training.weights_file import load_weights_only

if TYPE_CHECKING:
    from san.model.network import SAN

_STAGE_KEY = re.compile(r"^layer([1-4])\.")
_OWN_STAGE_KEY = re.compile(r"^stages\.([0-3])\.")
_STEM_KEYS = {"conv1.": "stem.0.", "bn1.": "stem.1."}


class PretrainedWeightsError(ToolkitError, ValueError):
    """A pretrained file that does not fit the configured backbone."""


def _map_torchvision_key(key: str) -> str | None:
    """torchvision ResNet key -> SAN key; None for the ImageNet classifier (fc.*)."""
    if key.startswith("fc."):
        return None
    for old, new in _STEM_KEYS.items():
        if key.startswith(old):
            return new + key[len(old):]
    match = _STAGE_KEY.match(key)
    if match:
        return f"stages.{int(match.group(1)) - 1}." + key[match.end():]
    return key  # left as is: reported as unexpected below


def load_imagenet_backbone(model: SAN, path: str | Path) -> None:
    """Load torchvision ResNet weights (e.g. ``resnet50-0676ba61.pth``) into the backbone.

    Attention blocks, context units and the head keep their fresh initialisation. Keys
    that don't fit (missing, unexpected or of the wrong shape) raise an error naming them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    try:
        state = load_weights_only(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is reported the same way
        raise PretrainedWeightsError(f"{path}: not a loadable state-dict file ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    mapped = {new: v for k, v in state.items() if (new := _map_torchvision_key(k)) is not None}
    own = {k: v for k, v in model.state_dict().items() if k.startswith(("stem.", "stages."))}
    problems = describe_mismatch(own, mapped)
    if problems:
        raise PretrainedWeightsError(f"{path} does not fit backbone {model.cfg.backbone!r}: {problems}")
    model.load_state_dict(mapped, strict=False)


def torchvision_backbone_state(model: SAN) -> dict[str, torch.Tensor]:
    """``model``'s stem and stages under torchvision ResNet keys, the layout
    :func:`load_imagenet_backbone` reads: a trained backbone to initialise another model with."""
    stem = {new: old for old, new in _STEM_KEYS.items()}
    state = {}
    for key, value in model.state_dict().items():
        match = _OWN_STAGE_KEY.match(key)
        if match:
            state[f"layer{int(match.group(1)) + 1}." + key[match.end():]] = value.detach().clone()
        for own, theirs in stem.items():
            if key.startswith(own):
                state[theirs + key[len(own):]] = value.detach().clone()
    return state
