"""The learner: one IMPALA update on a batch of unrolls, with an optional exploration bonus.

`Learner.update` reads top to bottom as the algorithm: bonus reward (the bonus's own training runs
alongside) → `_train_policy`: for each chunk of columns (`_losses`: model over the unrolls → V-trace
targets → losses, then backward) → one gradient step.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig

from rlzoo.algos import impala
from rlzoo.algos.rewards import clip_reward, combined_reward
from rlzoo.algos.vtrace import vtrace
from rlzoo.bonuses import build_bonus
from rlzoo.envs import EnvSpec
from rlzoo.models import build_model
from rlzoo.models.precision import autocast, resolve_precision
from rlzoo.runtime import distributed


class NonFiniteLossError(RuntimeError):
    """Too many updates in a row produced a NaN/inf loss or gradient."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def batch_to_torch(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """numpy batch → torch on `device`; small integer dtypes stay small until the model."""
    def convert(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return torch.from_numpy(x).to(device, non_blocking=True)
        if isinstance(x, dict):
            return {k: convert(v) for k, v in x.items()}
        if isinstance(x, (tuple, list)):
            return tuple(convert(v) for v in x)
        return x

    return {k: convert(v) for k, v in batch.items()}


def uses_separate_value_head(cfg: DictConfig) -> bool:
    return cfg.bonus.name != "none" and bool(cfg.bonus.get("separate_value_head", False))


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
        self.separate_value_head = uses_separate_value_head(cfg)

        # Tiny gradients in Adam/RMSprop state turn into denormal floats, which are several times
        # slower on CPUs; flushing them to zero changes nothing measurable in learning.
        torch.set_flush_denormal(True)
        torch.manual_seed(cfg.seed)  # every learner replica starts from identical weights
        self.model = build_model(cfg.model, spec, intrinsic_value_head=self.separate_value_head).to(device)
        # bf16: the network runs under autocast; weights, optimizer, V-trace and losses stay float32.
        self.compute_dtype = resolve_precision(cfg.runtime.precision, device)
        self.chunk_columns = int(cfg.runtime.learner_chunk)  # 0: the whole batch in one pass
        self.bonus = build_bonus(cfg.bonus, spec, cfg.model, num_envs, device, self.compute_dtype)
        self._bonus_thread = (ThreadPoolExecutor(1, thread_name_prefix="bonus-training")
                              if self.bonus is not None else None)
        self.optimizer = self._make_optimizer()
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
            return self.algo.lr * max(0.0, 1.0 - env_steps / self.cfg.total_steps)
        return self.algo.lr

    def update(self, batch_np: Mapping[str, Any], env_steps: int) -> dict[str, float]:
        """One gradient step on a batch (numpy arrays as produced by `collate`)."""
        start = time.perf_counter()
        batch = batch_to_torch(batch_np, self.device)

        # 1. Exploration bonus on the whole batch (its episodic state follows every environment). Its
        # own networks then train in a second thread while steps 2–5 train the policy: the two updates
        # share no tensors, and a learner on one CPU thread would otherwise leave a free core idle.
        intrinsic, bonus_training = None, None
        if self.bonus is not None:
            intrinsic = self.bonus.intrinsic_reward(batch)
            bonus_training = self._bonus_thread.submit(self.bonus.update, batch)
        try:
            return self._train_policy(batch, intrinsic, bonus_training, env_steps, start)
        finally:
            if bonus_training is not None:
                bonus_training.result()  # even when the policy step fails: never overlap the next batch

    def _train_policy(self, batch: dict[str, Any], intrinsic: torch.Tensor | None,
                      bonus_training: Future | None, env_steps: int, start: float) -> dict[str, float]:
        """Steps 2–5 of `update`; returns its metrics, the bonus's included."""
        if self.world_size > 1:
            n = batch["actions"].shape[1] // self.world_size
            batch, intrinsic = _columns(batch, intrinsic, slice(self.rank * n, (self.rank + 1) * n))

        # 2.–4. per chunk of columns: the losses are sums over samples, so the chunks' gradients add up
        # to the whole batch's; a chunk's activations stay small enough to keep the cost per sample flat.
        self.optimizer.zero_grad(set_to_none=False)
        columns = batch["actions"].shape[1]
        chunk = self.chunk_columns or columns
        totals = torch.zeros(4)
        for begin in range(0, columns, chunk):
            part, part_intrinsic = _columns(batch, intrinsic, slice(begin, begin + chunk))
            loss, pg_loss, value_loss, entropy = self._losses(part, part_intrinsic)
            loss.backward()
            totals += torch.stack([loss, pg_loss, value_loss, entropy]).detach().float().cpu()
        loss_value, pg_value, value_value, entropy_value = totals.tolist()

        # 5. One optimizer step on the summed gradient.
        if self.world_size > 1:
            distributed.allreduce_gradients(self.model)
        clip = self.algo.grad_norm_clip if self.algo.grad_norm_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if not (math.isfinite(grad_norm) and math.isfinite(loss_value)):
            terms = {"policy": pg_value, "baseline": value_value, "entropy": entropy_value, "grad_norm": grad_norm}
            return self._skip_update(terms, env_steps)
        self._nonfinite_in_a_row = 0
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(env_steps)
        self.optimizer.step()
        self.version += 1

        steps = batch["actions"].numel()
        metrics = bonus_training.result() if bonus_training is not None else {}
        metrics.update({
            "loss/total": loss_value,
            "loss/policy": pg_value,
            "loss/baseline": value_value,
            "policy/entropy": entropy_value / steps,
            "policy/max_entropy": math.log(self.num_actions),
            "learner/grad_norm": grad_norm,
            "learner/lr": self.optimizer.param_groups[0]["lr"],
            "learner/update_s": time.perf_counter() - start,
            "learner/skipped_updates": float(self.skipped_updates),
        })
        if intrinsic is not None:
            metrics["bonus/int_reward_mean"] = float(intrinsic.mean())
        return metrics

    def _losses(self, batch: dict[str, Any], intrinsic: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """(total, policy, baseline, entropy) summed over the columns of `batch`."""
        # 2. The current policy over the unroll; the last step only bootstraps.
        with autocast(self.compute_dtype, self.device):
            out, _ = self.model(batch["obs"], batch["first"], batch["core_state"])
        out = {k: v.float() for k, v in out.items()}
        logits = out["logits"][:-1]
        actions, dones = batch["actions"], batch["dones"]
        log_rhos = impala.action_log_probs(logits, actions) - impala.action_log_probs(batch["logits"], actions)
        not_done = (~dones).float()

        # 3. V-trace targets and advantages, one stream or an extrinsic and an intrinsic one.
        bc = self.cfg.bonus
        if self.separate_value_head:
            ext = vtrace(log_rhos, self.algo.discount * not_done, clip_reward(batch["rewards"], self.algo.reward_clip),
                         out["baseline"][:-1], out["baseline"][-1], **self._clips())
            int_discounts = bc.int_discount * (not_done if bc.int_episodic else torch.ones_like(not_done))
            intr = vtrace(log_rhos, int_discounts, intrinsic, out["int_baseline"][:-1], out["int_baseline"][-1],
                          **self._clips())
            advantages = bc.extrinsic_coef * ext.pg_advantages + bc.coef * intr.pg_advantages
            value_loss = (impala.baseline_loss(out["baseline"][:-1], ext.vs)
                          + impala.baseline_loss(out["int_baseline"][:-1], intr.vs))
        else:
            ext_coef = bc.extrinsic_coef if self.bonus is not None else 1.0
            int_coef = bc.coef if self.bonus is not None else 0.0
            rewards = combined_reward(batch["rewards"], intrinsic, ext_coef, int_coef, self.algo.reward_clip)
            ext = vtrace(log_rhos, self.algo.discount * not_done, rewards, out["baseline"][:-1],
                         out["baseline"][-1], **self._clips())
            advantages = ext.pg_advantages
            value_loss = impala.baseline_loss(out["baseline"][:-1], ext.vs)

        # 4. Losses.
        pg_loss = impala.policy_gradient_loss(logits, actions, advantages)
        entropy = impala.entropy(logits)
        loss = pg_loss + self.algo.baseline_cost * value_loss - self.algo.entropy_cost * entropy
        return loss, pg_loss, value_loss, entropy

    def _clips(self) -> dict[str, float]:
        return {"rho_bar": self.algo.rho_bar, "c_bar": self.algo.c_bar, "pg_rho_bar": self.algo.pg_rho_bar}

    def _skip_update(self, terms: dict[str, float], env_steps: int) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=False)
        self.skipped_updates += 1
        self._nonfinite_in_a_row += 1
        limit = self.algo.max_nonfinite_updates
        if self._nonfinite_in_a_row >= limit:
            raise NonFiniteLossError(
                f"{self._nonfinite_in_a_row} updates in a row had a non-finite loss or gradient; at env step "
                f"{env_steps} non-finite: {', '.join(k for k, v in terms.items() if not math.isfinite(v))} "
                f"({terms}); "
                f"lower algo.lr or check the reward scale (limit: algo.max_nonfinite_updates={limit})"
            )
        return {"learner/skipped_updates": float(self.skipped_updates)}

    def close(self) -> None:
        if self.bonus is not None:
            self._bonus_thread.shutdown()
            self.bonus.close()

    def weights(self) -> dict[str, torch.Tensor]:
        """CPU copy of the policy weights for the actors."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

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


def _columns(batch: dict[str, Any], intrinsic: torch.Tensor | None, cols: slice) -> tuple[dict[str, Any], Any]:
    """The columns `cols` of a batch (environments along B), and of its intrinsic reward."""
    part = dict(batch)
    part["obs"] = {k: v[:, cols] for k, v in batch["obs"].items()}
    for key in ("first", "actions", "rewards", "dones", "logits"):
        part[key] = batch[key][:, cols]
    part["core_state"] = tuple(s[cols] for s in batch["core_state"])
    return part, (intrinsic[:, cols] if intrinsic is not None else None)
