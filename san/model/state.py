"""Comparing a state dict with a model's: what does not fit, by name."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def describe_mismatch(own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], limit: int = 10) -> str:
    """'' when ``given`` fits ``own`` key for key and shape for shape; else a message
    naming the missing, unexpected and mis-shaped keys (at most ``limit`` of each)."""
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    wrong = sorted(
        f"{k}: file {tuple(given[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(given)
        if given[k].shape != own[k].shape
    )
    if not (missing or unexpected or wrong):
        return ""

    def show(keys: list[str]) -> str:
        return str(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")

    return f"missing keys {show(missing)}; unexpected keys {show(unexpected)}; mismatched shapes {show(wrong)}"
