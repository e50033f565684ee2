"""Fixtures every package's tests share."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from san.cli.command import show_library_messages
from support.module_folders import ModuleFolders
from support.tiny import build_tiny


def pytest_configure(config: pytest.Config) -> None:
    """Workers share the cores: each runs torch, and the commands it starts, on its share of
    them (OMP_NUM_THREADS), instead of every worker spinning threads for every core. Caches the
    commands keep by default (OpenVINO's compiled models) go to a folder of this run, not the
    user's home."""
    import tempfile

    import torch

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="san-test-cache-")
    config.add_cleanup(lambda: shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True))

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules that hold slow tests run first, each kept whole: with two workers the long
    modules start at once and the short ones fill in beside them, not after them."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


@pytest.fixture(scope="session", autouse=True)
def library_messages_on_stdout() -> None:
    """Library messages go to stdout, as under every command, whichever test runs first."""
    show_library_messages()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's small model (:func:`support.tiny.build_tiny`): built once, read-only."""
    return build_tiny(tmp_path_factory.getbasetemp() / "tiny")


@pytest.fixture(scope="module")
def module_tmp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleFolders]:
    """Folders a module's fixtures share. They are removed after the module when none of its
    tests failed, so the suite's peak disk use is one module's models, not every module's."""
    failed_before = request.session.testsfailed
    root = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield ModuleFolders(root)
    if request.session.testsfailed == failed_before:
        shutil.rmtree(root, ignore_errors=True)
