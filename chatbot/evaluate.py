"""`eval answers`: answer quality on held-out questions, with metrics a reviewer can trust without a judge
model: embedding similarity to the reference answer, grounding in the retrieved passages, and hand-off
precision/recall (an empty reference means the bot should hand off)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from retrieval import Embedder, EvalFileError, read_eval_csv

from .engine import Reply, SupportBot

BANDS = (0.0, 0.5, 0.65, 0.8, 1.01)  # retrieval-confidence bands for the per-band table


@dataclass
class AnswerReport:
    answer_similarity: float  # mean cosine(reply, reference) over answerable questions (hand-offs included)
    answered_similarity: float  # the same over answerable questions the bot did answer
    grounding: float  # mean grounding of the replies that were answered
    handoff_precision: float  # of the hand-offs (and out-of-scope replies), the share on questions that should hand off
    handoff_recall: float  # of the questions that should hand off, the share that did (or got the out-of-scope reply)
    source_accuracy: float  # top source is the expected entry (rows with expected_id)
    latency_ms_p50: float
    latency_ms_p95: float
    n: int
    n_out_of_scope: int
    template_share: float  # share of answered replies that used the curated answer
    by_band: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("rows")
        return out


def save_eval(home: Path, kind: str, model: str, summary: dict) -> None:
    """Keep the latest evaluation of each model (kind "answers" or "retrieval") for the models table."""
    path = home / "evals.json"
    evals = load_evals(home)
    evals.setdefault(kind, {})[model] = {k: v for k, v in summary.items() if not isinstance(v, (list, dict))}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(evals, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def load_evals(home: Path) -> dict:
    path = home / "evals.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def load_answer_rows(path: str | Path) -> list[dict]:
    rows = read_eval_csv(path, ("question", "answer"), ("expected_id",))
    for row in rows:
        if not row["question"]:
            raise EvalFileError(f"{path}: line {row['line']}: empty question")
        row.setdefault("expected_id", "")
    return rows


def evaluate_answers(bot: SupportBot, rows: list[dict], embedder: Embedder,
                     progress: Callable[[int, int], None] | None = None) -> AnswerReport:
    """Each question in a fresh conversation of channel "eval"."""
    replies: list[Reply] = []
    for i, row in enumerate(rows):
        replies.append(bot.ask(row["question"], channel="eval"))
        if progress:
            progress(i + 1, len(rows))
    answerable = [i for i, r in enumerate(rows) if r["answer"]]
    similarity = np.zeros(len(rows))
    if answerable:
        a = embedder.encode([without_citations(replies[i].text) for i in answerable])
        b = embedder.encode([rows[i]["answer"] for i in answerable])
        similarity[answerable] = np.sum(a * b, axis=1)
    answered = [i for i in answerable if not replies[i].declined]
    handed = [i for i, r in enumerate(replies) if r.declined]
    out_of_scope = [i for i, r in enumerate(rows) if not r["answer"]]
    expected = [i for i, r in enumerate(rows) if r["expected_id"]]
    spoken = [r for r in replies if not r.declined and r.reason == ""]
    latencies = [r.latency_ms for r in replies]
    return AnswerReport(
        answer_similarity=_mean(similarity[answerable]),
        answered_similarity=_mean(similarity[answered]),
        grounding=_mean([r.grounding for r in spoken if r.grounding is not None]),
        handoff_precision=_mean([not rows[i]["answer"] for i in handed]),
        handoff_recall=_mean([replies[i].declined for i in out_of_scope]),
        source_accuracy=_mean([bool(replies[i].sources) and replies[i].sources[0].entry_id == rows[i]["expected_id"] for i in expected]),
        latency_ms_p50=round(float(np.percentile(latencies, 50)), 1),
        latency_ms_p95=round(float(np.percentile(latencies, 95)), 1),
        n=len(answerable),
        n_out_of_scope=len(out_of_scope),
        template_share=_mean([r.mode == "template" for r in spoken]),
        by_band=_bands(rows, replies, similarity),
        rows=[{"question": row["question"], "reply": rep.text, "similarity": round(float(s), 4), **rep.to_json()}
              for row, rep, s in zip(rows, replies, similarity)],
    )


def _bands(rows: list[dict], replies: list[Reply], similarity: np.ndarray) -> list[dict]:
    """Similarity of answered, answerable questions per retrieval-confidence band and reply mode: the
    numbers that decide where curated answers beat generation."""
    out = []
    for low, high in zip(BANDS, BANDS[1:]):
        for mode in ("template", "generate"):
            picked = [i for i, r in enumerate(replies) if rows[i]["answer"] and not r.declined
                      and r.mode == mode and low <= r.confidence < high]
            if picked:
                out.append({"band": f"{low:.2f}-{min(high, 1.0):.2f}", "mode": mode, "n": len(picked),
                            "similarity": _mean(similarity[picked])})
    return out


def without_citations(text: str) -> str:
    return re.sub(r"\s*\[\d+\]", "", text)


def _mean(values) -> float:
    values = list(values)
    return round(float(np.mean(values)), 4) if values else 0.0
