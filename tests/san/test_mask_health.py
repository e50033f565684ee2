"""Mask health in the training log, against a brute-force recomputation from the step's own tensors."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch

import san.training.train
from san import ModelConfig
from san.training.train import train
from san.training.train_config import TrainConfig
from support.tiny_training import SPEC, tiny_config


def one_batch_config(out: Path, **overrides: object) -> TrainConfig:
    """One batch per epoch, so an epoch's health is its one step's: one epoch, seed 3."""
    return tiny_config(out, **({"epochs": 1, "seed": 3} | overrides))


def brute_force_block(m: np.ndarray, pi: np.ndarray, attended: np.ndarray) -> dict[str, float]:
    """The fields of one block, element by element: the definitions, not the library's code."""
    deployed = (pi > 0.5).astype(np.float64)
    n, c, h, w = attended.shape
    tv = []
    for sample in attended.astype(np.float64):
        total = 0.0
        for ch, y, x in product(range(c), range(h), range(w)):
            if y + 1 < h:
                total += (sample[ch, y, x] - sample[ch, y + 1, x]) ** 2
            if x + 1 < w:
                total += (sample[ch, y, x] - sample[ch, y, x + 1]) ** 2
        tv.append(total / (c * h * w))
    return {"mean_m": m.mean(), "mean_pi": pi.mean(), "m_below_0.1": (m < 0.1).mean(), "m_above_0.9": (m > 0.9).mean(),
            "pi_above": deployed.mean(), "gap_to_deployed": np.abs(m - deployed).mean(), "tv": float(np.mean(tv))}


def brute_force_triplets(embeddings: np.ndarray, pids: np.ndarray, margin: float) -> dict[str, float]:
    """Batch-hard mining by loops over every anchor and every other sample."""
    d_ap, d_an, active = [], [], []
    for i in range(len(pids)):
        dist = [float(np.linalg.norm(embeddings[i].astype(np.float64) - e)) for e in embeddings]
        pos = [dist[j] for j in range(len(pids)) if j != i and pids[j] == pids[i]]
        neg = [dist[j] for j in range(len(pids)) if pids[j] != pids[i]]
        d_ap.append(max(pos))
        d_an.append(min(neg))
        active.append(margin + max(pos) - min(neg) > 0)
    return {"active": float(np.mean(active)), "d_ap": float(np.mean(d_ap)), "d_an": float(np.mean(d_an))}


def test_one_epoch_logs_every_mask_health_field_and_each_matches_a_brute_force_recomputation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    real_loss = san.training.train.san_loss

    def keep(output, pids, *args, **kwargs):  # the step's own tensors, as the trainer computed them
        seen.append((output, pids))
        return real_loss(output, pids, *args, **kwargs)

    monkeypatch.setattr(san.training.train, "san_loss", keep)
    out = tmp_path / "run"
    train(one_batch_config(out))
    assert len(seen) == 1
    output, pids = seen[0]
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert sorted(record["masks"]) == ["1", "2", "3", "4"]
    for stage, m, pi, a in zip("1234", output.masks, output.probs, output.attended):
        logged = record["masks"][stage]
        want = brute_force_block(*(t.detach().double().numpy() for t in (m, pi, a)))
        assert sorted(logged) == sorted(want), stage
        for name, value in want.items():
            assert logged[name] == pytest.approx(value, rel=1e-5, abs=1e-7), (stage, name)
        for name in ("mean_m", "mean_pi", "m_below_0.1", "m_above_0.9", "pi_above", "gap_to_deployed"):
            assert 0.0 <= logged[name] <= 1.0, (stage, name)
        # two shares of one count, each a float32 mean: their sum is 1 to float32 rounding at most
        assert logged["m_below_0.1"] + logged["m_above_0.9"] <= 1.0 + 2 * np.finfo(np.float32).eps and logged["tv"] >= 0.0
        assert 0.0 < logged["mean_m"] < 1.0  # sampled at tau = 1: neither collapsed nor saturated
    triplets = brute_force_triplets(output.embeddings.detach().numpy(), pids.numpy(), margin=0.5)
    assert record["triplets"] == pytest.approx(triplets, rel=1e-5)
    assert 0.0 <= record["triplets"]["active"] <= 1.0 and record["triplets"]["d_an"] > 0
    assert record["tv"] == pytest.approx(sum(record["masks"][s]["tv"] for s in "1234"), rel=1e-5)  # Eq. 8's sum


def test_the_baseline_logs_triplets_and_no_masks(tmp_path: Path) -> None:
    cfg = one_batch_config(tmp_path / "run", model=ModelConfig(backbone="resnet18", spec=SPEC, attention="none"))
    record = train(cfg).history[-1]
    assert "masks" not in record and set(record["triplets"]) == {"active", "d_ap", "d_an"}


def test_mask_warmup_ramps_the_gain_from_0_to_1_and_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gains = []
    real_loss = san.training.train.san_loss

    def keep(output, pids, *args, **kwargs):
        gains.append({block.gain for block in model_blocks[0]})
        return real_loss(output, pids, *args, **kwargs)

    model_blocks: list = []
    real_build = san.training.train.build_model

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model_blocks.append(list(model.attention.values()))
        return model

    monkeypatch.setattr(san.training.train, "san_loss", keep)
    monkeypatch.setattr(san.training.train, "build_model", build)
    result = train(one_batch_config(tmp_path / "run", epochs=3, mask_warmup=2))
    assert gains == [{0.0}, {0.5}, {1.0}]  # one step per epoch: step / (2 epochs x 1 step)
    assert [r["mask_gain"] for r in result.history] == [0.0, 0.5, 1.0]
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert saved["training"]["config"]["recipe"]["mask_warmup"] == 2


def test_mask_warmup_must_leave_epochs_at_full_gain() -> None:
    with pytest.raises(ValueError, match="mask_warmup must lie in \\[0, epochs\\), got 3 with 3 epochs"):
        TrainConfig.of(out="x", epochs=3, mask_warmup=3)
