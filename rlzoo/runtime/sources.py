"""Where unrolls come from: rollout workers in this process, or Ray actors.

Both expose `next_unrolls()` (at least one finished unroll) and `publish(weights, version)`.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.envs import EnvSpec
from rlzoo.runtime.rollout import RolloutWorker

RolloutResult = tuple[dict[str, Any], list[dict[str, float]], dict[str, float]]


class SerialSource:
    """Rollout workers stepped one after another in the learner's process (runtime=serial)."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec) -> None:
        self.workers = [RolloutWorker(cfg, i, spec) for i in range(cfg.runtime.num_actors)]
        self._next = 0

    def publish(self, weights: dict[str, torch.Tensor], version: int) -> None:
        for w in self.workers:
            w.set_weights(weights, version)

    def next_unrolls(self) -> list[RolloutResult]:
        worker = self.workers[self._next]
        self._next = (self._next + 1) % len(self.workers)
        return [worker.rollout()]

    def close(self) -> None:
        for w in self.workers:
            w.close()


class RaySource:
    """One Ray actor per rollout worker, each with `inflight_per_actor` rollout calls queued.

    Weights travel as one `ray.put` per broadcast; every rollout call carries the newest ref and the
    actor loads it only when the version changed.
    """

    def __init__(self, cfg: DictConfig, spec: EnvSpec) -> None:
        import ray

        self.ray = ray
        actor_cls = ray.remote(num_cpus=1)(RolloutActor)
        plain_cfg = OmegaConf.to_container(cfg, resolve=True)
        self.actors = [actor_cls.remote(plain_cfg, i) for i in range(cfg.runtime.num_actors)]
        self.inflight = cfg.runtime.inflight_per_actor
        self.weights_ref = None
        self.version = -1
        self.pending: dict[Any, Any] = {}

    def publish(self, weights: dict[str, torch.Tensor], version: int) -> None:
        # numpy arrays travel through the object store without copies; torch tensors would be pickled.
        self.weights_ref = self.ray.put({k: v.numpy() for k, v in weights.items()})
        self.version = version
        if not self.pending:
            for actor in self.actors:
                for _ in range(self.inflight):
                    self._submit(actor)

    def _submit(self, actor: Any) -> None:
        self.pending[actor.rollout.remote(self.weights_ref, self.version)] = actor

    def next_unrolls(self) -> list[RolloutResult]:
        self.ray.wait(list(self.pending), num_returns=1)  # block until one unroll is done …
        ready, _ = self.ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)  # … take all done
        results = []
        for ref in ready:
            actor = self.pending.pop(ref)
            results.append(self.ray.get(ref))
            self._submit(actor)
        return results

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


class RolloutActor:
    """The body of a Ray rollout actor (decorated with ray.remote by RaySource)."""

    def __init__(self, cfg: dict[str, Any], actor_id: int) -> None:
        torch.set_num_threads(1)  # one CPU per actor: more threads only contend
        self.worker = RolloutWorker(OmegaConf.create(cfg), actor_id)

    def rollout(self, weights: dict[str, np.ndarray], version: int) -> RolloutResult:
        if version != self.worker.policy_version:
            # Arrays from the object store are read-only; copy before handing them to torch.
            self.worker.set_weights({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, version)
        tic = time.perf_counter()
        unroll, episodes, timings = self.worker.rollout()
        timings["actor/rollout_s"] = time.perf_counter() - tic
        return unroll, episodes, timings
