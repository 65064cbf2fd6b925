"""APPO's loss (Sample Factory's asynchronous PPO; Petrenko et al. 2020): PPO's clipped surrogate on
batches collected by asynchronous actors, with advantages from GAE over the behaviour values (fixed
for the batch) or from V-trace over the current values (recomputed for every minibatch).

Every term is a mean over the samples it is given (as in Sample Factory), from the pieces in
`ppo.py`; the learner weights a chunk's means by the chunk's share of the minibatch. With one epoch of
one minibatch, π = μ and no normalisation, the policy gradient is IMPALA's divided by the number of
samples (tests/test_appo.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

import torch

from rlzoo.algos.impala import action_log_probs
from rlzoo.algos.ppo import clipped_surrogate_loss, gae, mean_entropy, value_loss
from rlzoo.algos.rewards import RewardStream
from rlzoo.algos.vtrace import vtrace

ADVANTAGES = ("gae", "vtrace")


@dataclass(frozen=True)
class AppoSettings:
    """The loss's coefficients, clips and advantage estimator (`algo.*`)."""

    advantages: str = "gae"          # gae | vtrace
    gae_lambda: float = 0.95
    clip_ratio: float = 0.1          # c: the ratio is clipped to [1/(1+c), 1+c]
    clip_value: float = 1.0          # values clipped to V_old ± this; 0 = no clipping
    baseline_cost: float = 0.5       # value-loss coefficient
    entropy_cost: float = 0.003
    normalize_advantages: bool = True
    normalize_returns: bool = False  # value heads predict returns over their running std (GAE only)
    rho_bar: float = 1.0             # V-trace clips (advantages=vtrace)
    c_bar: float = 1.0
    pg_rho_bar: float = 1.0

    @classmethod
    def from_config(cls, algo_cfg: Any) -> "AppoSettings":
        floats = ("gae_lambda", "clip_ratio", "clip_value", "baseline_cost", "entropy_cost", "rho_bar", "c_bar",
                  "pg_rho_bar")
        return cls(advantages=str(algo_cfg.advantages), normalize_advantages=bool(algo_cfg.normalize_advantages),
                   normalize_returns=bool(algo_cfg.normalize_returns), **{k: float(algo_cfg[k]) for k in floats})


class Targets(NamedTuple):
    advantages: torch.Tensor         # [T, B] the policy gradient's advantages, streams mixed
    returns: dict[str, torch.Tensor]  # value head -> [T, B] its value targets


class AppoLoss(NamedTuple):
    total: torch.Tensor          # what backward() is called on
    policy: torch.Tensor         # −mean min(r·A, clip(r)·A)
    baseline: torch.Tensor       # mean (clipped) squared error, summed over the value heads
    entropy: torch.Tensor        # mean H(π(·|x_t)) (a positive number)
    clip_fraction: torch.Tensor  # share of ratios outside [1/(1+c), 1+c]
    kl: torch.Tensor             # mean KL(π ‖ μ), the exact one over the action set


@torch.no_grad()
def gae_targets(behaviour_values: Mapping[str, torch.Tensor], streams: Sequence[RewardStream],
                gae_lambda: float) -> Targets:
    """GAE(λ) on the behaviour policy: each stream's advantages from the values its head had when the
    actor acted (`behaviour_values[key]` [T+1, B], step T bootstraps), mixed with the streams' weights."""
    advantages, returns = None, {}
    for stream in streams:
        values = behaviour_values[stream.value_key]
        out = gae(stream.rewards, stream.discounts, values[:-1], values[-1], gae_lambda)
        weighted = stream.advantage_weight * out.advantages
        advantages = weighted if advantages is None else advantages + weighted
        returns[stream.value_key] = out.returns
    return Targets(advantages, returns)


@torch.no_grad()
def vtrace_targets(out: Mapping[str, torch.Tensor], behaviour_logits: torch.Tensor, actions: torch.Tensor,
                   streams: Sequence[RewardStream], settings: AppoSettings) -> Targets:
    """V-trace from the current policy and values (`out` over T+1 steps), as Sample Factory recomputes
    it for every minibatch: the advantage ρ_s (r_s + γ v_{s+1} − V(x_s)) and the targets v_s."""
    logits = out["logits"][:-1]
    log_rhos = action_log_probs(logits, actions) - action_log_probs(behaviour_logits, actions)
    advantages, returns = None, {}
    for stream in streams:
        values = out[stream.value_key].detach()
        vt = vtrace(log_rhos, stream.discounts, stream.rewards, values[:-1], values[-1],
                    rho_bar=settings.rho_bar, c_bar=settings.c_bar, pg_rho_bar=settings.pg_rho_bar)
        weighted = stream.advantage_weight * vt.pg_advantages
        advantages = weighted if advantages is None else advantages + weighted
        returns[stream.value_key] = vt.vs
    return Targets(advantages, returns)


def appo_loss(out: Mapping[str, torch.Tensor], behaviour_logits: torch.Tensor, actions: torch.Tensor,
              targets: Targets, behaviour_values: Mapping[str, torch.Tensor] | None,
              settings: AppoSettings) -> AppoLoss:
    """APPO's loss on one minibatch (or chunk of one), every term a mean over its T·B samples.

    `out` is the model over obs[0..T] ({logits [T+1, B, A], baseline [T+1, B][, int_baseline]}); step T
    only bootstraps. `targets.advantages` come normalised or not, as the caller chose;
    `behaviour_values[key]` [T+1, B] are needed when `settings.clip_value` > 0.

        L = −mean min(r A, clip(r) A) + c_v Σ_heads mean max((V − R)², (V_clip − R)²) − c_H mean H(π)
    """
    logits = out["logits"][:-1]
    surrogate = clipped_surrogate_loss(logits, behaviour_logits, actions, targets.advantages, settings.clip_ratio)
    clip_value = settings.clip_value if settings.clip_value > 0 else None
    baseline = torch.zeros((), device=logits.device)
    for key, returns in targets.returns.items():
        old = None if behaviour_values is None else behaviour_values[key][:-1]
        baseline = baseline + value_loss(out[key][:-1], returns, old, clip_value)
    entropy = mean_entropy(logits)
    total = surrogate.loss + settings.baseline_cost * baseline - settings.entropy_cost * entropy
    return AppoLoss(total, surrogate.loss, baseline, entropy, surrogate.clip_fraction, surrogate.kl)
