"""The backend options every command takes, added to a parser and read back one way.

``--device`` (cpu, cuda, cuda:N, auto; gpu, gpu:N, npu for OpenVINO), ``--threads``,
``--providers`` and ``--precision`` go to every backend unchanged; each maps them to its own
settings (:class:`runtime.base.Backend`) and notes, one line each, what it cannot honour; a
backend refuses an option it does not take.
"""

from __future__ import annotations

import argparse
from typing import Any

from san.arguments import add_device_argument


def add_backend_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """Add ``--device``, ``--threads`` and ``--providers`` to ``parser`` (or an argument group)."""
    add_device_argument(parser, None, "; OpenVINO also gpu, gpu:N, npu")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads of the torch/onnxruntime backend (default: physical cores)")
    parser.add_argument("--providers", metavar="LIST",
                        help="onnxruntime execution providers, comma list of tensorrt,cuda,cpu "
                        "(default: from --device)")
    parser.add_argument("--precision", choices=("f32", "bf16", "fp16"),
                        help="OpenVINO's inference precision (default f32; bf16 and fp16 are judged by the fp16 rule)")


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The backend constructor options of the flags that were given."""
    providers = [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None
    options = {"device": args.device, "threads": args.threads, "providers": providers, "precision": args.precision}
    return {k: v for k, v in options.items() if v is not None}
