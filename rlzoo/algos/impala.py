"""IMPALA's loss (Espeholt et al. 2018, section 4): V-trace targets, policy gradient, baseline and
entropy terms.

Losses are summed over time and batch, as in the TorchBeast/NLE baselines whose learning rates and
gradient-clipping threshold our defaults come from; a batch split into column chunks therefore has
the gradient of the sum of its chunks' losses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from rlzoo.algos.rewards import RewardMix, reward_streams
from rlzoo.algos.vtrace import vtrace


def action_log_probs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log π(a|x) of the taken actions; logits [T, B, A], actions [T, B] → [T, B]."""
    return F.log_softmax(logits, dim=-1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def policy_gradient_loss(logits: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    return -(action_log_probs(logits, actions) * advantages.detach()).sum()


def baseline_loss(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((targets.detach() - values) ** 2).sum()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Summed policy entropy (a positive number); the loss subtracts entropy_cost × this."""
    log_probs = F.log_softmax(logits, dim=-1)
    return -(log_probs.exp() * log_probs).sum()


@dataclass(frozen=True)
class ImpalaSettings:
    """The loss's coefficients and V-trace clips (`algo.*`)."""

    baseline_cost: float = 0.5
    entropy_cost: float = 0.001
    rho_bar: float = 1.0
    c_bar: float = 1.0
    pg_rho_bar: float = 1.0

    @classmethod
    def from_config(cls, algo_cfg: Any) -> "ImpalaSettings":
        return cls(*(float(algo_cfg[k]) for k in ("baseline_cost", "entropy_cost", "rho_bar", "c_bar", "pg_rho_bar")))


class ImpalaLoss(NamedTuple):
    total: torch.Tensor     # what backward() is called on
    policy: torch.Tensor    # policy-gradient term
    baseline: torch.Tensor  # ½ Σ (v_s − V(x_s))², summed over the value heads
    entropy: torch.Tensor   # Σ H(π(·|x_t)) (a positive number)


def impala_loss(out: dict[str, torch.Tensor], behaviour_logits: torch.Tensor, actions: torch.Tensor,
                rewards: torch.Tensor, intrinsic: torch.Tensor | None, dones: torch.Tensor,
                settings: ImpalaSettings, mix: RewardMix) -> ImpalaLoss:
    """IMPALA's loss on one unroll batch.

    `out` is the model over obs[0..T] ({logits [T+1, B, A], baseline [T+1, B][, int_baseline]});
    step T only bootstraps. `behaviour_logits` [T, B, A] are the actors' logits, `rewards` [T, B] the
    extrinsic rewards, `intrinsic` [T, B] the bonus (None without one). Each reward stream gets its
    V-trace targets from its own value head; their advantages are weighted and summed.
    """
    logits = out["logits"][:-1]
    log_rhos = action_log_probs(logits, actions) - action_log_probs(behaviour_logits, actions)
    advantages = torch.zeros_like(log_rhos)
    value_loss = torch.zeros((), device=logits.device)
    for stream in reward_streams(rewards, intrinsic, dones, mix):
        values = out[stream.value_key]
        targets = vtrace(log_rhos, stream.discounts, stream.rewards, values[:-1], values[-1],
                         rho_bar=settings.rho_bar, c_bar=settings.c_bar, pg_rho_bar=settings.pg_rho_bar)
        advantages = advantages + stream.advantage_weight * targets.pg_advantages
        value_loss = value_loss + baseline_loss(values[:-1], targets.vs)
    pg_loss = policy_gradient_loss(logits, actions, advantages)
    policy_entropy = entropy(logits)
    total = pg_loss + settings.baseline_cost * value_loss - settings.entropy_cost * policy_entropy
    return ImpalaLoss(total, pg_loss, value_loss, policy_entropy)
