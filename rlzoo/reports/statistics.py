"""Statistics for comparing runs: rliable's interquartile mean with stratified-bootstrap intervals
(Agarwal et al. 2021) for scores over runs × tasks, and the simple two-sample statistics of a
policy-versus-policy evaluation.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from rliable import library as rly
from rliable import metrics

iqm = metrics.aggregate_iqm  # mean of the middle 50% of all scores (25% trimmed from each end)


def interval_estimates(score_dict: dict, func: Callable[..., np.ndarray], reps: int = 2000,
                       confidence: float = 0.95, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's stratified-bootstrap point estimates and intervals of `func` per group of
    `score_dict` (group -> scores [runs, tasks]); reproducible for `seed`.

    rliable 1.2 draws its resampling indices from NumPy's global generator, not from the
    `random_state` it is given, so the global generator is seeded here and restored afterwards.
    """
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            # arch deprecates the RandomState that rliable passes it; nothing for us to change.
            warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
            return rly.get_interval_estimates(score_dict, func, reps=reps, confidence_interval_size=confidence,
                                              random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)


def iqm_interval(scores: np.ndarray, reps: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """IQM of `scores` [runs, tasks] and its stratified-bootstrap interval: (iqm, low, high)."""
    point, interval = interval_estimates({"x": np.asarray(scores, dtype=np.float64)},
                                         lambda s: np.array([iqm(s)]), reps, confidence, seed)
    return float(point["x"][0]), float(interval["x"][0][0]), float(interval["x"][1][0])


@dataclass(frozen=True)
class Comparison:
    mean_a: float
    se_a: float
    mean_b: float
    se_b: float
    diff: float
    ci_low: float     # bootstrap confidence interval of mean_a − mean_b
    ci_high: float


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% for z = 1.96); sound for small samples
    and proportions near 0 or 1, where the normal approximation is not."""
    if trials < 1:
        return float("nan"), float("nan")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return float(centre - half), float(centre + half)


def compare_means(a: np.ndarray, b: np.ndarray, level: float = 0.95, resamples: int = 10000,
                  seed: int = 0) -> Comparison:
    """Means ± standard errors of two independent samples and a percentile-bootstrap interval of
    the difference of their means (each sample resampled on its own)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boot_a = a[rng.integers(0, len(a), size=(resamples, len(a)))].mean(axis=1)
    boot_b = b[rng.integers(0, len(b), size=(resamples, len(b)))].mean(axis=1)
    low, high = np.quantile(boot_a - boot_b, [(1 - level) / 2, (1 + level) / 2])
    (mean_a, se_a), (mean_b, se_b) = mean_and_se(a), mean_and_se(b)
    return Comparison(mean_a, se_a, mean_b, se_b, mean_a - mean_b, float(low), float(high))
