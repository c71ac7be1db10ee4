"""Entry prototypes: each FAQ entry's question variants averaged into one direction, so that an entry is
scored by what its phrasings share as well as by its single closest phrasing.

A query worded like none of the variants often lies nearer their mean than any one of them; the nearest
variant alone rewards an entry with one odd phrasing near the query. Measured by bench/retriever.py
(off-the-shelf MiniLM, hybrid top-1, nearest variant alone -> half way to the prototype, with the small
variant vote): the demo knowledge base's held-out variants (2-3 left per entry) 0.481 -> 0.532,
data/eval/retrieval.csv 0.808 -> 0.829, Banking77 with 10 queries per intent 0.835 -> 0.844; with all its
~130 per intent 0.924 -> 0.922 (many variants already cover the ways of asking).

So the pull shrinks as an entry's variants grow: `weight * min(1, full_up_to / n)` for an entry with n
variants. An entry with many variants is mapped well by its nearest one, and its mean blurs the clusters
its phrasings fall into. Dense top-1 on Banking77 (int8, variant vote on): nearest variant alone 0.917 /
0.810 (all ~130 / 10 per intent); a constant 0.5 pull 0.911 / 0.833; shrinking past 10 variants 0.923 /
0.833 (past 20: 0.923; 2k / (k + n) at k = 10: 0.924)."""

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
        self.variants = {entry_id: len(r) for entry_id, r in kept}
        means = np.stack([vectors[r].mean(axis=0) for _, r in kept]) if kept else np.zeros((0, vectors.shape[1]), np.float32)
        self.matrix = (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.row)

    def pull(self, query: np.ndarray, best: list[tuple[str, float, str]], weight: float, full_up_to: int) -> dict[str, float]:
        """What moving each entry's best cosine (`best`: entry id, cosine, text) part of the way to its
        prototype's cosine adds: `weight` for an entry of up to `full_up_to` variants, less past it."""
        found = [(entry_id, cosine) for entry_id, cosine, _ in best if entry_id in self.row]
        if weight <= 0 or not found:
            return {}
        cosines = self.matrix[[self.row[entry_id] for entry_id, _ in found]] @ query
        return {entry_id: pull_weight(weight, self.variants[entry_id], full_up_to) * (float(c) - cosine)
                for (entry_id, cosine), c in zip(found, cosines)}


def pull_weight(weight: float, variants: int, full_up_to: int) -> float:
    """The share of the way to the prototype for an entry with this many variants."""
    return weight * min(1.0, full_up_to / variants) if full_up_to > 0 else weight
