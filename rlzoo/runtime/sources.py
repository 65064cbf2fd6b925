"""Where unrolls come from: rollout workers in this process, or Ray actors.

Both expose `next_unrolls()` (finished rollouts), `publish(weights, version)`, `restarts`,
`steps_lost` and `metrics()` (counters the trainer logs). Under `algo=bc` recorded games take the
actors' place: `DemonstrationSource` in rlzoo/runtime/demonstrations.py.
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.envs import EnvSpec
from rlzoo.runtime.rollout import RolloutResult, RolloutWorker


class SerialSource:
    """Rollout workers stepped one after another in the learner's process (runtime=serial)."""

    restarts = 0  # nothing is ever replaced or lost in one process
    steps_lost = 0

    def __init__(self, cfg: DictConfig, spec: EnvSpec) -> None:
        self.workers = [RolloutWorker(cfg, i, spec) for i in range(cfg.runtime.num_actors)]
        self._next = 0

    def publish(self, weights: dict[str, np.ndarray], version: int) -> None:
        for w in self.workers:
            w.set_weights(weights, version)

    def next_unrolls(self, timeout_s: float = 1.0) -> list[RolloutResult]:
        """One unroll from the next worker (`timeout_s` matches RaySource; a rollout here never waits)."""
        worker = self.workers[self._next]
        self._next = (self._next + 1) % len(self.workers)
        return [worker.rollout()]

    def metrics(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        for w in self.workers:
            w.close()


class RaySource:
    """One Ray actor per rollout worker, each with `inflight_per_actor` rollout calls queued.

    Weights travel as one `ray.put` per broadcast; every rollout call carries the newest ref and the
    actor loads it only when the version changed. An actor that dies, or whose rollout exceeds
    `runtime.rollout_timeout_s`, is replaced by a new one with fresh environments; its unrolls restart
    at index 0 with a zero recurrent state, so nothing of the old and new episodes is mixed.
    """

    def __init__(self, cfg: DictConfig, spec: EnvSpec) -> None:
        import ray

        self.ray = ray
        self.actor_cls = ray.remote(num_cpus=1)(RolloutActor)
        self.plain_cfg = OmegaConf.to_container(cfg, resolve=True)
        self.actors = [self._start_actor(i) for i in range(cfg.runtime.num_actors)]
        self.inflight = cfg.runtime.inflight_per_actor
        self.rollout_timeout_s = cfg.runtime.rollout_timeout_s
        self.weights_ref = None
        self.version = -1
        self.pending: dict[Any, tuple[int, float]] = {}  # ref -> (actor id, submission time)
        self.restarts = 0
        self.steps_lost = 0  # env steps of rollouts that were under way in replaced actors
        self.steps_per_unroll = cfg.runtime.unroll_length * cfg.runtime.envs_per_actor

    def _start_actor(self, actor_id: int) -> Any:
        return self.actor_cls.remote(self.plain_cfg, actor_id)

    def publish(self, weights: dict[str, np.ndarray], version: int) -> None:
        # numpy arrays travel through the object store without copies (torch tensors would be pickled).
        self.weights_ref = self.ray.put(weights)
        self.version = version
        if not self.pending:
            for actor_id in range(len(self.actors)):
                for _ in range(self.inflight):
                    self._submit(actor_id)

    def _submit(self, actor_id: int) -> None:
        ref = self.actors[actor_id].rollout.remote(self.weights_ref, self.version)
        self.pending[ref] = (actor_id, time.monotonic())

    def next_unrolls(self, timeout_s: float = 1.0) -> list[RolloutResult]:
        """Finished unrolls, waiting at most `timeout_s` (an empty list lets the caller check signals)."""
        refs = list(self.pending)
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready:  # take every other unroll that is done as well
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        results = []
        for ref in ready:
            if ref not in self.pending:
                continue  # queued on an actor that was replaced a moment ago
            actor_id, _ = self.pending.pop(ref)
            try:
                results.append(self.ray.get(ref))
            except self.ray.exceptions.RayActorError as err:
                self._restart(actor_id, f"it died ({type(err).__name__})", calls_already_taken=1)
                continue
            except self.ray.exceptions.OutOfMemoryError:
                raise MemoryError(
                    f"Ray stopped rollout actor {actor_id} for lack of memory; lower runtime.envs_per_actor "
                    "or runtime.num_actors (or runtime.inflight_per_actor)"
                ) from None
            self._submit(actor_id)
        self._restart_stuck_actors()
        return results

    def _restart_stuck_actors(self) -> None:
        now = time.monotonic()
        started: dict[int, float] = {}
        for actor_id, submitted in self.pending.values():
            started[actor_id] = min(submitted, started.get(actor_id, submitted))
        for actor_id, submitted in started.items():
            # Calls queue behind each other, so only the oldest one can be late by more than a rollout.
            if now - submitted > self.rollout_timeout_s * self.inflight:
                self._restart(actor_id, f"no rollout for {now - submitted:.0f} s (runtime.rollout_timeout_s)")

    def _restart(self, actor_id: int, reason: str, calls_already_taken: int = 0) -> None:
        warnings.warn(f"rollout actor {actor_id}: {reason}; starting a replacement", stacklevel=2)
        lost = [ref for ref, v in self.pending.items() if v[0] == actor_id]
        self.steps_lost += (len(lost) + calls_already_taken) * self.steps_per_unroll
        self.pending = {ref: v for ref, v in self.pending.items() if v[0] != actor_id}
        self.ray.kill(self.actors[actor_id], no_restart=True)
        self.actors[actor_id] = self._start_actor(actor_id)
        self.restarts += 1
        for _ in range(self.inflight):
            self._submit(actor_id)

    def restart_all(self, reason: str) -> None:
        """Replace every actor: their environments restart from scratch, as in a resumed run."""
        for actor_id in range(len(self.actors)):
            self._restart(actor_id, reason)

    def metrics(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


class RolloutActor:
    """The body of a Ray rollout actor (decorated with ray.remote by RaySource)."""

    def __init__(self, cfg: dict[str, Any], actor_id: int) -> None:
        torch.set_num_threads(1)  # one CPU per actor: more threads only contend
        self.worker = RolloutWorker(OmegaConf.create(cfg), actor_id)

    def pid(self) -> int:
        return os.getpid()

    def rollout(self, weights: dict[str, np.ndarray], version: int) -> RolloutResult:
        self.worker.set_weights(weights, version)
        tic = time.perf_counter()
        result = self.worker.rollout()
        result.timings["actor/rollout_s"] = time.perf_counter() - tic
        return result
