"""Return normalisation as Sample Factory does it (`normalize_returns`, on by default in its NetHack
config): the value head predicts returns in units of their running standard deviation.

Per batch, before any epoch: the behaviour values are denormalised, GAE runs on them in reward units,
the running statistics absorb the batch's returns, and the returns become the value head's targets
in normalised units. Statistics start at mean 0, variance 1 and a count of 1 (one pseudo-sample), and
merge a batch by its mean, unbiased variance and size (Chan et al.'s parallel update, in float64).

    normalise(x)   = clip((x − μ) / √(σ² + ε), ±c)
    denormalise(y) = clip(y, ±c) · √(σ² + ε) + μ          ε = 1e-5, c = 5
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import torch

EPS = 1e-5   # Sample Factory's _NORM_EPS
CLIP = 5.0   # Sample Factory's _DEFAULT_CLIP: normalised values live in [−5, 5]


class Moments(NamedTuple):
    mean: float
    var: float
    count: float


def merge_moments(running: Moments, batch_mean: float, batch_var: float, batch_count: int) -> Moments:
    """The statistics of the running samples and a batch together (the batch's variance unbiased, as
    Sample Factory takes it): M2 = σ²_a n_a + σ²_b n_b + δ² n_a n_b / (n_a + n_b)."""
    delta = batch_mean - running.mean
    total = running.count + batch_count
    mean = running.mean + delta * batch_count / total
    m2 = running.var * running.count + batch_var * batch_count + delta * delta * running.count * batch_count / total
    return Moments(mean, m2 / total, total)


class ReturnNormalizer:
    """Running mean and variance of one value head's returns; its state is checkpointed with the learner."""

    def __init__(self) -> None:
        self.moments = Moments(0.0, 1.0, 1.0)

    @property
    def std(self) -> float:
        return (self.moments.var + EPS) ** 0.5

    def update(self, returns: torch.Tensor) -> None:
        x = returns.detach().double().flatten()
        self.moments = merge_moments(self.moments, float(x.mean()), float(x.var()), x.numel())

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.moments.mean) / self.std).clamp(-CLIP, CLIP)

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        return y.clamp(-CLIP, CLIP) * self.std + self.moments.mean

    def state_dict(self) -> dict[str, Any]:
        return self.moments._asdict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.moments = Moments(float(state["mean"]), float(state["var"]), float(state["count"]))
