"""Every installed ``san-*`` command answers ``--help``, and so does each of its subcommands."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
from importlib.metadata import entry_points

import pytest

COMMANDS = sorted((e for e in entry_points(group="console_scripts") if e.name.startswith("san-")), key=lambda e: e.name)


def _help(entry, argv: list[str]) -> str:
    """What ``entry`` prints for ``argv``; it must exit 0 through argparse's help action."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exited:
        entry.load()(argv)
    assert exited.value.code == 0, f"{entry.name} {' '.join(argv)}: exit {exited.value.code}"
    return printed.getvalue()


def _subcommands(entry) -> list[str]:
    parser = importlib.import_module(entry.module).build_parser()
    return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def test_every_command_of_the_distribution_is_installed() -> None:
    names = {e.name for e in COMMANDS}
    assert {"san-train", "san-eval", "san-export", "san-calibrate", "san-embed", "san-parity", "san-search"} <= names


@pytest.mark.parametrize("entry", COMMANDS, ids=lambda e: e.name)
def test_help_runs_for_the_command_and_each_subcommand(entry) -> None:
    text = _help(entry, ["--help"])
    assert text.startswith("usage: ") and entry.name in text.splitlines()[0]
    for sub in _subcommands(entry):
        text = _help(entry, [sub, "--help"])
        assert text.startswith("usage: ") and f"{entry.name} {sub}" in text.splitlines()[0]
