"""Training: Eq. 9 and LR schedule values, augmentation, exact resume, a tiny end-to-end run."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import san.training.train
from san import load_checkpoint
from san.cli.train import main as train_main
from san.data.augment import AugmentParams, CropBox, TrainAugment
from san.data.records import ImageRecord
from san.data.torch_dataset import ReidImageDataset
from san.io.atomic import DestinationError
from san.io.hashing import file_sha256
from san.io.preprocess import resize_to_contract
from san.training.train import lr_factor, temperature, train
from support.tiny_training import SPEC, tiny_config


def test_temperature_follows_eq9() -> None:
    # tau = exp(-0.008 t) while above 0.5, else 0.5; exp(-0.008 * 86) = 0.5026, exp(-0.008 * 87) = 0.4986.
    assert temperature(0) == 1.0
    assert temperature(50) == pytest.approx(0.670320046, rel=1e-9)
    assert temperature(86) == pytest.approx(0.5025802250, rel=1e-9)
    assert temperature(87) == 0.5
    assert temperature(149) == 0.5


def test_lr_schedule_is_constant_then_decays_to_a_thousandth() -> None:
    total = 300
    assert lr_factor(0, total) == 1.0
    assert lr_factor(200, total) == 1.0  # decay starts after two thirds
    assert lr_factor(250, total) == pytest.approx(math.sqrt(1e-3))
    assert lr_factor(total, total) == pytest.approx(1e-3)
    assert lr_factor(150, total, decay_start=0.5, final=0.01) == 1.0
    assert lr_factor(total, total, decay_start=0.5, final=0.01) == pytest.approx(0.01)


def test_augment_draws_crops_in_range_and_applies_them_exactly() -> None:
    aug = TrainAugment()
    rng = np.random.default_rng(0)
    for _ in range(200):
        b = aug.draw(40, 100, rng).box  # 40 wide, 100 high
        assert 0 <= b.top and b.top + b.height <= 100 and 0 <= b.left and b.left + b.width <= 40
        assert 0.6 <= b.height * b.width / 4000 <= 1.0 + 1e-9
        assert 1.9 <= b.height / b.width <= 3.1  # rounding to pixels
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (100, 40, 3), dtype=np.uint8))
    params = AugmentParams(CropBox(top=10, left=5, height=72, width=30), flip=True)
    want = resize_to_contract(img.crop((5, 10, 35, 82)), SPEC)[:, :, ::-1]
    assert np.array_equal(aug.apply(img, params, SPEC), want)
    # An image too wide for any [2, 3] crop falls back to the largest centred h/w = 2 crop.
    fallback = aug.draw(200, 50, np.random.default_rng(0)).box
    assert (fallback.height, fallback.width, fallback.left) == (50, 25, 87)


def test_training_dataset_is_deterministic_per_key_and_reports_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.full((80, 40, 3), 120, np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    ds = ReidImageDataset([ImageRecord(str(good), 0, 0), ImageRecord(str(bad), 1, 0)], SPEC, augment=TrainAugment())
    image, index, error = ds[(0, 42)]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 32) and index == 0 and error == ""
    assert torch.equal(ds[(0, 42)][0], image)
    image, index, error = ds[(1, 7)]
    assert index == 1 and error and not image.any()
    with pytest.raises(TypeError, match="seed"):
        ds[0]


def losses(run: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["loss"], r["triplet"], r["tv"], r["tau"], r["lr"]) for r in rows]


def test_resume_replays_the_uninterrupted_run_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train(tiny_config(tmp_path / "full"))

    real_save = san.training.train.save_checkpoint

    def save_then_die(path, *args, **kwargs):  # "killed" right after epoch 1's checkpoint
        real_save(path, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(san.training.train, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "cut"))
    monkeypatch.undo()
    assert [row[0] for row in losses(tmp_path / "cut")] == [1]  # epoch 1's line is written before its checkpoint
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["training"]["epoch"] == 1
    with pytest.raises(ValueError, match="lr: checkpoint 0.0002, now 0.001"):
        train(tiny_config(tmp_path / "cut", lr=1e-3, resume=True))
    train(tiny_config(tmp_path / "cut", resume=True))

    assert losses(tmp_path / "cut") == losses(tmp_path / "full")  # the whole loss sequence, none lost
    full, _ = load_checkpoint(tmp_path / "full" / "model.pt")
    cut, _ = load_checkpoint(tmp_path / "cut" / "model.pt")
    for (name, a), b in zip(full.state_dict().items(), cut.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_disk_that_fills_up_keeps_the_last_epoch_and_resume_finishes(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = san.training.train.save_checkpoint

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save_on_a_full_disk(path, *args, **kwargs):  # the disk is full when epoch 2 is checkpointed
        if kwargs["training"]["epoch"] == 2:
            monkeypatch.setattr(os, "fsync", no_space)
        real_save(path, *args, **kwargs)

    monkeypatch.setattr(san.training.train, "save_checkpoint", save_on_a_full_disk)
    run = tmp_path / "run"
    with pytest.raises(DestinationError) as full:
        train(tiny_config(run))
    monkeypatch.undo()
    assert str(full.value) == f"{run / 'last.pt'}: cannot write there: no space left on device"
    assert torch.load(run / "last.pt", weights_only=True)["training"]["epoch"] == 1  # epoch 1 kept, whole
    assert sorted(p.name for p in run.iterdir()) == ["last.pt", "metrics.jsonl"]  # no temporary left behind
    train(tiny_config(run, resume=True))
    assert [row[0] for row in losses(run)] == [1, 2] and (run / "model.pt").is_file()


def _tree_hashes(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256)."""
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_of_a_finished_run_changes_no_byte_and_says_so(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    train(tiny_config(run, eval_every=2))
    before = _tree_hashes(run)
    with caplog.at_level("INFO", logger="san.training.train"):
        train(tiny_config(run, eval_every=2, resume=True))
    assert _tree_hashes(run) == before  # model.pt, last.pt, best.pt, metrics.jsonl, TensorBoard's files
    said = [r.getMessage() for r in caplog.records if "already finished" in r.getMessage()]
    assert len(said) == 1 and "(2/2 epochs)" in said[0] and str(run / "model.pt") in said[0], said

    # Killed after the last epoch's checkpoint, before model.pt: --resume writes it from last.pt,
    # with the last epoch's evaluation, and trains nothing.
    original, meta = load_checkpoint(run / "model.pt")
    (run / "model.pt").unlink()
    train(tiny_config(run, eval_every=2, resume=True))
    again, again_meta = load_checkpoint(run / "model.pt")
    assert again_meta.extra["eval"] == meta.extra["eval"] and set(meta.extra["eval"]) >= {"mAP", "rank1"}
    for (name, a), b in zip(original.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_cli_trains_the_cpu_demo_preset_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    rc = train_main([
        "--preset", "cpu-demo", "--out", str(out), "--dataset-arg", "ids=15", "--epochs", "1",
        "--batch-p", "3", "--batch-k", "2", "--workers", "0", "--eval-every", "1", "--no-progress",
        "--cu-upsample", "nearest",
    ])
    assert rc == 0
    assert {"model.pt", "last.pt", "best.pt", "metrics.jsonl", "synthetic"} <= {p.name for p in out.iterdir()}
    model, meta = load_checkpoint(out / "model.pt")
    assert model.cfg.backbone == "resnet18" and meta.spec.height == 128 and model.cfg.cu_upsample == "nearest"
    assert meta.extra["data"]["dataset"] == "synthetic" and meta.extra["data"]["options"]["ids"] == 15
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and all(0 <= r["eval"]["mAP"] <= 1 for r in rows)
    assert rows[1]["lr"] == pytest.approx(1e-3 * 1e-3)  # the schedule ends at 1e-3 x lr
    printed = capsys.readouterr().out
    assert "untrained (epoch 0): mAP" in printed
    assert "  masks: b1 M " in printed and "active triplets" in printed  # the epoch's mask-health line


def test_paired_runs_start_identical_outside_the_attention_blocks_and_see_identical_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline and SAN of one seed: the backbone and the head start with the same weights
    (each part draws from a stream of its own, whatever the attention blocks draw), and every
    step trains on the same images. A second seed starts elsewhere, so the test can fail."""
    from dataclasses import replace

    seen: dict[str, list] = {}
    real_step = san.training.train._Trainer._step

    def recording_step(self, images, indices, errors, epoch):
        record = seen.setdefault(str(self.out), [])
        if not record:  # before the first update: the initial weights
            record.append({k: v.clone() for k, v in self.raw.state_dict().items()})
        record.append(images.clone())
        return real_step(self, images, indices, errors, epoch)

    monkeypatch.setattr(san.training.train._Trainer, "_step", recording_step)
    base = tiny_config(tmp_path / "san", epochs=1)
    runs = {"san": base, "baseline": tiny_config(tmp_path / "baseline", epochs=1,
                                                 model=replace(base.recipe.model, attention="none")),
            "other seed": tiny_config(tmp_path / "other seed", epochs=1, seed=6)}
    for cfg in runs.values():
        train(cfg)
    (san_init, *san_batches), (base_init, *base_batches), (other_init, *_) = (seen[str(tmp_path / n)] for n in runs)
    shared = [k for k in base_init if not k.startswith("attention.")]
    assert shared and set(shared) <= set(san_init) and any(k.startswith("attention.") for k in san_init)
    for key in shared:
        assert torch.equal(san_init[key], base_init[key]), key
    assert not torch.equal(san_init["head.3.weight"], other_init["head.3.weight"])
    assert not torch.equal(san_init["stem.0.weight"], other_init["stem.0.weight"])
    assert len(san_batches) == len(base_batches) > 0
    assert all(torch.equal(a, b) for a, b in zip(san_batches, base_batches))
