"""Helpers shared by the benchmark scripts: resumable training runs, result tables, raw environment speed
and steady-state training speed."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rlzoo.config import load_config
from rlzoo.logging.metrics import read_metrics
from rlzoo.runtime.trainer import train


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
    rows = read_metrics(Path(run_dir))
    end = rows[-1]
    start = next((r for r in rows if r["time"] >= warmup_fraction * end["time"]), rows[0])
    if end["time"] <= start["time"]:
        return end["env_steps"] / max(end["time"], 1e-9)
    return (end["env_steps"] - start["env_steps"]) / (end["time"] - start["time"])


def run_once(run_dir: Path, overrides: list[str], steps: int) -> dict[str, Any]:
    """Train unless `run_dir` already holds a finished run of `steps` steps; returns its summary."""
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary["env_steps"] >= steps and summary["stopped_by"] == "done":
            print(f"  {run_dir.name}: done earlier ({summary['env_steps']:,} steps)", flush=True)
            return summary
    start = time.monotonic()
    summary = train(load_config([*overrides, f"total_steps={steps}", "resume=auto"]), run_dir)
    if summary["stopped_by"] != "done":  # a signal stops the whole benchmark, not just this run
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
