"""NovelD (Zhang et al. 2021): max(e(s′) − α·e(s), 0) · 1[N_ep(s′) = 1], with e(s) = ‖ĝ(f(s)) − g(f(s))‖₂
the error of an RND predictor ĝ against a fixed random target g, both reading a frozen random encoder f
(the references' network; `FrozenEncoderRND`). As the global factor of a global × episodic product the
first-visit mask is left out (`first_visit_mask: false`) and α = 0 gives the 2023 study's "E3B × RND".
Reference settings and deviations: docs/fidelity.md."""
from __future__ import annotations

from typing import Any

import torch

from rlzoo.bonuses.common.base import BatchContext, Bonus, cfg_get, flat_obs, register_bonus
from rlzoo.bonuses.common.counting import EpisodicCounts, check_state_key, state_hashes
from rlzoo.bonuses.common.encoders import FrozenEncoderRND, build_embedding
from rlzoo.unroll import Batch


def noveld_reward(novelty: torch.Tensor, alpha: float, first_visit: torch.Tensor) -> torch.Tensor:
    """novelty [T+1, B] = e(obs[t]); first_visit [T, B] marks obs[t+1] new in its episode."""
    return (novelty[1:] - alpha * novelty[:-1]).clamp_min(0.0) * first_visit


# Hand-computed cases for the formula test of every bonus (tests/test_bonus_formulas.py), α = 0.5:
# 3 − 0.5·1 = 2.5; 2 − 0.5·3 = 0.5; 0.5 − 0.5·2 < 0 → 0, also masked as a repeated visit.
FORMULA_CASES = [
    (noveld_reward, dict(novelty=torch.tensor([[1.0], [3.0], [2.0], [0.5]]), alpha=0.5,
                         first_visit=torch.tensor([[1.0], [1.0], [0.0]])), torch.tensor([[2.5], [0.5], [0.0]])),
]


@register_bonus("noveld")
class NovelDBonus(Bonus):
    def __init__(self, cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any) -> None:
        super().__init__(cfg, spec, model_cfg, num_envs, device)
        self.alpha = cfg_get(cfg, "alpha", float)
        if self.alpha < 0:
            raise ValueError(f"bonus.alpha={self.alpha} must be non-negative")
        self.first_visit_mask = cfg_get(cfg, "first_visit_mask", bool)
        self.state_key = check_state_key(cfg_get(cfg, "state_key", str), spec)
        self.episodic_counts = EpisodicCounts(num_envs)
        self.rnd = FrozenEncoderRND(*build_embedding(model_cfg, spec))  # a random torso of the policy's kind

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.rnd.predictor_parameters()

    def compute(self, batch: Batch, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        steps, cols = ctx.dones.shape
        with self.network_autocast():
            error = self.rnd(flat_obs(batch.obs)).view(steps + 1, cols, -1).norm(dim=-1)
        if self.first_visit_mask:
            counts = self.episodic_counts.visit(state_hashes(batch.obs, self.state_key), ctx)
            first_visit = torch.as_tensor(counts == 1, dtype=torch.float32, device=self.device)
        else:
            first_visit = torch.ones(steps, cols, device=self.device)
        return noveld_reward(error.detach(), self.alpha, first_visit), error[1:]

    def losses(self, batch: Batch, aux: Any) -> dict[str, torch.Tensor]:
        # The references train the predictor on the new observations, the mean L2 error (not squared).
        return {"noveld_predictor": aux.mean()}
