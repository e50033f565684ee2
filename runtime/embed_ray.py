"""Embedding on Ray Data: decode in tasks, model replicas in actors, batches streamed back.

:class:`RayRunner` is a :class:`runtime.embed.Runner`, so the driver keeps the local
path's plan, chunk commits, ``--resume`` and output folder; only decoding and embedding
move to the cluster. Files are read by the project's own decoder inside the tasks
(:func:`runtime.embed.load_task`), not by ``ray.data.read_images``, so one unreadable file
becomes one ``error`` line of ``index.csv`` and never fails or drops a block. Ray Data's
own checkpointing is not used: resuming is the driver's chunk commits.

On a cluster, every node must see the image folder and the model at the same paths (a
shared or mounted file system) and have the toolkit installed.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.base import Backend
from runtime.embed import TASK_SIZE, EmbedError, EmbedOptions, FileResult, embed_decoded, load_task
from runtime.registry import open_backend
from san.contract.spec import InputSpec
from san.io.extras import missing_extra

#: Seconds to wait for a cluster address to accept a connection before giving up.
CONNECT_TIMEOUT = 5.0
#: CPUs one decode task reserves: half a CPU, so two overlap their file reads on each. Never a
#: whole number, so decode tasks never share resources with a model actor and Ray Data
#: keeps them apart instead of fusing decoding into the actors.
DECODE_CPUS = 0.5


def ray_module() -> Any:
    """The ``ray`` module with Ray Data, or an :class:`EmbedError` naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data comes with ray[data]
    except ImportError as exc:
        raise EmbedError(f"--ray needs Ray Data: {missing_extra(exc) or exc}") from None
    return ray


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast, with one line, when ``address`` (``host:port`` or ``ray://host:port``) does not
    accept a TCP connection; ``auto`` is left to Ray."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise EmbedError(f"--ray {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise EmbedError(f"--ray {address}: cannot reach a Ray cluster there within {timeout:g} s "
                         f"({exc.strerror or exc}); start one with `ray start --head` or omit the address "
                         "to run a local Ray") from None


@dataclass(frozen=True)
class ActorSpec:
    """What each model actor opens: the artifact, the backend by name, its options."""

    model: str
    backend: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)


class _EmbedActor:
    """One model replica: opens the backend once and embeds the readable images of each batch."""

    def __init__(self, actor: ActorSpec, options: EmbedOptions) -> None:
        self.backend = open_backend(actor.model, actor.backend, **actor.backend_options).activate()
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = [str(e) for e in batch["error"]]
        decoded = [(image if not error else None, error) for image, error in zip(batch["image"], errors)]
        results = embed_decoded(self.backend, self.options, decoded)
        embeddings = np.zeros((len(results), self.backend.spec.embedding_dim), np.float32)
        for i, (row, _) in enumerate(results):
            if row is not None:
                embeddings[i] = row
        return {"embedding": embeddings, "error": np.asarray(errors, dtype=object)}


def _decode_batch(batch: dict[str, np.ndarray], root: str, spec: InputSpec) -> dict[str, np.ndarray]:
    """Decode task: one batch of paths -> images (zeros where a file failed) and reasons."""
    decoded = load_task(root, [str(p) for p in batch["path"]], spec)
    blank = np.zeros((3, spec.height, spec.width), np.uint8)
    return {
        "image": np.stack([blank if image is None else image for image, _ in decoded]),
        "error": np.asarray([error or "" for _, error in decoded], dtype=object),
    }


@dataclass
class RayRunner:
    """Embed on a Ray cluster at ``address``, or on a local Ray started for the run (``None``).

    ``actors`` model replicas, each with ``gpus_per_actor`` GPUs (0 on the CPU) and
    ``cpus_per_actor`` CPUs; decode tasks take :data:`DECODE_CPUS` each.
    """

    actor: ActorSpec
    address: str | None = None
    actors: int = 1
    cpus_per_actor: int = 1
    gpus_per_actor: float = 0.0
    name: str = "ray"

    def __post_init__(self) -> None:
        if self.actors < 1 or self.cpus_per_actor < 1:
            raise EmbedError(f"--ray-actors and CPUs per actor must be >= 1, got {self.actors}, {self.cpus_per_actor}")
        ray_module()
        if self.address:
            check_reachable(self.address)

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name, "ray_address": self.address or "local", "actors": self.actors}

    def results(self, root: Path, paths: list[str], spans: list[tuple[int, int]], backend: Backend,
                options: EmbedOptions) -> Generator[FileResult, None, None]:
        if not spans:
            return
        ray = ray_module()
        started_here = not ray.is_initialized()
        if started_here:
            self._init(ray)
        try:
            files = [p for start, end in spans for p in paths[start:end]]
            yield from self._stream(ray, root, files, backend.spec, options)
        finally:
            if started_here:
                ray.shutdown(wait_for_processes=True)  # the processes it started have exited on return

    def _init(self, ray: Any) -> None:
        settings: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
        if self.address:
            settings["address"] = self.address
        else:
            settings.update(include_dashboard=False)
        try:
            ray.init(**settings)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EmbedError(f"--ray {self.address or '(local)'}: Ray did not start: {exc}") from None
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # rows come back in file order
        context.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)

    def dataset(self, ray: Any, root: Path, files: list[str], spec: InputSpec, options: EmbedOptions) -> Any:
        """The Ray Data pipeline: paths -> decode tasks -> model actors (rows keep the file order)."""
        blocks = max(1, -(-len(files) // TASK_SIZE))
        return (
            ray.data.from_items([{"path": p} for p in files], override_num_blocks=blocks)
            .map_batches(_decode_batch, fn_kwargs={"root": str(root), "spec": spec}, batch_size=TASK_SIZE,
                         batch_format="numpy", num_cpus=DECODE_CPUS)
            .map_batches(_EmbedActor, fn_constructor_kwargs={"actor": self.actor, "options": options},
                         batch_size=options.batch_size, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=self.actors), num_cpus=self.cpus_per_actor,
                         num_gpus=self.gpus_per_actor)
        )

    def _stream(self, ray: Any, root: Path, files: list[str], spec: InputSpec,
                options: EmbedOptions) -> Generator[FileResult, None, None]:
        dataset = self.dataset(ray, root, files, spec, options)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for embedding, error in zip(batch["embedding"], batch["error"]):
                yield (None, str(error)) if error else (np.asarray(embedding, np.float32), "")
