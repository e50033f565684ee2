"""A multi-file output appears complete or not at all: written into a folder beside it that
replaces it, so an error or a kill at any point leaves the old output or none, and what a kill
leaves is found and removed by the next writer."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from san.io.atomic import remove_stale_temporaries, staged_folder
from san.io.failpoints import ENV

WRITER = """
import sys
from pathlib import Path
from san.io.atomic import staged_folder

with staged_folder(Path(sys.argv[1])) as staging:
    (staging / "model.xml").write_text("new xml")
    (staging / "model.bin").write_bytes(b"new weights")
"""


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def _old_output(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    (folder / "model.xml").write_text("old xml")
    (folder / "model.bin").write_bytes(b"old weights")
    (folder / "extra.txt").write_text("only the old output has this")
    return _contents(folder)


@pytest.mark.parametrize("existing", ["none", "empty", "old"])
def test_the_staged_folder_replaces_the_output_whole(existing: str, tmp_path: Path) -> None:
    folder = tmp_path / "ir"
    if existing == "empty":
        folder.mkdir()
    elif existing == "old":
        _old_output(folder)
    with staged_folder(folder) as staging:
        assert staging.parent == tmp_path and staging != folder and not any(staging.iterdir())
        (staging / "model.xml").write_text("new xml")
    assert _contents(folder) == {"model.xml": b"new xml"}  # nothing of the old output stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_error_while_staging_leaves_the_old_output_and_no_temporary(tmp_path: Path) -> None:
    folder = tmp_path / "ir"
    old = _old_output(folder)
    with pytest.raises(RuntimeError, match="verification failed"):
        with staged_folder(folder) as staging:
            (staging / "model.xml").write_text("half")
            raise RuntimeError("verification failed")
    assert _contents(folder) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir"]


def test_a_link_to_a_folder_stays_a_link_and_its_folder_is_replaced(tmp_path: Path) -> None:
    real, link = tmp_path / "real", tmp_path / "link"
    _old_output(real)
    link.symlink_to(real)
    with staged_folder(link) as staging:
        (staging / "model.xml").write_text("new xml")
    assert link.is_symlink() and _contents(real) == {"model.xml": b"new xml"}


@pytest.mark.parametrize("point, left", [("atomic.folder_staged", "old"), ("atomic.folder_moved_aside", "none")])
def test_a_kill_leaves_the_old_output_or_none_and_the_next_writer_removes_the_rest(point: str, left: str,
                                                                                    tmp_path: Path) -> None:
    """SIGKILL (a real one, at a named point) before the new folder moves in, and between moving
    the old one aside and moving the new one in: never a mix of old and new files."""
    folder = tmp_path / "ir"
    old = _old_output(folder)
    killed = subprocess.run([sys.executable, "-c", WRITER, str(folder)], env={**os.environ, ENV: f"{point}=1"},
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _contents(folder) == (old if left == "old" else {})
    stale = [p for p in tmp_path.iterdir() if p.name != "ir"]
    assert stale and all(p.name.startswith(".ir.") and p.name.endswith(".tmp") and p.is_dir() for p in stale)
    assert sorted(remove_stale_temporaries(folder)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["ir"] if left == "old" else [])
    done = subprocess.run([sys.executable, "-c", WRITER, str(folder)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _contents(folder) == {"model.xml": b"new xml", "model.bin": b"new weights"}
