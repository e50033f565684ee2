"""Atomic file writes: a reader never sees a half-written file, and a destination that cannot
take one (full, read-only, not permitted) is named in one line."""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from san.io.errors import ToolkitError
from san.io.failpoints import failpoint

_TMP_SUFFIX = ".tmp"

#: What a destination that cannot take a write reports: full, over quota, read-only, not permitted.
_DESTINATION_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class DestinationError(ToolkitError, OSError):
    """``filename`` cannot be written (``strerror`` says why); raised where the write happens, so
    what was written before it stays as it was."""

    def __str__(self) -> str:
        reason = self.strerror or "unknown reason"
        return f"{self.filename}: cannot write there: {reason[:1].lower()}{reason[1:]}"


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Report a full, read-only or forbidden destination met inside the block as a
    :class:`DestinationError` naming ``path``; other errors pass unchanged."""
    try:
        yield
    except DestinationError:
        raise
    except OSError as exc:
        if exc.errno not in _DESTINATION_ERRNOS:
            raise
        raise DestinationError(exc.errno, os.strerror(exc.errno), str(path)) from exc


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it into place.

    On error the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode of a new file
            failpoint("atomic.before_replace")
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)


@contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``folder``; once the block succeeds it replaces
    ``folder`` and whatever ``folder`` held.

    A multi-file output (an IR and its weights, a model repository) is written into the
    temporary folder, so a kill leaves the old output or none, never a mix: the old folder is
    renamed aside, the new one renamed in, and the old one removed. What a kill leaves is named
    like an atomic write's temporary, so :func:`remove_stale_temporaries` of ``folder`` finds it.
    On error the temporary folder is removed and ``folder`` stays as it was. A ``folder`` that
    is a symbolic link keeps it: the folder it points to is the one replaced.
    """
    folder = Path(folder)
    folder = folder.resolve() if folder.is_symlink() else folder
    with writing(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=_TMP_SUFFIX, dir=folder.parent))
    try:
        yield staging
        with writing(folder):
            os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the usual mode of a new folder
            failpoint("atomic.folder_staged")
            if folder.is_dir() and any(folder.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=_TMP_SUFFIX, dir=folder.parent))
                os.replace(folder, old)  # onto an empty folder: POSIX rename replaces it
                failpoint("atomic.folder_moved_aside")
                os.replace(staging, folder)
                shutil.rmtree(old)
            else:
                os.replace(staging, folder)  # no folder, or an empty one
            _fsync_dir(folder.parent)
    finally:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries (files, and folders of :func:`staged_folder`) that writes of
    ``path`` killed before their rename left beside it; the paths removed.

    Only for a writer that holds ``path`` (:func:`san.io.output_lock.exclusive_output`): a concurrent
    atomic write of it would lose its temporary.
    """
    path = Path(path)
    stale = sorted(path.parent.glob(f".{glob.escape(path.name)}.*{_TMP_SUFFIX}"))
    for tmp in stale:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return stale


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON (sorted keys, a final newline) to ``path``, atomically: every
    JSON file and config the toolkit writes goes through here or :func:`atomic_write_text`."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
