"""The uninterrupted folder-embedding run that interrupted, resumed and sharded runs are
compared with."""

from __future__ import annotations

from pathlib import Path

from runtime import EmbedOptions, LocalRunner, embed_folder, open_backend

#: Ragged batches and several chunks on a dozen images.
OPTIONS = EmbedOptions(batch_size=3, chunk_size=4)


def reference_run(model: Path, folder: Path, out: Path) -> Path:
    """Embed ``folder`` with ``model`` in one run, decoding in-process; returns ``out``."""
    with open_backend(model) as backend:
        embed_folder(folder, backend, out, OPTIONS, runner=LocalRunner(0), overwrite=True, progress=False)
    return out
