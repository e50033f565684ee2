"""Folders that one test module's shared fixtures write to."""

from __future__ import annotations

from pathlib import Path


class ModuleFolders:
    """Named folders for one test module's shared fixtures, all under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        """A new empty folder ``name`` (a name used twice in one module is an error)."""
        path = self.root / name
        path.mkdir()
        return path
