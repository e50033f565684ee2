"""The smallest real training run: 3 training ids, one P=3 x K=2 batch per epoch, no evaluation."""

from __future__ import annotations

from pathlib import Path

from san import InputSpec, ModelConfig
from san.training.train_config import TrainConfig

SPEC = InputSpec(height=64, width=32)


def tiny_config(out: Path, **overrides: object) -> TrainConfig:
    """A ResNet-18 SAN at 64x32 on a 6-id synthetic set beside ``out``, 2 epochs, seed 5."""
    settings = dict(
        out=str(out), model=ModelConfig(backbone="resnet18", spec=SPEC), root=str(out.parent / "synthetic"),
        dataset_options={"ids": 6, "cameras": 2, "height": 64, "width": 32},
        epochs=2, batch_p=3, batch_k=2, workers=0, eval_every=0, progress=False, seed=5,
    )
    return TrainConfig.of(**(settings | overrides))
