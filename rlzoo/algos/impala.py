"""IMPALA's loss terms (Espeholt et al. 2018, section 4).

Losses are summed over time and batch, as in the TorchBeast/NLE baselines whose learning rates and
gradient-clipping threshold our defaults come from.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
