"""Retrieval-level parity of exported artifacts with the PyTorch eval model (``san-parity``).

Every backend, the PyTorch reference included, embeds the query and gallery of a data set
through the retrieval core (:mod:`san.evaluation.retrieval`: the one decoder, so every backend gets
the same uint8 arrays), is scored like the reference (CMC/mAP under the Market-1501
protocol, :mod:`san.evaluation.metrics`) and compared with the PyTorch eval model (deterministic masks):

- deltas of mAP and rank-1/5/10, in percentage points;
- paired cosine of each image's two embeddings (min and mean over query + gallery);
- top-10 overlap: the mean fraction of a query's 10 nearest gallery images (Euclidean,
  whole gallery, as a search returns them) that both backends list;
- rank-1 flips: queries whose nearest gallery image changed.

For PyTorch itself, sampled masks (Gumbel-Softmax at the checkpoint's tau buffer, BatchNorm
in eval mode; :class:`san.model.sampled.StochasticMasks`) are scored over a few seeded
draws and compared with the deterministic masks it deploys: a property of the model, reported,
not gated.

Each artifact is judged by the :class:`san.contract.rules.Rule` of its precision (read from the
artifact: ONNX ``san.precision`` metadata, engine sidecar), from the one rule table that
export verification and the INT8 report read too; :mod:`san.contract.rules` says why each limit is
what it is.

On a set of Q queries one query moves rank-1 by 100/Q points, and INT8 rounding moves
some queries' first match to or away from rank 1 in both directions. So next to each
delta the report gives its 95 % interval over queries and McNemar's exact test of the
rank-1 gains against the losses (:mod:`san.evaluation.metrics`), and it notes when the split
measures rank-1 more coarsely than the limit, i.e. when noise alone can breach it (an
INT8 demo model on 609 queries: +-2.3 points, 51 queries changed their rank-1 verdict).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from runtime.registry import open_backend
from san.contract.artifact import read_model_contract, read_provenance
from san.contract.rules import RULES, Rule
from san.contract.spec import ContractError
from san.data.records import ReidDataset
from san.evaluation.rerank import RerankParams
from san.evaluation.retrieval import SHOWN_RANKS, Comparison, Retrieval, compare, embed_split, score
from san.io.hashing import file_sha256

MAX_RANK = 20  # CMC length kept in the JSON report

log = logging.getLogger(__name__)


@dataclass
class BackendResult:
    """One backend's retrieval, and (except for the reference) its comparison and verdict."""

    name: str  # torch, onnx, int8, engine, ir, openvino-onnx, openvino-int8
    artifact: str
    kind: str  # reference, or the precision it is judged by: fp32, fp16, tf32, bf16, int8
    backend: dict[str, Any]
    retrieval: Retrieval
    seconds: float
    comparison: Comparison | None = None
    breaches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class StochasticResult:
    """Sampled-mask retrieval of the PyTorch model, mean over ``draws``, vs its deterministic masks."""

    draws: int
    seed: int
    tau: dict[int, float]
    per_draw: list[Retrieval]
    deterministic: Retrieval

    @property
    def mAP(self) -> float:
        return float(np.mean([r.mAP for r in self.per_draw]))

    def rank(self, k: int) -> float:
        return float(np.mean([r.rank(k) for r in self.per_draw]))

    @property
    def delta_map(self) -> float:
        """Sampled minus deterministic mAP, points."""
        return 100 * (self.mAP - self.deterministic.mAP)

    @property
    def delta_rank1(self) -> float:
        return 100 * (self.rank(1) - self.deterministic.rank(1))


