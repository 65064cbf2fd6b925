"""RND (Burda et al. 2018): bonus = ‖f̂(s′) − f(s′)‖² / k, the predictor's mean squared error on the
next observation against a fixed random target, with observation whitening; the learner combines it
with the intrinsic-return normalisation and the separate non-episodic value head of `rnd.yaml`."""
from __future__ import annotations

from typing import Any

import torch

from rlzoo.bonuses.common.base import BatchContext, Bonus, cfg_get, flat_obs, register_bonus
from rlzoo.bonuses.common.encoders import RandomNetworkDistillation
from rlzoo.unroll import Batch


def build_rnd_network(bonus: Bonus) -> RandomNetworkDistillation:
    """The target/predictor pair configured by `bonus.out_dim`, `bonus.hidden`, `bonus.obs_clip`."""
    out_dim = cfg_get(bonus.cfg, "out_dim", int)
    hidden = cfg_get(bonus.cfg, "hidden", int)
    obs_clip = cfg_get(bonus.cfg, "obs_clip", float)
    if min(out_dim, hidden) <= 0 or obs_clip <= 0:
        raise ValueError("bonus.out_dim, bonus.hidden and bonus.obs_clip must be positive")
    use_full_map = bool(bonus.model_cfg.get("use_full_map", False))
    return RandomNetworkDistillation(bonus.spec, out_dim, hidden, obs_clip, use_full_map)


def predictor_loss(sq_error: torch.Tensor, proportion: float) -> torch.Tensor:
    """Mean predictor error over a random `proportion` of the samples (RND's update proportion,
    which keeps the predictor's effective batch fixed as the number of environments grows)."""
    if proportion >= 1.0:
        return sq_error.mean()
    keep = (torch.rand_like(sq_error) < proportion).float()
    return (sq_error * keep).sum() / keep.sum().clamp_min(1.0)


@register_bonus("rnd")
class RNDBonus(Bonus):
    def __init__(self, cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any) -> None:
        super().__init__(cfg, spec, model_cfg, num_envs, device)
        self.update_proportion = cfg_get(cfg, "update_proportion", float)
        if not 0.0 < self.update_proportion <= 1.0:
            raise ValueError(f"bonus.update_proportion={self.update_proportion} must lie in (0, 1]")
        self.rnd = build_rnd_network(self)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.rnd.predictor_parameters()

    def compute(self, batch: Batch, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        steps, cols = ctx.dones.shape
        next_obs = flat_obs(batch.obs, start=1)
        self.rnd.observe(next_obs)
        with self.network_autocast():
            sq_error = self.rnd(next_obs).square().mean(-1).view(steps, cols)
        return sq_error.detach(), sq_error

    def losses(self, batch: Batch, aux: Any) -> dict[str, torch.Tensor]:
        return {"rnd_predictor": predictor_loss(aux, self.update_proportion)}
