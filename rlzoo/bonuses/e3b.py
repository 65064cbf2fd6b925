"""E3B (Henaff et al. 2022): elliptical episodic bonus b = φ(s′)ᵀ C⁻¹ φ(s′).

C⁻¹ is kept per environment in the learner, starts at I/λ each episode, and after each bonus takes
the rank-1 Sherman–Morrison step C⁻¹ ← C⁻¹ − uuᵀ/(1 + b), u = C⁻¹φ, i.e. C ← C + φφᵀ. φ is the
policy-style torso trained only by inverse dynamics (pairs crossing an episode end are masked; the
original reference did not mask them).
"""
from __future__ import annotations

from typing import Any

import torch

from rlzoo.bonuses.base import BatchContext, Bonus, cfg_get, flat_obs, register_bonus
from rlzoo.bonuses.dynamics import InverseDynamics
from rlzoo.bonuses.encoders import build_embedding


def elliptical_step(cov_inv: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Bonus φᵀC⁻¹φ [B] for C⁻¹ [B, d, d] and φ [B, d]; updates C⁻¹ in place to (C + φφᵀ)⁻¹."""
    u = torch.bmm(cov_inv, phi.unsqueeze(-1)).squeeze(-1)
    bonus = (u * phi).sum(-1)
    cov_inv.baddbmm_(u.unsqueeze(-1), (u / (1.0 + bonus).unsqueeze(-1)).unsqueeze(1), alpha=-1.0)
    return bonus


def elliptical_bonuses(
    cov_inv: torch.Tensor, phi: torch.Tensor, dones: torch.Tensor, fresh: torch.Tensor, ridge: float
) -> torch.Tensor:
    """Bonuses [T, B] of obs[1..T] for one wave of distinct environments.

    cov_inv [B, d, d] is each env's C⁻¹ before obs[0] (updated in place); phi [T+1, B, d];
    fresh [B] marks envs whose episode starts at obs[0] (C⁻¹ reset, obs[0] registered).
    On dones[t], C⁻¹ resets before obs[t+1], the new episode's first state, is registered.
    """
    initial = torch.eye(phi.shape[-1], device=phi.device, dtype=cov_inv.dtype) / ridge
    if fresh.any():
        cov_inv[fresh] = initial
        elliptical_step_subset(cov_inv, phi[0], fresh)
    out = torch.empty(dones.shape, device=phi.device, dtype=cov_inv.dtype)
    for t in range(dones.shape[0]):
        if dones[t].any():
            cov_inv[dones[t]] = initial
        out[t] = elliptical_step(cov_inv, phi[t + 1])
    return out


def elliptical_step_subset(cov_inv: torch.Tensor, phi: torch.Tensor, mask: torch.Tensor) -> None:
    """`elliptical_step` on the envs selected by `mask` only."""
    subset = cov_inv[mask]
    elliptical_step(subset, phi[mask])
    cov_inv[mask] = subset


@register_bonus("e3b")
class E3BBonus(Bonus):
    def __init__(self, cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any) -> None:
        super().__init__(cfg, spec, model_cfg, num_envs, device)
        self.ridge = cfg_get(cfg, "ridge", float)
        if self.ridge <= 0:
            raise ValueError(f"bonus.ridge={self.ridge} must be positive")
        self.encoder, dim = build_embedding(model_cfg, spec)
        self.inverse_dynamics = InverseDynamics(dim, self.num_actions)
        # Per-env C⁻¹, part of the checkpoint; an env's first unroll resets its own entry.
        self.register_buffer("cov_inverse", torch.eye(dim).repeat(num_envs, 1, 1) / self.ridge)
        self.to(self.device)
        self.optimizer = self.make_optimizer([*self.encoder.parameters(), *self.inverse_dynamics.parameters()])

    def compute(self, batch: dict, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        steps, cols = ctx.dones.shape
        phi = self.encoder(flat_obs(batch["obs"])).view(steps + 1, cols, -1)
        features = phi.detach()
        reward = torch.empty(steps, cols, device=self.device)
        fresh = torch.as_tensor(ctx.fresh, device=self.device)
        for wave in ctx.waves:
            idx = torch.as_tensor(wave, device=self.device)
            envs = ctx.env_ids[idx]
            cov_inv = self.cov_inverse[envs]
            reward[:, idx] = elliptical_bonuses(cov_inv, features[:, idx], ctx.dones[:, idx], fresh[idx], self.ridge)
            self.cov_inverse[envs] = cov_inv
        return reward, phi

    def losses(self, batch: dict, aux: Any) -> dict[str, torch.Tensor]:
        actions = batch["actions"].to(self.device)
        return {"e3b_inverse_dynamics": self.inverse_dynamics.loss(aux, actions, batch["dones"].to(self.device).bool())}
