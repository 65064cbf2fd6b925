"""Where intrinsic rewards meet the extrinsic reward: the one place a bonus changes what the agent
optimises.

`reward_streams` turns the two rewards into the streams V-trace sees. The extrinsic reward is first
scaled and, where a reference does so, clipped on its own: r_e = clip(s · r_ext, ±e) (Motif and ONI
scale and clip the environment's reward in their actors). Then:
- one stream (the default, E3B and the global × episodic studies): r = clip(c_e · r_e + c_i · r_int),
  the sum clipped with `algo.reward_clip` unless `bonus.clip_total` is false (Motif, ONI), one value
  head, the extrinsic discount;
- two streams (RND, `bonus.separate_value_head`): clip(r_e) with the extrinsic value head and
  discount, and r_int with the intrinsic value head, `bonus.int_discount` and, unless
  `bonus.int_episodic`, no cut at episode ends; the advantages are then mixed as c_e·A_ext + c_i·A_int.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

REWARD_CLIPS = ("abs_one", "none")  # or a positive number c: clip to [−c, c] (Sample Factory's reward_clip)


def clip_reward(rewards: torch.Tensor, mode: str | float) -> torch.Tensor:
    if mode == "none":
        return rewards
    bound = 1.0 if mode == "abs_one" else float(mode)
    return rewards.clamp(-bound, bound)


@dataclass(frozen=True)
class RewardMix:
    """How a run weighs, clips and discounts its rewards (from `algo.*` and `bonus.*`)."""

    discount: float = 0.99            # γ of the extrinsic return (algo.discount)
    clip: str | float = "abs_one"     # algo.reward_clip
    extrinsic_coef: float = 1.0       # bonus.extrinsic_coef
    intrinsic_coef: float = 0.0       # bonus.coef
    two_streams: bool = False         # bonus.separate_value_head
    int_discount: float = 0.99        # bonus.int_discount (two streams)
    int_episodic: bool = True         # bonus.int_episodic (two streams)
    extrinsic_scale: float = 1.0      # bonus.extrinsic_scale: s in r_e = clip(s · r_ext, ±e)
    extrinsic_clip: float | None = None  # bonus.extrinsic_clip: e (None: not clipped on its own)
    clip_total: bool = True           # bonus.clip_total: one stream, clip the sum with `clip`

    @classmethod
    def from_config(cls, algo_cfg: Any, bonus_cfg: Any) -> "RewardMix":
        if bonus_cfg.get("name", "none") == "none":
            return cls(discount=float(algo_cfg.discount), clip=algo_cfg.reward_clip)
        return cls(
            discount=float(algo_cfg.discount),
            clip=algo_cfg.reward_clip,
            extrinsic_coef=float(bonus_cfg.extrinsic_coef),
            intrinsic_coef=float(bonus_cfg.coef),
            two_streams=bool(bonus_cfg.separate_value_head),
            int_discount=float(bonus_cfg.int_discount),
            int_episodic=bool(bonus_cfg.int_episodic),
            extrinsic_scale=float(bonus_cfg.extrinsic_scale),
            extrinsic_clip=None if bonus_cfg.extrinsic_clip is None else float(bonus_cfg.extrinsic_clip),
            clip_total=bool(bonus_cfg.clip_total),
        )


@dataclass
class RewardStream:
    """One reward stream: its rewards [T, B], discounts γ·(1 − done) [T, B], the value head that
    predicts its return and the weight of its advantages in the policy gradient."""

    rewards: torch.Tensor
    discounts: torch.Tensor
    value_key: str
    advantage_weight: float


def reward_streams(extrinsic: torch.Tensor, intrinsic: torch.Tensor | None, dones: torch.Tensor,
                   mix: RewardMix) -> list[RewardStream]:
    """The reward streams of a batch: one (summed and clipped) or two (extrinsic and intrinsic)."""
    not_done = (~dones).float()
    if mix.extrinsic_scale != 1.0:
        extrinsic = mix.extrinsic_scale * extrinsic
    if mix.extrinsic_clip is not None:
        extrinsic = extrinsic.clamp(-mix.extrinsic_clip, mix.extrinsic_clip)
    if mix.two_streams and intrinsic is not None:
        int_discounts = mix.int_discount * (not_done if mix.int_episodic else torch.ones_like(not_done))
        return [
            RewardStream(clip_reward(extrinsic, mix.clip), mix.discount * not_done, "baseline", mix.extrinsic_coef),
            RewardStream(intrinsic, int_discounts, "int_baseline", mix.intrinsic_coef),
        ]
    total = mix.extrinsic_coef * extrinsic
    if intrinsic is not None:
        total = total + mix.intrinsic_coef * intrinsic
    if mix.clip_total:
        total = clip_reward(total, mix.clip)
    return [RewardStream(total, mix.discount * not_done, "baseline", 1.0)]
