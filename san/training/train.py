"""Training library (paper IV-B): PK batches, batch-hard triplet + mu * TV, Eq. 9 temperature,
Adam with the schedule of Hermans et al., atomic per-epoch checkpoints and exact resume.

Every random draw of epoch ``t`` derives from ``(seed, t)`` (the sampler, the augmentation,
and the Gumbel noise through ``torch.manual_seed`` at the start of the epoch), so resuming
from the checkpoint of epoch ``t`` replays epochs ``t+1..`` exactly, with no RNG state saved.

On CUDA: automatic mixed precision (bf16, or fp16 with a GradScaler) and channels_last;
launched by ``torchrun`` (RANK/WORLD_SIZE set) it trains with DistributedDataParallel,
the PK sampler sharded per rank; rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from san.data.augment import TrainAugment
from san.data.records import ReidDataset
from san.data.registry import load_dataset
from san.data.sampler import PKSampler
from san.data.torch_dataset import ReidImageDataset
from san.evaluation.evaluate import EvalReport, evaluate_model, torch_device_name
from san.evaluation.retrieval import default_workers
from san.io.atomic import atomic_write_text, remove_stale_temporaries, writing
from san.io.failpoints import failpoint
from san.io.output_lock import exclusive_output
from san.io.preprocess import printable_path
from san.io.progress import progress_bar
from san.model.network import SAN, SANOutput, build_model
from san.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from san.training.distributed import DistContext, gather_rows, globalise_batchnorm, init_distributed
from san.training.losses import LossParts, san_loss
from san.training.mask_health import HealthTotals, block_health, health_line, triplet_health
from san.training.train_config import TrainConfig

log = logging.getLogger(__name__)

def temperature(epoch: int, rate: float = 0.008, floor: float = 0.5) -> float:
    """Eq. 9: tau(t) = max(exp(-rate * t), floor) for 0-based epoch ``t``."""
    return max(math.exp(-rate * epoch), floor)


def lr_factor(step: int, total_steps: int, decay_start: float = 2 / 3, final: float = 1e-3) -> float:
    """Hermans et al.: 1 until ``decay_start * total_steps``, then exponential decay to ``final``."""
    t0 = decay_start * total_steps
    if step <= t0 or total_steps <= t0:
        return 1.0
    return final ** ((min(step, total_steps) - t0) / (total_steps - t0))


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The torch seed of one epoch on one rank."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


@dataclass
class TrainResult:
    """Where the run went and what it measured."""

    out: Path
    history: list[dict[str, Any]]
    untrained: EvalReport | None = None
    final: EvalReport | None = None


class StepResult(NamedTuple):
    """One optimisation step: its loss terms, how many images it saw, and its mask health
    (:mod:`san.training.mask_health`: one group per attention block, keyed by stage, and ``triplets``)."""

    loss: float
    triplet: float
    tv: float
    images: int
    health: dict[str, dict[str, float]]


@dataclass
class EpochTotals:
    """Running sums over an epoch's steps (float64, in step order: deterministic)."""

    loss: float = 0.0
    triplet: float = 0.0
    tv: float = 0.0
    images: int = 0
    steps: int = 0
    health: HealthTotals = field(default_factory=HealthTotals)

    def add(self, step: StepResult) -> None:
        self.loss += step.loss
        self.triplet += step.triplet
        self.tv += step.tv
        self.images += step.images
        self.steps += 1
        for group, fields in step.health.items():
            self.health.add(group, fields)

    def mean_loss(self) -> float:
        return self.loss / self.steps

    def means(self, ctx: DistContext, device: torch.device) -> tuple[float, float, float, int]:
        """(loss, triplet, tv) averaged over steps and ranks, and the images of all ranks."""
        values = torch.tensor([self.loss / self.steps, self.triplet / self.steps, self.tv / self.steps,
                               self.images], dtype=torch.float64)
        if ctx.world_size > 1:
            values = values.to(device)
            dist.all_reduce(values)
            values = values.cpu()
            values[:3] /= ctx.world_size
        loss, triplet, tv, images = values.tolist()
        return loss, triplet, tv, int(images)

    def health_means(self, ctx: DistContext, device: torch.device) -> dict[str, dict[str, float]]:
        """Each mask-health field's mean over the steps of all ranks (:class:`HealthTotals`)."""
        keys = [(group, name) for group in sorted(self.health.sums) for name in sorted(self.health.sums[group])]
        values = torch.tensor([[self.health.sums[g][n], self.health.counts[g][n]] for g, n in keys],
                              dtype=torch.float64).reshape(-1, 2)
        if ctx.world_size > 1:
            values = values.to(device)
            dist.all_reduce(values)
            values = values.cpu()
        means: dict[str, dict[str, float]] = {}
        for (group, name), (total, count) in zip(keys, values.tolist()):
            means.setdefault(group, {})[name] = total / count if count else float("nan")
        return means


