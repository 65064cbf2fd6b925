"""The learner: owns the policy, its optimizer and the exploration bonus, and trains them on batches.

`Learner.update` reads as the algorithm: bonus reward (the bonus's own networks train alongside) →
targets fixed for the batch → epochs × minibatches of (loss and its gradient, chunk by chunk → one
optimizer step). What the loss is — IMPALA's or APPO's objective plus extra terms such as DrAC's — is
`rlzoo.algos.objective`; the imitation terms (kickstarting, BC on recorded games) and `algo=bc`,
where cloning replaces the RL loss, are rlzoo/runtime/auxiliary.py's. This module is the plumbing
around them (devices, precision, minibatches, chunks, replicas, non-finite updates).
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from omegaconf import DictConfig

from rlzoo.algos.objective import BatchTargets, Chunk, build_loss_terms, build_objective
from rlzoo.algos.ppo import mean_and_std
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
        self.objective = build_objective(cfg.algo, cfg.bonus) if cfg.algo.name != "bc" else None
        self.epochs = int(cfg.algo.epochs)
        self.minibatches = int(cfg.algo.minibatches)
        # The same seed on every replica: all of them draw the same minibatches.
        self._shuffle = torch.Generator().manual_seed(cfg.seed) if cfg.algo.shuffle_minibatches else None

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
        self.terms = [*build_loss_terms(cfg, device, seed=cfg.seed * 1_000 + rank), *self.auxiliary.terms]
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
        """One learner update on a batch of numpy unrolls (`Unroll.concat` of the actors' unrolls)."""
        start = time.perf_counter()
        batch = batch.to_torch(self.device)
        # 1. Exploration bonus on the whole batch (its episodic state follows every environment). Its
        # networks then train in a second thread while the policy trains: the two updates share no
        # tensors, and a learner on one CPU thread would otherwise leave a free core idle.
        intrinsic, bonus_training = self._bonus_reward(batch)
        try:
            if isinstance(batch, DemonstrationUnroll):  # algo=bc: recorded games, cloned instead of the RL loss
                metrics, steps = {}, [self._optimizer_step(self._clone(batch), env_steps)]
            else:
                # 2. What stays fixed for every epoch: the objective's targets (APPO's GAE advantages)
                # and the extra terms' per-batch work (UCB-DrAC's augmentation, the kickstarting teacher).
                if self.objective.bootstraps_from_learner:
                    batch = self._bootstrap_from_learner(batch)
                in_reward_units = self.objective.in_reward_units(batch)  # before prepare updates the statistics
                targets = self.objective.prepare(batch, intrinsic)
                metrics = {k: v for term in self.terms
                           for k, v in term.start_update(in_reward_units, intrinsic, env_steps).items()}
                # 3. Epochs × minibatches: the gradient of this replica's share of a minibatch, then one
                # optimizer step on the gradient summed over replicas (skipped when it is not finite).
                steps, columns = [], torch.arange(batch.num_columns, device=self.device)
                for cols, minibatch_samples in self._minibatches(batch):
                    terms = self._accumulate_gradients(batch.columns(cols), targets.columns(cols), minibatch_samples,
                                                       columns[cols], env_steps)
                    steps.append(self._optimizer_step(terms, env_steps))
        finally:
            # Even when the policy step fails: never overlap the next batch.
            bonus_metrics = bonus_training.result() if bonus_training is not None else {}
        if any("loss/total" in step for step in steps):
            self.version += 1
        metrics.update(_mean_over_steps(steps))
        metrics["learner/skipped_updates"] = float(self.skipped_updates)
        metrics.update(bonus_metrics)
        if intrinsic is not None:
            metrics["bonus/int_reward_mean"] = float(intrinsic.mean())
        if "loss/total" in metrics:  # a step was taken (skipped ones report only the skip)
            metrics["learner/update_s"] = time.perf_counter() - start
        return metrics

    def _bootstrap_from_learner(self, batch: Batch) -> Batch:
        """The batch with `values[T]` recomputed by the learner's network as it is now, from obs[T] and the
        actor's recurrent state there (Sample Factory's bootstrap for GAE); values[:T] stay the actor's."""
        if len(batch.bootstrap_state) != len(batch.core_state):
            raise ValueError("APPO's GAE needs the actors' recurrent state before obs[T] (Unroll.bootstrap_state, "
                             "recorded with the behaviour values); this batch has none")
        last = {k: v[-1:] for k, v in batch.obs.items()}
        with torch.no_grad():
            out = self._forward(last, batch.first[-1:], batch.bootstrap_state)
        values = {k: torch.cat([v[:-1], out[k].to(v.dtype)]) for k, v in batch.values.items()}
        return dataclasses.replace(batch, values=values)

    def _bonus_reward(self, batch: Batch) -> tuple[torch.Tensor | None, Future | None]:
        if self.bonus is None:
            return None, None
        intrinsic = self.bonus.intrinsic_reward(batch)
        return intrinsic, self._bonus_thread.submit(self.bonus.update, batch)

    def _minibatches(self, batch: Batch) -> Iterator[tuple[slice | torch.Tensor, int]]:
        """This replica's columns of each minibatch, epoch after epoch, with the minibatch's samples over
        all replicas. A minibatch is whole columns (their recurrent start states are the actors', in
        every epoch, as in Sample Factory); contiguous, or drawn from shuffled columns each epoch."""
        size = batch.num_columns // self.minibatches
        share = size // self.world_size
        for _ in range(self.epochs):
            order = None if self._shuffle is None else torch.randperm(batch.num_columns, generator=self._shuffle)
            for m in range(self.minibatches):
                begin = m * size + self.rank * share
                cols = slice(begin, begin + share) if order is None else order[begin:begin + share].to(self.device)
                yield cols, size * batch.num_steps

    def _forward(self, obs: dict[str, torch.Tensor], first: torch.Tensor,
                 core_state: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """The network over [T+1, B] steps in the learner's precision; its outputs in float32."""
        with autocast(self.compute_dtype, self.device):
            out, _ = self.model(obs, first, core_state)
        return {k: v.float() for k, v in out.items()}

    def _accumulate_gradients(self, minibatch: Batch, targets: BatchTargets, minibatch_samples: int,
                              columns: torch.Tensor, env_steps: int) -> dict[str, float]:
        """Backward of the objective plus the extra terms on a minibatch share (`columns` of the batch),
        chunk by chunk of columns, then the imitation terms on their own data; returns the losses and
        metrics.

        Each chunk's loss is weighted so that the chunks, and the replicas whose gradients are summed,
        add up to the whole minibatch's gradient: IMPALA's losses are sums over samples; APPO's loss and
        every term's are means, weighted by the chunk's share of the `minibatch_samples`. A chunk's
        activations stay small enough to keep the cost per sample flat as batches grow.
        """
        self.optimizer.zero_grad(set_to_none=False)
        chunk = self.chunk_columns or minibatch.num_columns
        parts = [(minibatch.columns(slice(b, b + chunk)), targets.columns(slice(b, b + chunk)))
                 for b in range(0, minibatch.num_columns, chunk)]
        outs, stats = self._advantage_statistics(parts)
        summed = self.objective.reduction == "sum"
        sample_weight = self.objective.sample_weight(minibatch_samples, minibatch.num_steps)
        # A replica reports its share, unweighted: a sum over its samples (sum losses) or their mean.
        report = 1.0 / sample_weight / (1 if summed else minibatch.size)
        metrics: Counter[str] = Counter()
        begin = 0
        for (part, part_targets), out in zip(parts, outs):
            if out is None:
                out = self._forward(part.obs, part.first, part.core_state)
            c = Chunk(part, part_targets, out, self._forward, part.size / minibatch.size, env_steps,
                      columns[begin:begin + part.num_columns])
            begin += part.num_columns
            loss, chunk_metrics = self.objective.loss(c, stats)
            weight = part.size * sample_weight  # of a mean over the chunk's samples
            total = sample_weight * loss if summed else weight * loss
            for term in self.terms:
                term_loss, term_metrics = term(c)
                total = total + weight * term_loss
                chunk_metrics[f"loss/{term.name}"] = float(term_loss.detach()) * c.share
                chunk_metrics.update({k: v * c.share for k, v in term_metrics.items()})
            total.backward()
            chunk_metrics["loss/total"] = float(total.detach()) * report
            metrics.update(chunk_metrics)  # Counter.update adds
        metrics.update(self.auxiliary.finish(env_steps, self.chunk_columns, sample_weight))
        return dict(metrics)

    def _clone(self, batch: DemonstrationUnroll) -> dict[str, float]:
        """algo=bc: the gradient of the mean cross-entropy over the whole batch, from this replica's share."""
        valid_steps = float(batch.valid.sum().clamp(min=1))
        share = batch.num_columns // self.world_size
        mine = batch.columns(slice(self.rank * share, (self.rank + 1) * share))
        return self.auxiliary.clone(mine, self.chunk_columns, valid_steps)

    def _advantage_statistics(self, parts: list[tuple[Batch, BatchTargets]]
                              ) -> tuple[list[dict[str, torch.Tensor] | None], tuple[float, float] | None]:
        """Mean and std of the minibatch's advantages over all its chunks and replicas, when the objective
        normalises them (APPO), and the forward passes made for them that the gradient can reuse.

        V-trace advantages need the current network's values: a share of one chunk keeps that pass
        for its gradient; with several chunks a pass without gradient comes first.
        """
        outs: list[dict[str, torch.Tensor] | None] = [None] * len(parts)
        if not self.objective.normalizes_advantages:
            return outs, None
        moments = torch.zeros(3, dtype=torch.float64)
        for i, (part, part_targets) in enumerate(parts):
            out = None
            if self.objective.advantages_need_forward:
                with torch.set_grad_enabled(len(parts) == 1):
                    out = self._forward(part.obs, part.first, part.core_state)
                if len(parts) == 1:
                    outs[i] = out
            advantages = self.objective.advantages(out, part, part_targets).double()
            moments += torch.stack([advantages.new_tensor(advantages.numel()), advantages.sum(),
                                    advantages.square().sum()]).cpu()
        if self.world_size > 1:
            moments = distributed.allreduce_sum(moments, self.device)
        return outs, mean_and_std(*moments.tolist())

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
        if self.terms:
            state["terms"] = {term.name: term.state_dict() for term in self.terms}
        if self.objective is not None and (objective := self.objective.state_dict()):
            state["objective"] = objective  # APPO's return statistics
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.version = int(state["version"])
        self.skipped_updates = int(state["skipped_updates"])
        if self.bonus is not None:
            self.bonus.load_state_dict(state["bonus"])
        for term in self.terms:
            term.load_state_dict(state.get("terms", {}).get(term.name, {}))
        if self.objective is not None:
            self.objective.load_state_dict(state.get("objective", {}))


def _mean_over_steps(steps: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the optimizer steps of an update that report it."""
    keys = {k for step in steps for k in step}
    return {k: sum(step[k] for step in steps if k in step) / sum(k in step for step in steps) for k in keys}
