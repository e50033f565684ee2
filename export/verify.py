"""An exported ONNX file next to the PyTorch eval model: does it compute the same thing?

:func:`verify_onnx` runs both on the same uint8 images and reports the largest absolute
embedding error, the smallest cosine similarity and, per attention block with hard masks,
how many mask elements flipped. A flip is *near threshold* when the PyTorch probability
lies within ``margin`` of the threshold (float rounding may legitimately push it across).
A flipped element changes F = (1 + M) * T by a whole T there, so every later block of that
image sees different input: its flips are *propagated*, not comparable element by element.
Any other flip is *unexplained* and fails verification.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from san.model.attention import SharpMask, ThresholdMask
from san.model.network import SAN
from san.discovery import IMAGE_SUFFIXES, discover_images
from san.metrics import paired_cosine
from san.preprocess import load_image
from san.spec import ContractError, InputSpec

from export.onnx_export import INPUT_NAME, OUTPUT_NAME, eval_mode, export_onnx, pi_name



@dataclass(frozen=True)
class BlockFlips:
    """Mask agreement of one attention block over all verified images (flips are counted
    only for hard masks; ``hard`` is False for the soft and power variants)."""

    stage: int
    elements: int
    flips: int
    propagated: int
    unexplained: int
    max_pi_error: float
    hard: bool = True

    @property
    def flip_rate(self) -> float:
        return self.flips / self.elements if self.elements else 0.0


@dataclass
class VerifyReport:
    """What :func:`verify_onnx` measured, and every tolerance that was exceeded."""

    images: int
    max_abs_error: float
    min_cosine: float
    blocks: list[BlockFlips] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def format(self) -> str:
        """Human-readable multi-line summary."""
        lines = [
            f"verified on {self.images} images: max abs error {self.max_abs_error:.3g}, "
            f"min cosine {self.min_cosine:.7f}"
        ]
        for b in self.blocks:
            flips = (
                f"{b.flips}/{b.elements} mask flips (rate {b.flip_rate:.2e}; near threshold "
                f"{b.flips - b.propagated - b.unexplained}, propagated {b.propagated}, unexplained {b.unexplained})"
                if b.hard
                else f"continuous mask over {b.elements} elements"
            )
            lines.append(f"  block after stage {b.stage}: {flips}, max |pi error| {b.max_pi_error:.3g}")
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
    min_cosine: float = 0.9999,
    max_abs_error: float | None = None,
    margin: float = 1e-5,
    max_unexplained_flips: int | None = 0,
    batch_size: int = 32,
) -> VerifyReport:
    """Run ``onnx_path`` with onnxruntime (CPU) and ``model`` in eval mode on ``images``.

    ``images`` is uint8 N x 3 x H x W at the model's contract size. Fails (in the report)
    on non-finite embeddings, a cosine below ``min_cosine``, an absolute error above
    ``max_abs_error`` (unchecked when None) or more than ``max_unexplained_flips`` flips
    with |pi - threshold| >= ``margin`` and no flip upstream in the same image, in any block
    (unchecked when None). Mask flips are counted for blocks with hard masks whose
    ``pi_<stage>`` tensors the graph names.
    """
    if images.dtype != np.uint8:
        raise ContractError(f"verification images must be uint8 (0..255), got {images.dtype}")
    model.spec.check_batch_shape(images.shape)
    session, exposed = session_exposing_probs(onnx_path, model.cfg.active_stages)
    rules = {s: _mask_rule(model, s) for s in exposed}
    totals = {s: np.zeros(5) for s in exposed}  # elements, flips, propagated, unexplained, max |pi error|
    max_abs, min_cos, non_finite = 0.0, 1.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        with eval_mode(model), torch.no_grad():
            ref = model(torch.from_numpy(batch).to(device), details=True)
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {INPUT_NAME: batch})))
        ref_emb = ref.embeddings.float().cpu().numpy()
        got_emb = got[OUTPUT_NAME].astype(np.float32)
        non_finite += int((~np.isfinite(ref_emb)).any(axis=1).sum() + (~np.isfinite(got_emb)).any(axis=1).sum())
        max_abs = max(max_abs, float(np.abs(ref_emb - got_emb).max()))
        min_cos = min(min_cos, float(paired_cosine(ref_emb, got_emb).min()))
        upstream = np.zeros((len(batch), 1, 1, 1), dtype=bool)  # image had a flip in an earlier block
        for index, stage in enumerate(model.cfg.active_stages):
            if stage not in totals:
                continue
            ref_pi = ref.probs[index].float().cpu().numpy()
            got_pi = got[pi_name(stage)].astype(np.float32)
            t = totals[stage]
            t[0] += ref_pi.size
            t[4] = max(t[4], float(np.abs(ref_pi - got_pi).max()))
            rule = rules[stage]
            if rule is not None:
                compare, threshold = rule
                flipped = ref.masks[index].cpu().numpy().astype(bool) != compare(got_pi, threshold)
                far = flipped & (np.abs(ref_pi - threshold) >= margin)
                t[1] += flipped.sum()
                t[2] += (far & upstream).sum()
                t[3] += (far & ~upstream).sum()
                upstream = upstream | flipped.any(axis=(1, 2, 3), keepdims=True)
    blocks = [
        BlockFlips(s, int(t[0]), int(t[1]), int(t[2]), int(t[3]), float(t[4]), hard=rules[s] is not None)
        for s, t in totals.items()
    ]
    report = VerifyReport(len(images), max_abs, min_cos, blocks)
    if non_finite:
        report.problems.append(f"{non_finite} non-finite embedding rows (PyTorch and ONNX counted together)")
    if not min_cos >= min_cosine:
        report.problems.append(f"min cosine {min_cos:.7f} < {min_cosine}")
    if max_abs_error is not None and not max_abs <= max_abs_error:
        report.problems.append(f"max abs error {max_abs:.3g} > {max_abs_error}")
    if max_unexplained_flips is not None:
        report.problems += [
            f"block after stage {b.stage}: {b.unexplained} unexplained mask flips (|pi - threshold| >= "
            f"{margin}, no flip upstream; allowed {max_unexplained_flips})"
            for b in blocks
            if b.unexplained > max_unexplained_flips
        ]
    return report


def _mask_rule(model: SAN, stage: int) -> tuple[Callable[[np.ndarray, float], np.ndarray], float] | None:
    """(comparison, threshold) turning pi into the block's hard mask; None for soft masks."""
    generator = model.attention[str(stage)].generator
    if isinstance(generator, SharpMask):
        return np.greater, generator.threshold
    if isinstance(generator, ThresholdMask):
        return np.greater_equal, generator.lam
    return None


