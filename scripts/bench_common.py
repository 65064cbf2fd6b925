"""Helpers shared by the benchmark scripts: raw environment speed and steady-state training speed; training
runs that resume where they stopped; success rates, coverage and random-policy baselines; result tables."""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from rlzoo.config import load_config
from rlzoo.envs import make_vec_env
from rlzoo.logging.metrics import read_metrics
from rlzoo.models.precision import NATIVE_BF16_CPU_FLAGS, cpu_flags
from rlzoo.runtime.evaluation import DistinctPositions, load_policy, play_episodes, policy_actor, random_actor
from rlzoo.runtime.trainer import train


def cpu_description() -> str:
    """CPU model, core count and the bf16 flags that decide what runtime.precision=auto picks."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.partition(":")[2].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    flags = cpu_flags()
    bf16 = [flag for flag in NATIVE_BF16_CPU_FLAGS if flag in flags]
    simd = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "no AVX2"
    return (f"{model}, {os.cpu_count()} CPUs, {simd}, "
            f"{' '.join(bf16) + ' (native bf16)' if bf16 else 'no AVX512-BF16/AMX (bf16 emulated)'}")


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


def run_once(run_dir: Path, overrides: list[str], steps: int) -> dict[str, Any]:
    """Train unless `run_dir` already holds a finished run of `steps` steps; returns its summary.

    An unfinished run resumes from its checkpoint. A stop signal (SIGTERM: Slurm's time limit) makes
    the run checkpoint and ends the whole benchmark instead of starting the next run.
    """
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary["env_steps"] >= steps and summary["stopped_by"] == "done":
            print(f"  {run_dir.name}: done earlier ({summary['env_steps']:,} steps)", flush=True)
            return summary
    start = time.monotonic()
    summary = train(load_config([*overrides, f"total_steps={steps}", "resume=auto"]), run_dir)
    if summary["stopped_by"] != "done":
        raise SystemExit(f"  {run_dir.name}: stopped by {summary['stopped_by']} at {summary['env_steps']:,} steps "
                         "after a checkpoint; rerun the same command to resume")
    print(f"  {run_dir.name}: {summary['env_steps']:,} steps in {time.monotonic() - start:,.0f}s "
          f"({summary['steps_per_second']:,.0f} steps/s)", flush=True)
    return summary


def write_table(out: Path, part: str, header: list[str], rows: list[list[Any]]) -> str:
    """Write <part>.csv and <part>.md under `out`; returns the Markdown table."""
    with (out / f"{part}.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    (out / f"{part}.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def success_rate(run_dir: Path, last_episodes: int = 100) -> float:
    """Success rate over about the last `last_episodes` episodes (each metric row holds the mean over
    the episodes that ended since the previous row)."""
    weighted, counted, previous = [], [], 0
    for row in read_metrics(run_dir):
        ended, previous = row["episodes"] - previous, row["episodes"]
        if "episode/success" in row and ended > 0:
            weighted.append(row["episode/success"] * ended)
            counted.append(ended)
    total, n = 0.0, 0
    for value, ended in zip(reversed(weighted), reversed(counted)):
        if n >= last_episodes:
            break
        total, n = total + value, n + ended
    return total / n if n else float("nan")


def random_action_episodes(env_cfg: Mapping[str, Any], episodes: int, seed: int = 0) -> list[dict[str, float]]:
    """`episodes` episodes of uniformly random actions in one environment (with several, the short
    episodes would finish first and be over-counted)."""
    env = make_vec_env(env_cfg, 1, seed=seed)
    try:
        return play_episodes(env, random_actor(env.spec.num_actions, 1, seed), episodes)
    finally:
        env.close()


def random_action_success(env_cfg: Mapping[str, Any], episodes: int, seed: int = 0) -> float:
    """Success rate of uniformly random actions over `episodes` episodes of one environment."""
    return float(np.mean([e["success"] for e in random_action_episodes(env_cfg, episodes, seed)]))


@torch.no_grad()
def positions_per_episode(run_dir: Path, episodes: int, seed: int) -> list[int]:
    """Distinct agent positions in each of `episodes` episodes of the trained policy, an equal share
    from each of 8 environments on levels the run has not trained on."""
    cfg, model = load_policy(run_dir)
    num_envs = min(8, episodes)
    env = make_vec_env(cfg.env, num_envs, seed=seed + 10_000)
    try:
        played = play_episodes(env, policy_actor(model, num_envs, seed), episodes // num_envs,
                               [DistinctPositions(num_envs)])
    finally:
        env.close()
    return [int(e["positions"]) for e in played]
