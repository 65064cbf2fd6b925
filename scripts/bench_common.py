"""Helpers shared by the benchmark scripts: raw environment speed and steady-state training speed."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rlzoo.logging.metrics import read_metrics


def steps_per_second(step: Callable[[], None], seconds: float) -> float:
    """Call `step` (one environment step) in batches of 100 for `seconds`; the rate it ran at."""
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            step()
        steps += 100
    return steps / (time.perf_counter() - start)


def raw_env_steps_per_second(env_cfg: Any, seconds: float = 10.0, seed: int = 0) -> float:
    """One process, one environment, random actions: the ceiling training is measured against."""
    from rlzoo.envs import env_spec, make_vec_env

    env = make_vec_env(env_cfg, 1, seed=seed)
    rng = np.random.default_rng(seed)
    n = env_spec(env_cfg).num_actions
    env.reset()
    try:
        return steps_per_second(lambda: env.step(rng.integers(n, size=1)), seconds)
    finally:
        env.close()


def stock_env_steps_per_second(name: str, seconds: float = 10.0, seed: int = 0) -> float:
    """The same loop on the task exactly as NLE/MiniHack register it (gymnasium.make, default
    observation keys): the raw speed a user of the plain environment sees."""
    import gymnasium
    import minihack  # noqa: F401  (registers MiniHack-*)
    import nle  # noqa: F401  (registers NetHack*)

    env = gymnasium.make(name)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            env.reset()

    try:
        return steps_per_second(step, seconds)
    finally:
        env.close()


def steady_state_steps_per_second(run_dir: Path, warmup_fraction: float = 0.2) -> float:
    """Training steps/s from a run's metric log, leaving out start-up (the first part of the run)."""
    rows = [row for row in read_metrics(Path(run_dir)) if "steps_per_second" in row]  # not evaluation rows
    end = rows[-1]
    start = next((r for r in rows if r["time"] >= warmup_fraction * end["time"]), rows[0])
    if end["time"] <= start["time"]:
        return end["env_steps"] / max(end["time"], 1e-9)
    return (end["env_steps"] - start["env_steps"]) / (end["time"] - start["time"])
