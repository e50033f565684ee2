"""Training-step benchmark: SAN vs the ResNet-50 baseline (``ModelConfig(attention="none")``).

One step is what ``san.training.train`` does per batch: forward with ``details=True``, the loss of
Eq. 8 (:func:`san.training.losses.san_loss`: batch-hard triplet + mu * TV), backward and an Adam
step, on the same random P x K batch of uint8 images for every model::

    python benchmarks/train_step.py            # ResNet-50, 256x128, P x K = 8 x 4
    python benchmarks/train_step.py --profile  # + SAN without context units, and SAN's top ops

Each model trains in its own spawned child process (peak RSS is its own). Reported: the
median step time of ``--steps`` steps after ``--warmup``, its 90th percentile, the
process CPU time per step (median; with ``--threads 1`` it is robust to a loaded machine,
unlike wall time), images/s, the forward FLOPs per image (eval graph) and peak RSS; the
table ends in the ratios to the baseline, then the target (SAN step <= 1.3x).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from common import (
    cpu_flags,
    fmt,
    load_average,
    markdown_table,
    parse_args,
    peak_rss_mib,
    percentile_ms,
    run_in_child,
    verdict,
)

from runtime.base import physical_cores
from runtime.machine import cpu_name

#: Target: SAN's step over the baseline's.
STEP_TARGET = 1.3
SMOKE = {"p": 2, "k": 2, "height": 64, "width": 32, "backbone": "resnet18", "steps": 2, "warmup": 1}
PROFILE_ROWS = 15


@dataclass(frozen=True)
class Variant:
    """A row: a name and the :class:`san.model.config.ModelConfig` fields that differ from the default."""

    name: str
    config: dict[str, Any]


@dataclass
class StepResult:
    """One model's numbers."""

    steps_s: list[float]
    cpu_s: list[float]
    rss_mib: float
    params: int
    flops: int
    profile: str | None

    @property
    def median_s(self) -> float:
        return statistics.median(self.steps_s)


def train_steps(variant: Variant, args: argparse.Namespace, threads: int, profile: bool) -> StepResult:
    """Child side: build the model, warm up, time ``args.steps`` optimizer steps."""
    import torch

    from san.contract.spec import InputSpec
    from san.evaluation.summary import flops_per_image
    from san.model.config import ModelConfig
    from san.model.network import build_model
    from san.training.losses import san_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = InputSpec(height=args.height, width=args.width)
    model = build_model(ModelConfig(backbone=args.backbone, spec=spec, **variant.config)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=5e-4)
    images = torch.randint(0, 256, (args.p * args.k, 3, spec.height, spec.width), dtype=torch.uint8)
    pids = torch.arange(args.p).repeat_interleave(args.k)

    def step() -> None:
        loss = san_loss(model(images, details=True), pids).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    times, cpu = [], []
    for _ in range(args.steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    rss = peak_rss_mib()
    table = None
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=PROFILE_ROWS)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return StepResult(times, cpu, rss, params, flops_per_image(model), table)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python benchmarks/train_step.py``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--p", type=int, default=8, help="identities per batch (default %(default)s)")
    p.add_argument("--k", type=int, default=4, help="images per identity (default %(default)s)")
    p.add_argument("--height", type=int, default=256, help="input height (default %(default)s)")
    p.add_argument("--width", type=int, default=128, help="input width (default %(default)s)")
    p.add_argument("--backbone", default="resnet50", help="backbone of both models (default %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per model (default %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default %(default)s)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: physical cores)")
    p.add_argument("--profile", action="store_true",
                   help="also time SAN without context units and print SAN's top ops (torch.profiler)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run every variant in its own process and print the table."""
    args = parse_args(build_parser(), argv, SMOKE)
    threads = args.threads or physical_cores()
    import torch

    print(f"command: python benchmarks/train_step.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"machine: {cpu_name()} ({cpu_flags()}); load average {load_average()}; torch {torch.__version__}")
    print(f"batch: {args.p} x {args.k} at {args.height}x{args.width}, {args.backbone}, {threads} threads; "
          f"median of {args.steps} steps after {args.warmup} warm-up steps")
    baseline = Variant(f"{args.backbone} baseline (attention=none)", {"attention": "none"})
    san = Variant("SAN (sharp, context units, stages 1-4)", {})
    variants = [baseline, *([Variant("SAN without context units", {"context_unit": False})] if args.profile else []),
                san]
    results = {}
    for v in variants:
        print(f"running {v.name} ...", flush=True)
        results[v.name] = run_in_child(train_steps, v, args, threads, args.profile and v is san)
    print(f"load average after: {load_average()}\n")
    if results[san.name].profile:
        print(f"SAN step, top {PROFILE_ROWS} ops by self CPU time:\n{results[san.name].profile}")
    base = results[baseline.name]
    rows = [[v.name, fmt(r.params / 1e6, 2), fmt(r.flops / 1e9, 2), fmt(r.median_s * 1e3, 0),
             fmt(percentile_ms(r.steps_s, 90), 0), fmt(statistics.median(r.cpu_s), 1),
             fmt(args.p * args.k / r.median_s, 1), fmt(r.rss_mib, 0),
             fmt(r.flops / base.flops, 2, "x"), fmt(r.median_s / base.median_s, 2, "x"),
             fmt(statistics.median(r.cpu_s) / statistics.median(base.cpu_s), 2, "x"),
             fmt(r.rss_mib / base.rss_mib, 2, "x")]
            for v, r in ((v, results[v.name]) for v in variants)]
    headers = ["model", "params M", "fwd GFLOP/img", "step ms (median)", "step ms p90", "CPU s/step", "img/s",
               "peak RSS MiB",
               "FLOP x baseline", "step x baseline", "CPU x baseline", "RSS x baseline"]
    ratio = results[san.name].median_s / base.median_s
    targets = [["SAN step / baseline step", fmt(ratio, 2, "x"), f"<= {STEP_TARGET}x",
                verdict(ratio, STEP_TARGET, at_most=True)]]
    print(markdown_table(headers, rows) + "\n\n" + markdown_table(["target", "measured", "goal", "verdict"], targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
