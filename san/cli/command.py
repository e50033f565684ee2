"""What every ``san-*`` command shares around its ``main``: library messages shown on stdout,
and each error reported in one line with its exit status, in one place (:func:`command`).

Library code reports through :mod:`logging` (loggers ``san``, ``export``, ``calibration``,
``runtime``) and never prints; a command shows those messages one per line, written
through tqdm so that they do not tear a progress bar on a terminal.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import io
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Protocol

from tqdm import tqdm

from san.cli.arguments import BadArguments
from san.contract.limits import check_overrides
from san.io.errors import ToolkitError
from san.io.extras import missing_extra

#: The toolkit's top-level packages: their loggers are what a command shows.
PACKAGES = ("san", "export", "calibration", "runtime")

#: The running command (and subcommand), as its errors name it.
_PROG: contextvars.ContextVar[str] = contextvars.ContextVar("prog", default="san")


class Main(Protocol):
    """A command's ``main``: the arguments (None: the process's), the exit status."""

    def __call__(self, argv: list[str] | None = None) -> int: ...


class _LineHandler(logging.Handler):
    """One message a line on stdout, past any progress bar (and past :func:`foreign_prints_dropped`)."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=_message_stream())


def _message_stream() -> object:
    """Where the toolkit's messages go: stdout, or past :func:`foreign_prints_dropped` to the real one."""
    return getattr(sys.stdout, "messages_to", sys.stdout)


class _Dropped(io.TextIOBase):
    """A stdout that drops what is printed to it; the toolkit's messages go to ``messages_to``."""

    def __init__(self, messages_to: object) -> None:
        self.messages_to = messages_to

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)


@contextlib.contextmanager
def foreign_prints_dropped() -> Iterator[None]:
    """Drop what third-party code prints to stdout (a library's per-batch chatter) while the
    toolkit's own messages, progress lines among them, still reach stdout."""
    with contextlib.redirect_stdout(_Dropped(_message_stream())):
        yield


def show_library_messages() -> None:
    """Send INFO and above from the toolkit's loggers to stdout (once per process)."""
    for name in PACKAGES:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _LineHandler) for h in logger.handlers):
            logger.addHandler(_LineHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def subcommand(name: str) -> None:
    """Name the subcommand that runs (``san-search query``): errors are reported under it."""
    _PROG.set(f"{_PROG.get()} {name}")


def command(prog: str) -> Callable[[Main], Main]:
    """Decorate a command's ``main``: show library messages, and report every error the toolkit
    raises (:class:`~san.io.errors.ToolkitError`, with its exit status) and every input a library
    refuses (``ValueError``, ``OSError``: exit 2) in one line on stderr, ``prog: error: ...``.
    Also exit 2 on bad arguments (already reported by the parser), a limit variable that is not
    one (``SAN_MAX_*``), and an optional dependency that is missing. The one place where a
    command's errors become exit statuses."""
    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            show_library_messages()
            token = _PROG.set(prog)
            try:
                check_overrides()  # a SAN_MAX_* variable that would fail in the middle of the work
                return main(argv)
            except BadArguments:  # the parser has said what was wrong, in one line
                return 2
            except ToolkitError as exc:
                return _report(exc, exc.exit_status)
            except ImportError as exc:
                message = missing_extra(exc)
                if message is None:
                    raise
                return _report(message, 2)
            except (ValueError, OSError) as exc:  # an input a library refuses; what was written before stays
                return _report(exc, 2)
            finally:
                _PROG.reset(token)

        return run

    return wrap


def _report(error: object, status: int) -> int:
    print(f"{_PROG.get()}: error: {error}", file=sys.stderr)
    return status
