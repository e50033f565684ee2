"""Shared helpers of the benchmark scripts: child processes, memory, timing, tables.

Every competitor of a benchmark runs in its own spawned child process (:func:`run_in_child`),
so its peak memory is its own and one competitor's allocator state, thread pools or
imports (torch!) cannot leak into the next one's numbers, while the script stays one run
on the same images. Imported by sibling scripts as ``common``: ``python benchmarks/x.py``
puts ``benchmarks/`` first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from runtime.machine import instruction_sets

MIB = 1024.0 * 1024.0


# -- processes and memory ------------------------------------------------------------------
def run_in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh spawned process; its result, or its error re-raised here.

    ``fn`` must be a module-level function and ``args``/result picklable.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(sender, fn, args), daemon=False)
    child.start()
    sender.close()
    try:
        ok, payload = receiver.recv()
    except EOFError:
        ok, payload = False, "child process died without a result"
    child.join()
    if not ok:
        name = getattr(fn, "__name__", fn)
        raise RuntimeError(f"{name} failed in its child process (exit {child.exitcode}):\n{payload}")
    return payload


def _child_main(sender: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        result = (True, fn(*args))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent as text
        result = (False, traceback.format_exc())
    sender.send(result)
    sender.close()


def peak_rss_mib() -> float:
    """High-water resident set size of this process so far (MiB).

    Linux's ``VmHWM``, which starts afresh at exec; ``getrusage``'s ``ru_maxrss`` does not
    (a spawned child would report its parent's high-water mark at fork time).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MIB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # KiB on Linux, bytes on macOS


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _descendants(root: int) -> list[int]:
    """Pids of every live descendant of ``root`` (Linux /proc; empty elsewhere)."""
    parents: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


class TreeRss:
    """Peak summed RSS of this process and all its descendants (decode workers), sampled.

    A context manager; sampling every ``interval`` seconds misses spikes shorter than
    that, and pages shared between processes count once per process (an upper bound).
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)

    def _sample(self) -> None:
        me = os.getpid()
        total = sum(_rss_bytes(pid) for pid in (me, *_descendants(me)))
        self.peak_mib = max(self.peak_mib, total / MIB)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# -- timing ----------------------------------------------------------------------------------
def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``seconds``, in milliseconds (NaN when empty)."""
    return float(np.percentile(np.asarray(seconds), q) * 1e3) if len(seconds) else float("nan")


def matmul_peak_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """Best float32 matrix-multiply rate of torch (MKL/oneDNN sgemm) on ``threads`` threads."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)  # warm-up: thread pool and packing buffers
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 2.0 * size**3 / best / 1e9


# -- reporting -------------------------------------------------------------------------------
def load_average() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_flags() -> str:
    """Which of the SIMD extensions that matter for int8 GEMMs the CPU has (:mod:`runtime.machine`)."""
    return " ".join(instruction_sets()) or "none of avx2/avx512/vnni"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table with padded columns."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    """A number for a table cell; ``-`` for None or NaN."""
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}f}{suffix}"


def verdict(value: float | None, goal: float, at_most: bool = False) -> str:
    """``met`` / ``missed by X%`` for a measured ratio against its goal."""
    if value is None or value != value:
        return "not measured"
    if (value <= goal) if at_most else (value >= goal):
        return "met"
    return f"missed by {abs(value / goal - 1) * 100:.0f}%"


# -- command line ---------------------------------------------------------------------------
def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None, smoke: dict[str, Any]) -> argparse.Namespace:
    """Parse ``argv`` with a ``--smoke`` flag added: it replaces the ``smoke`` settings with
    the tiniest ones, for a test that the whole script runs."""
    parser.add_argument("--smoke", action="store_true", help="tiniest settings: a test that everything runs")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in smoke.items():
            setattr(args, key, value)
    return args
