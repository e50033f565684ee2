"""A JSON file in one of the toolkit's own formats, read as a file from another machine (torch-free):
it exists, its size is within its limit (:mod:`san.contract.limits`) before it is read, it parses,
and it is an object that names the format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from san.contract.limits import exceeds
from san.io.errors import ToolkitError


def read_record(path: Path, *, format: str, limit: str, what: str, written_by: str,
                error: type[ToolkitError]) -> dict[str, Any]:
    """The object in ``path``; ``error`` in one line naming the file when it is missing (``written_by``
    says what makes it), larger than ``limit``, not JSON, or not ``what`` (its ``format`` field)."""
    if not path.is_file():
        raise error(f"{path}: {what} not found ({written_by})")
    if over := exceeds(path.stat().st_size, limit):
        raise error(f"{path}: refused: {over}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != format:
        raise error(f"{path}: not a {what} (expected format {format!r})")
    return data
