"""Entry prototypes: each FAQ entry's question variants averaged into one direction, so that an entry is
scored by what its phrasings share as well as by its single closest phrasing.

A query worded like none of the variants often lies nearer their mean than any one of them; the nearest
variant alone rewards an entry with one odd phrasing near the query. Measured by bench/retriever.py
(off-the-shelf MiniLM, hybrid top-1, nearest variant alone -> half way to the prototype, with the small
variant vote): the demo knowledge base's held-out variants (2-3 left per entry) 0.481 -> 0.532,
data/eval/retrieval.csv 0.808 -> 0.829, Banking77 with 10 queries per intent 0.835 -> 0.844; with all its
~130 per intent 0.924 -> 0.922 (many variants already cover the ways of asking)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class Prototypes:
    """The normalised mean of the variant vectors of each entry with two or more variants (an entry with
    one has nothing to average: its variant is its prototype)."""

    def __init__(self, entry_ids: Iterable[str], vectors: np.ndarray):
        rows: dict[str, list[int]] = {}
        for row, entry_id in enumerate(entry_ids):
            rows.setdefault(entry_id, []).append(row)
        kept = [(entry_id, r) for entry_id, r in rows.items() if len(r) > 1]
        self.row = {entry_id: i for i, (entry_id, _) in enumerate(kept)}
        means = np.stack([vectors[r].mean(axis=0) for _, r in kept]) if kept else np.zeros((0, vectors.shape[1]), np.float32)
        self.matrix = (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.row)

    def pull(self, query: np.ndarray, best: list[tuple[str, float, str]], weight: float) -> dict[str, float]:
        """What moving each entry's best cosine (`best`: entry id, cosine, text) `weight` of the way to its
        prototype's cosine adds: weight * (prototype cosine - best cosine), for the entries that have one."""
        found = [(entry_id, cosine) for entry_id, cosine, _ in best if entry_id in self.row]
        if weight <= 0 or not found:
            return {}
        cosines = self.matrix[[self.row[entry_id] for entry_id, _ in found]] @ query
        return {entry_id: weight * (float(c) - cosine) for (entry_id, cosine), c in zip(found, cosines)}
