"""Progress in a log (san.io.progress): lines at an interval with done/total and the time left,
none for work shorter than the interval, nothing when turned off."""

from __future__ import annotations

import io
import logging

import pytest
from tqdm import tqdm

import san.io.progress
from san.io.progress import INTERVAL_VARIABLE, LOG_INTERVAL_S, LogProgress, log_interval_s, progress_bar


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(LogProgress, "clock", fake)
    monkeypatch.delenv(INTERVAL_VARIABLE, raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: a log
    return fake


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "san.io.progress"]


def test_a_log_gets_one_line_per_interval_with_the_time_left_and_a_last_line(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="san.io.progress"):
        bar = progress_bar(total=100, desc="embedding", unit="img")
        assert isinstance(bar, LogProgress)
        for _ in range(100):  # 10 s an image: 1000 s in all
            clock.now += 10
            bar.update(1)
        bar.close()
    lines = _lines(caplog)
    # 10 s per image: a line every 3 images (30 s), 33 of them, then the last at 100.
    assert len(lines) == 34 and lines[-1] == "embedding: 100/100 img (100%), 16:40 elapsed"
    assert lines[0] == "embedding: 3/100 img (3%), 0:30 elapsed, ~16:10 left"  # 97 images at 10 s
    assert lines[1] == "embedding: 6/100 img (6%), 1:00 elapsed, ~15:40 left"


def test_work_shorter_than_the_interval_writes_no_line(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="san.io.progress"):
        for _ in progress_bar(range(5), desc="query"):
            clock.now += LOG_INTERVAL_S / 10
    assert _lines(caplog) == []


def test_a_resumed_count_estimates_from_the_work_done_in_this_run(clock: FakeClock,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="san.io.progress"):
        with progress_bar(total=100, initial=50, desc="embedding", unit="img") as bar:
            clock.now += 30
            bar.update(10)  # 10 images in 30 s, 40 to go: 2 minutes
    assert _lines(caplog)[0] == "embedding: 60/100 img (60%), 0:30 elapsed, ~2:00 left"


def test_turned_off_there_is_neither_bar_nor_line(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="san.io.progress"):
        bar = progress_bar(total=10, enabled=False)
        clock.now += 3600
        bar.update(10)
        bar.close()
    assert not isinstance(bar, LogProgress) and bar.disable and _lines(caplog) == []


def test_a_terminal_gets_tqdm_s_own_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Terminal())
    bar = progress_bar(total=3)
    assert type(bar) is tqdm
    bar.close()


@pytest.mark.parametrize(("text", "seconds"), [("5", 5.0), ("0.5", 0.5), ("", LOG_INTERVAL_S), ("0", LOG_INTERVAL_S),
                                               ("-3", LOG_INTERVAL_S), ("nan", LOG_INTERVAL_S), ("soon", LOG_INTERVAL_S)])
def test_the_interval_comes_from_the_environment_when_it_is_a_positive_number(
        monkeypatch: pytest.MonkeyPatch, text: str, seconds: float) -> None:
    monkeypatch.setenv(INTERVAL_VARIABLE, text)
    assert log_interval_s() == seconds
    assert san.io.progress.LOG_INTERVAL_S == 30.0
