"""Entry classifier: softmax regression over the knowledge base's entries, read from a query's vector.

Nearest-variant search asks "which phrasing is closest"; with many variants per entry, a linear model over
the whole vector learns which directions tell entries apart, which no single phrasing shows. Its
probability is added to each FAQ entry's score (`blend` x p(entry | query)), next to the variant vote and
the prototype pull, so the cosine the confidence calibration reads is untouched.

It is fitted per version of the index, in numpy and scipy (L-BFGS), and kept only where the knowledge base's
own held-out variants say it helps: the variants of entries with three or more are dealt into folds, each
fold is searched (dense: nearest variant, vote and prototype pull, as the product scores) against the rest
with and without the classifier fitted on the rest, and the regularisation and blend that answer most of
them right are chosen; none is kept unless it gains `MIN_GAIN` top-1 (and `MIN_GAIN_VARIANTS` variants) over no classifier. Only tried where
entries have `MIN_MEAN_VARIANTS` variants on average (with fewer, the prototype does this job) and there are at
most `MAX_ENTRIES` of them.

Banking77 (int8 MiniLM, dense, the test file): all ~130 per intent 0.923 -> 0.936 (the classifier alone
0.929), 10 per intent 0.833 -> 0.852 (alone 0.847)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from .prototypes import pull_weight

MIN_MEAN_VARIANTS = 5.0
MAX_ENTRIES = 1000
FOLDS = 3
L2 = (1e-5, 1e-4, 1e-3)  # penalty on the weights (vectors are unit length, so logits start small)
BLENDS = (0.1, 0.2, 0.4, 0.8)
MIN_GAIN = 0.005  # top-1 on the held-out variants, and at least MIN_GAIN_VARIANTS more of them right
MIN_GAIN_VARIANTS = 3
MAX_ITERATIONS = 300


@dataclass
class EntryClassifier:
    entry_ids: list[str]
    weights: np.ndarray  # (dimensions + 1, entries): the last row is the bias
    blend: float
    heldout: dict  # top-1 on the held-out variants, without and with it, and what was chosen

    def scores(self, query: np.ndarray) -> dict[str, float]:
        """blend x p(entry | query), for every entry it knows."""
        return dict(zip(self.entry_ids, (self.blend * softmax(_with_bias(query[None, :]) @ self.weights)[0]).tolist()))


@dataclass
class Scoring:
    """How the product scores an entry's variants (see retrieval.fusion and retrieval.prototypes)."""

    variant_vote: float
    prototype_weight: float
    prototype_full_up_to: int


def fit_entry_classifier(entry_ids: list[str], vectors: np.ndarray, scoring: Scoring, seed: int = 0) -> EntryClassifier | None:
    """The classifier for these question variants (`entry_ids[i]` owns `vectors[i]`), or None where the
    held-out variants say it does not help (or the knowledge base is not one it is tried on)."""
    entries = sorted(set(entry_ids))
    if len(entries) < 2 or len(entries) > MAX_ENTRIES or len(entry_ids) / len(entries) < MIN_MEAN_VARIANTS:
        return None
    column = {e: i for i, e in enumerate(entries)}
    labels = np.array([column[e] for e in entry_ids])
    x = np.asarray(vectors, dtype=np.float64)
    fold = _folds(labels, seed)
    correct = {}  # (l2, blend) -> held-out variants answered right; blend 0 = without the classifier
    for f in range(FOLDS):
        train, test = fold != f, fold == f
        base = dense_scores(x[test], x[train], labels[train], len(entries), scoring)
        right = labels[test]
        correct[0.0, 0.0] = correct.get((0.0, 0.0), 0) + int((base.argmax(1) == right).sum())
        for l2 in L2:
            p = softmax(_with_bias(x[test]) @ fit_softmax(x[train], labels[train], len(entries), l2))
            for blend in BLENDS:
                correct[l2, blend] = correct.get((l2, blend), 0) + int(((base + blend * p).argmax(1) == right).sum())
    asked = int((fold >= 0).sum())
    (l2, blend), best = max(correct.items(), key=lambda kv: (kv[1], -kv[0][1]))
    heldout = {"variants": asked, "top1_without": round(correct[0.0, 0.0] / asked, 4), "top1_with": round(best / asked, 4),
               "l2": l2, "blend": blend}
    gained = best - correct[0.0, 0.0]
    if blend == 0.0 or gained < MIN_GAIN_VARIANTS or gained / asked < MIN_GAIN:
        return None
    return EntryClassifier(entries, fit_softmax(x, labels, len(entries), l2), blend, heldout)


def _folds(labels: np.ndarray, seed: int) -> np.ndarray:
    """The fold of each variant, -1 (never asked) for entries with fewer than three: each entry's variants
    are dealt into the folds in a random order from a random fold, so every fold leaves it some."""
    rng = np.random.default_rng(seed)
    fold = np.full(len(labels), -1)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) >= 3:
            fold[rng.permutation(rows)] = (rng.integers(FOLDS) + np.arange(len(rows))) % FOLDS
    return fold


def dense_scores(queries: np.ndarray, vectors: np.ndarray, labels: np.ndarray, n_entries: int, scoring: Scoring) -> np.ndarray:
    """(queries, entries) dense scores as the product's search makes them, for all entries at once: the
    nearest variant's cosine, plus the variant vote (a smooth maximum over the entry's variants), plus the
    pull towards the entry's prototype. -inf for an entry with no variant here."""
    order = np.argsort(labels, kind="stable")
    cosines, labels = queries @ vectors[order].T, labels[order]
    present, starts, counts = np.unique(labels, return_index=True, return_counts=True)
    best = np.maximum.reduceat(cosines, starts, axis=1)
    score = best.copy()
    if scoring.variant_vote > 0:
        spread = np.exp((cosines - np.repeat(best, counts, axis=1)) / scoring.variant_vote)
        score += scoring.variant_vote * np.log(np.add.reduceat(spread, starts, axis=1))
    if scoring.prototype_weight > 0:
        means = np.add.reduceat(vectors[order], starts, axis=0)
        prototypes = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        weight = np.array([pull_weight(scoring.prototype_weight, n, scoring.prototype_full_up_to) if n > 1 else 0.0 for n in counts])
        score += weight * (queries @ prototypes.T - best)
    out = np.full((len(queries), n_entries), -np.inf)
    out[:, present] = score
    return out


def fit_softmax(x: np.ndarray, labels: np.ndarray, n_classes: int, l2: float) -> np.ndarray:
    """Multinomial logistic regression by L-BFGS: mean cross-entropy plus l2/2 |W|^2 (not the bias)."""
    design, n = _with_bias(x), len(x)
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), labels] = 1.0
    shape = (design.shape[1], n_classes)

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(shape)
        p = softmax(design @ w)
        grad = design.T @ (p - onehot) / n
        grad[:-1] += l2 * w[:-1]
        value = -np.log(p[np.arange(n), labels] + 1e-12).mean() + 0.5 * l2 * float((w[:-1] ** 2).sum())
        return value, grad.ravel()

    result = minimize(loss, np.zeros(shape).ravel(), jac=True, method="L-BFGS-B", options={"maxiter": MAX_ITERATIONS})
    return result.x.reshape(shape)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)])
