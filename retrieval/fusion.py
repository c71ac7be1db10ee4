"""From unit hits to ranked entries: aggregate variants/passages per entry, fuse dense and lexical ranks,
and attach a calibrated confidence."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .settings import RetrievalSettings


@dataclass
class Candidate:
    entry_id: str
    score: float = 0.0
    dense: float = 0.0
    margin: float = 0.0  # dense minus the best dense of any other entry
    lexical_rank: int | None = None
    matched: str = ""
    confidence: float = 0.0


def best_per_entry(hits: list[tuple[int, float]], units: dict[int, tuple[str, str]]) -> list[tuple[str, float, str]]:
    """(entry id, best unit score, best unit text), best first: an entry scores by its best variant/passage."""
    best: dict[str, tuple[float, str]] = {}
    for uid, score in hits:
        if uid not in units:  # removed since the index was read
            continue
        entry_id, text = units[uid]
        if entry_id not in best or score > best[entry_id][0]:
            best[entry_id] = (score, text)
    return sorted(((e, s, t) for e, (s, t) in best.items()), key=lambda x: -x[1])


def fuse(
    dense: list[tuple[str, float, str]],
    lexical: list[tuple[str, float, str]],
    settings: RetrievalSettings,
    mode: str = "hybrid",
) -> list[Candidate]:
    """Weighted reciprocal-rank fusion of entry rankings; `mode` "dense" or "lexical" uses one list."""
    found: dict[str, Candidate] = {}
    if mode in ("hybrid", "dense"):
        for rank, (entry_id, cosine, text) in enumerate(dense, 1):
            c = found.setdefault(entry_id, Candidate(entry_id, matched=text))
            c.dense = cosine
            c.score += settings.dense_weight / (settings.rrf_k + rank)
    if mode in ("hybrid", "lexical"):
        for rank, (entry_id, _, text) in enumerate(lexical, 1):
            c = found.setdefault(entry_id, Candidate(entry_id, matched=text))
            c.lexical_rank = rank
            c.score += settings.lexical_weight / (settings.rrf_k + rank)
    ranked = sorted(found.values(), key=lambda c: (-c.score, -c.dense))
    top_two = sorted((c.dense for c in ranked), reverse=True)[:2] + [0.0, 0.0]
    for c in ranked:
        c.margin = c.dense - (top_two[1] if c.dense == top_two[0] else top_two[0])
        c.confidence = confidence(features(c.dense, c.margin, c.lexical_rank), settings.calibration)
    return ranked


def features(dense: float, margin: float, lexical_rank: int | None) -> list[float]:
    """What the calibration reads: how similar, how clearly ahead of the others, whether BM25 agrees."""
    return [dense, margin, 1.0 / lexical_rank if lexical_rank else 0.0]


def confidence(x: list[float], weights: list[float]) -> float:
    z = sum(w * v for w, v in zip(weights, x)) + weights[-1]
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))
