"""Fitting score distributions: P(copy | score) curves and the upper tail of non-copy scores.

Pure numpy on two samples (copy scores, non-copy scores); nothing here knows about stores or models,
so the fits can be tested and benchmarked on their own (bench/bench_calibration.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def fit_logistic(pos: np.ndarray, neg: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """P(copy|s) = sigmoid(a*s + b) by damped Newton, positives and negatives weighted equally.

    A tiny ridge on ``a`` keeps separable data (a clean collection) from diverging to a step; it is
    kept tiny because a stronger one (1e-4, the first version) flattened the curve measurably
    (bench_calibration: ECE 0.056 -> 0.040 on the benchmark edits). Steps are halved until the loss
    drops (plain Newton can diverge when the copy scores are bimodal, as with a hash that a mirrored
    copy defeats), and ``a`` is kept positive: P(copy) rises with the score.
    """
    x = np.concatenate([pos, neg]).astype(np.float64)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    w = np.concatenate([np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))])
    ridge = 1e-6
    min_a = 1e-3

    def loss(a: float, b: float) -> float:
        z = a * x + b
        return float(np.sum(w * (np.logaddexp(0.0, z) - y * z)) + 0.5 * ridge * a * a)

    a, b = 10.0, -10.0 * float(np.mean(x))
    current = loss(a, b)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        r = w * (p - y)
        g = np.array([np.sum(r * x) + ridge * a, np.sum(r)])
        s = w * p * (1 - p)
        hess = np.array([[np.sum(s * x * x) + ridge, np.sum(s * x)], [np.sum(s * x), np.sum(s) + 1e-12]])
        try:
            step = np.linalg.solve(hess, g)
        except np.linalg.LinAlgError:
            step = g
        t = 1.0
        while t > 1e-6:
            na, nb = max(min_a, a - t * step[0]), b - t * step[1]
            trial = loss(na, nb)
            if trial <= current:
                break
            t /= 2
        else:
            break
        moved = max(abs(na - a), abs(nb - b))
        a, b, current = na, nb, trial
        if moved < 1e-9:
            break
    return float(a), float(b)


def fit_isotonic(pos: np.ndarray, neg: np.ndarray) -> tuple[list[float], list[float]]:
    """Pool-adjacent-violators on scores (classes weighted equally): a monotone step curve (x, p)."""
    x = np.concatenate([pos, neg]).astype(np.float64)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    w = np.concatenate([np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))])
    order = np.argsort(x, kind="stable")
    x, y, w = x[order], y[order], w[order]
    blocks: list[list[float]] = []  # [sum_wy, sum_w, x_min, x_max]
    for xi, yi, wi in zip(x, y, w, strict=True):
        blocks.append([wi * yi, wi, xi, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            top = blocks.pop()
            blocks[-1][0] += top[0]
            blocks[-1][1] += top[1]
            blocks[-1][3] = top[3]
    xs, ps = [], []
    for swy, sw, lo, hi in blocks:
        xs.append((lo + hi) / 2)
        ps.append(swy / sw)
    return xs, ps


#: Share of the non-copy sample (its highest scores) that the tail model of the FPR is fitted to.
TAIL_FRACTION = 0.2


def tail_model(neg: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """P(non-copy score >= t) for t above the tail's start: q * exp(-(t - u) / mean excess)."""
    k = max(5, int(np.ceil(TAIL_FRACTION * len(neg))))
    if len(neg) <= k:
        return lambda t: np.zeros_like(t)
    u = float(neg[-k - 1])
    beta = max(float(np.mean(neg[-k:] - u)), 1e-4)
    q = k / len(neg)

    def tail(t: np.ndarray) -> np.ndarray:
        return np.where(t > u, q * np.exp(-(t - u) / beta), 0.0)

    return tail
