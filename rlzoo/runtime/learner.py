"""The learner: owns the policy, its optimizer and the exploration bonus, and trains them on batches.

`Learner.update` reads as the algorithm: bonus reward (the bonus's own networks train alongside) →
IMPALA loss and its gradient, chunk by chunk, plus the auxiliary imitation terms
(rlzoo/runtime/auxiliary.py; under `algo=bc` behavioural cloning replaces the RL loss) → one
optimizer step. The loss itself is
`rlzoo.algos.impala.impala_loss`; this module is the plumbing around it (devices, precision, chunks,
replicas, non-finite updates).
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig

from rlzoo.algos.impala import ImpalaSettings, impala_loss
from rlzoo.algos.rewards import RewardMix
from rlzoo.bonuses import build_bonus, needs_intrinsic_value_head
from rlzoo.envs import EnvSpec
from rlzoo.models import build_model
from rlzoo.models.precision import autocast, resolve_precision
from rlzoo.runtime import distributed
from rlzoo.runtime.auxiliary import AuxiliaryLosses
from rlzoo.unroll import Batch, DemonstrationUnroll


class NonFiniteLossError(RuntimeError):
    """Too many updates in a row produced a NaN/inf loss or gradient."""


class Learner:
    """Owns the model, its optimizer and the bonus. `rank`/`world_size` > 1 shard each batch."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, num_envs: int, device: torch.device,
                 rank: int = 0, world_size: int = 1) -> None:
        self.cfg = cfg
        self.algo = cfg.algo
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.num_actions = spec.num_actions
        self.settings = ImpalaSettings.from_config(cfg.algo)
        self.mix = RewardMix.from_config(cfg.algo, cfg.bonus)

        # Tiny gradients in Adam/RMSprop state turn into denormal floats, which are several times
        # slower on CPUs; flushing them to zero changes nothing measurable in learning.
        torch.set_flush_denormal(True)
        torch.manual_seed(cfg.seed)  # every learner replica starts from identical weights
        self.model = build_model(cfg.model, spec, intrinsic_value_head=needs_intrinsic_value_head(cfg.bonus)).to(device)
        # bf16: the network runs under autocast; weights, optimizer, V-trace and losses stay float32.
        self.compute_dtype = resolve_precision(cfg.runtime.precision, device)
        self.chunk_columns = int(cfg.runtime.learner_chunk)  # 0: the whole batch in one pass
        self.bonus = build_bonus(cfg.bonus, spec, cfg.model, num_envs, device, self.compute_dtype)
        self._bonus_thread = (ThreadPoolExecutor(1, thread_name_prefix="bonus-training")
                              if self.bonus is not None else None)
        self.optimizer = self._make_optimizer()
        # Imitation terms (kickstarting, BC on recorded games) and algo=bc's loss: runtime/auxiliary.py.
        self.auxiliary = AuxiliaryLosses(cfg, spec, self.model, device, self.compute_dtype, rank, world_size)
        self.version = 0  # learner steps taken; actors report which version acted
        self.skipped_updates = 0
        self._nonfinite_in_a_row = 0
        if world_size > 1:
            distributed.broadcast_parameters(self.model)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        a = self.algo
        if a.optimizer == "rmsprop":
            return torch.optim.RMSprop(self.model.parameters(), lr=a.lr, alpha=a.alpha, eps=a.eps,
                                       momentum=a.momentum)
        return torch.optim.Adam(self.model.parameters(), lr=a.lr, eps=a.eps)

    def learning_rate(self, env_steps: int) -> float:
        if self.algo.lr_decay == "linear":
            # Over algo.lr_decay_steps when set (a paper's budget, so a shorter run sees the paper's lr).
            horizon = self.algo.get("lr_decay_steps") or self.cfg.total_steps
            return self.algo.lr * max(0.0, 1.0 - env_steps / horizon)
        return self.algo.lr

    def update(self, batch: Batch, env_steps: int) -> dict[str, float]:
        """One learner step on a batch of numpy unrolls (`Unroll.concat` of the actors' unrolls)."""
        start = time.perf_counter()
        batch = batch.to_torch(self.device)
        # 1. Exploration bonus on the whole batch (its episodic state follows every environment). Its
        # networks then train in a second thread while the policy trains: the two updates share no
        # tensors, and a learner on one CPU thread would otherwise leave a free core idle.
        intrinsic, bonus_training = self._bonus_reward(batch)
        try:
            # 2. The loss's gradient on this replica's share of the batch.
            loss_scale = 1.0 / batch.num_columns if self.algo.loss_reduction == "time_sum_batch_mean" else 1.0
            if self.world_size > 1:
                share = batch.num_columns // self.world_size
                cols = slice(self.rank * share, (self.rank + 1) * share)
                batch, intrinsic = batch.columns(cols), None if intrinsic is None else intrinsic[:, cols]
            if isinstance(batch, DemonstrationUnroll):  # algo=bc: recorded games, cloned instead of the RL loss
                terms = self.auxiliary.clone(batch, self.chunk_columns)
            else:
                terms = self._accumulate_gradients(batch, intrinsic, loss_scale, env_steps)
            # 3. One optimizer step on the summed gradient (skipped when it is not finite).
            metrics = self._optimizer_step(terms, env_steps)
        finally:
            # Even when the policy step fails: never overlap the next batch.
            bonus_metrics = bonus_training.result() if bonus_training is not None else {}
        metrics.update(bonus_metrics)
        if intrinsic is not None:
            metrics["bonus/int_reward_mean"] = float(intrinsic.mean())
        if "loss/total" in metrics:  # the step was taken (a skipped one reports only the skip)
            metrics["policy/entropy"] = metrics.pop("loss/entropy") / batch.size
            metrics["learner/update_s"] = time.perf_counter() - start
        return metrics

    def _bonus_reward(self, batch: Batch) -> tuple[torch.Tensor | None, Future | None]:
        if self.bonus is None:
            return None, None
        intrinsic = self.bonus.intrinsic_reward(batch)
        return intrinsic, self._bonus_thread.submit(self.bonus.update, batch)

    def _accumulate_gradients(self, batch: Batch, intrinsic: torch.Tensor | None, loss_scale: float,
                              env_steps: int) -> dict[str, float]:
        """Backward of the IMPALA loss (+ the auxiliary terms) chunk by chunk of columns; returns the
        summed loss terms.

        The losses are sums over samples, so the chunks' gradients add up to the whole batch's, and a
        chunk's activations stay small enough to keep the cost per sample flat as batches grow.
        `loss_scale` (1/B for algo.loss_reduction=time_sum_batch_mean) scales the gradient only.
        """
        self.optimizer.zero_grad(set_to_none=False)
        chunk = self.chunk_columns or batch.num_columns
        totals = torch.zeros(4)
        for begin in range(0, batch.num_columns, chunk):
            cols = slice(begin, begin + chunk)
            part = batch.columns(cols)
            with autocast(self.compute_dtype, self.device):
                out, _ = self.model(part.obs, part.first, part.core_state)
            out = {k: v.float() for k, v in out.items()}
            loss = impala_loss(out, part.logits, part.actions, part.rewards,
                               None if intrinsic is None else intrinsic[:, cols], part.dones, self.settings, self.mix)
            ((loss.total + self.auxiliary.batch_loss(out, part, env_steps)) * loss_scale).backward()
            totals += torch.stack(list(loss)).detach().float().cpu()
        terms = dict(zip(("loss/total", "loss/policy", "loss/baseline", "loss/entropy"), totals.tolist()))
        terms.update(self.auxiliary.finish(env_steps, self.chunk_columns))
        return terms

    def _optimizer_step(self, terms: dict[str, float], env_steps: int) -> dict[str, float]:
        if self.world_size > 1:
            distributed.allreduce_gradients(self.model)
        clip = self.algo.grad_norm_clip if self.algo.grad_norm_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if not (math.isfinite(grad_norm) and math.isfinite(terms["loss/total"])):
            return self._skip_update({**terms, "learner/grad_norm": grad_norm}, env_steps)
        self._nonfinite_in_a_row = 0
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(env_steps)
        self.optimizer.step()
        self.version += 1
        return {
            **terms,
            "policy/max_entropy": math.log(self.num_actions),
            "learner/grad_norm": grad_norm,
            "learner/lr": self.optimizer.param_groups[0]["lr"],
            "learner/skipped_updates": float(self.skipped_updates),
        }

    def _skip_update(self, terms: dict[str, float], env_steps: int) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=False)
        self.skipped_updates += 1
        self._nonfinite_in_a_row += 1
        limit = self.algo.max_nonfinite_updates
        if self._nonfinite_in_a_row >= limit:
            named = {k.rpartition("/")[2]: v for k, v in terms.items()}
            raise NonFiniteLossError(
                f"{self._nonfinite_in_a_row} updates in a row had a non-finite loss or gradient; at env step "
                f"{env_steps} non-finite: {', '.join(k for k, v in named.items() if not math.isfinite(v))} "
                f"({named}); "
                f"lower algo.lr or check the reward scale (limit: algo.max_nonfinite_updates={limit})"
            )
        return {"learner/skipped_updates": float(self.skipped_updates)}

    def close(self) -> None:
        self.auxiliary.close()
        if self.bonus is not None:
            self._bonus_thread.shutdown()
            self.bonus.close()

    def weights(self) -> dict[str, np.ndarray]:
        """The policy weights as numpy arrays for the actors: converted once per broadcast."""
        return {k: v.detach().to("cpu", copy=True).numpy() for k, v in self.model.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "version": self.version,
            "skipped_updates": self.skipped_updates,
        }
        if self.bonus is not None:
            state["bonus"] = self.bonus.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])
        self.skipped_updates = int(state["skipped_updates"])
        if self.bonus is not None:
            self.bonus.load_state_dict(state["bonus"])
