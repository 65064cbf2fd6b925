"""Count-based bonuses: global 1/√N(s′) or episodic (first-visit indicator 1[N_ep(s′) = 1] or 1/√N_ep(s′)).

`scope: global` counts over the whole run in the learner, one table for all actors. Reference
settings and deviations: docs/fidelity.md.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rlzoo.bonuses.common.base import BatchContext, Bonus, cfg_get, register_bonus
from rlzoo.bonuses.common.counting import EpisodicCounts, GlobalCounts, check_state_key, state_hashes
from rlzoo.unroll import Batch

SCOPES = ("episodic", "global")
EPISODIC_FORMS = ("first_visit", "inverse_sqrt")


@register_bonus("counts")
class CountBonus(Bonus):
    def __init__(self, cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any) -> None:
        super().__init__(cfg, spec, model_cfg, num_envs, device)
        self.scope = cfg_get(cfg, "scope", str, SCOPES)
        self.episodic_form = cfg_get(cfg, "episodic_form", str, EPISODIC_FORMS)
        self.state_key = check_state_key(cfg_get(cfg, "state_key", str), spec)
        self.episodic_counts = EpisodicCounts(num_envs)
        self.global_counts = GlobalCounts()

    def compute(self, batch: Batch, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        keys = state_hashes(batch.obs, self.state_key)
        if self.scope == "episodic":
            counts = self.episodic_counts.visit(keys, ctx)
            if self.episodic_form == "first_visit":
                reward = (counts == 1).astype(np.float32)
            else:
                reward = 1.0 / np.sqrt(counts)
        else:
            # Fresh environments' first observations are visits too; count them first.
            visited = np.concatenate([keys[0, ctx.fresh], keys[1:].reshape(-1)])
            counts = self.global_counts.visit(visited)[int(ctx.fresh.sum()):].reshape(keys[1:].shape)
            reward = 1.0 / np.sqrt(counts)
        return torch.as_tensor(reward, dtype=torch.float32, device=self.device), None
