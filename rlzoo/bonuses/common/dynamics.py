"""Inverse and forward dynamics models that train the embeddings φ of E3B and RIDE.

Their losses are in the references' units: summed over the T transitions of an unroll and averaged
over its B environments (Σ_t mean_b), so the references' gradient clip (40) means the same here.
Transitions whose next observation starts a new episode are left out (the references kept them).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DYNAMICS_HIDDEN = 256
FORWARD_LOSSES = ("l2", "squared")


def time_sum_batch_mean(per_transition: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Σ over time, mean over environments of a [T, B] loss, counting only `valid` transitions."""
    return (per_transition * valid).sum() / per_transition.shape[1]


class InverseDynamics(nn.Module):
    """p(a | φ(s), φ(s′)): Linear(2d → 256) → ReLU → Linear(→ |A|)."""

    def __init__(self, dim: int, num_actions: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, DYNAMICS_HIDDEN), nn.ReLU(), nn.Linear(DYNAMICS_HIDDEN, num_actions))

    def loss(self, phi: torch.Tensor, actions: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each transition obs[t] → obs[t+1] (φ [T+1, B, d]), Σ_t mean_b."""
        logits = self.net(torch.cat([phi[:-1], phi[1:]], dim=-1))
        per_transition = F.cross_entropy(logits.flatten(0, 1), actions.flatten(), reduction="none").view_as(actions)
        return time_sum_batch_mean(per_transition, (~dones).float())


class ForwardDynamics(nn.Module):
    """φ̂(s′) = f(φ(s), a): Linear(d + |A| → hidden) → ReLU → Linear(→ d)."""

    def __init__(self, dim: int, num_actions: int, hidden: int = DYNAMICS_HIDDEN, loss: str = "l2") -> None:
        super().__init__()
        if loss not in FORWARD_LOSSES:
            raise ValueError(f"bonus.forward_loss={loss!r}; allowed: {', '.join(FORWARD_LOSSES)}")
        self.num_actions = num_actions
        self.loss_form = loss
        self.net = nn.Sequential(nn.Linear(dim + num_actions, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def loss(self, phi: torch.Tensor, actions: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        """‖f(φ(s), a) − φ(s′)‖₂ (RIDE's reference; `squared`: its square), Σ_t mean_b."""
        one_hot = F.one_hot(actions, self.num_actions).to(phi.dtype)
        predicted = self.net(torch.cat([phi[:-1], one_hot], dim=-1))
        error = (predicted - phi[1:]).norm(dim=-1)
        return time_sum_batch_mean(error if self.loss_form == "l2" else error.square(), (~dones).float())
