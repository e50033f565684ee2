"""What INT8 did to the model: ranges, mask flips, retrieval — printed and saved as JSON.

- ranges per layer: the calibrated (min, max) of every tensor, read from the range cache
  the quantization run wrote or reused;
- mask-flip rate per attention block: each graph's own hard mask (the comparison that
  consumes ``pi_<stage>``, :func:`san.contract.onnx_graph.mask_tensors`; the mask path is float in
  both, see :mod:`calibration.quantize`) is exposed and compared element by element;
- CMC/mAP of the fp32 ONNX and the INT8 ONNX on a held-out split (query/gallery of an
  evaluation data set), the deltas with their 95 % intervals over queries and the McNemar
  test of the rank-1 change (:mod:`san.evaluation.metrics`), plus the cosine agreement of their
  embeddings. Images that cannot be decoded are left out and listed in the notes;
- the verdict: the INT8 file against the ``int8`` rule of the one rule table
  (:mod:`san.contract.rules`) that ``san-parity`` applies too, every breached limit named.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization.calibrate import load_tensors_data

from san.contract.artifact import INPUT_NAME, OUTPUT_NAME, contract_of, convention_of, hard_mask_stages, load_onnx
from san.contract.onnx_graph import mask_tensors, session_exposing
from san.contract.rules import RULES, Rule
from san.contract.spec import InputSpec
from san.data.records import ReidDataset
from san.evaluation.embedding import ANY_BATCH
from san.evaluation.metrics import PairedDelta, Rank1Change
from san.evaluation.retrieval import (
    SHOWN_RANKS,
    Comparison,
    Embedded,
    MaskFlips,
    Retrieval,
    SplitEmbeddings,
    compare,
    embed_split,
    score,
)
from san.io.preprocess import printable_path

#: Widest calibrated ranges shown in the printed report.
SHOWN_RANGES = 5


@dataclass
class CalibrationReport:
    """Everything :func:`build_report` measured; ``notes`` say what could not be measured."""

    fp32: str
    int8: str
    dataset: str
    images: int
    fp32_retrieval: Retrieval
    int8_retrieval: Retrieval
    comparison: Comparison
    flip_rate: dict[int, float]
    ranges: dict[str, tuple[float, float]]
    calibration: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.breaches

    @property
    def delta_map(self) -> float:
        """INT8 minus fp32 mAP, in points (percent)."""
        return self.comparison.delta_map

    @property
    def cosine_mean(self) -> float:
        return self.comparison.cosine_mean

    @property
    def cosine_min(self) -> float:
        return self.comparison.cosine_min

    @property
    def rank1_change(self) -> Rank1Change:
        return self.comparison.rank1_change

    @property
    def delta_rank1(self) -> float:
        """INT8 minus fp32 rank-1, in points (percent)."""
        return self.comparison.rank1_change.delta.delta

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fp32_retrieval"], d["int8_retrieval"] = self.fp32_retrieval.to_dict(), self.int8_retrieval.to_dict()
        d["comparison"]["delta_rank"] = {str(k): v for k, v in self.comparison.delta_rank.items()}
        d["flip_rate"] = {str(k): v for k, v in self.flip_rate.items()}
        d["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        d["delta_mAP_points"], d["delta_rank1_points"] = self.delta_map, self.delta_rank1
        d["cosine_mean"], d["cosine_min"] = self.cosine_mean, self.cosine_min
        return d

    def render(self) -> str:
        """Human-readable summary (the ranges table is in the JSON)."""
        c = self.comparison
        def line(name: str, r: Retrieval) -> str:
            ranks = "  ".join(f"rank-{k} {100 * r.rank(k):6.2f}" for k in SHOWN_RANKS if k <= len(r.cmc))
            return f"  {name:<5} mAP {100 * r.mAP:6.2f}  {ranks}"

        lines = [
            f"INT8 report: {self.int8} vs {self.fp32} on {self.dataset} ({self.images} query+gallery images)",
            line("fp32", self.fp32_retrieval),
            line("int8", self.int8_retrieval),
            f"  delta mAP {_interval(c.map_change)}, delta rank-1 {_interval(c.rank1_change.delta)} "
            f"(int8 - fp32 ONNX, 95 % intervals over queries; san-parity measures against PyTorch)",
            f"  rank-1: {c.rank1_change.gained} queries gained, {c.rank1_change.lost} lost "
            f"(McNemar p = {c.rank1_change.p_value:.3g})",
            f"  embedding cosine fp32 vs int8: mean {c.cosine_mean:.4f}, min {c.cosine_min:.4f}",
        ]
        lines += [f"  mask flips after stage {s}: {100 * r:.3f}% of elements" for s, r in self.flip_rate.items()]
        widest = sorted(self.ranges.items(), key=lambda kv: kv[1][0] - kv[1][1])[:SHOWN_RANGES]
        lines.append(f"  calibrated ranges: {len(self.ranges)} tensors (all in the JSON); widest:")
        lines += [f"    {name}: [{lo:.3g}, {hi:.3g}]" for name, (lo, hi) in widest]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  FAILED {b}" for b in self.breaches]
        lines.append("  PASSED: within the int8 rule (san.contract.rules)" if self.passed else "  FAILED: see above")
        return "\n".join(lines)


def _interval(d: PairedDelta) -> str:
    return f"{d.delta:+.2f} points [{d.low:+.2f}, {d.high:+.2f}]"


def layer_ranges(cache: str | Path) -> dict[str, tuple[float, float]]:
    """Tensor name -> calibrated (min, max), from a range cache written by quantization."""
    data = load_tensors_data(cache)
    return {name: (float(np.min(t.range_value[0])), float(np.max(t.range_value[1]))) for name, t in data.items()}


class PairedProbe:
    """Two ONNX files as one embedder: each batch runs through both (onnxruntime, CPU), the
    embeddings come back side by side (N x 2D) and their hard masks are compared on the way."""

    def __init__(self, fp32: Path, int8: Path) -> None:
        protos = [load_onnx(p) for p in (fp32, int8)]
        self.spec: InputSpec = contract_of(protos[0], fp32)
        if contract_of(protos[1], int8) != self.spec:
            raise ValueError(f"{int8}: its input contract differs from {fp32}'s; compare an INT8 file with its own source")
        self.stages = hard_mask_stages(protos[0], fp32)
        found = [mask_tensors(proto, self.stages) for proto in protos]
        self.measured = [s for s in self.stages if s in found[0] and s in found[1]]
        self.masks = [{s: m[s] for s in self.measured} for m in found]
        self.sessions = [session_exposing(proto, list(m.values())) for proto, m in zip(protos, self.masks)]
        self.conventions = [convention_of(proto, path) for proto, path in zip(protos, (fp32, int8))]
        self.flips = MaskFlips(self.measured)

    def batch_limits(self) -> tuple[int, int]:
        return ANY_BATCH

    def infer(self, batch: np.ndarray) -> np.ndarray:
        outputs = [dict(zip([o.name for o in s.get_outputs()], s.run(None, {INPUT_NAME: c.encode(batch)})))
                   for s, c in zip(self.sessions, self.conventions)]
        for stage in self.measured:
            self.flips.add(stage, *(out[m[stage]] for out, m in zip(outputs, self.masks)))
        return np.concatenate([out[OUTPUT_NAME] for out in outputs], axis=1)


def _columns(run: SplitEmbeddings, part: slice) -> SplitEmbeddings:
    """The same split with only the embedding columns ``part``."""
    def take(e: Embedded) -> Embedded:
        return Embedded(e.features[:, part], e.records, e.failures, e.seconds)

    return SplitEmbeddings(run.dataset, take(run.query), take(run.gallery), run.single_shot)


def build_report(
    fp32: str | Path,
    int8: str | Path,
    dataset: ReidDataset,
    cache: str | Path | None = None,
    calibration: dict[str, Any] | None = None,
    batch_size: int = 32,
    progress: bool = True,
    rule: Rule = RULES["int8"],
) -> CalibrationReport:
    """Run both ONNX files with onnxruntime (CPU) on ``dataset``'s query and gallery; judge
    the INT8 file by ``rule``."""
    fp32, int8 = Path(fp32), Path(int8)
    probe = PairedProbe(fp32, int8)
    notes = []
    if not probe.stages:
        notes.append("mask flips not measured: the model has no hard-mask attention block")
    elif len(probe.measured) < len(probe.stages):
        notes.append(
            f"mask flips not measured for stages {sorted(set(probe.stages) - set(probe.measured))}: their masks "
            "(a comparison of pi_<stage>) are not found in both graphs (export with san-export to name them)"
        )
    both = embed_split(probe, dataset, batch_size=batch_size, progress=progress)
    notes += [f"unreadable, left out: {printable_path(path)}: {reason}" for path, reason in both.failures]
    dim = probe.spec.embedding_dim
    run32, run8 = _columns(both, slice(0, dim)), _columns(both, slice(dim, 2 * dim))
    r32, r8 = score(run32), score(run8)
    comparison = compare(run32, r32, run8, r8)
    ranges = {}
    if cache is not None and Path(cache).is_file():
        ranges = layer_ranges(cache)
    else:
        notes.append("ranges per layer not shown: no range cache file given or found")
    images = len(both.query.records) + len(both.gallery.records)
    return CalibrationReport(
        str(fp32), str(int8), dataset.name, images, r32, r8, comparison, probe.flips.rates(),
        ranges, calibration or {}, notes, rule.breaches("int8", comparison.measured()),
    )
