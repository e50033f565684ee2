"""One rule table per precision: what an exported artifact must meet against PyTorch.

Every tool that judges an artifact reads :data:`RULES`: ``san-export``'s verification
(per image, with the hard-mask flips it can see), ``san-calibrate``'s INT8 report and
``san-parity`` (per image and per retrieval split). No tool keeps a limit of its own;
``--limit KIND.FIELD=VALUE`` changes one for a run (:func:`override_rules`).

Hard masks make one thing special. Where an image's normalised probability pi lies within
rounding of the threshold, its mask element flips in one runtime and not the other, which
changes F = (1 + M) T by a whole T there and moves every later block of that image. Such a
flip is *near threshold* (|pi - threshold| < ``flip_margin``) or *propagated* (an earlier
block of the same image flipped) and is expected; any other flip is *unexplained*. So:

- ``fp32``: the same float32 graph; only op order and fused kernels differ (relative error
  ~1e-6). Through min-max normalisation that rounding moves pi by up to ~2e-4 in the last
  block, where each channel's range is taken over few positions (seeded ResNet-50 SANs at
  256x128: 5e-5 to 1.9e-4 in block 4, 1e-5 in blocks 1-3), so a flip within
  ``flip_margin`` = 1e-3 of the threshold is rounding; a wrong threshold or other weights
  flip elements far from it. An image whose masks all agree keeps cosine >= 0.9999
  (``min_cosine_unflipped``); other weights, preprocessing, train-mode BatchNorm or masks
  all fall below 0.99. An image with expected flips may go lower, to the per-image floor
  0.99 (the trained 128x64 demo: one image of 551 at 0.9975, retrieval unchanged). Over a
  split the mean stays >= 0.9999 and |delta| <= 0.5 point for mAP and rank-1.
- ``fp16``: 11-bit mantissa (~5e-4 relative per op): pi moves by ~1e-3, so flips are
  counted but not classified; mean cosine >= 0.999, min >= 0.99; mAP 0.5, rank-1 1 point.
- ``tf32``: an fp32 TensorRT engine allowed TF32 tensor cores rounds like fp16 (10-bit
  mantissa; emulated on a SAN: min cosine 0.990 against fp32), so it gets fp16's rule.
- ``int8``: post-training INT8 of ResNets costs well under a point of accuracy with good
  calibration (Wu et al. 2020, "Integer Quantization for Deep Learning Inference"): mAP
  and rank-1 within 1 point carry the verdict. Mean cosine >= 0.95 only guards against a
  broken quantization (a wrong scale gives 0.1-0.5): hard masks amplify int8 rounding
  (1-4 % of mask elements flip in blocks 2-4), so a healthy SAN measures 0.96-0.999;
  single images are not gated.

This module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Rule:
    """Limits an artifact must meet against the PyTorch eval model; ``None`` = not checked.

    Cosines are paired per image; deltas are absolute, in percentage points; rank-1 flips
    are a fraction of the queries. ``flip_margin`` is not a limit but the distance from the
    threshold within which a mask flip counts as rounding; ``None`` leaves flips
    unclassified, and then ``max_unexplained_flips`` and ``min_cosine_unflipped`` are moot.
    """

    min_cosine_min: float | None = None
    min_cosine_mean: float | None = None
    min_cosine_unflipped: float | None = None
    flip_margin: float | None = None
    max_unexplained_flips: float | None = None
    max_delta_map: float | None = None
    max_delta_rank1: float | None = None
    min_top10_overlap: float | None = None
    max_rank1_flips: float | None = None

    def breaches(self, kind: str, measured: Mapping[str, float]) -> list[str]:
        """Every limit in ``measured`` (field name -> value) that is breached, named as
        ``--limit`` spells it (``int8.max_delta_map: 1.3 > 1``)."""
        found = []
        for name, value in measured.items():
            limit = getattr(self, name)
            if limit is None or name == "flip_margin":
                continue
            upper = name.startswith("max_")
            if (value > limit) if upper else not (value >= limit):  # a NaN breaches a lower bound
                found.append(f"{kind}.{name}: {value:.6g} {'>' if upper else '<'} {limit:g}")
        return found


RULES: dict[str, Rule] = {
    "fp32": Rule(min_cosine_min=0.99, min_cosine_mean=0.9999, min_cosine_unflipped=0.9999, flip_margin=1e-3,
                 max_unexplained_flips=0, max_delta_map=0.5, max_delta_rank1=0.5),
    "fp16": Rule(min_cosine_min=0.99, min_cosine_mean=0.999, max_delta_map=0.5, max_delta_rank1=1.0),
    "int8": Rule(min_cosine_mean=0.95, max_delta_map=1.0, max_delta_rank1=1.0),
}
#: TF32 (an fp32 engine built with ``--tf32``) rounds products to a 10-bit mantissa, as fp16 does.
RULES["tf32"] = RULES["fp16"]
#: BF16 (OpenVINO's bf16 inference precision, opt-in) rounds to an 8-bit mantissa: coarser than
#: fp16, judged by the same rule, which it may well breach (a SAN's hard masks amplify rounding).
RULES["bf16"] = RULES["fp16"]

RULE_FIELDS = tuple(f.name for f in fields(Rule))


def override_rules(rules: Mapping[str, Rule], settings: Sequence[str]) -> dict[str, Rule]:
    """Apply ``KIND.FIELD=VALUE`` settings (``int8.max_delta_map=2``, ``fp32.min_top10_overlap=none``)."""
    rules = dict(rules)
    for setting in settings:
        key, sep, text = setting.partition("=")
        kind, dot, name = key.strip().partition(".")
        if not sep or not dot or name not in RULE_FIELDS:
            raise ValueError(f"--limit expects KIND.FIELD=VALUE with FIELD one of {list(RULE_FIELDS)}, got {setting!r}")
        if kind not in RULES:
            raise ValueError(f"--limit {setting!r}: {kind!r} is not a precision; KIND is one of {sorted(RULES)}")
        try:
            value = None if text.strip().lower() == "none" else float(text)
        except ValueError:
            raise ValueError(f"--limit {setting!r}: {text!r} is not a number or 'none'") from None
        if value is not None and not math.isfinite(value):
            raise ValueError(f"--limit {setting!r}: a limit must be a finite number (or 'none')")
        rules[kind] = replace(rules.get(kind, Rule()), **{name: value})
    return rules


def describe_rules(rules: Mapping[str, Rule]) -> str:
    """One line per precision with the limits it checks, for ``--help`` texts."""
    rows = [f"  {kind:<5} " + ", ".join(f"{f}={getattr(rule, f):g}" for f in RULE_FIELDS if getattr(rule, f) is not None)
            for kind, rule in rules.items()]
    return "\n".join(rows)
