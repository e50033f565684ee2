"""The Sharp Attention Network: ResNet backbone, attention blocks, embedding head."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from san.contract.spec import InputSpec
from san.model.attention import FP16_TINY, GENERATORS, AttentionBlock, MaskGenerator, total_variation
from san.model.config import ModelConfig
from san.model.context import ContextUnit
from san.model.pretrained import load_imagenet_backbone

#: Output planes of the first residual unit of each stage (before block expansion).
_STAGE_PLANES = (64, 128, 256, 512)


@dataclass
class SANOutput:
    """Embeddings plus, per attention block (in stage order), A, M and pi."""

    embeddings: Tensor
    attended: list[Tensor]
    masks: list[Tensor]
    probs: list[Tensor]

    def tv_terms(self, per_element: bool = True) -> list[Tensor]:
        """TV(A_i) of every block (Eq. 6), averaged over the batch.

        Eq. 6 is a sum over C x H x W; at 256x128 that is ~1e6 times the triplet loss,
        so by default each block's TV is divided by its element count (``per_element``).
        """
        return [total_variation(a).mean() / (a[0].numel() if per_element else 1) for a in self.attended]

    def tv_penalty(self, terms: list[Tensor] | None = None) -> Tensor:
        """sum_i TV(A_i) of Eq. 8, 0 without attention; ``terms``: :meth:`tv_terms` when already computed."""
        terms = self.tv_terms() if terms is None else terms
        return torch.stack(terms).sum() if terms else self.embeddings.new_zeros(())


#: The parts of a SAN whose initial weights come from streams of their own (:func:`part_stream`).
PARTS = ("backbone", "attention", "head")


@contextmanager
def part_stream(seed: int, part: str) -> Iterator[None]:
    """Torch's CPU generator seeded for ``part`` (:data:`PARTS`) from ``seed`` while the block
    runs, and restored after it: what one part draws never shifts another's draws."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence([seed, PARTS.index(part)]).generate_state(1, np.uint64)[0] >> 1))
        yield