def _device(cfg: TrainConfig, ctx: DistContext) -> torch.device:
    return torch.device(torch_device_name(cfg.run.device, ctx.local_rank))


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: CUDA only; bf16 where supported unless fp16 is asked for."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def data_root(cfg: TrainConfig) -> Path:
    """The data set's folder: ``root``, or ``<out>/synthetic`` for the synthetic set."""
    if cfg.run.root is None and cfg.recipe.dataset != "synthetic":
        raise ValueError(f"--root is required for data set {cfg.recipe.dataset!r}")
    return Path(cfg.run.root or Path(cfg.run.out) / "synthetic").expanduser().resolve()


def load_training_data(cfg: TrainConfig, verbose: bool = True) -> ReidDataset:
    """The configured data set; the synthetic one is generated (once) under its root."""
    return load_dataset(cfg.recipe.dataset, data_root(cfg), verbose=verbose, **cfg.recipe.dataset_options)


class _MetricsLog:
    """metrics.jsonl (one JSON object per line) plus TensorBoard when it is installed."""

    def __init__(self, out: Path, resume_epoch: int | None) -> None:
        self.path = out / "metrics.jsonl"
        lines = self.path.read_text().splitlines() if resume_epoch is not None and self.path.exists() else []
        kept = [line for line in lines if _epoch_of(line) <= (resume_epoch or 0)]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))  # drop epochs being redone
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb: SummaryWriter | None = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            self.tb = None

    def records(self) -> list[dict[str, Any]]:
        """The records written so far (a resume's kept lines included)."""
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def write(self, record: dict[str, Any]) -> None:
        """Append one line, durably: the epoch's checkpoint is written after it."""
        with writing(self.path), open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if self.tb is not None:
            for key, value in _scalars({k: v for k, v in record.items() if k != "epoch"}).items():
                self.tb.add_scalar(key, value, record["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested record under slash-joined names (``masks/1/mean_m``)."""
    flat: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat |= _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)):
            flat[f"{prefix}{key}"] = value
    return flat


def _epoch_of(line: str) -> float:
    """The epoch of a metrics line; infinite for a line torn by a kill (so it is dropped)."""
    try:
        return json.loads(line).get("epoch", 0)
    except json.JSONDecodeError:
        return math.inf


def _eval_summary(report: EvalReport) -> dict[str, Any]:
    return {"mAP": report.mAP, **{f"rank{k}": v for k, v in report.ranks.items()}}


def _resume_state(cfg: TrainConfig, last: Path) -> tuple[SAN, dict[str, Any]]:
    """Model and training state of ``last``; refuse a checkpoint of a different run."""
    model, meta = load_checkpoint(last)
    saved = meta.training.get("config")
    if not isinstance(saved, dict) or "optimizer" not in meta.training:
        raise CheckpointError(f"{last}: no training state to resume from")
    differ = cfg.recipe_differences(saved)
    if differ:
        raise ValueError(f"{last}: cannot resume with different settings ({'; '.join(differ)})")
    return model, meta.training


#: Called on rank 0 after each epoch with the model (in training mode) and the epoch's record;
#: the fields it returns join the record in ``metrics.jsonl`` (e.g. a score on a held-out split).
EpochHook = Callable[[SAN, dict[str, Any]], dict[str, Any]]


def train(cfg: TrainConfig, after_epoch: EpochHook | None = None) -> TrainResult:
    """Run (or resume) training as configured; see the module docstring. ``--resume`` of a
    finished run (every epoch saved and ``model.pt`` written) changes nothing and says so."""
    finished = _finished_run(cfg) if cfg.run.resume else None
    if finished is not None:
        return finished
    ctx = init_distributed(cfg.run.device)
    try:  # rank 0 writes the run, and holds its folder while it does
        with exclusive_output(cfg.run.out) if ctx.rank == 0 else nullcontext():
            return _Trainer(cfg, ctx, after_epoch).run()
    finally:
        if ctx.world_size > 1:
            dist.destroy_process_group()


