"""Fixtures every package's tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from san.command import show_library_messages
from support.tiny import build_tiny


@pytest.fixture(scope="session", autouse=True)
def library_messages_on_stdout() -> None:
    """Library messages go to stdout, as under every command, whichever test runs first."""
    show_library_messages()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's small model (:func:`support.tiny.build_tiny`): built once, read-only."""
    return build_tiny(tmp_path_factory.getbasetemp() / "tiny")
