"""What a training run is, split by what --resume may change (torch-free).

:class:`Recipe` is everything the trained weights depend on: the model, the data, the
optimisation and its seed. A resumed run must have the checkpoint's recipe exactly.
:class:`RunOptions` say where and how this process runs (folders, workers, device,
evaluation cadence, progress); they may differ on every resume.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from san.model.config import ModelConfig

AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class Recipe:
    """The model and its training: defaults are the paper's (see :mod:`san.training.presets`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: str = "synthetic"
    dataset_options: dict[str, Any] = field(default_factory=dict)  # loader keywords / synthetic params
    epochs: int = 150
    batch_p: int = 64
    batch_k: int = 4
    lr: float = 2e-4
    weight_decay: float = 5e-4
    decay_start: float = 2 / 3  # fraction of the steps after which the lr decays
    final_lr_factor: float = 1e-3
    margin: float = 0.5
    soft_margin: bool = False
    mu: float = 0.1
    tau_rate: float = 0.008
    tau_min: float = 0.5
    seed: int = 0
    pretrained: str | None = None
    amp: str = "auto"
    mask_warmup: int = 0  # epochs over which the masks ramp in (san.model.attention.AttentionBlock.gain)

    def __post_init__(self) -> None:
        checks = (
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0.0 <= self.decay_start <= 1.0, f"decay_start must lie in [0, 1], got {self.decay_start}"),
            (0.0 < self.final_lr_factor <= 1.0, f"final_lr_factor must lie in (0, 1], got {self.final_lr_factor}"),
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}"),
            (0 <= self.mask_warmup < self.epochs,
             f"mask_warmup must lie in [0, epochs), got {self.mask_warmup} with {self.epochs} epochs"),
            (self.mu >= 0 and math.isfinite(self.mu), f"mu must be a finite number >= 0, got {self.mu}"),
        )
        _refuse([message for ok, message in checks if not ok])

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (checkpoint- and JSON-safe)."""
        return {**asdict(self), "model": self.model.to_dict()}


@dataclass(frozen=True)
class RunOptions:
    """Where and how this process trains."""

    out: str
    root: str | None = None  # synthetic: defaults to <out>/synthetic
    workers: int | None = None  # decode workers; None: san.evaluation.retrieval.default_workers()
    eval_every: int = 10  # 0: never; else epoch 0 (untrained), every N epochs and the last
    eval_batch_size: int = 128
    device: str = "auto"
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        checks = (
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.workers is None or self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
        )
        _refuse([message for ok, message in checks if not ok])


def _refuse(problems: list[str]) -> None:
    if problems:
        raise ValueError("invalid training config: " + "; ".join(problems))


@dataclass(frozen=True)
class TrainConfig:
    """One training run: its recipe and this process's options."""

    recipe: Recipe
    run: RunOptions

    @classmethod
    def of(cls, **settings: Any) -> TrainConfig:
        """Build from flat settings (any field of :class:`Recipe` or :class:`RunOptions`)."""
        return cls(Recipe(), RunOptions(out="")).with_changes(**settings)

    def with_changes(self, **settings: Any) -> TrainConfig:
        """A copy with flat settings replaced; an unknown name raises ``TypeError``."""
        recipe_names = {f.name for f in fields(Recipe)}
        run_names = {f.name for f in fields(RunOptions)}
        unknown = sorted(set(settings) - recipe_names - run_names)
        if unknown:
            raise TypeError(f"unknown training settings {unknown}")
        return TrainConfig(
            replace(self.recipe, **{k: v for k, v in settings.items() if k in recipe_names}),
            replace(self.run, **{k: v for k, v in settings.items() if k in run_names}),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (checkpoint- and JSON-safe): ``{"recipe": ..., "run": ...}``."""
        return {"recipe": self.recipe.to_dict(), "run": asdict(self.run)}

    def recipe_differences(self, saved: dict[str, Any]) -> list[str]:
        """How ``saved`` (a checkpoint's :meth:`to_dict`) differs in its recipe, one entry per field;
        a field the checkpoint predates counts as its default."""
        theirs, mine = {**Recipe().to_dict(), **saved.get("recipe", {})}, self.recipe.to_dict()
        if isinstance(theirs.get("model"), dict):  # fields the model config gained since, as it loads them
            theirs["model"] = {**ModelConfig.from_dict(theirs["model"]).to_dict()}
        return [f"{k}: checkpoint {theirs.get(k)!r}, now {mine[k]!r}" for k in sorted(mine) if theirs.get(k) != mine[k]]
