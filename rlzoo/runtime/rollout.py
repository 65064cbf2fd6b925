"""Rollout workers: step a vector of environments with batched inference and return unrolls.

The same class runs inside a Ray actor (`ray_runtime.py`) and in the serial runtime.
Unroll layout: rlzoo/unroll.py.
"""
from __future__ import annotations

import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from omegaconf import DictConfig

from rlzoo.algos.objective import needs_behaviour_values
from rlzoo.bonuses import needs_intrinsic_value_head
from rlzoo.envs import EnvSpec, env_spec, make_vec_env
from rlzoo.models import build_model
from rlzoo.models.precision import resolve_precision
from rlzoo.unroll import Unroll


@dataclass
class RolloutResult:
    """One rollout: the unroll, the episodes that ended during it, timings and environment restarts."""

    unroll: Unroll
    episodes: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: actor/env_s, actor/inference_s, ...
    env_restarts: int = 0  # environments rebuilt during this rollout after a crash or hang


class RolloutWorker:
    def __init__(self, cfg: DictConfig, actor_id: int, spec: EnvSpec | None = None) -> None:
        self.actor_id = actor_id
        self.num_envs = cfg.runtime.envs_per_actor
        self.unroll_length = cfg.runtime.unroll_length
        self.spec = spec or env_spec(cfg.env)
        self.env_ids = np.arange(actor_id * self.num_envs, (actor_id + 1) * self.num_envs, dtype=np.int64)

        two_heads = needs_intrinsic_value_head(cfg.bonus)
        self.model = build_model(cfg.model, self.spec, intrinsic_value_head=two_heads)
        # V(obs[t]) of the behaviour policy, recorded only when the learner reads it (APPO, UCB-DrAC).
        self.value_heads = ((("baseline", "int_baseline") if two_heads else ("baseline",))
                            if needs_behaviour_values(cfg.algo) else ())
        # Inference at small batches is bound by reading the weights; a bf16 copy halves that.
        self.model.to(resolve_precision(cfg.runtime.precision, torch.device("cpu"))).eval()
        self.policy_version = -1
        # Action sampling has its own generator so a serial run is reproducible from cfg.seed.
        self.generator = torch.Generator().manual_seed(cfg.seed * 100_003 + actor_id)

        self.env_cfg = cfg.env
        self.seed = cfg.seed
        self.step_timeout_s = float(cfg.runtime.env_step_timeout_s)
        self.env_restarts = 0
        self.env = self._make_env()
        self.obs = self.env.reset()
        self.first = np.ones(self.num_envs, dtype=bool)
        self.core_state = self.model.initial_state(self.num_envs)
        self.unroll_index = 0

    def _make_env(self):
        # A rebuilt vector env gets fresh seeds, or it would replay the episodes that crashed.
        seed = self.seed + 1_000_003 * self.env_restarts
        return make_vec_env(self.env_cfg, self.num_envs, seed=seed, env_id_offset=int(self.env_ids[0]))

    def _step_env(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, list[dict[str, float]]]:
        """env.step, but a crash or a hang rebuilds environments instead of ending the run.

        NetHack/MiniHack vector envs replace a failed environment on its own (`ListVecEnv`); a failure
        of the vector env as a whole (Procgen's native one, or outside a single environment's step)
        rebuilds all of them. The transition that failed is recorded as the end of the episodes it
        cut (reward 0), so the unroll stays consistent: the recurrent state and episodic bonuses
        restart with the new episodes.
        """
        try:
            with _time_limit(self.step_timeout_s):
                before = getattr(self.env, "restarts", 0)
                result = self.env.step(actions)
                self.env_restarts += getattr(self.env, "restarts", 0) - before  # rebuilt one by one
                return result
        except Exception as err:  # noqa: BLE001 - any environment failure is survivable
            warnings.warn(f"actor {self.actor_id}: environment step failed ({type(err).__name__}: {err}); "
                          "rebuilding its environments", stacklevel=2)
            try:
                self.env.close()
            except Exception:  # noqa: BLE001 - a broken env may not close cleanly; it is dropped anyway
                pass
            self.env_restarts += 1
            self.env = self._make_env()
            obs = self.env.reset()
            return obs, np.zeros(self.num_envs, np.float32), np.ones(self.num_envs, bool), []

    def set_weights(self, weights: Mapping[str, Any], version: int) -> None:
        """Load the learner's weights (numpy arrays or tensors) unless this version is already loaded."""
        if version != self.policy_version:
            with warnings.catch_warnings():
                # Arrays from Ray's object store are read-only; load_state_dict only copies from them.
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                self.model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
            self.policy_version = version

    def rollout(self) -> RolloutResult:
        """Step every environment `unroll_length` times."""
        u = Unroll.allocate(self.spec.obs_space, self.unroll_length, self.num_envs, self.spec.num_actions,
                            self.value_heads)
        u.core_state = tuple(s.float().numpy().copy() for s in self.core_state)
        episodes: list[dict[str, float]] = []
        restarts_before = self.env_restarts
        env_time = infer_time = 0.0
        state = self.core_state
        for t in range(self.unroll_length + 1):
            for k, v in self.obs.items():
                u.obs[k][t] = v
            u.first[t] = self.first
            if t == self.unroll_length and not self.value_heads:
                break  # obs[T] only bootstraps; it is also obs[0] of the next unroll

            tic = time.perf_counter()
            if t == self.unroll_length:  # the learner may recompute V(obs[T]) from this state
                u.bootstrap_state = tuple(s.float().numpy().copy() for s in state)
            out, next_state = self.model.step({k: v[t] for k, v in u.obs.items()}, u.first[t], state)
            for key in self.value_heads:
                u.values[key][t] = out[key].numpy()
            if t == self.unroll_length:
                # obs[T]'s value bootstraps GAE; obs[T] is also obs[0] of the next unroll, which
                # starts again from the state before it.
                infer_time += time.perf_counter() - tic
                break
            state = next_state
            u.logits[t] = out["logits"].numpy()
            u.actions[t] = self.model.sample(out["logits"], self.generator).numpy()
            toc = time.perf_counter()

            self.obs, reward, done, finished = self._step_env(u.actions[t])
            u.rewards[t] = reward
            u.dones[t] = done
            self.first = done.copy()  # the env reuses its arrays
            episodes.extend(finished)
            env_time += time.perf_counter() - toc
            infer_time += toc - tic

        self.core_state = state
        u.env_ids[:] = self.env_ids
        u.unroll_index[:] = self.unroll_index
        u.policy_version[:] = self.policy_version
        u.actor_ids[:] = self.actor_id
        self.unroll_index += 1
        return RolloutResult(u, episodes, {"actor/env_s": env_time, "actor/inference_s": infer_time},
                             self.env_restarts - restarts_before)

    def close(self) -> None:
        self.env.close()


class EnvStepTimeout(TimeoutError):
    """An environment step took longer than runtime.env_step_timeout_s."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise EnvStepTimeout if the block runs longer than `seconds` (main thread only; 0 = no limit).

    A hang inside C code that never returns to Python is caught one level up instead: the Ray
    runtime restarts an actor whose rollout exceeds runtime.rollout_timeout_s.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(_signum: int, _frame: Any) -> None:
        raise EnvStepTimeout(f"environment step exceeded runtime.env_step_timeout_s={seconds}")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
