"""Global × episodic bonuses (Henaff, Jiang & Raileanu 2023): a global bonus (RND, NovelD, global
counts) combined with an episodic one (E3B, episodic counts), by product (default) or weighted sum.

Each part is a full bonus config (`global_bonus`, `episodic_bonus`) with its own normalisation and
networks; the combination is then normalised by this bonus's own `normalize`. The study's settings
(its E3B × RND is NovelD's network with α = 0): docs/fidelity.md.
"""
from __future__ import annotations

from typing import Any

import torch

from rlzoo.bonuses.common.base import BatchContext, Bonus, cfg_get, create_bonus, register_bonus
from rlzoo.unroll import Batch

OPS = ("product", "sum")


def combine(global_reward: torch.Tensor, episodic_reward: torch.Tensor, op: str, weights: tuple[float, float]) -> torch.Tensor:
    """`product`: r_g · r_e; `sum`: w_g · r_g + w_e · r_e."""
    if op == "product":
        return global_reward * episodic_reward
    return weights[0] * global_reward + weights[1] * episodic_reward


# Hand-computed cases for the formula test of every bonus (tests/test_bonus_formulas.py).
_G, _E = torch.tensor([[0.5, 2.0], [1.0, 0.0]]), torch.tensor([[4.0, 1.0], [0.0, 3.0]])
FORMULA_CASES = [
    (combine, dict(global_reward=_G, episodic_reward=_E, op="product", weights=(1.0, 1.0)),
     torch.tensor([[2.0, 2.0], [0.0, 0.0]])),
    (combine, dict(global_reward=_G, episodic_reward=_E, op="sum", weights=(2.0, 0.5)),
     torch.tensor([[3.0, 4.5], [2.0, 1.5]])),
]


@register_bonus("global_episodic")
class GlobalEpisodicBonus(Bonus):
    def __init__(self, cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any) -> None:
        super().__init__(cfg, spec, model_cfg, num_envs, device)
        self.op = cfg_get(cfg, "op", str, OPS)
        self.weights = (cfg_get(cfg, "global_weight", float), cfg_get(cfg, "episodic_weight", float))
        for key in ("global_bonus", "episodic_bonus"):
            if cfg_get(cfg, key, object).get("name") == "global_episodic":
                raise ValueError(f"bonus.{key} cannot itself be global_episodic")
        self.global_bonus = create_bonus(cfg["global_bonus"], spec, model_cfg, num_envs, device)
        self.episodic_bonus = create_bonus(cfg["episodic_bonus"], spec, model_cfg, num_envs, device)

    def compute(self, batch: Batch, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        global_reward = self.global_bonus.reward(batch, ctx)
        episodic_reward = self.episodic_bonus.reward(batch, ctx)
        return combine(global_reward, episodic_reward, self.op, self.weights), None

    def train_step(self, batch: Batch, aux: Any) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for part, bonus in (("global", self.global_bonus), ("episodic", self.episodic_bonus)):
            for key, value in bonus.update(batch).items():
                # Sub-bonus losses keep their (distinct) names; their reward stats get a part prefix.
                metrics[key.replace("bonus/", f"bonus/{part}_", 1) if key.startswith("bonus/") else key] = value
        return metrics
