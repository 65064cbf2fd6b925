"""NovelD (Zhang et al. 2021): max(e(s′) − α·e(s), 0) · 1[N_ep(s′) = 1], with e(s) = ‖f̂(s) − f(s)‖₂
the error of an RND predictor against its fixed random target. As the global factor of a
global × episodic product the first-visit mask is left out (`first_visit_mask: false`), as in the
reference code of Henaff, Jiang & Raileanu (2023), where the episodic factor already plays its part."""
from __future__ import annotations

from typing import Any

import torch

from rlzoo.bonuses.common.base import BatchContext, Bonus, cfg_get, flat_obs, register_bonus
from rlzoo.bonuses.common.counting import EpisodicCounts, check_state_key, state_hashes
from rlzoo.bonuses.rnd import build_rnd_network, predictor_loss
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
        self.update_proportion = cfg_get(cfg, "update_proportion", float)
        if not 0.0 < self.update_proportion <= 1.0:
            raise ValueError(f"bonus.update_proportion={self.update_proportion} must lie in (0, 1]")
        self.first_visit_mask = cfg_get(cfg, "first_visit_mask", bool)
        self.state_key = cfg_get(cfg, "state_key", str)
        check_state_key(self.state_key, spec.family)
        self.episodic_counts = EpisodicCounts(num_envs)
        self.rnd = build_rnd_network(self)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.rnd.predictor_parameters()

    def compute(self, batch: Batch, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        steps, cols = ctx.dones.shape
        self.rnd.observe(flat_obs(batch.obs, start=1))  # obs[0] was observed as the previous obs[T]
        with self.network_autocast():
            diff = self.rnd(flat_obs(batch.obs)).view(steps + 1, cols, -1)
        novelty = diff.detach().norm(dim=-1)
        if self.first_visit_mask:
            counts = self.episodic_counts.visit(state_hashes(batch.obs, self.state_key), ctx)
            first_visit = torch.as_tensor(counts == 1, dtype=torch.float32, device=self.device)
        else:
            first_visit = torch.ones(steps, cols, device=self.device)
        # The predictor trains on the new observations obs[1:] only.
        return noveld_reward(novelty, self.alpha, first_visit), diff[1:].square().mean(-1)

    def losses(self, batch: Batch, aux: Any) -> dict[str, torch.Tensor]:
        return {"noveld_predictor": predictor_loss(aux, self.update_proportion)}
