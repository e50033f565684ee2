"""Named fault-injection points for crash-safety tests; inert unless ``SAN_FAILPOINTS`` is set.

``SAN_FAILPOINTS="embed.chunk_committed=2"`` makes the process SIGKILL itself the second
time it passes :func:`failpoint` ``("embed.chunk_committed")``: a kill at a chosen commit
point, as the OOM killer or a power cut would deliver it, with no race against a running
process. ``=2:stop`` stops it there instead (SIGSTOP, until a SIGCONT): a run held at a known
point while another starts beside it. Several points are separated by commas. Counts are per
process.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "SAN_FAILPOINTS"
_passes: Counter[str] = Counter()


def failpoint(name: str) -> None:
    """Count a pass through ``name``; SIGKILL (or SIGSTOP) this process on the pass the variable names."""
    settings = os.environ.get(ENV)
    if not settings:
        return
    _passes[name] += 1
    for setting in settings.split(","):
        point, _, action = setting.partition("=")
        count, _, verb = action.partition(":")
        if point.strip() == name and count.strip().isdigit() and _passes[name] == int(count):
            os.kill(os.getpid(), signal.SIGSTOP if verb.strip() == "stop" else signal.SIGKILL)
