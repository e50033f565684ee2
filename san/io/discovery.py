"""Finding the images of a folder in one stable order (torch-free: runtime, calibration
and export all list folders through it).

Rules (the order is part of the output format: rows of ``embeddings.npy`` follow it):

- recursive; suffixes .jpg .jpeg .png .bmp .webp in any case;
- hidden entries (name starting with ".") are skipped, files and folders alike:
  they are ``.DS_Store``/AppleDouble ``._x.jpg`` files, thumbnail caches and VCS folders,
  never data;
- symbolic links are followed, but a folder already visited (same device and inode) is
  not entered again, so link loops end;
- sorted by relative POSIX path, compared as Python strings (code points): the same
  order on every machine and locale.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


def discover_images(root: str | Path) -> list[str]:
    """Relative POSIX paths of the images under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: image folder not found (expected a directory of images)")
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    for directory, subdirs, files in os.walk(root, followlinks=True):
        stat = os.stat(directory)
        if (stat.st_dev, stat.st_ino) in seen:
            subdirs.clear()
            continue
        seen.add((stat.st_dev, stat.st_ino))
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        rel = Path(directory).relative_to(root)
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                found.append((rel / name).as_posix())
    return sorted(found)


def list_digest(root: str | Path, paths: list[str]) -> str:
    """SHA-256 over the relative paths and byte sizes: what a resumed or merged run must share."""
    root = Path(root)
    digest = hashlib.sha256()
    for rel in paths:
        try:
            size = (root / rel).stat().st_size
        except OSError:
            size = -1
        digest.update(os.fsencode(f"{rel}\0{size}\n"))
    return digest.hexdigest()
