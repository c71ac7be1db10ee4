"""`eval retrieval`: top-1, recall@5, MRR and latency of search on a CSV of held-out queries."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .calibration import brier, fit_logistic
from .fusion import features
from .kb import KnowledgeBase
from .loaders import read_text
from .perturb import KINDS, perturb
from .records import IngestError


class EvalFileError(ValueError):
    """An evaluation file refused; one line naming the file and row."""


@dataclass
class RetrievalReport:
    top1: float
    recall_at_5: float
    mrr: float
    latency_ms_p50: float
    latency_ms_p95: float
    n: int
    n_out_of_scope: int
    mode: str
    brier: float  # of the calibrated confidence of the top hit (lower is better)
    misses: list[dict] = field(default_factory=list)
    calibration_data: tuple[list[list[float]], list[int]] = field(default_factory=lambda: ([], []))

    def summary(self) -> dict:
        """The JSON contract of `supportbot eval retrieval --json`."""
        out = asdict(self)
        out.pop("calibration_data")
        out.pop("misses")
        return out

    def fit_calibration(self) -> list[float]:
        return fit_logistic(*self.calibration_data)


def read_eval_csv(path: str | Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[dict]:
    """Rows as dicts (with their `line`), checking columns; refusals name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise EvalFileError(f"{path}: no such file")
    try:
        text = read_text(path)
    except IngestError as err:
        raise EvalFileError(str(err)) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader)]
    for name in required:
        if name not in header:
            raise EvalFileError(f"{path}: line 1: missing required column '{name}' (found: {', '.join(header)})")
    allowed = set(required) | set(optional)
    unknown = [h for h in header if h not in allowed]
    if unknown:
        raise EvalFileError(f"{path}: line 1: unknown column '{unknown[0]}' (columns are: {', '.join(required + optional)})")
    rows = []
    line = reader.line_num + 1
    for values in reader:
        where, line = line, reader.line_num + 1
        if not any(v.strip() for v in values):
            continue
        if len(values) > len(header):
            raise EvalFileError(f"{path}: line {where}: {len(values)} values for {len(header)} columns")
        row = {name: "" for name in header} | {k: v.strip() for k, v in zip(header, values)}
        rows.append({**row, "line": where})
    if not rows:
        raise EvalFileError(f"{path}: no rows after the header")
    return rows


def load_queries(path: str | Path, kb: KnowledgeBase) -> list[dict]:
    """query,expected_id rows; an empty expected_id marks a query the KB should not answer."""
    rows = read_eval_csv(path, ("query", "expected_id"))
    known = kb.store.entry_info(list({r["expected_id"] for r in rows if r["expected_id"]}))
    for row in rows:
        if not row["query"]:
            raise EvalFileError(f"{path}: line {row['line']}: empty query")
        if row["expected_id"] and row["expected_id"] not in known:
            raise EvalFileError(f"{path}: line {row['line']}: expected_id '{row['expected_id']}' is not in the knowledge base")
    return rows


def evaluate_retrieval(
    kb: KnowledgeBase, rows: list[dict], mode: str = "hybrid", progress: Callable[[int, int], None] | None = None
) -> RetrievalReport:
    reciprocal, top1, recall, latencies = [], [], [], []
    cal_x: list[list[float]] = []
    cal_y: list[int] = []
    confidences: list[float] = []
    misses = []
    kb.prepare()  # the speller and the entry classifier from the first query on
    for i, row in enumerate(rows):
        started = time.perf_counter()
        hits = kb.search(row["query"], k=10, mode=mode)
        latencies.append((time.perf_counter() - started) * 1000)
        ids = [h.entry_id for h in hits]
        expected = row["expected_id"]
        if hits:
            top = hits[0]
            cal_x.append(features(top.dense, top.margin, top.lexical_rank))
            cal_y.append(int(bool(expected) and ids[0] == expected))
            confidences.append(top.confidence)
        if expected:
            rank = ids.index(expected) + 1 if expected in ids else 0
            reciprocal.append(1.0 / rank if rank else 0.0)
            top1.append(rank == 1)
            recall.append(0 < rank <= 5)
            if rank != 1:
                misses.append({"line": row["line"], "query": row["query"], "expected": expected, "got": ids[:3]})
        if progress:
            progress(i + 1, len(rows))
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    return RetrievalReport(
        top1=_mean(top1),
        recall_at_5=_mean(recall),
        mrr=_mean(reciprocal),
        latency_ms_p50=round(float(np.percentile(lat, 50)), 2),
        latency_ms_p95=round(float(np.percentile(lat, 95)), 2),
        n=len(top1),
        n_out_of_scope=len(rows) - len(top1),
        mode=mode,
        brier=round(brier(confidences, cal_y), 4),
        misses=misses,
        calibration_data=(cal_x, cal_y),
    )


def evaluate_perturbed(kb: KnowledgeBase, rows: list[dict], kind: str, mode: str = "hybrid",
                       progress: Callable[[int, int], None] | None = None) -> dict[str, dict]:
    """{kind: top1, recall_at_5, mrr} with every query perturbed (`retrieval.perturb`); "all" gives each kind
    alone and all of them together."""
    kinds = [*KINDS, "all"] if kind == "all" else [kind]
    out = {}
    for n, one in enumerate(kinds):
        step = (lambda i, total, n=n: progress(n * total + i, total * len(kinds))) if progress else None
        report = evaluate_retrieval(kb, [{**row, "query": perturb(row["query"], one)} for row in rows], mode, step)
        out[one] = {key: getattr(report, key) for key in ("top1", "recall_at_5", "mrr")}
    return out


def _mean(values: list) -> float:
    return round(float(np.mean(values)), 4) if values else 0.0
