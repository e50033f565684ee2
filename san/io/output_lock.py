"""One writer per output: an exclusive advisory lock held while a command writes it.

The lock is ``flock`` on a file named by the output's resolved path, in a folder of the
machine's temporary directory, so it dies with the process that holds it: a killed run never
leaves a stale lock, and its ``--resume`` takes the lock again at once. Nothing is written
beside the output, and a command refused for its arguments leaves no trace. The lock file
records the holder's process id and command line for the message a second run prints; it is
never removed (removing it would let two runs lock two different files of one name).
Torch-free.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from san.io.atomic import DestinationError, remove_stale_temporaries

log = logging.getLogger(__name__)


#: Where the lock files live: shared by every user of the machine (sticky, like /tmp itself).
LOCK_FOLDER = Path(tempfile.gettempdir()) / "san-output-locks"


def lock_path(out: str | Path) -> Path:
    """The lock file of the output ``out``: one per resolved path, whichever way it is written."""
    key = hashlib.sha256(str(Path(out).expanduser().resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return LOCK_FOLDER / f"{key[:32]}.lock"


@contextlib.contextmanager
def exclusive_output(out: str | Path) -> Iterator[None]:
    """Hold the output ``out`` for this process while the block runs, after removing (and
    reporting) the temporaries a killed run's atomic writes left beside it.

    Raises :class:`san.io.atomic.DestinationError` naming ``out`` and the process that holds it
    when another run is writing it.
    """
    path = lock_path(out)
    if not LOCK_FOLDER.is_dir():
        LOCK_FOLDER.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):  # another user made it first
            LOCK_FOLDER.chmod(0o1777)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "a process"
            raise DestinationError(errno.EBUSY, f"another run is writing it ({holder}); wait for it to end, "
                                   "or give another output", str(out)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}".encode(), 0)
        stale = remove_stale_temporaries(out)
        if stale:
            log.info(f"removed {len(stale)} temporary file(s) an interrupted run left beside {out}: "
                     f"{', '.join(p.name for p in stale)}")
        yield
    finally:
        os.close(fd)  # releases the lock
