"""RIDE (Raileanu & Rocktäschel 2020): ‖φ(s′) − φ(s)‖₂ / √N_ep(s′), φ trained by forward and
inverse dynamics losses. Reference settings and deviations: docs/fidelity.md."""
from __future__ import annotations

from typing import Any

import torch

from rlzoo.bonuses.common.base import BatchContext, Bonus, cfg_get, flat_obs, register_bonus
from rlzoo.bonuses.common.counting import EpisodicCounts, check_state_key, state_hashes
from rlzoo.bonuses.common.dynamics import FORWARD_LOSSES, ForwardDynamics, InverseDynamics
from rlzoo.bonuses.common.encoders import build_embedding, embedding_model_cfg
from rlzoo.unroll import Batch


def impact_reward(phi: torch.Tensor, episodic_counts: torch.Tensor) -> torch.Tensor:
    """RIDE's impact bonus [T, B] from φ [T+1, B, d] and N_ep(obs[t+1]) [T, B]."""
    return (phi[1:] - phi[:-1]).norm(dim=-1) / episodic_counts.float().sqrt()


# Hand-computed cases for the formula test of every bonus (tests/test_bonus_formulas.py):
# ‖(3, 4) − (0, 0)‖ = 5 over √4 → 2.5; no change → 0.
FORMULA_CASES = [
    (impact_reward, dict(phi=torch.tensor([[[0.0, 0.0]], [[3.0, 4.0]], [[3.0, 4.0]]]),
                         episodic_counts=torch.tensor([[4], [1]])), torch.tensor([[2.5], [0.0]])),
]


@register_bonus("ride")
class RIDEBonus(Bonus):
    def __init__(self, cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any) -> None:
        super().__init__(cfg, spec, model_cfg, num_envs, device)
        self.loss_weights = {
            "ride_forward_dynamics": cfg_get(cfg, "forward_loss_coef", float),
            "ride_inverse_dynamics": cfg_get(cfg, "inverse_loss_coef", float),
        }
        self.state_key = check_state_key(cfg_get(cfg, "state_key", str), spec)
        self.episodic_counts = EpisodicCounts(num_envs)
        self.encoder, dim = build_embedding(embedding_model_cfg(cfg, model_cfg), spec)
        # The MiniHack reference's forward model is as wide as φ (1024); the MiniGrid one is 256 wide on a 128-d φ.
        hidden = cfg_get(cfg, "forward_hidden", object)
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1):
            raise ValueError(f"bonus.forward_hidden={hidden!r} must be a positive integer or null (φ's width)")
        self.forward_dynamics = ForwardDynamics(dim, self.num_actions, hidden=hidden or dim,
                                                loss=cfg_get(cfg, "forward_loss", str, FORWARD_LOSSES))
        self.inverse_dynamics = InverseDynamics(dim, self.num_actions)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.encoder.parameters(), *self.forward_dynamics.parameters(), *self.inverse_dynamics.parameters()]

    def clip_groups(self) -> list[list[torch.nn.Parameter]]:
        return [list(m.parameters()) for m in (self.encoder, self.forward_dynamics, self.inverse_dynamics)]

    def compute(self, batch: Batch, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        steps, cols = ctx.dones.shape
        with self.network_autocast():
            phi = self.encoder(flat_obs(batch.obs)).float().view(steps + 1, cols, -1)
        counts = self.episodic_counts.visit(state_hashes(batch.obs, self.state_key), ctx)
        counts_t = torch.as_tensor(counts, device=self.device)
        return impact_reward(phi.detach(), counts_t), phi

    def losses(self, batch: Batch, aux: Any) -> dict[str, torch.Tensor]:
        actions = batch.actions.to(self.device)
        dones = batch.dones.to(self.device).bool()
        return {
            "ride_forward_dynamics": self.forward_dynamics.loss(aux, actions, dones),
            "ride_inverse_dynamics": self.inverse_dynamics.loss(aux, actions, dones),
        }