class SAN(nn.Module):
    """Sharp Attention Network (paper Fig. 3).

    Takes RGB NCHW images on the 0..255 scale (uint8 or float) at the contract's size,
    normalises them itself and returns ``embedding_dim`` features per image.
    """

    pixel_mean: Tensor  # buffers: the ImageNet mean and std on the 0..255 scale
    pixel_std: Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # One draw from the global generator seeds one stream per part, so that models of one
        # seed start with the same backbone and head whatever their attention blocks draw.
        streams = int(torch.randint(0, 2**62, ()))
        with part_stream(streams, "backbone"):
            resnet = getattr(torchvision.models, cfg.backbone)(weights=None)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.stages = nn.ModuleList([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])
        block_type = type(resnet.layer1[0])
        self.attention = nn.ModuleDict()
        with part_stream(streams, "attention"):
            for stage in cfg.active_stages:
                context = None
                if stage in cfg.context_stages:
                    in_channels = _STAGE_PLANES[stage - 1] * block_type.expansion
                    context = ContextUnit(block_type, in_channels, _STAGE_PLANES[stage], cfg.cu_upsample)
                self.attention[str(stage)] = AttentionBlock(GENERATORS[cfg.attention].from_config(cfg), context,
                                                            cfg.cross_feature)
        feat_dim = 512 * block_type.expansion
        with part_stream(streams, "head"):
            self.head = nn.Sequential(
                nn.Linear(feat_dim, cfg.hidden_dim),
                nn.BatchNorm1d(cfg.hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(cfg.hidden_dim, cfg.spec.embedding_dim),
            )
        self._register_normalization()

    @property
    def spec(self) -> InputSpec:
        """The input contract this model was built for."""
        return self.cfg.spec

    def _register_normalization(self) -> None:
        mean = torch.tensor(self.spec.mean).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.spec.std).view(1, 3, 1, 1) * 255.0
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def blocks(self) -> dict[int, AttentionBlock]:
        """Stage -> attention block."""
        return {int(stage): cast(AttentionBlock, block) for stage, block in self.attention.items()}

    def generators(self) -> dict[int, MaskGenerator]:
        """Stage -> mask generator of every attention block."""
        return {stage: block.generator for stage, block in self.blocks().items()}

    def sampled_generators(self) -> dict[int, MaskGenerator]:
        """Stage -> generator of every block whose training-mode masks are random draws."""
        return {stage: g for stage, g in self.generators().items() if g.sampled}

    def temperatures(self) -> dict[int, float]:
        """Stage -> sampling temperature of every generator that samples."""
        return {stage: t for stage, g in self.sampled_generators().items() if (t := g.temperature) is not None}

    def hard_mask_stages(self) -> tuple[int, ...]:
        """Stages whose eval-mode (deployed) mask is hard: 0/1 by a threshold on pi."""
        return tuple(stage for stage, g in self.generators().items() if g.hard_threshold is not None)

    def set_temperature(self, tau: float) -> None:
        """Set the sampling temperature of every block (Eq. 9 is the trainer's)."""
        for generator in self.generators().values():
            generator.set_temperature(tau)

    def set_mask_gain(self, gain: float) -> None:
        """Set alpha of every block (:class:`AttentionBlock`; the trainer's mask warm-up)."""
        if not 0.0 <= gain <= 1.0:
            raise ValueError(f"mask gain must lie in [0, 1], got {gain}")
        for block in self.blocks().values():
            block.gain = gain

    def set_mask_threshold(self, threshold: float) -> None:
        """Change the deterministic mask threshold; the contract follows."""
        self.cfg = self.cfg.with_spec(mask_threshold=threshold)
        for generator in self.generators().values():
            generator.set_contract_threshold(self.spec.mask_threshold)

    def set_deployed_mask(self, kind: str) -> None:
        """Deploy the sampled masks as ``kind`` (:data:`san.contract.spec.DEPLOYED_MASKS`); the
        contract follows."""
        self.cfg = self.cfg.with_spec(deployed_mask=kind)
        for generator in self.generators().values():
            generator.set_deployed_mask(kind)

    def forward(self, images: Tensor, details: bool = False) -> Tensor | SANOutput:
        """Embed a batch; with ``details`` also return A, M and pi of every block."""
        self.spec.check_batch_shape(tuple(images.shape))
        x = (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        x = self.stem(x)
        attended, masks, probs = [], [], []
        for index, stage in enumerate(self.stages, start=1):
            x = stage(x)
            block = self.attention[str(index)] if str(index) in self.attention else None
            if block is not None:
                x, a, m, pi = block(x)
                attended.append(a)
                masks.append(m)
                probs.append(pi)
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        emb = self.head(pooled)
        if self.spec.l2_normalize:
            emb = l2_normalize(emb)
        if details:
            return SANOutput(emb, attended, masks, probs)
        return emb


def l2_normalize(x: Tensor) -> Tensor:
    """Each row of ``x`` at unit length, computed so that it holds in float16 as in float32.

    ``x / max(||x||, eps)`` does not: the sum of squares overflows float16 (65504) once a row's
    norm passes 256, and an eps such as 1e-12 rounds to 0, so a zero row divides to NaN. Here
    the row is first divided by its largest magnitude, which leaves squares of at most 1 and a
    sum of at most the row length, and both guards are :data:`FP16_TINY`, a normal float16. In
    float32 the result equals ``x / ||x||`` to rounding for every row whose largest magnitude
    is above 6e-5; a zero row stays zero.
    """
    scaled = x / x.abs().amax(dim=1, keepdim=True).clamp_min(FP16_TINY)
    return scaled / torch.linalg.vector_norm(scaled, dim=1, keepdim=True).clamp_min(FP16_TINY)


def build_model(cfg: ModelConfig | None = None, pretrained: str | None = None) -> SAN:
    """Build a SAN from ``cfg``; ``pretrained`` is a local torchvision ResNet state-dict file."""
    model = SAN(cfg or ModelConfig())
    if pretrained is not None:
        load_imagenet_backbone(model, pretrained)
    return model

