"""Test helper: an `Unroll` of torch tensors from the fields a test cares about, the rest zero."""
from __future__ import annotations

import torch

from rlzoo.unroll import Unroll


def make_unroll(obs: dict[str, torch.Tensor], first: torch.Tensor, dones: torch.Tensor, env_ids: torch.Tensor,
                unroll_index: torch.Tensor, actions: torch.Tensor | None = None, rewards: torch.Tensor | None = None,
                num_actions: int = 1) -> Unroll:
    steps, cols = dones.shape
    return Unroll(
        obs=obs,
        first=first,
        actions=torch.zeros(steps, cols, dtype=torch.int64) if actions is None else actions,
        rewards=torch.zeros(steps, cols) if rewards is None else rewards,
        dones=dones,
        logits=torch.zeros(steps, cols, num_actions),
        core_state=(),
        env_ids=env_ids,
        unroll_index=unroll_index,
        policy_version=torch.zeros(cols, dtype=torch.int64),
        actor_ids=torch.zeros(cols, dtype=torch.int64),
    )
