"""An exported ONNX file next to the PyTorch eval model: does it compute the same thing?

:func:`verify_onnx` runs both on the same uint8 images and judges the file by the rule of
its precision in the one rule table (:mod:`san.contract.rules`, which ``san-parity`` and the INT8
report read too). Per attention block with hard masks it counts the mask elements that
flipped between the two. A flip is *near threshold* when the PyTorch probability lies
within the rule's ``flip_margin`` of the threshold (float rounding may legitimately push
it across). A flipped element changes F = (1 + M) * T by a whole T there, so every later
block of that image sees different input: its flips are *propagated*, not comparable
element by element. Both are expected and do not fail a file; an *unexplained* flip, an
image error larger than its flips explain, or a block whose mask the graph lacks does,
with a message naming the block.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from export.onnx_export import eval_mode, export_onnx
from san.contract.artifact import INPUT_NAME, OUTPUT_NAME, convention_of, pi_name
from san.contract.input_convention import InputConvention
from san.contract.onnx_graph import mask_tensors, session_exposing, unused_tensors
from san.contract.rules import RULES, Rule
from san.contract.spec import ContractError, InputSpec
from san.evaluation.metrics import paired_cosine
from san.evaluation.retrieval import MaskFlips, sort_flips
from san.io.discovery import IMAGE_SUFFIXES, discover_images
from san.io.preprocess import load_image
from san.model.network import SAN


@dataclass(frozen=True)
class BlockFlips:
    """Mask agreement of one attention block over all verified images (flips are counted
    only for hard masks; ``hard`` is False for the soft and power variants)."""

    stage: int
    elements: int
    flips: int
    propagated: int
    unexplained: int
    max_pi_error: float | None  # over images without a flip in an earlier block (rounding alone); None: no such image
    hard: bool = True
    classified: bool = True  # flips sorted into near threshold / propagated / unexplained (the rule has a margin)

    @property
    def flip_rate(self) -> float:
        return self.flips / self.elements if self.elements else 0.0


@dataclass
class VerifyReport:
    """What :func:`verify_onnx` measured, and every problem found."""

    images: int
    min_cosine: float
    flipped_images: int | None  # images with a mask flip in some block; None: the runtime hides the masks
    blocks: list[BlockFlips] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def render(self) -> str:
        """Human-readable multi-line summary."""
        flips = ("masks not readable in this runtime" if self.flipped_images is None
                 else f"{self.flipped_images} images with a mask flip")
        lines = [f"verified on {self.images} images: min cosine {self.min_cosine:.7f}; {flips}"]
        for b in self.blocks:
            if not b.hard:
                flips = f"continuous mask over {b.elements} elements"
            elif b.classified:
                flips = (f"{b.flips}/{b.elements} mask flips (rate {b.flip_rate:.2e}; near threshold "
                         f"{b.flips - b.propagated - b.unexplained}, propagated {b.propagated}, unexplained "
                         f"{b.unexplained})")
            else:
                flips = (f"{b.flips}/{b.elements} mask flips (rate {b.flip_rate:.2e}; not sorted into rounding and "
                         "errors: this precision's rounding moves pi further than any margin, so the cosines judge)")
            error = ("no image without an earlier flip" if b.max_pi_error is None
                     else f"max |pi error| {b.max_pi_error:.3g} (images without an earlier flip)")
            lines.append(f"  block after stage {b.stage}: {flips}, {error}")
        lines.append("PASSED" if self.passed else "FAILED: " + "; ".join(self.problems))
        return "\n".join(lines)


def synthetic_images(spec: InputSpec, count: int, seed: int = 0) -> np.ndarray:
    """Seeded uint8 N x 3 x H x W test batch: all-black, constant grey, then structured noise.

    The structured images are coarse random colour blocks plus a vertical gradient and
    pixel noise, so activations vary the way they do on photos rather than on white noise.
    """
    rng = np.random.default_rng(seed)
    h, w = spec.height, spec.width
    images = np.zeros((count, 3, h, w), dtype=np.uint8)
    if count > 1:
        images[1] = 128
    rows = np.linspace(-60.0, 60.0, h)[None, :, None]
    for i in range(2, count):
        blocks = rng.integers(0, 256, size=(3, 8, 4)).astype(np.float64)
        coarse = blocks.repeat(-(-h // 8), axis=1).repeat(-(-w // 4), axis=2)[:, :h, :w]
        noisy = coarse + rng.uniform(-1.0, 1.0) * rows + rng.normal(0.0, 20.0, size=(3, h, w))
        images[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return images


def load_images(directory: str | Path, spec: InputSpec, count: int) -> np.ndarray:
    """The first ``count`` images under ``directory`` (sorted, recursive) via load_image."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"--verify-images {directory}: not a directory")
    paths = [directory / rel for rel in discover_images(directory)[:count]]
    if not paths:
        raise FileNotFoundError(f"--verify-images {directory}: no images ({' '.join(sorted(IMAGE_SUFFIXES))}) found")
    return np.stack([load_image(p, spec) for p in paths])


