"""Safe checkpoints: weights + config + contract + training state, written atomically,
loaded with ``torch.load(weights_only=True)`` so no code inside a file ever runs."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from san.contract.artifact import refused_pickle
from san.contract.limits import LimitError
from san.contract.spec import InputSpec
from san.io.atomic import atomic_write
from san.io.errors import ToolkitError
from san.io.hashing import file_sha256
from san.model.config import ModelConfig
from san.model.network import SAN, build_model
from san.model.state import describe_mismatch
from san.training.weights_file import load_weights_only

FORMAT = "san-checkpoint"
VERSION = 1


class CheckpointError(ToolkitError, ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


@dataclass
class CheckpointMeta:
    """What a checkpoint carries besides the weights."""

    config: ModelConfig
    training: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def spec(self) -> InputSpec:
        """The input contract."""
        return self.config.spec


def save_checkpoint(
    path: str | Path,
    model: SAN,
    training: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Atomically write ``model`` (weights, config, contract) plus optional training state.

    ``training`` and ``extra`` may hold tensors, numbers, strings, lists and dicts only
    (what ``weights_only`` loading accepts).
    """
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": training or {},
        "extra": extra or {},
        "torch_version": str(torch.__version__),
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load the raw payload safely; every failure becomes a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        payload = load_weights_only(path)
    except LimitError as exc:
        raise CheckpointError(f"{path}: refused: it {exc}") from exc
    except pickle.UnpicklingError as exc:
        raise CheckpointError(refused_pickle(path, f"weights_only loading rejected it: {exc}")) from exc
    except Exception as exc:  # noqa: BLE001 - on junk bytes the unpickler raises anything (KeyError, IndexError, ...)
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint file ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a SAN checkpoint (expected a dict with format={FORMAT!r}; "
            "plain state dicts go through build_model(cfg, pretrained=PATH) instead)"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} is not supported (want {VERSION})")
    return payload


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SAN, CheckpointMeta]:
    """Rebuild the model from the checkpoint alone; returns (model in eval mode, metadata)."""
    payload = read_checkpoint(path)
    try:
        cfg = ModelConfig.from_dict(payload["config"])
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: invalid model config in checkpoint ({exc})") from exc
    model = build_model(cfg)
    load_state_strict(model, payload["state_dict"], source=str(path))
    meta = CheckpointMeta(cfg, payload.get("training", {}), payload.get("extra", {}), file_sha256(path))
    return model.to(map_location).eval(), meta


def load_state_strict(model: SAN, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``, naming every missing, unexpected or mis-shaped key."""
    problems = describe_mismatch(model.state_dict(), state)
    if problems:
        raise CheckpointError(
            f"{source}: weights do not fit the architecture "
            f"({model.cfg.backbone}, attention={model.cfg.attention}): {problems}"
        )
    model.load_state_dict(state)