@dataclass
class ParityReport:
    """Everything :func:`run_parity` measured."""

    dataset: str
    num_query: int
    num_gallery: int
    results: list[BackendResult]  # the reference first
    rules: dict[str, Rule]
    stochastic: StochasticResult | None = None
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not any(r.breaches for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per backend retrieval (CMC to rank 20), comparison, breaches; the rules."""
        def backend(r: BackendResult) -> dict[str, Any]:
            d = asdict(r)
            d["retrieval"] = r.retrieval.to_dict()
            if r.comparison is not None:
                d["comparison"]["delta_map"] = r.comparison.delta_map
                d["comparison"]["delta_rank"] = {str(k): v for k, v in r.comparison.delta_rank.items()}
                d["comparison"]["rank1_flip_fraction"] = r.comparison.flip_fraction
            return d

        stochastic = None
        if self.stochastic is not None:
            s = self.stochastic
            stochastic = {"draws": s.draws, "seed": s.seed, "tau": {str(k): v for k, v in s.tau.items()},
                          "mAP_percent": 100 * s.mAP, **{f"rank{k}_percent": 100 * s.rank(k) for k in SHOWN_RANKS},
                          "delta_mAP_points": s.delta_map, "delta_rank1_points": s.delta_rank1,
                          "per_draw": [{"mAP_percent": 100 * r.mAP, "rank1_percent": 100 * r.rank(1)}
                                       for r in s.per_draw]}
        return {
            "dataset": self.dataset, "num_query": self.num_query, "num_gallery": self.num_gallery,
            "passed": self.passed, "results": [backend(r) for r in self.results], "stochastic": stochastic,
            "rules": {k: asdict(v) for k, v in self.rules.items()},
            "unreadable": [{"path": p, "reason": e} for p, e in self.unreadable], "notes": self.notes,
        }

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        head = ["backend", "kind", "mAP", "ΔmAP", "rank-1", "Δr1", "rank-5", "rank-10",
                "cos min", "cos mean", "top-10", "r1 flips", "verdict"]
        rows = []
        for r in self.results:
            c, ret = r.comparison, r.retrieval
            pct = [f"{100 * ret.mAP:.2f}", f"{100 * ret.rank(1):.2f}", f"{100 * ret.rank(5):.2f}",
                   f"{100 * ret.rank(10):.2f}"]
            if c is None:
                rows.append([r.name, r.kind, pct[0], "", pct[1], "", pct[2], pct[3], "", "", "", "", "reference"])
            else:
                rows.append([r.name, r.kind, pct[0], f"{c.delta_map:+.2f}", pct[1], f"{c.delta_rank[1]:+.2f}",
                             pct[2], pct[3], f"{c.cosine_min:.6f}", f"{c.cosine_mean:.6f}",
                             f"{c.top10_overlap:.3f}", f"{c.rank1_flips}/{c.queries}",
                             "FAIL" if r.breaches else "pass"])
        return head, rows

    def _footer(self) -> list[str]:
        lines = []
        if self.stochastic is not None:
            s = self.stochastic
            lines.append(
                f"torch, sampled masks (tau {', '.join(f'{t:.3f}' for t in s.tau.values())}; mean of {s.draws} "
                f"draws from seed {s.seed}): mAP {100 * s.mAP:.2f} ({s.delta_map:+.2f} vs deterministic), "
                f"rank-1 {100 * s.rank(1):.2f} ({s.delta_rank1:+.2f})"
            )
        for r in self.results:
            lines += _significance(r, self.rules.get(r.kind))
            lines += [f"{r.name} ({r.artifact}): FAILED {b}" for b in r.breaches]
            lines += [f"{r.name}: note: {n}" for n in r.notes]
        lines += [f"note: {n}" for n in self.notes]
        if self.unreadable:
            lines.append(f"{len(self.unreadable)} unreadable images left out for every backend:")
            lines += [f"  {p}: {e}" for p, e in self.unreadable]
        lines.append("PASSED: every artifact meets its thresholds" if self.passed else "FAILED: see above")
        return lines

    def render(self) -> str:
        """Fixed-width table for a terminal, then the stochastic line, failures and notes."""
        head, rows = self._rows()
        widths = [max(len(x) for x in column) for column in zip(head, *rows)]

        def fmt(cells: list[str]) -> str:  # names left-aligned, numbers right-aligned
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        title = (f"parity on {self.dataset}: {self.num_query} queries, {self.num_gallery} gallery images "
                 "(metrics in %, deltas in points vs torch)")
        return "\n".join([title, fmt(head), *map(fmt, rows), *self._footer()])

    def markdown(self) -> str:
        """The report as a Markdown document: table, artifacts, thresholds, outcome."""
        head, rows = self._rows()
        lines = [
            "# SAN parity report", "",
            f"Data set **{self.dataset}**: {self.num_query} queries, {self.num_gallery} gallery images; "
            "metrics in %, deltas in points against the PyTorch eval model (deterministic masks).", "",
            "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
            *("| " + " | ".join(row) + " |" for row in rows), "",
            "Artifacts:", "",
            *(f"- `{r.name}`: `{r.artifact}` ({', '.join(f'{k}: {v}' for k, v in r.backend.items())}, "
              f"{r.seconds:.1f} s)" for r in self.results), "",
            "Limits (`--limit KIND.FIELD=VALUE`):", "",
            "| kind | " + " | ".join(f.name for f in fields(Rule)) + " |",
            "|---|" + "|".join("---" for _ in fields(Rule)) + "|",
            *(f"| {k} | " + " | ".join("–" if getattr(v, f.name) is None else f"{getattr(v, f.name):g}"
                                       for f in fields(Rule)) + " |" for k, v in self.rules.items()), "",
        ]
        lines += [f"- {line}" for line in self._footer()]
        return "\n".join(lines) + "\n"


def _significance(r: BackendResult, rule: Rule | None) -> list[str]:
    """The deltas' 95 % intervals and the rank-1 McNemar test; a warning when the split is
    too small for the rank-1 limit to tell a real change from noise."""
    c = r.comparison
    if c is None:
        return []
    m, r1 = c.map_change, c.rank1_change
    lines = [
        f"{r.name}: 95 % intervals over queries of {r.name} - PyTorch: ΔmAP [{m.low:+.2f}, {m.high:+.2f}], Δrank-1 "
        f"[{r1.delta.low:+.2f}, {r1.delta.high:+.2f}]; rank-1 gained by {r1.gained} queries, lost by {r1.lost} "
        f"(McNemar p = {r1.p_value:.3g}: {'significant' if r1.p_value < 0.05 else 'not significant'} at 5 %)"
    ]
    limit = rule.max_delta_rank1 if rule is not None else None
    half_width = r1.delta.half_width
    if limit and half_width > limit:
        needed = int(np.ceil(c.queries * (half_width / limit) ** 2))
        lines.append(
            f"{r.name}: note: this split measures rank-1 to ±{half_width:.2f} points, coarser than the "
            f"±{limit:g}-point limit, so noise alone can breach it; about {needed} queries would resolve it"
        )
    return lines


@dataclass(frozen=True)
class Artifact:
    """An exported model to compare: the flag it came from, its path, and what the flag promises."""

    name: str  # onnx, int8, engine, ir, openvino-onnx, openvino-int8
    path: Path
    expected_precision: str | None = None
    backend: str | None = None  # None: by the file's suffix
    options: tuple[tuple[str, Any], ...] = ()  # backend options of this artifact alone (OpenVINO's precision)
    judged_as: str | None = None  # the rule when the runtime computes below the file's precision (bf16)

    def precision(self, facts_precision: str) -> str:
        """The rule this artifact is judged by: the file's precision, or what its runtime lowers it to."""
        return self.judged_as if self.judged_as and facts_precision != "int8" else facts_precision


def deployed_as(artifacts: Sequence[Artifact]) -> dict[str, str]:
    """The torch reference's options to deploy its masks as the artifacts record (none when they
    record nothing else than the checkpoint may); ``ValueError`` when they disagree."""
    kinds = {artifact: read_model_contract(artifact.path)[0].deployed_mask for artifact in artifacts}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"--{a.name} {a.path}: {kind}" for a, kind in kinds.items())
        raise ValueError(f"the files deploy their masks differently ({listed}); compare exports of one --mask")
    return {"deployed_mask": kind} if (kind := next(iter(kinds.values()), None)) else {}