def verify_onnx(
    model: SAN,
    onnx_path: str | Path,
    images: np.ndarray,
    *,
    kind: str = "fp32",
    rule: Rule | None = None,
    batch_size: int = 32,
) -> VerifyReport:
    """Run ``onnx_path`` with onnxruntime (CPU) and ``model`` in eval mode on ``images``.

    ``images`` is uint8 N x 3 x H x W at the model's contract size. The file is judged by
    ``rule`` (default: the one rule table's entry for ``kind``, :data:`san.contract.rules.RULES`),
    per image; the report names each problem:

    - a hard-mask block whose mask the graph lacks or does not use for the embeddings;
    - mask flips that are unexplained: |pi - threshold| >= ``rule.flip_margin`` and no flip
      in an earlier block of the same image (a wrong threshold, other weights upstream);
    - an error larger than the flips explain: an image whose masks all agree below
      ``min_cosine_unflipped``, any image below ``min_cosine_min``;
    - non-finite embeddings.

    The graph's own masks are compared (the output of the comparison that consumes each
    ``pi_<stage>``), so a threshold constant that differs from the model's shows as flips.
    """
    if images.dtype != np.uint8:
        raise ContractError(f"verification images must be uint8 (0..255), got {images.dtype}")
    model.spec.check_batch_shape(images.shape)
    rule = RULES[kind] if rule is None else rule
    hard = {s: g.hard_threshold for s, g in model.generators().items() if g.hard_threshold is not None}
    proto = onnx.load(str(onnx_path))
    convention = convention_of(proto, onnx_path)
    masks = mask_tensors(proto, model.cfg.active_stages)
    problems = [f"block after stage {s}: the graph has no mask 1[pi_{s} > threshold] (the block was removed or "
                "altered)" for s in hard if s not in masks]
    unused = unused_tensors(proto, [masks[s] for s in hard if s in masks], OUTPUT_NAME)
    problems += [f"block after stage {s}: its mask does not reach {OUTPUT_NAME!r} (the block was removed or "
                 "bypassed)" for s in hard if s in masks and masks[s] in unused]
    named = {o.name for o in proto.graph.output} | {o for node in proto.graph.node for o in node.output}
    exposed = [s for s in model.cfg.active_stages if pi_name(s) in named]  # soft blocks too: their pi error
    session = session_exposing(proto, [pi_name(s) for s in exposed] + list(masks.values()))
    totals = {s: np.zeros(5) for s in exposed}  # elements, propagated, unexplained, max |pi error|, images measured
    flips = MaskFlips([s for s in hard if s in masks])
    cosines, flipped_images, non_finite = [], [], 0
    margin = rule.flip_margin
    device = next(model.parameters()).device
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        with eval_mode(model), torch.no_grad():
            ref = model(torch.from_numpy(batch).to(device), details=True)
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {INPUT_NAME: convention.encode(batch)})))
        ref_emb = ref.embeddings.float().cpu().numpy()
        got_emb = got[OUTPUT_NAME].astype(np.float32)
        non_finite += int((~np.isfinite(ref_emb)).any(axis=1).sum() + (~np.isfinite(got_emb)).any(axis=1).sum())
        cosines.append(paired_cosine(ref_emb, got_emb))
        upstream = np.zeros((len(batch), 1, 1, 1), dtype=bool)  # image had a flip in an earlier block
        for index, stage in enumerate(model.cfg.active_stages):
            if stage not in totals:
                continue
            ref_pi = ref.probs[index].float().cpu().numpy()
            t = totals[stage]
            t[0] += ref_pi.size
            clean = ~upstream.reshape(-1)  # rounding alone moved these images' pi
            if clean.any():
                t[3] = max(t[3], float(np.abs(ref_pi[clean] - got[pi_name(stage)][clean].astype(np.float32)).max()))
                t[4] += clean.sum()
            if stage in hard and stage in masks:
                flipped = flips.add(stage, ref.masks[index].cpu().numpy().astype(bool), got[masks[stage]].astype(bool))
                propagated, unexplained, upstream = sort_flips(flipped, ref_pi, hard[stage], margin, upstream)
                t[1] += propagated
                t[2] += unexplained
        flipped_images.append(upstream.reshape(-1))
    cos, flipped = np.concatenate(cosines), np.concatenate(flipped_images)
    blocks = [BlockFlips(s, int(t[0]), flips.counts.get(s, [0])[0], int(t[1]), int(t[2]), float(t[3]) if t[4] else None,
                         hard=s in hard, classified=margin is not None) for s, t in totals.items()]
    report = VerifyReport(len(images), float(cos.min()), int(flipped.sum()), blocks, problems)
    if non_finite:
        report.problems.append(f"{non_finite} non-finite embedding rows (PyTorch and ONNX counted together)")
    if margin is not None and rule.max_unexplained_flips is not None:
        report.problems += [
            f"block after stage {b.stage}: {b.unexplained} unexplained mask flips (|pi - threshold| >= {margin:g}, "
            f"no flip upstream; {kind}.max_unexplained_flips {rule.max_unexplained_flips:g}): the graph computes "
            "another mask" for b in blocks if b.unexplained > rule.max_unexplained_flips
        ]
    measured = {"min_cosine_min": float(cos.min())}
    if margin is not None and (~flipped).any():
        measured["min_cosine_unflipped"] = float(cos[~flipped].min())
    report.problems += [f"{breach} (an error larger than the mask flips explain)"
                        for breach in rule.breaches(kind, measured)]
    return report


