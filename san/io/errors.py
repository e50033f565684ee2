"""The toolkit's one error base (torch-free): what a command reports in one line and the exit
status it ends with.

Every error the toolkit raises on purpose derives from :class:`ToolkitError` (and from the
builtin it has always been, ``ValueError``, ``OSError`` or ``RuntimeError``, so that callers
catching those keep working). :func:`san.cli.command.command` handles them, once, for every command:
``prog: error: message`` on stderr and :attr:`ToolkitError.exit_status`.
"""

from __future__ import annotations


class ToolkitError(Exception):
    """An error whose message is one line naming the file or argument and what was wrong."""

    #: 2: bad input, nothing written; export uses 1 (a file failed its check) and 3 (a target's
    #: runtime is missing here).
    exit_status: int = 2
