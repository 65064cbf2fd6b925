"""Motif (Klissarov et al. 2023): intrinsic reward from a reward model distilled from an LLM's
preferences over NetHack messages (trained offline: `python -m rlzoo.motif collect|annotate|train-reward`).

r_int = z · 1[z > ε] / N_ep(message)^β, z the reward normalised with the training set's mean/std,
ε a quantile of z over unique training messages, N_ep the message's count in the current episode.
Transition t is rewarded for the message of s_{t+1}, the state the action led to. The reference
rewards the message of s_t (its learner reads the observation the action was chosen from), so a
message pays one step late and an episode's last message never pays; rlzoo corrects this on
purpose. This and the other differences from the reference code: docs/fidelity.md.
"""
from __future__ import annotations

from typing import Any

import torch

from rlzoo.bonuses.common.base import BatchContext, Bonus, cfg_get, register_bonus
from rlzoo.bonuses.common.counting import EpisodicCounts, state_hashes
from rlzoo.motif.intrinsic import count_discounted_reward
from rlzoo.motif.reward_model import MotifReward
from rlzoo.unroll import Batch

def read_threshold_and_exponent(cfg: Any) -> tuple[float | None, float]:
    level = cfg.get("threshold_quantile") if hasattr(cfg, "get") else None
    if level is not None:
        level = cfg_get(cfg, "threshold_quantile", float)
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"bonus.threshold_quantile={level} must lie in [0, 1] (or be null for no threshold)")
    beta = cfg_get(cfg, "count_exponent", float)
    if beta < 0:
        raise ValueError(f"bonus.count_exponent={beta} must be >= 0")
    return level, beta


@register_bonus("motif")
class MotifBonus(Bonus):
    requires = "a reward model trained with `python -m rlzoo.motif train-reward` (bonus.reward_model_path)"
    families, needs = ("nethack", "minihack"), "the in-game message"

    def __init__(self, cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any) -> None:
        super().__init__(cfg, spec, model_cfg, num_envs, device)
        path = cfg.get("reward_model_path")
        if not path:
            raise ValueError("bonus.reward_model_path is required for bonus=motif: the file written by "
                             "`python -m rlzoo.motif train-reward`")
        level, self.count_exponent = read_threshold_and_exponent(cfg)
        self.reward_model = MotifReward.load(str(path), self.device)
        self.epsilon = None if level is None else self.reward_model.quantile(level)
        self.episodic_counts = EpisodicCounts(num_envs)

    def compute(self, batch: Batch, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        messages = batch.obs["message"]
        steps, cols = messages.shape[0] - 1, messages.shape[1]
        z = self.reward_model.normalized(messages[1:].reshape(steps * cols, -1).cpu().numpy()).reshape(steps, cols)
        counts = self.episodic_counts.visit(state_hashes({"message": messages}, "message"), ctx)
        reward = count_discounted_reward(z, counts, self.epsilon, self.count_exponent)
        return torch.as_tensor(reward, device=self.device), None