def sampled_retrieval(ckpt: Path, dataset: ReidDataset, deterministic: Retrieval, draws: int, seed: int,
                      batch_size: int, device: str, workers: int | None, rerank: RerankParams | None = None,
                      progress: bool = False) -> StochasticResult | None:
    """Score the checkpoint with sampled masks, ``draws`` times (``torch.manual_seed(seed + k)``
    before draw k embeds the query, then the gallery); None when no mask is sampled."""
    import torch  # the PyTorch reference, measured only here and in the torch backend

    from san.evaluation.evaluate import evaluate_model
    from san.model.sampled import StochasticMasks
    from san.training.checkpoint import load_checkpoint

    model, _ = load_checkpoint(ckpt, map_location=device)
    generators = model.sampled_generators()
    if not generators:
        return None
    per_draw = []
    for k in range(draws):
        log.info(f"torch, sampled masks: draw {k + 1}/{draws}")
        torch.manual_seed(seed + k)
        report = evaluate_model(StochasticMasks(model), dataset, batch_size=batch_size, workers=workers,
                                max_rank=MAX_RANK, rerank=rerank, progress=progress)
        per_draw.append(report.retrieval)
    return StochasticResult(draws, seed, model.temperatures(), per_draw, deterministic)


def run_parity(
    ckpt: str | Path,
    dataset: ReidDataset,
    artifacts: Sequence[Artifact],
    rules: dict[str, Rule] = RULES,
    *,
    draws: int = 3,
    seed: int = 0,
    batch_size: int = 32,
    options: dict[str, Any] | None = None,
    workers: int | None = None,
    rerank: RerankParams | None = None,
    progress: bool = False,
) -> ParityReport:
    """Embed ``dataset``'s query and gallery with the checkpoint and every artifact; compare.

    ``draws=0`` skips the sampled-mask measurement. ``options`` (device, threads,
    providers) go to every backend, the PyTorch reference included. ``progress``: a bar or
    log lines (:mod:`san.io.progress`) for each split each run embeds. Images stream through
    each backend; peak memory holds the embeddings of two runs.
    """
    ckpt = Path(ckpt)
    if draws < 0:
        raise ValueError(f"--draws must be >= 0, got {draws}")
    provenance = {}
    for artifact in artifacts:
        facts = read_provenance(artifact.path)
        if artifact.expected_precision and facts.precision != artifact.expected_precision:
            raise ValueError(f"--{artifact.name} {artifact.path}: the file says its precision is {facts.precision!r}, "
                             f"not {artifact.expected_precision!r}; pass it with the matching flag")
        facts = replace(facts, precision=artifact.precision(facts.precision))
        if facts.precision not in rules:
            raise ValueError(f"--{artifact.name} {artifact.path}: no thresholds for precision {facts.precision!r}; "
                             f"known: {sorted(rules)}")
        provenance[artifact] = facts
    options = options or {}
    reference = open_backend(ckpt, "torch", **options, **deployed_as(artifacts))
    log.info(f"torch: {ckpt} on {len(dataset.query)} query and {len(dataset.gallery)} gallery images")
    with reference:
        spec, device = reference.spec, str(reference.device)
        ref_run = embed_split(reference, dataset, batch_size=batch_size, workers=workers, progress=progress)
        described = reference.describe()
    ref_retrieval = score(ref_run, max_rank=MAX_RANK, rerank=rerank)
    results = [BackendResult("torch", str(ckpt), "reference", described, ref_retrieval, ref_run.seconds)]
    ckpt_sha = file_sha256(ckpt)
    for artifact in artifacts:
        facts = provenance[artifact]
        log.info(f"{artifact.name}: {artifact.path}")
        with open_backend(artifact.path, artifact.backend, **options, **dict(artifact.options)) as backend:
            if backend.spec != spec:
                raise ContractError(f"--{artifact.name} {artifact.path}: its input contract differs from the "
                                    f"checkpoint's ({backend.spec} vs {spec}); compare exports of this checkpoint")
            run = embed_split(backend, dataset, batch_size=batch_size, workers=workers, progress=progress)
            described, backend_notes = backend.describe(), backend.notes
        retrieval = score(run, max_rank=MAX_RANK, rerank=rerank)
        comparison = compare(ref_run, ref_retrieval, run, retrieval)
        source = facts.checkpoint_sha256
        notes = backend_notes + ([] if source in (None, ckpt_sha) else [
            f"exported from checkpoint sha256 {source[:12]}..., not from {ckpt.name} ({ckpt_sha[:12]}...)"])
        results.append(BackendResult(artifact.name, str(artifact.path), facts.precision, described, retrieval,
                                     run.seconds, comparison,
                                     rules[facts.precision].breaches(facts.precision, comparison.measured()), notes))
    stochastic, notes = None, []
    if rerank is not None:
        notes.append(f"mAP and CMC ranked by k-reciprocal re-ranked distances (k1 {rerank.k1}, k2 {rerank.k2}, "
                     f"lambda {rerank.lam:g}); cosines, top-10 overlap and rank-1 flips compare the embeddings")
    if draws > 0:
        log.info(f"torch, sampled masks: {draws} draws")
        stochastic = sampled_retrieval(ckpt, dataset, ref_retrieval, draws, seed, batch_size, device, workers,
                                       rerank, progress)
        if stochastic is None:
            notes.append("no sampled-mask comparison: the model has no sampled attention mask")
    used = {provenance[a].precision for a in artifacts}
    return ParityReport(dataset.name, len(ref_run.query.records), len(ref_run.gallery.records), results,
                        {k: v for k, v in rules.items() if k in used}, stochastic, ref_run.failures, notes)
