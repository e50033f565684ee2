"""Runtime: backends (torch, onnxruntime, tensorrt) behind one interface, and folder embedding.

Public API::

    from runtime import open_backend, embed_folder, merge_shards, EmbedOptions, Shard, LocalRunner

``runtime.embed_ray.RayRunner`` (the ``cluster`` extra) embeds on Ray instead.

Importing ``runtime`` imports neither torch nor tensorrt: each backend module is imported
when :func:`open_backend` first needs it, so an edge box with only onnxruntime runs
``.onnx`` models.
"""

from __future__ import annotations

from runtime.base import Backend, BackendError
from runtime.embed import EmbedError, EmbedOptions, EmbedResult, LocalRunner, Shard, embed_folder, merge_shards
from runtime.registry import BACKENDS, open_backend
from san.io.discovery import discover_images

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "EmbedError",
    "EmbedOptions",
    "EmbedResult",
    "LocalRunner",
    "Shard",
    "discover_images",
    "embed_folder",
    "merge_shards",
    "open_backend",
]