def session_exposing_probs(onnx_path: str | Path, stages: tuple[int, ...]) -> tuple[ort.InferenceSession, list[int]]:
    """An onnxruntime CPU session whose outputs also include every ``pi_<stage>`` tensor
    the graph computes; returns it with the stages so exposed."""
    proto = onnx.load(str(onnx_path))
    listed = {o.name for o in proto.graph.output}
    produced = {name for node in proto.graph.node for name in node.output}
    hidden = [pi_name(s) for s in stages if pi_name(s) in produced and pi_name(s) not in listed]
    if hidden:
        inferred = onnx.shape_inference.infer_shapes(proto)
        infos = {v.name: v for v in inferred.graph.value_info}
        proto.graph.output.extend(
            infos.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in hidden
        )
    exposed = [s for s in stages if pi_name(s) in listed or pi_name(s) in hidden]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session, exposed


def export_and_verify(
    model: SAN,
    out: str | Path,
    images: np.ndarray,
    *,
    opset: int = 17,
    provenance: dict[str, str] | None = None,
    precision: str = "fp32",
    min_cosine: float = 0.9999,
) -> VerifyReport:
    """:func:`export_onnx` then :func:`verify_onnx`; a file that fails is moved to
    ``<out>.rejected`` so nothing downstream picks it up.

    FP32 fails on any unexplained mask flip; FP16 rounding moves pi by ~1e-3, so there
    flips are reported and only the cosine floor applies.
    """
    out = export_onnx(model, out, opset=opset, provenance=provenance, precision=precision)
    report = verify_onnx(
        model, out, images, min_cosine=min_cosine, max_unexplained_flips=0 if precision == "fp32" else None
    )
    if not report.passed:
        rejected = out.with_name(out.name + ".rejected")
        os.replace(out, rejected)
        report.problems.append(f"{out} moved to {rejected}")
    return report
