"""RND (Burda et al. 2018): the error of a trained predictor against a fixed random target on the next
observation. Two variants (`bonus.variant`):
- `burda`: the paper's — whitened observations, bonus = ‖f̂(s′) − f(s′)‖² / k (mean squared error),
  with the intrinsic-return normalisation and separate non-episodic value head of `rnd.yaml`;
- `e3b_minihack`: the RND baseline of the E3B MiniHack sweep — target and predictor are full
  policy-style torsos on raw observations, bonus = ‖f̂(s′) − f(s′)‖₂, loss Σ_t mean_b (`rnd_minihack.yaml`);
  with `bonus.embedding` set to RIDE's embedding network it is RIDE's MiniGrid RND baseline.
Deviations from the references: docs/fidelity.md."""
from __future__ import annotations

from typing import Any

import torch

from rlzoo.bonuses.common.base import BatchContext, Bonus, cfg_get, flat_obs, register_bonus
from rlzoo.bonuses.common.dynamics import time_sum_batch_mean
from rlzoo.bonuses.common.encoders import RandomNetworkDistillation, TorsoRND, embedding_model_cfg
from rlzoo.unroll import Batch

VARIANTS = ("burda", "e3b_minihack")


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
        self.variant = cfg_get(cfg, "variant", str, VARIANTS)
        self.update_proportion = cfg_get(cfg, "update_proportion", float)
        if not 0.0 < self.update_proportion <= 1.0:
            raise ValueError(f"bonus.update_proportion={self.update_proportion} must lie in (0, 1]")
        if self.variant == "burda":
            out_dim, hidden = cfg_get(cfg, "out_dim", int), cfg_get(cfg, "hidden", int)
            obs_clip = cfg_get(cfg, "obs_clip", float)
            if min(out_dim, hidden) <= 0 or obs_clip <= 0:
                raise ValueError("bonus.out_dim, bonus.hidden and bonus.obs_clip must be positive")
            use_full_map = bool(model_cfg.get("use_full_map", False))
            self.rnd: torch.nn.Module = RandomNetworkDistillation(spec, out_dim, hidden, obs_clip, use_full_map)
        else:
            self.rnd = TorsoRND(embedding_model_cfg(cfg, model_cfg), spec)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return self.rnd.predictor_parameters()

    def compute(self, batch: Batch, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        steps, cols = ctx.dones.shape
        next_obs = flat_obs(batch.obs, start=1)
        self.rnd.observe(next_obs)
        with self.network_autocast():
            diff = self.rnd(next_obs).float()
        error = diff.square().mean(-1) if self.variant == "burda" else diff.norm(dim=-1)
        error = error.view(steps, cols)
        return error.detach(), error

    def losses(self, batch: Batch, aux: Any) -> dict[str, torch.Tensor]:
        if self.variant == "burda":
            return {"rnd_predictor": predictor_loss(aux, self.update_proportion)}
        return {"rnd_predictor": time_sum_batch_mean(aux, torch.ones_like(aux))}
