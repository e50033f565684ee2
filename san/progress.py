"""Progress bars that appear only on a terminal, so logs stay one line per stage."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress_bar(iterable: Iterable[T] | None = None, *, enabled: bool = True, **options: Any) -> tqdm:
    """A tqdm bar drawn when ``enabled`` and stderr is a terminal; otherwise silent (tqdm's
    ``disable=None``), so output redirected to a file gets no carriage-return frames."""
    return tqdm(iterable, disable=None if enabled else True, **options)
