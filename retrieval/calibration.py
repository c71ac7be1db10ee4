"""Fit the confidence calibration: logistic regression from a hit's features to "this hit is right"."""

from __future__ import annotations

import numpy as np


def fit_logistic(x: list[list[float]], y: list[int], l2: float = 1e-2, steps: int = 50) -> list[float]:
    """Weights then bias, by Newton's method with a small L2 penalty (stable on separable data)."""
    features = np.asarray(x, dtype=np.float64)
    labels = np.asarray(y, dtype=np.float64)
    if len(set(y)) < 2:
        raise ValueError("calibration needs both right and wrong top hits (add out-of-scope queries)")
    design = np.hstack([features, np.ones((len(features), 1))])
    w = np.zeros(design.shape[1])
    penalty = l2 * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -50, 50)))
        gradient = design.T @ (p - labels) + penalty @ w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return [round(float(v), 4) for v in w]


def brier(probabilities: list[float], labels: list[int]) -> float:
    """Mean squared gap between confidence and outcome: lower is better calibrated."""
    p, y = np.asarray(probabilities), np.asarray(labels)
    return float(np.mean((p - y) ** 2)) if len(p) else 0.0
