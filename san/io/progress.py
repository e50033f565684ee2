"""Progress that a person sees wherever the output goes: a tqdm bar on a terminal, and log
lines when stderr is a file or a pipe (a log), so long work is never silent there.

A log line names the work, done/total, the share done, the time taken and an estimate of the
time left (``calibrating: 96/256 img (38%), 0:41 elapsed, ~1:07 left``). Work that ends within
:func:`log_interval_s` writes none (its own result line says it is done); longer work writes
one line each interval and a last one when it ends.
"""

from __future__ import annotations

import io
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Seconds between two progress lines in a log: often enough that a stalled run shows within a
#: minute, rarely enough that a run of hours writes a readable log.
LOG_INTERVAL_S = 30.0
#: The environment variable that changes it (seconds, > 0), e.g. for a CI log.
INTERVAL_VARIABLE = "SAN_PROGRESS_INTERVAL_S"


def log_interval_s() -> float:
    """:data:`LOG_INTERVAL_S`, or the positive number of seconds in ``$SAN_PROGRESS_INTERVAL_S``."""
    text = os.environ.get(INTERVAL_VARIABLE, "")
    try:
        value = float(text)
    except ValueError:
        return LOG_INTERVAL_S
    return value if math.isfinite(value) and value > 0 else LOG_INTERVAL_S


def _clock_text(seconds: float) -> str:
    """``1:07`` or ``2:03:04``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class LogProgress(tqdm):
    """tqdm whose display is a log line (logger ``san.io.progress``): one per interval while the
    work runs, and a last one when work that logged ends."""

    clock: Callable[[], float] = time.monotonic

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._interval = log_interval_s()
        self._started = self._logged_at = type(self).clock()
        self._logged_n: int | None = None  # no line yet
        super().__init__(*args, **{**kwargs, "mininterval": 0, "miniters": 1, "disable": False, "leave": True,
                                   "file": io.StringIO()})  # tqdm draws nothing; the lines go to the log

    def line(self) -> str:
        """The progress as one line of text."""
        unit = f" {self.unit}" if self.unit and self.unit != "it" else ""
        what = f"{self.desc}: " if self.desc else ""
        elapsed = type(self).clock() - self._started
        if not self.total:
            return f"{what}{self.n}{unit}, {_clock_text(elapsed)} elapsed"
        text = f"{what}{self.n}/{self.total}{unit} ({100 * self.n / self.total:.0f}%), {_clock_text(elapsed)} elapsed"
        done_here = self.n - self.initial  # a resumed run starts at its earlier count
        if done_here > 0 and self.n < self.total:
            text += f", ~{_clock_text(elapsed * (self.total - self.n) / done_here)} left"
        return text

    def _log(self) -> None:
        log.info(self.line())
        self._logged_at, self._logged_n = type(self).clock(), self.n

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Log a line when the count moved and an interval has passed since the start or the last line."""
        if self.n != self._logged_n and type(self).clock() - self._logged_at >= self._interval:
            self._log()
        return True

    def close(self) -> None:
        """The last line, when the work logged before and moved since; then tqdm's close."""
        if not self.disable and self._logged_n is not None and self.n != self._logged_n:
            self._log()
        super().close()


def progress_bar(iterable: Iterable[T] | None = None, *, enabled: bool = True, **options: Any) -> tqdm:
    """Progress over ``iterable`` (or by ``update``): a tqdm bar when ``enabled`` and stderr is a
    terminal, :class:`LogProgress` lines when ``enabled`` and it is not, nothing otherwise."""
    if not enabled:
        return tqdm(iterable, disable=True, **options)
    if sys.stderr.isatty():
        return tqdm(iterable, **options)
    return LogProgress(iterable, **options)
