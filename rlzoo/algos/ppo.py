"""PPO's clipped losses and GAE, as APPO uses them (Schulman et al. 2017; Petrenko et al. 2020).

APPO is PPO's clipped surrogate trained on asynchronously collected batches: several epochs of
minibatches per batch, each minibatch's advantages from GAE (behaviour values) or V-trace.

Reduction: every loss here is a *mean* over its samples, as Sample Factory's APPO computes them, so a
minibatch's loss does not grow with its size. (rlzoo's IMPALA losses in `impala.py` are sums; the
gradient of a mean is the sum's gradient divided by the number of samples.) Coefficients (value
loss, entropy) are applied by the caller.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

# Sample Factory clamps π/μ into this range before clipping: ratios beyond it come from a policy that
# has moved far from the behaviour policy, and their gradients would be noise.
RATIO_GUARD = (0.05, 20.0)


class SurrogateLoss(NamedTuple):
    loss: torch.Tensor           # scalar, −mean min(r·A, clip(r)·A); has gradient
    clip_fraction: torch.Tensor  # scalar, share of samples whose ratio lies outside the clip range
    kl: torch.Tensor             # scalar, mean KL(π ‖ μ) of the full action distributions


class GAEReturns(NamedTuple):
    advantages: torch.Tensor  # [T, B] GAE(λ) advantages Â_t
    returns: torch.Tensor     # [T, B] value targets Â_t + V(x_t)


def ratio_bounds(clip_ratio: float) -> tuple[float, float]:
    """The clip range [1/(1+c), 1+c] of Sample Factory's APPO (`ppo_clip_ratio` c).

    PPO's paper clips to [1−ε, 1+ε]; SF's range is symmetric in log space (log-ratio within
    ±log(1+c)), and stays positive for any c > 0.
    """
    if not clip_ratio > 0:
        raise ValueError(f"clip_ratio={clip_ratio!r} must be > 0")
    high = 1.0 + clip_ratio
    return 1.0 / high, high


def categorical_kl(logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per sample of two categoricals given by logits [..., A] → [...]."""
    log_p = F.log_softmax(logits, dim=-1)
    log_q = F.log_softmax(other_logits, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def clipped_surrogate_loss(
    logits: torch.Tensor,
    behaviour_logits: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    clip_ratio: float,
) -> SurrogateLoss:
    """PPO's clipped surrogate, eq. 7 of Schulman et al. (2017), with SF's ratio range.

    L = −mean_t min(r_t A_t, clip(r_t, 1/(1+c), 1+c) A_t),  r_t = π(a_t|x_t) / μ(a_t|x_t),
    with r_t first clamped to `RATIO_GUARD`. logits / behaviour_logits [..., A] (current policy π,
    the actor's μ), actions and advantages [...]; advantages and μ carry no gradient.
    """
    low, high = ratio_bounds(clip_ratio)
    log_pi = F.log_softmax(logits, dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    log_mu = F.log_softmax(behaviour_logits.detach(), dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    ratio = torch.exp(log_pi - log_mu).clamp(*RATIO_GUARD)
    advantages = advantages.detach()
    surrogate = torch.min(ratio * advantages, ratio.clamp(low, high) * advantages)
    with torch.no_grad():
        clip_fraction = ((ratio < low) | (ratio > high)).float().mean()
        kl = categorical_kl(logits, behaviour_logits).mean()
    return SurrogateLoss(loss=-surrogate.mean(), clip_fraction=clip_fraction, kl=kl)


def value_loss(
    values: torch.Tensor,
    targets: torch.Tensor,
    behaviour_values: torch.Tensor | None = None,
    clip_value: float | None = None,
) -> torch.Tensor:
    """Mean squared error to the targets, optionally clipped around the behaviour values.

    Unclipped: mean (V − R)². Clipped (PPO2 / SF `ppo_clip_value`): mean max((V − R)²,
    (V_old + clip(V − V_old, −c, c) − R)²), which stops rewarding the value for moving more than c
    from the value the actor computed. No ½ factor, as in SF; targets and V_old carry no gradient.
    """
    targets = targets.detach()
    loss = (values - targets) ** 2
    if clip_value is not None:
        if not clip_value > 0:
            raise ValueError(f"clip_value={clip_value!r} must be > 0 (or None for no clipping)")
        if behaviour_values is None:
            raise ValueError("clip_value needs behaviour_values, the values the actor computed")
        old = behaviour_values.detach()
        clipped = old + (values - old).clamp(-clip_value, clip_value)
        loss = torch.max(loss, (clipped - targets) ** 2)
    return loss.mean()


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean policy entropy over samples (positive); the loss subtracts the entropy cost × this."""
    log_probs = F.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum(-1).mean()


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    gae_lambda: float,
) -> GAEReturns:
    """GAE(λ) advantages (Schulman et al. 2016, eq. 16) over [T, B], computed backwards in time.

    Â_t = δ_t + γ_t λ Â_{t+1},  δ_t = r_t + γ_t V(x_{t+1}) − V(x_t), with `discounts[t]` = γ·(1 − done_t)
    as in `vtrace.vtrace`, so an episode end cuts both the bootstrap and the trace. `values` are the
    behaviour policy's V(x_t) [T, B]; `bootstrap_value` [B] is V(x_T).
    """
    if not 0.0 <= gae_lambda <= 1.0:
        raise ValueError(f"gae_lambda={gae_lambda!r} must be in [0, 1]")
    values_tp1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
    deltas = rewards + discounts * values_tp1 - values
    acc = torch.zeros_like(bootstrap_value)
    advantages = torch.empty_like(values)
    for t in reversed(range(values.shape[0])):
        acc = deltas[t] + discounts[t] * gae_lambda * acc
        advantages[t] = acc
    return GAEReturns(advantages=advantages, returns=advantages + values)


@torch.no_grad()
def normalize_advantages(advantages: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """(A − mean A) / max(std A, eps) over all elements, per minibatch as in SF's APPO."""
    if advantages.numel() < 2:
        raise ValueError(f"normalize_advantages needs at least 2 advantages, got {advantages.numel()}")
    std, mean = torch.std_mean(advantages)
    return (advantages - mean) / std.clamp_min(eps)


@torch.no_grad()
def standardize(advantages: torch.Tensor, mean: float, std: float, eps: float = 1e-7) -> torch.Tensor:
    """(A − mean) / max(std, eps) with the statistics of a whole minibatch, which a learner that sees
    it in chunks (or in shares across replicas) gathers before the first chunk's loss."""
    return (advantages - mean) / max(std, eps)


def mean_and_std(count: float, total: float, total_of_squares: float) -> tuple[float, float]:
    """Mean and unbiased standard deviation (as `torch.std_mean`) from n, Σx and Σx²."""
    if count < 2:
        raise ValueError(f"advantage statistics need at least 2 samples, got {count}")
    mean = total / count
    return mean, max(total_of_squares - count * mean * mean, 0.0) ** 0.5 / (count - 1) ** 0.5