def verify_embeddings(model: SAN, images: np.ndarray, embed: Callable[[np.ndarray], np.ndarray], *,
                      kind: str = "fp32", rule: Rule | None = None, batch_size: int = 32) -> VerifyReport:
    """``embed`` (another runtime's embedder of uint8 batches) against ``model`` in eval mode on
    ``images``, judged per image by ``rule``'s cosine limits (default: the rule of ``kind``).
    For runtimes whose inner tensors cannot be read, so no mask flips are classified."""
    rule = RULES[kind] if rule is None else rule
    device = next(model.parameters()).device
    cosines, non_finite = [], 0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        with eval_mode(model), torch.no_grad():
            ref = model(torch.from_numpy(batch).to(device)).float().cpu().numpy()
        got = np.asarray(embed(batch), dtype=np.float32)
        non_finite += int((~np.isfinite(got)).any(axis=1).sum())
        cosines.append(paired_cosine(ref, got))
    cos = np.concatenate(cosines)
    report = VerifyReport(len(images), float(cos.min()), None)
    if non_finite:
        report.problems.append(f"{non_finite} non-finite embedding rows")
    measured = {"min_cosine_min": float(cos.min()), "min_cosine_mean": float(cos.mean())}
    report.problems += rule.breaches(kind, measured)
    return report


def export_and_verify(
    model: SAN,
    out: str | Path,
    images: np.ndarray,
    *,
    opset: int = 17,
    provenance: dict[str, str] | None = None,
    precision: str = "fp32",
    rule: Rule | None = None,
    convention: InputConvention = InputConvention(),
) -> VerifyReport:
    """:func:`export_onnx` then :func:`verify_onnx` under ``rule`` (default: the rule table's
    entry for ``precision``); a file that fails is moved to ``<out>.rejected`` so nothing
    downstream picks it up."""
    out = export_onnx(model, out, opset=opset, provenance=provenance, precision=precision, convention=convention)
    report = verify_onnx(model, out, images, kind=precision, rule=rule)
    if not report.passed:
        rejected = out.with_name(out.name + ".rejected")
        os.replace(out, rejected)
        report.problems.append(f"{out} moved to {rejected}")
    return report
