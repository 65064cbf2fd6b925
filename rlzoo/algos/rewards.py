"""Where intrinsic rewards meet the extrinsic reward, before V-trace.

This is the one place a bonus changes what the agent optimises.
"""
from __future__ import annotations

import torch


def clip_reward(rewards: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "abs_one":
        return rewards.clamp(-1.0, 1.0)
    return rewards


def combined_reward(
    extrinsic: torch.Tensor,
    intrinsic: torch.Tensor | None,
    extrinsic_coef: float,
    intrinsic_coef: float,
    clip: str,
) -> torch.Tensor:
    """r = clip(extrinsic_coef · r_ext + intrinsic_coef · r_int), one reward stream.

    The sum is clipped, not each part: this is what E3B and the global×episodic studies did.
    """
    total = extrinsic_coef * extrinsic
    if intrinsic is not None:
        total = total + intrinsic_coef * intrinsic
    return clip_reward(total, clip)
