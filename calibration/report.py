"""What INT8 did to the model: ranges, mask flips, retrieval — printed and saved as JSON.

- ranges per layer: the calibrated (min, max) of every tensor, read from the range cache
  the quantization run wrote or reused;
- mask-flip rate per attention block: each graph's own hard mask (the comparison that
  consumes ``pi_<stage>``, :func:`export.graph.mask_tensors`; the mask path is float in
  both, see :mod:`calibration.quantize`) is exposed and compared element by element;
- CMC/mAP of the fp32 ONNX and the INT8 ONNX on a held-out split (query/gallery of an
  evaluation data set), the deltas with their 95 % intervals over queries and the McNemar
  test of the rank-1 change (:mod:`san.metrics`), plus the cosine agreement of their
  embeddings. Images that cannot be decoded are left out and listed in the notes;
- the verdict: the INT8 file against the ``int8`` rule of the one rule table
  (:mod:`san.rules`) that ``san-parity`` applies too, every breached limit named.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization.calibrate import load_tensors_data

import onnx

from export.graph import mask_tensors, session_exposing
from export.onnx_export import CONFIG_KEY, INPUT_NAME, OUTPUT_NAME, read_contract, read_metadata
from san.atomic import atomic_write_text
from san.data.records import ImageRecord, ReidDataset
from san.metrics import (
    PairedDelta,
    Rank1Change,
    RetrievalResult,
    evaluate_embeddings,
    paired_cosine,
    paired_map_delta,
    paired_rank1_delta,
)
from san.preprocess import ImageDecodeError, load_image, printable_path
from san.progress import progress_bar
from san.rules import RULES, Rule
from san.spec import InputSpec

#: CMC ranks shown in the printed report (the JSON has the whole curve).
SHOWN_RANKS = (1, 5, 10)
#: Widest calibrated ranges shown in the printed report.
SHOWN_RANGES = 5


@dataclass(frozen=True)
class Retrieval:
    """CMC curve and mAP of one model on the held-out split."""

    mAP: float
    cmc: list[float]

    def rank(self, k: int) -> float:
        return self.cmc[k - 1]


@dataclass
class CalibrationReport:
    """Everything :func:`build_report` measured; ``notes`` say what could not be measured."""

    fp32: str
    int8: str
    dataset: str
    images: int
    fp32_retrieval: Retrieval
    int8_retrieval: Retrieval
    map_change: PairedDelta
    rank1_change: Rank1Change
    cosine_mean: float
    cosine_min: float
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
        return self.map_change.delta

    @property
    def delta_rank1(self) -> float:
        """INT8 minus fp32 rank-1, in points (percent)."""
        return self.rank1_change.delta.delta

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flip_rate"] = {str(k): v for k, v in self.flip_rate.items()}
        d["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        d["delta_mAP_points"], d["delta_rank1_points"] = self.delta_map, self.delta_rank1
        return d

    def format(self) -> str:
        """Human-readable summary (the ranges table is in the JSON)."""
        def line(name: str, r: Retrieval) -> str:
            ranks = "  ".join(f"rank-{k} {100 * r.rank(k):6.2f}" for k in SHOWN_RANKS if k <= len(r.cmc))
            return f"  {name:<5} mAP {100 * r.mAP:6.2f}  {ranks}"

        lines = [
            f"INT8 report: {self.int8} vs {self.fp32} on {self.dataset} ({self.images} query+gallery images)",
            line("fp32", self.fp32_retrieval),
            line("int8", self.int8_retrieval),
            f"  delta mAP {_interval(self.map_change)}, delta rank-1 {_interval(self.rank1_change.delta)} "
            f"(95 % intervals over queries)",
            f"  rank-1: {self.rank1_change.gained} queries gained, {self.rank1_change.lost} lost "
            f"(McNemar p = {self.rank1_change.p_value:.3g})",
            f"  embedding cosine fp32 vs int8: mean {self.cosine_mean:.4f}, min {self.cosine_min:.4f}",
        ]
        lines += [f"  mask flips after stage {s}: {100 * r:.3f}% of elements" for s, r in self.flip_rate.items()]
        widest = sorted(self.ranges.items(), key=lambda kv: kv[1][0] - kv[1][1])[:SHOWN_RANGES]
        lines.append(f"  calibrated ranges: {len(self.ranges)} tensors (all in the JSON); widest:")
        lines += [f"    {name}: [{lo:.3g}, {hi:.3g}]" for name, (lo, hi) in widest]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  FAILED {b}" for b in self.breaches]
        lines.append("  PASSED: within the int8 rule (san.rules)" if self.passed else "  FAILED: see above")
        return "\n".join(lines)


def _interval(d: PairedDelta) -> str:
    return f"{d.delta:+.2f} points [{d.low:+.2f}, {d.high:+.2f}]"


def layer_ranges(cache: str | Path) -> dict[str, tuple[float, float]]:
    """Tensor name -> calibrated (min, max), from a range cache written by quantization."""
    data = load_tensors_data(cache)
    return {name: (float(np.min(t.range_value[0])), float(np.max(t.range_value[1]))) for name, t in data.items()}


def _stages(onnx_path: Path) -> tuple[int, ...]:
    """Hard-mask stages the model config in the file names (empty when it has none)."""
    config = json.loads(read_metadata(onnx_path).get(CONFIG_KEY, "{}"))
    return tuple(config.get("attention_stages", ())) if config.get("attention") == "sharp" else ()


def _embed_both(
    sessions: Sequence[ort.InferenceSession], records: Sequence[ImageRecord], spec: InputSpec,
    masks: Sequence[dict[int, str]], batch_size: int, progress: bool,
) -> tuple[list[np.ndarray], dict[int, list[int]], list[int], list[tuple[str, str]]]:
    """Embeddings of the readable ``records`` by each session; per stage (flipped, total) mask
    elements, comparing the tensors ``masks`` (stage -> name, one dict per session); the
    indices of the readable records, and (path, reason) of the others."""
    embeddings: list[list[np.ndarray]] = [[] for _ in sessions]
    flips = {s: [0, 0] for s in masks[0]}
    kept: list[int] = []
    failures: list[tuple[str, str]] = []
    bar = progress_bar(enabled=progress, total=len(records), desc="fp32 vs int8", unit="img")
    for start in range(0, len(records), batch_size):
        images = []
        for i in range(start, min(start + batch_size, len(records))):
            try:
                images.append(load_image(records[i].path, spec))
                kept.append(i)
            except ImageDecodeError as exc:
                failures.append((records[i].path, exc.reason))
        bar.update(min(batch_size, len(records) - start))
        if not images:
            continue
        batch = np.stack(images)
        outputs = []
        for session, store in zip(sessions, embeddings):
            names = [o.name for o in session.get_outputs()]
            out = dict(zip(names, session.run(None, {INPUT_NAME: batch})))
            store.append(out[OUTPUT_NAME])
            outputs.append(out)
        for s in flips:
            a, b = (o[m[s]] for o, m in zip(outputs, masks))
            flips[s][0] += int((a != b).sum())
            flips[s][1] += a.size
    bar.close()
    if not kept:
        raise ValueError(f"none of the {len(records)} query/gallery images can be decoded")
    return [np.concatenate(e) for e in embeddings], flips, kept, failures


def _ranking(q: np.ndarray, g: np.ndarray, dataset: ReidDataset) -> RetrievalResult:
    labels = [np.array([getattr(r, a) for r in split]) for split in (dataset.query, dataset.gallery) for a in ("pid", "camid")]
    return evaluate_embeddings(q, g, labels[0], labels[2], labels[1], labels[3])


def _summary(result: RetrievalResult) -> Retrieval:
    return Retrieval(float(result.mAP), [float(c) for c in result.cmc])


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
    spec = read_contract(fp32)
    if read_contract(int8) != spec:
        raise ValueError(f"{int8}: its input contract differs from {fp32}'s; compare an INT8 file with its own source")
    stages = _stages(fp32)
    protos = [onnx.load(p) for p in (fp32, int8)]
    masks = [mask_tensors(proto, stages) for proto in protos]
    sessions = [session_exposing(proto, list(m.values())) for proto, m in zip(protos, masks)]
    notes = []
    measurable = [s for s in stages if s in masks[0] and s in masks[1]]
    if not stages:
        notes.append("mask flips not measured: the model has no sharp (hard-mask) attention block")
    elif len(measurable) < len(stages):
        notes.append(
            f"mask flips not measured for stages {sorted(set(stages) - set(measurable))}: their masks "
            "(a comparison of pi_<stage>) are not found in both graphs (export with san-export to name them)"
        )
    records = [*dataset.query, *dataset.gallery]
    measured_masks = [{s: m[s] for s in measurable} for m in masks]
    (e32, e8), flips, kept, failures = _embed_both(sessions, records, spec, measured_masks, batch_size, progress)
    nq = sum(i < len(dataset.query) for i in kept)
    dataset = replace(dataset, query=tuple(records[i] for i in kept[:nq]), gallery=tuple(records[i] for i in kept[nq:]))
    notes += [f"unreadable, left out: {printable_path(path)}: {reason}" for path, reason in failures]
    cos = paired_cosine(e32, e8)
    ranges = {}
    if cache is not None and Path(cache).is_file():
        ranges = layer_ranges(cache)
    else:
        notes.append("ranges per layer not shown: no range cache file given or found")
    r32, r8 = _ranking(e32[:nq], e32[nq:], dataset), _ranking(e8[:nq], e8[nq:], dataset)
    map_change, rank1_change = paired_map_delta(r32.per_query, r8.per_query), paired_rank1_delta(r32.per_query, r8.per_query)
    measured = {"max_delta_map": abs(map_change.delta), "max_delta_rank1": abs(rank1_change.delta.delta),
                "min_cosine_min": float(cos.min()), "min_cosine_mean": float(cos.mean())}
    return CalibrationReport(
        str(fp32), str(int8), dataset.name, len(kept), _summary(r32), _summary(r8), map_change, rank1_change,
        float(cos.mean()), float(cos.min()), {s: f / n if n else 0.0 for s, (f, n) in flips.items()},
        ranges, calibration or {}, notes, rule.breaches("int8", measured),
    )


def save_report(report: CalibrationReport, path: str | Path) -> Path:
    """Write the report as JSON (atomically); returns the path."""
    atomic_write_text(path, json.dumps(report.to_dict(), indent=2, sort_keys=True))
    return Path(path)
