"""Is a question any of the knowledge base's business? A linear classifier over embedder vectors, fitted
on the knowledge base's own question variants (inside) and on messages no support knowledge base answers
(outside: chit-chat, outside advice, other shops...).

Retrieval confidence alone cannot tell: "what's your favourite colour" lies close enough to the entry about
a wrong-colour item to pass any threshold that keeps real questions. The classifier reads the whole vector
instead of its distance to the nearest entry. Its threshold comes from the knowledge base itself: each
variant is scored by a model fitted without it (cross-validation), and the threshold lets through all but
`false_alarms` of them, so a knowledge base that looks unlike the outside examples gets a guard that
rarely hands off its own questions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_EXAMPLES = 10  # outside examples at least; inside, also 1 / false_alarms (see `fit_scope`)


@dataclass
class ScopeModel:
    weights: np.ndarray
    bias: float
    threshold: float  # probability of being outside at or above which a question is outside

    def probability(self, vectors: np.ndarray) -> np.ndarray:
        """Probability that each row's question is outside the knowledge base's subject."""
        return _sigmoid(np.asarray(vectors, dtype=np.float64) @ self.weights + self.bias)

    def outside(self, vectors: np.ndarray) -> np.ndarray:
        return self.probability(vectors) >= self.threshold


def fit_scope(inside: np.ndarray, outside: np.ndarray, false_alarms: float = 0.003, folds: int = 5, repeats: int = 3,
              l2: float = 1 / 3, seed: int = 0) -> ScopeModel | None:
    """The classifier on all examples, with the threshold that cross-validation (`folds` folds, `repeats`
    times over, pooled: a single split's top scores are a handful of points) says hands off `false_alarms` of
    the inside questions. None with fewer than MIN_EXAMPLES outside examples, or fewer inside ones than it
    takes to estimate that share (1 / false_alarms): with n variants the threshold can be no stricter than
    the n-th score, which lets through only about n / (n + 1) of new questions (4% false alarms at 12)."""
    if len(outside) < MIN_EXAMPLES or len(inside) < min_inside(false_alarms):
        return None
    x = np.vstack([inside, outside]).astype(np.float64)
    y = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    rng = np.random.default_rng(seed)
    held_out = []
    for _ in range(repeats):
        fold = rng.permutation(len(x)) % folds
        scores = np.empty(len(x))
        for f in range(folds):
            weights, bias = fit_logistic(x[fold != f], y[fold != f], l2)
            scores[fold == f] = _sigmoid(x[fold == f] @ weights + bias)
        held_out.append(scores[: len(inside)])
    weights, bias = fit_logistic(x, y, l2)
    return ScopeModel(weights, bias, float(np.quantile(np.concatenate(held_out), 1 - false_alarms)))


def min_inside(false_alarms: float) -> float:
    """Inside examples `fit_scope` needs to hold false alarms to `false_alarms` (334 at 0.003)."""
    return max(MIN_EXAMPLES, math.ceil(1 / false_alarms)) if false_alarms > 0 else math.inf


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 30) -> tuple[np.ndarray, float]:
    """Logistic regression by Newton's method: each class weighs as much as the other in all (there are
    more variants than outside examples), an L2 penalty on the weights (not the bias). A few hundred
    dimensions and a few thousand rows: each step is one small linear solve."""
    n, d = x.shape
    sample = np.where(y == 1, n / (2 * max(y.sum(), 1)), n / (2 * max(n - y.sum(), 1)))
    design = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    theta = np.zeros(d + 1)
    for _ in range(steps):
        p = _sigmoid(design @ theta)
        gradient = design.T @ (sample * (p - y)) + penalty * theta
        hessian = (design * (sample * p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-6:
            break
    return theta[:-1], float(theta[-1])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
