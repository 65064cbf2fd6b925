"""E3B (Henaff et al. 2022): elliptical episodic bonus b = φ(s′)ᵀ C⁻¹ φ(s′).

C⁻¹ is kept per environment in the learner, starts at I/λ each episode, and after each bonus takes
the rank-1 Sherman–Morrison step C⁻¹ ← C⁻¹ − uuᵀ/(1 + b), u = C⁻¹φ, i.e. C ← C + φφᵀ, computed a
whole unroll at a time (`elliptical_bonuses`). φ is the policy-style torso trained only by inverse
dynamics. Reference settings and deviations: docs/fidelity.md.
"""
from __future__ import annotations

from typing import Any

import torch

from rlzoo.bonuses.common.base import BatchContext, Bonus, cfg_get, flat_obs, register_bonus
from rlzoo.bonuses.common.dynamics import InverseDynamics
from rlzoo.bonuses.common.encoders import build_embedding
from rlzoo.unroll import Batch


def elliptical_bonuses(
    cov_inv: torch.Tensor, phi: torch.Tensor, dones: torch.Tensor, fresh: torch.Tensor, ridge: float
) -> torch.Tensor:
    """Bonuses [T, B] of obs[1..T] for one wave of distinct environments.

    cov_inv [B, d, d] is each env's C⁻¹ before obs[0], updated in place to its C⁻¹ after obs[T];
    phi [T+1, B, d]; fresh [B] marks envs whose episode starts at obs[0] (C⁻¹ reset, obs[0]
    registered). On dones[t], C⁻¹ resets before obs[t+1], the new episode's first state, is registered.

    The result equals T rank-1 Sherman–Morrison steps, b_t = φ_tᵀC_t⁻¹φ_t then C_{t+1} = C_t + φ_tφ_tᵀ,
    computed for the whole unroll at once: with A the C⁻¹ an episode segment starts from and
    M = I + ΦAΦᵀ, the LDLᵀ pivots of M are exactly 1 + b_t (M's Schur complements), so
    b = diag(chol(M))² − 1, and Woodbury gives the final C⁻¹ = A − AΦᵀM⁻¹ΦA = A − WᵀW with
    W = L⁻¹ΦA, L = chol(M). This reads each d×d matrix twice per unroll instead of twice per step,
    which is what made the step loop slow.
    """
    steps, cols, dim = dones.shape[0], dones.shape[1], phi.shape[-1]
    x = phi.transpose(0, 1)  # [B, T+1, d]
    # Episode segment of every observation: a done at t starts a new episode at obs[t+1].
    segment = torch.zeros(cols, steps + 1, dtype=torch.long, device=phi.device)
    segment[:, 1:] = dones.t().long().cumsum(1)
    registered = torch.ones(cols, steps + 1, dtype=torch.bool, device=phi.device)
    registered[:, 0] = fresh  # otherwise obs[0] was registered as the previous unroll's obs[T]
    carried = (segment == 0) & ~fresh[:, None]  # measured against the carried C⁻¹, not I/λ

    projected = torch.bmm(x, cov_inv)  # rows (Aφ)ᵀ for the carried A
    gram = torch.where(carried[:, :, None] & carried[:, None, :], torch.bmm(projected, x.transpose(1, 2)),
                       torch.bmm(x, x.transpose(1, 2)) / ridge)
    together = (segment[:, :, None] == segment[:, None, :]) & registered[:, :, None] & registered[:, None, :]
    eye = torch.eye(steps + 1, device=phi.device, dtype=x.dtype)
    chol = torch.linalg.cholesky(eye + gram * together)
    bonus = chol.diagonal(dim1=1, dim2=2).square() - 1.0

    # C⁻¹ after obs[T]: Woodbury over the observations of the episode still running, in place
    # (C⁻¹ is d×d per env; a temporary copy of it cost more than the arithmetic).
    running = (segment == segment[:, -1:]) & registered
    keeps_carried = carried[:, -1]
    phi_a = torch.where(keeps_carried[:, None, None], projected, x / ridge) * running[:, :, None]  # rows of ΦA
    w = torch.linalg.solve_triangular(chol, phi_a, upper=False)
    restarted = ~keeps_carried
    if restarted.any():
        cov_inv[restarted] = torch.eye(dim, device=phi.device, dtype=x.dtype) / ridge
    cov_inv.baddbmm_(w.transpose(1, 2), w, alpha=-1.0)
    return bonus[:, 1:].t()


@register_bonus("e3b")
class E3BBonus(Bonus):
    def __init__(self, cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any) -> None:
        super().__init__(cfg, spec, model_cfg, num_envs, device)
        self.ridge = cfg_get(cfg, "ridge", float)
        if self.ridge <= 0:
            raise ValueError(f"bonus.ridge={self.ridge} must be positive")
        self.encoder, dim = build_embedding(model_cfg, spec)
        self.inverse_dynamics = InverseDynamics(dim, self.num_actions)
        # Per-env C⁻¹, part of the checkpoint; an env's first unroll resets its own entry. float64:
        # with large or near-repeated φ the unroll's factorisation loses definiteness in float32.
        self.register_buffer("cov_inverse", torch.eye(dim, dtype=torch.float64).repeat(num_envs, 1, 1) / self.ridge)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.encoder.parameters(), *self.inverse_dynamics.parameters()]

    def clip_groups(self) -> list[list[torch.nn.Parameter]]:
        return [list(self.encoder.parameters()), list(self.inverse_dynamics.parameters())]

    def compute(self, batch: Batch, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        steps, cols = ctx.dones.shape
        with self.network_autocast():
            phi = self.encoder(flat_obs(batch.obs)).float().view(steps + 1, cols, -1)
        features = phi.detach().double()
        reward = torch.empty(steps, cols, device=self.device, dtype=torch.float64)
        fresh = torch.as_tensor(ctx.fresh, device=self.device)
        for wave in ctx.waves:
            idx = torch.as_tensor(wave, device=self.device)
            envs = ctx.env_ids[idx]
            first = int(envs[0])
            in_order = torch.equal(envs, torch.arange(first, first + len(envs), device=envs.device))
            # Usually a wave is one actor's envs in order: update their C⁻¹ in place, not via a copy.
            cov_inv = self.cov_inverse[first : first + len(envs)] if in_order else self.cov_inverse[envs]
            reward[:, idx] = elliptical_bonuses(cov_inv, features[:, idx], ctx.dones[:, idx], fresh[idx], self.ridge)
            if not in_order:
                self.cov_inverse[envs] = cov_inv
        return reward.float(), phi

    def losses(self, batch: Batch, aux: Any) -> dict[str, torch.Tensor]:
        actions = batch.actions.to(self.device)
        return {"e3b_inverse_dynamics": self.inverse_dynamics.loss(aux, actions, batch.dones.to(self.device).bool())}
