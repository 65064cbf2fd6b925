"""Inverse and forward dynamics models that train the embeddings φ of E3B and RIDE."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DYNAMICS_HIDDEN = 256


class InverseDynamics(nn.Module):
    """p(a | φ(s), φ(s′)): Linear(2d → 256) → ReLU → Linear(→ |A|)."""

    def __init__(self, dim: int, num_actions: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, DYNAMICS_HIDDEN), nn.ReLU(), nn.Linear(DYNAMICS_HIDDEN, num_actions))

    def loss(self, phi: torch.Tensor, actions: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over transitions obs[t] → obs[t+1]; φ [T+1, B, d]. A done transition's next
        observation belongs to a new episode, so those pairs are left out."""
        valid = ~dones
        logits = self.net(torch.cat([phi[:-1][valid], phi[1:][valid]], dim=-1))
        if logits.shape[0] == 0:
            return phi.sum() * 0.0
        return F.cross_entropy(logits, actions[valid])


class ForwardDynamics(nn.Module):
    """φ̂(s′) = f(φ(s), a): Linear(d + |A| → 256) → ReLU → Linear(→ d)."""

    def __init__(self, dim: int, num_actions: int) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.net = nn.Sequential(nn.Linear(dim + num_actions, DYNAMICS_HIDDEN), nn.ReLU(), nn.Linear(DYNAMICS_HIDDEN, dim))

    def loss(self, phi: torch.Tensor, actions: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        """Squared L2 error ‖f(φ(s), a) − φ(s′)‖², averaged over transitions within an episode."""
        valid = ~dones
        one_hot = F.one_hot(actions[valid], self.num_actions).float()
        predicted = self.net(torch.cat([phi[:-1][valid], one_hot], dim=-1))
        if predicted.shape[0] == 0:
            return phi.sum() * 0.0
        return (predicted - phi[1:][valid]).square().sum(-1).mean()
