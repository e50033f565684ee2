"""Fixtures every package's tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.tiny import build_tiny


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's small model (:func:`support.tiny.build_tiny`): built once, read-only."""
    return build_tiny(tmp_path_factory.getbasetemp() / "tiny")
