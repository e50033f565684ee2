"""Named training presets: ``paper`` (section IV-B, the default) and ``cpu-demo``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from san.config import ModelConfig
from san.spec import InputSpec
from san.train import TrainConfig


@dataclass(frozen=True)
class Preset:
    """A base :class:`TrainConfig` plus the synthetic set it trains on by default."""

    description: str
    base: TrainConfig
    synthetic: dict[str, Any] = field(default_factory=dict)

    def config(
        self,
        out: str,
        dataset: str = "synthetic",
        root: str | None = None,
        dataset_options: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> TrainConfig:
        """The preset's config for one run; ``overrides`` replace TrainConfig fields.

        The synthetic data set gets the preset's generation parameters (at the model's
        input size) unless ``dataset_options`` are given.
        """
        if dataset_options is None:
            dataset_options = dict(self.synthetic) if dataset == "synthetic" else {}
        return replace(self.base, out=out, dataset=dataset, root=root, dataset_options=dataset_options, **overrides)


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "Paper IV-B: ResNet-50 SAN (attention after stages 1-4, context units, CIL), 256x128, "
        "P=64 x K=4, 150 epochs, Adam 2e-4 (ImageNet init through --pretrained). "
        "Synthetic default: 1,500 ids (750 train) at 256x128, 6 cameras.",
        TrainConfig(out=""),
        {"ids": 1500, "cameras": 6, "height": 256, "width": 128},
    ),
    "cpu-demo": Preset(
        "Small CPU demo (~10 min on 2 cores): ResNet-18 SAN at 128x64, P=16 x K=4, from scratch, "
        "on a small synthetic set.",
        TrainConfig(
            out="",
            model=ModelConfig(backbone="resnet18", spec=InputSpec(height=128, width=64)),
            epochs=30,
            batch_p=16,
            batch_k=4,
            lr=3e-4,
            eval_every=10,
        ),
        {"ids": 100, "cameras": 4, "height": 128, "width": 64},
    ),
}
