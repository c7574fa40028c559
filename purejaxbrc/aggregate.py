"""Aggregate scores over tasks and seeds, with bootstrap confidence intervals (pure numpy).

Follows rliable (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice"):
- `iqm`: interquartile mean of all values, i.e. `scipy.stats.trim_mean(x, 0.25, axis=None)`.
- `stratified_bootstrap_ci`: resample seeds (runs) with replacement independently within each
  task, recompute the statistic, take the percentile interval.
- `bootstrap_band`: per-point percentile band of the mean over seeds, for learning curves.
"""

from typing import Callable

import numpy as np


def iqm(scores) -> float:
    """Interquartile mean of the flattened scores: drop int(0.25 n) values from each end (as
    scipy.stats.trim_mean(x, 0.25) does) and average the rest."""
    x = np.sort(np.asarray(scores, np.float64).ravel())
    if x.size == 0:
        raise ValueError("iqm of an empty array")
    cut = int(0.25 * x.size)
    return float(x[cut:x.size - cut].mean())


def mean(scores) -> float:
    x = np.asarray(scores, np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean of an empty array")
    return float(x.mean())


def _percentile_interval(stats: np.ndarray, confidence: float, axis: int = 0):
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    tail = 100.0 * (1.0 - confidence) / 2.0
    return np.percentile(stats, tail, axis=axis), np.percentile(stats, 100.0 - tail, axis=axis)


def stratified_bootstrap_ci(scores, statistic: Callable = iqm, reps: int = 2000,
                            confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of `statistic(scores)` for `scores` [runs (seeds), tasks].

    Each replicate draws, for every task separately, `runs` seeds with replacement from that
    task's column, so every task keeps its weight (rliable's StratifiedBootstrap)."""
    x = np.asarray(scores, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"scores must be a non-empty [runs, tasks] array, got shape {x.shape}")
    n, t = x.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(reps, n, t))
    samples = x[idx, np.arange(t)]  # [reps, runs, tasks]: column j only draws from task j
    stats = np.array([statistic(s) for s in samples], np.float64)
    lo, hi = _percentile_interval(stats, confidence)
    return float(lo), float(hi)


def bootstrap_band(curves, reps: int = 2000, confidence: float = 0.95,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-point percentile band of the mean over seeds; `curves` [seeds, points].

    Seeds are resampled with replacement (the same draw for every point of a replicate, since a
    seed's curve is one sample); returns (lower, upper), each [points]."""
    x = np.asarray(curves, np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"curves must be a non-empty [seeds, points] array, got shape {x.shape}")
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=reps)  # [reps, seeds]
    means = counts @ x / n  # [reps, points]
    return _percentile_interval(means, confidence)
