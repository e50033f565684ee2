"""The backend options every runtime command takes, as one argument group read back one way.

``--device`` (cpu, cuda, cuda:N, auto; gpu, gpu:N, npu for OpenVINO), ``--threads``,
``--providers`` and ``--precision`` go to every backend unchanged; each maps them to its own
settings (:class:`runtime.base.Backend`) and notes, one line each, what it cannot honour; a
backend refuses an option it does not take.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.registry import BACKENDS
from runtime.tune import ProfileError, check_profile
from san.cli.arguments import Adder, ArgumentGroup, DeviceGroup, count, model_file
from san.contract.artifact import ARTIFACT_KINDS

DEVICE = DeviceGroup(None, "; OpenVINO also gpu, gpu:N, npu")


class ThreadsGroup(ArgumentGroup[int | None]):
    """``--threads N``: the CPU threads of a backend (None: physical cores)."""

    def add(self, parser: Adder) -> None:
        parser.add_argument("--threads", type=count(1), metavar="N",
                            help="CPU threads of the torch/onnxruntime/OpenVINO backend (default: physical cores)")

    def read(self, args: argparse.Namespace) -> int | None:
        return args.threads


THREADS = ThreadsGroup()


class BackendGroup(ArgumentGroup[dict[str, Any]]):
    """``--device``, ``--threads``, ``--providers``, ``--precision`` and ``--compile-cache``, read
    back as the keyword options of the backends' constructor (only those given)."""

    title = "backend"

    def add(self, parser: Adder) -> None:
        DEVICE.add(parser)
        THREADS.add(parser)
        parser.add_argument("--providers", metavar="LIST",
                            help="onnxruntime execution providers, comma list of tensorrt,cuda,cpu "
                            "(default: from --device)")
        parser.add_argument("--precision", choices=("f32", "bf16", "fp16"),
                            help="OpenVINO's inference precision (default f32; bf16 and fp16 are judged by the fp16 "
                            "rule)")
        parser.add_argument("--compile-cache", metavar="DIR",
                            help="OpenVINO's compiled-model cache (default: $XDG_CACHE_HOME/san/openvino; none: off)")

    def read(self, args: argparse.Namespace) -> dict[str, Any]:
        device = DEVICE.read(args)
        providers = [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None
        options = {"device": device and str(device), "threads": THREADS.read(args), "providers": providers,
                   "precision": args.precision, "compile_cache": args.compile_cache}
        return {k: v for k, v in options.items() if v is not None}


BACKEND = BackendGroup()


@dataclass(frozen=True)
class ModelChoice:
    """What embeds: the model file, its backend (None: its kind's) and the backend's options."""

    model: Path
    backend: str | None
    options: dict[str, Any]


def model_choice(args: argparse.Namespace, prog: str) -> ModelChoice:
    """``--model`` with the backend flags, or the row a ``--profile`` names (checked: made on this
    kind of machine, a model file, a known backend), with the backend flags given over its options."""
    if args.profile is None:
        return ModelChoice(args.model, args.backend, BACKEND.read(args))
    choice = check_profile(args.profile)
    try:
        model = model_file(*ARTIFACT_KINDS)(str(choice.get("artifact", "")))
    except argparse.ArgumentTypeError as exc:
        raise ProfileError(f"{args.profile}: its model: {exc}") from None
    if choice.get("backend") not in BACKENDS:
        raise ProfileError(f"{args.profile}: unknown backend {choice.get('backend')!r}")
    options = {**choice["options"], **BACKEND.read(args)}
    print(f"{prog}: note: {args.profile}: {model} on {choice['backend']} ({options})", file=sys.stderr)
    return ModelChoice(model, choice["backend"], options)
