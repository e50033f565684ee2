"""The model's architecture as command-line options, shared by ``san-train`` and ``san-info``:
added as one group (:class:`ModelGroup`), read back as :class:`ModelChanges` and applied over a
starting point (a preset's model), refused in one line where they contradict each other. Torch-free.

Every variant the docs discuss is one set of these options: the plain ResNet baseline
(``--attention none``), the paper's SAN and the variants of its Tables I and III (soft gating,
thresholding, power; without context units, without cross-feature interaction, attention after
fewer stages).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from san.cli.arguments import Adder, ArgumentGroup, count, finite
from san.model.config import ATTENTIONS, BACKBONES, CU_UPSAMPLES, ModelConfig

#: Options that only mean something for a model with attention blocks (dest -> option).
_ATTENTION_OPTIONS = {"attention_stages": "--attention-stages", "context_unit": "--no-context-unit",
                      "cross_feature": "--no-cross-feature", "cu_upsample": "--cu-upsample",
                      "threshold_lambda": "--threshold-lambda", "power": "--power"}


def stage_list(text: str) -> tuple[int, ...]:
    """``--attention-stages``: stages 1..4, comma- or space-separated ("1,2,3" or "1 2 3")."""
    try:
        stages = tuple(int(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"stages are numbers 1..4, got {text!r}") from None
    if not stages or not set(stages) <= {1, 2, 3, 4}:
        raise argparse.ArgumentTypeError(f"stages are numbers 1..4, got {text!r}")
    return stages


def input_size(text: str) -> tuple[int, int]:
    """``--input-size HxW``: the network input, e.g. 256x128."""
    parts = text.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give HEIGHTxWIDTH, e.g. 256x128, got {text!r}") from None
    if not (16 <= height <= 4096 and 16 <= width <= 4096):
        raise argparse.ArgumentTypeError(f"height and width must lie in 16..4096, got {text!r}")
    return height, width


@dataclass(frozen=True)
class ModelChanges:
    """The architecture options given (None: not given), applied over a starting point."""

    given: dict[str, Any]
    height: int | None = None
    width: int | None = None

    def applied_to(self, base: ModelConfig) -> ModelConfig:
        """``base`` changed by these options; ``ValueError`` in one line for options that contradict
        each other or the model (:class:`~san.model.config.ConfigError` is one)."""
        given = self.given
        attention = given["attention"] or base.attention
        if attention == "none":
            extra = [option for name, option in _ATTENTION_OPTIONS.items() if given[name] is not None]
            if extra:
                raise ValueError(f"--attention none builds the plain ResNet, which has no attention block: "
                                 f"{', '.join(extra)} cannot apply")
        for name, kind in (("threshold_lambda", "threshold"), ("power", "power")):
            if given[name] is not None and attention != kind:
                raise ValueError(f"{_ATTENTION_OPTIONS[name]} sets the {kind} variant's mask, but --attention is "
                                 f"{attention}")
        context_unit = base.context_unit if given["context_unit"] is None else given["context_unit"]
        if given["cu_upsample"] is not None and not context_unit:
            raise ValueError("--cu-upsample sets the context units' upsampling, but the model has none "
                             "(--no-context-unit)")
        spec = replace(base.spec, height=self.height or base.spec.height, width=self.width or base.spec.width)
        return replace(base, spec=spec, **{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class ModelGroup(ArgumentGroup[ModelChanges]):
    """The architecture options; ``legacy_info``: san-info's former ``--stages``, ``--height`` and
    ``--width`` still work for one release (``prog`` names the command in their note)."""

    prog: str
    legacy_info: bool = False
    title: ClassVar[str | None] = "model (default: the preset's; each option changes one thing)"

    def add(self, group: Adder) -> None:
        group.add_argument("--backbone", choices=BACKBONES, help="ResNet depth")
        group.add_argument("--attention", choices=ATTENTIONS,
                           help="mask generator: sharp (the paper's SAN), soft, threshold, power, or none (the plain "
                           "ResNet baseline)")
        group.add_argument("--attention-stages", type=stage_list, metavar="STAGES",
                           help="stages followed by an attention block, e.g. 1,2,3,4 (Table III)")
        group.add_argument("--no-context-unit", dest="context_unit", action="store_const", const=False,
                           help="generate masks from the stage's features directly (Table III: without CU)")
        group.add_argument("--no-cross-feature", dest="cross_feature", action="store_const", const=False,
                           help="F = A = M * T instead of F = (1 + M) * T (Table III: without CIL)")
        group.add_argument("--cu-upsample", choices=CU_UPSAMPLES,
                           help="context units' upsampling: sparse (1x1 transposed convolution, stride 2, read "
                           "literally: 3/4 of each CU mask sees no image) or nearest (nearest x2, then the same "
                           "1x1 weights)")
        group.add_argument("--threshold-lambda", type=finite, metavar="LAMBDA",
                           help="--attention threshold: zero features whose pi is below LAMBDA (default 0.3)")
        group.add_argument("--power", type=count(2, 3), help="--attention power: M = pi ** P, P 2 or 3 (default 2)")
        group.add_argument("--input-size", type=input_size, metavar="HxW", help="network input, e.g. 256x128")
        if self.legacy_info:
            group.add_argument("--stages", type=int, nargs="+", help=argparse.SUPPRESS)
            group.add_argument("--height", type=count(16, 4096), help=argparse.SUPPRESS)
            group.add_argument("--width", type=count(16, 4096), help=argparse.SUPPRESS)

    def read(self, args: argparse.Namespace) -> ModelChanges:
        given: dict[str, Any] = {name: getattr(args, name) for name in ("backbone", "attention", *_ATTENTION_OPTIONS)}
        height, width = args.input_size or (None, None)
        if self.legacy_info:
            legacy = {"--stages": args.stages, "--height": args.height, "--width": args.width}
            for option, value in legacy.items():
                if value is not None:
                    print(f"{self.prog}: note: {option} is deprecated and will be removed in the next release; use "
                          f"{'--attention-stages' if option == '--stages' else '--input-size HxW'}", file=sys.stderr)
            if args.stages is not None and given["attention_stages"] is None:
                given["attention_stages"] = stage_list(" ".join(map(str, args.stages)))
            height, width = height or args.height, width or args.width
        return ModelChanges(given, height, width)