RUN_FILES = ("model.pt", "last.pt", "best.pt", "metrics.jsonl")


def _finished_run(cfg: TrainConfig) -> TrainResult | None:
    """The run in ``--out`` when it is finished, read without writing a byte; else None."""
    out = Path(cfg.run.out)
    last = out / "last.pt"
    if not last.is_file() or not (out / "model.pt").is_file():
        return None
    _, state = _resume_state(cfg, last)  # settings that differ are refused, as for any resume
    if int(state["epoch"]) < cfg.recipe.epochs:
        return None
    held = ", ".join(str(out / name) for name in RUN_FILES if (out / name).exists())
    log.info(f"--resume: {out} is already finished ({state['epoch']}/{cfg.recipe.epochs} epochs); nothing to do, "
             f"nothing rewritten: {held}")
    return TrainResult(out, [])


def _refuse_training_over(out: Path) -> None:
    """Raise when ``out`` already holds a training run: training anew would replace its files."""
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held:
        raise FileExistsError(f"--out {out} already holds a training run ({', '.join(held)}); --resume continues "
                              "it, or give another --out")


class _Trainer:
    """The state of one run: data, model, optimisation, logs; :meth:`run` drives it."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext, after_epoch: EpochHook | None = None) -> None:
        self.cfg, self.ctx, self.after_epoch = cfg, ctx, after_epoch
        self.out = Path(cfg.run.out)
        self.device = _device(cfg, ctx)
        self.log = log.info if ctx.main else (lambda _msg: None)
        if not cfg.run.resume:
            _refuse_training_over(self.out)
        self.raw, state = self._initial_model()  # --resume: its settings are checked before any data is made
        if ctx.main:
            self.data = load_training_data(cfg)
        ctx.barrier()  # rank 0 may have generated the synthetic set
        if not ctx.main:
            self.data = load_training_data(cfg, verbose=False)

        if ctx.main:  # temporaries of checkpoint writes that a kill interrupted (each as large as a checkpoint)
            for name in RUN_FILES:
                remove_stale_temporaries(self.out / name)
        self.start = int(state.get("epoch", 0))
        self.best_map = float(state.get("best_map", -1.0))
        self.amp_dtype = _amp_dtype(cfg.recipe.amp, self.device)
        self.raw.to(self.device).train()
        if self.device.type == "cuda":
            self.raw.to(memory_format=torch.channels_last)
        self.model: torch.nn.Module = self.raw
        if ctx.world_size > 1:
            self.raw = cast(SAN, globalise_batchnorm(self.raw))  # batch statistics of all ranks (san.training.distributed)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.raw, device_ids=ids)

        self.train_pids = torch.tensor([r.pid for r in self.data.train])
        self.sampler = PKSampler(self.train_pids.tolist(), cfg.recipe.batch_p, cfg.recipe.batch_k, cfg.recipe.seed,
                                 ctx.rank, ctx.world_size)
        self.loader = DataLoader(
            ReidImageDataset(self.data.train, cfg.recipe.model.spec, augment=TrainAugment()),
            batch_sampler=self.sampler,
            num_workers=default_workers() if cfg.run.workers is None else cfg.run.workers,
            pin_memory=self.device.type == "cuda",
        )
        total_steps = cfg.recipe.epochs * len(self.sampler)
        self.optimizer = torch.optim.Adam(self.raw.parameters(), lr=cfg.recipe.lr, weight_decay=cfg.recipe.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total_steps, cfg.recipe.decay_start, cfg.recipe.final_lr_factor)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if state:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])

        self.metrics = _MetricsLog(self.out, self.start if cfg.run.resume else None) if ctx.main else None
        self.extra = {"data": {"dataset": cfg.recipe.dataset, "root": str(data_root(cfg)), "options": cfg.recipe.dataset_options}}
        self.result = TrainResult(self.out, [])
        self.failed_paths: set[str] = set()

    def _initial_model(self) -> tuple[SAN, dict[str, Any]]:
        """The model to train (fresh, or from last.pt with --resume) and the saved training state."""
        last = self.out / "last.pt"
        if not self.cfg.run.resume:
            torch.manual_seed(self.cfg.recipe.seed)  # the initial weights, too, follow the seed
            return build_model(self.cfg.recipe.model, pretrained=self.cfg.recipe.pretrained), {}
        if not last.is_file():
            raise FileNotFoundError(f"--resume: {last} not found (train without --resume first)")
        model, state = _resume_state(self.cfg, last)
        self.log(f"resuming {last} after epoch {state['epoch']}")
        return model, state

    def run(self) -> TrainResult:
        """Evaluate the untrained network (epoch 0), train the remaining epochs, save model.pt."""
        cfg, result = self.cfg, self.result
        if self.ctx.main and self.start == 0 and cfg.run.eval_every:
            self._record({"epoch": 0, "eval": self._evaluate(0)})
        self.ctx.barrier()
        for epoch in range(self.start, cfg.recipe.epochs):
            record = self._epoch(epoch)
            if self.ctx.main:
                if cfg.run.eval_every and (record["epoch"] % cfg.run.eval_every == 0 or record["epoch"] == cfg.recipe.epochs):
                    record["eval"] = self._evaluate(record["epoch"])
                if self.after_epoch is not None:
                    record |= self.after_epoch(self.raw, record)
                    self.raw.train()
                self._save(record)
            else:
                result.history.append(record)
            self.ctx.barrier()
        if self.ctx.main:
            self._finish()
        return result

    def _epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch (0-based ``epoch``); return its metrics record."""
        cfg = self.cfg
        tau = temperature(epoch, cfg.recipe.tau_rate, cfg.recipe.tau_min)
        self.raw.set_temperature(tau)
        self.sampler.set_epoch(epoch)
        torch.manual_seed(epoch_seed(cfg.recipe.seed, epoch, self.ctx.rank))  # Gumbel noise (and loader seeds)
        totals, tic = EpochTotals(), time.perf_counter()
        bar = progress_bar(self.loader, enabled=cfg.run.progress and self.ctx.main, total=len(self.sampler),
                           desc=f"epoch {epoch + 1}/{cfg.recipe.epochs}", unit="batch", leave=False)
        for images, indices, errors in bar:
            step = self._step(images, indices, errors, epoch)
            if step is None:
                continue
            totals.add(step)
            bar.set_postfix(loss=f"{totals.mean_loss():.4f}", tau=f"{tau:.3f}",
                            lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                            img_s=f"{totals.images * self.ctx.world_size / (time.perf_counter() - tic):.1f}")
        seconds = time.perf_counter() - tic
        if totals.steps == 0:
            raise ValueError(f"epoch {epoch + 1}: no batch had two readable images ({len(self.failed_paths)} "
                             "unreadable training files, listed above); fix or remove them")
        loss, triplet, tv, seen = totals.means(self.ctx, self.device)
        health = totals.health_means(self.ctx, self.device)
        record = {"epoch": epoch + 1, "loss": loss, "triplet": triplet, "tv": tv, "tau": tau,
                  "lr": self.optimizer.param_groups[0]["lr"], "img_per_s": seen / seconds, "seconds": seconds,
                  "triplets": health.pop("triplets")}
        if cfg.recipe.mask_warmup:
            record["mask_gain"] = self._mask_gain(self.scheduler.last_epoch - 1)  # that of the epoch's last step
        if health:
            record["masks"] = health
        return record

    def _step(
        self, images: torch.Tensor, indices: torch.Tensor, errors: list[str], epoch: int
    ) -> StepResult | None:
        """One optimisation step on a batch's readable images; None when the batch is skipped."""
        ok = torch.tensor([not e for e in errors])
        for i, reason in zip(indices, errors):
            path = self.data.train[int(i)].path
            if reason and path not in self.failed_paths:
                self.failed_paths.add(path)
                self.log(f"warning: skipping unreadable training image {printable_path(path)}: {reason}")
        images = images[ok].to(self.device, non_blocking=True)
        if not self.ctx.everywhere(len(images) >= 2, self.device):  # unreadable files left nothing to compare
            self.log(f"warning: epoch {epoch + 1}: skipped a batch left with {len(images)} readable image(s)")
            return None
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        pids = self.train_pids[indices[ok]].to(self.device)
        if self.cfg.recipe.mask_warmup:
            self.raw.set_mask_gain(self._mask_gain(self.scheduler.last_epoch))
        autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        with autocast:
            output = self.model(images, details=True)
        parts = san_loss(output, pids, self.cfg.recipe.margin, self.cfg.recipe.soft_margin, self.cfg.recipe.mu,
                         gather=gather_rows if self.ctx.world_size > 1 else None)
        if not torch.isfinite(parts.total):
            raise FloatingPointError(f"loss is {parts.total.item()} at epoch {epoch + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(parts.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return StepResult(parts.total.item(), parts.triplet.item(), parts.tv.item(), len(images),
                          self._health(output, parts))

    def _mask_gain(self, step: int) -> float:
        """alpha of the mask warm-up at optimisation step ``step`` (0-based): 0 -> 1 linearly over the
        first ``mask_warmup`` epochs, then 1."""
        return min(1.0, step / (self.cfg.recipe.mask_warmup * len(self.sampler)))

    def _health(self, output: SANOutput, parts: LossParts) -> dict[str, dict[str, float]]:
        """This step's mask health, from the tensors it already has (no extra forward pass)."""
        health = {"triplets": triplet_health(parts.pairs, parts.per_anchor)}
        generators = self.raw.generators()
        for stage, m, pi, tv in zip(generators, output.masks, output.probs, parts.tv_terms):
            health[str(stage)] = block_health(m, pi, tv, generators[stage].hard_threshold)
        return health

    def _evaluate(self, epoch: int) -> dict[str, Any]:
        """Query/gallery CMC and mAP of the current weights (rank 0)."""
        report = evaluate_model(self.raw, self.data, batch_size=self.cfg.run.eval_batch_size, workers=self.cfg.run.workers,
                                progress=self.cfg.run.progress)
        self.log(f"epoch {epoch}{' (untrained)' if epoch == 0 else ''}: " + report.render().splitlines()[1].strip())
        if epoch == 0:
            self.result.untrained = report
        self.result.final = report
        return _eval_summary(report)

    def _record(self, record: dict[str, Any]) -> None:
        assert self.metrics is not None, "rank 0 keeps the metrics log"
        self.metrics.write(record)
        self.result.history.append(record)

    def _save(self, record: dict[str, Any]) -> None:
        """Log the epoch, then checkpoint it: last.pt always, best.pt when its mAP is the best yet."""
        done = record["epoch"]
        self.log(f"epoch {done}/{self.cfg.recipe.epochs}: loss {record['loss']:.4f} (triplet {record['triplet']:.4f}, "
                 f"tv {record['tv']:.4f}), tau {record['tau']:.3f}, {record['img_per_s']:.1f} img/s, "
                 f"{record['seconds']:.0f} s")
        self.log(health_line(record))
        is_best = "eval" in record and record["eval"]["mAP"] > self.best_map
        self.best_map = record["eval"]["mAP"] if is_best else self.best_map
        training = {
            "epoch": done, "config": self.cfg.to_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "best_map": self.best_map,
        }
        self._record(record)  # before the checkpoint: a resume drops lines past it, never lacks one
        save_checkpoint(self.out / "last.pt", self.raw, training=training, extra=self.extra)
        if is_best:
            save_checkpoint(self.out / "best.pt", self.raw, training={"epoch": done},
                            extra={**self.extra, "eval": record["eval"]})
        failpoint("train.epoch_saved")

    def _finish(self) -> None:
        """Write model.pt and print untrained vs trained quality."""
        result, cfg = self.result, self.cfg
        assert self.metrics is not None, "rank 0 writes the model"
        final_eval = (result.history or self.metrics.records() or [{}])[-1].get("eval", {})
        save_checkpoint(self.out / "model.pt", self.raw, training={"epoch": cfg.recipe.epochs, "config": cfg.to_dict()},
                        extra={**self.extra, "eval": final_eval})
        self.metrics.close()
        if result.untrained is not None and result.final is not None:
            self.log(f"untrained (epoch 0): mAP {100 * result.untrained.mAP:.1f}%, rank-1 "
                     f"{100 * result.untrained.ranks[1]:.1f}%  ->  trained (epoch {cfg.recipe.epochs}): mAP "
                     f"{100 * result.final.mAP:.1f}%, rank-1 {100 * result.final.ranks[1]:.1f}%")
        written = [self.out / name for name in RUN_FILES]
        written += [p for p in (self.out / "tensorboard", data_root(cfg)) if p.exists() and self.out in p.parents]
        self.log("wrote " + ", ".join(str(p) for p in written if p.exists()))
