"""Learning benchmark: does the default setup learn, on this machine, within the step budgets?

    python scripts/bench_learning.py [--only room|coinrun] [--room-steps 500000] [--coinrun-steps 2000000]

1. MiniHack-Room-5x5-v0 (the default experiment): bar = mean episode return >= 0.9 within 500k steps.
2. Procgen coinrun, easy, 200 levels: bar = beats the random policy's return within 2M steps.
Each part prints the figures it reached; the last line summarises both.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from rlzoo.config import load_config
from rlzoo.envs import env_spec, make_vec_env
from rlzoo.logging.metrics import read_metrics
from rlzoo.runtime.evaluation import episode_quota, play_episodes, random_actor
from rlzoo.runtime.trainer import train


def first_step_reaching(run_dir: Path, key: str, threshold: float) -> int | None:
    return next((row["env_steps"] for row in read_metrics(run_dir) if row.get(key, -np.inf) >= threshold), None)


def random_policy_return(env_cfg, episodes: int = 200, seed: int = 0, num_envs: int = 16) -> float:
    """Mean return of uniformly random actions over `episodes` episodes, an equal share per environment."""
    env = make_vec_env(env_cfg, num_envs, seed=seed)
    try:
        played = play_episodes(env, random_actor(env_spec(env_cfg).num_actions, num_envs, seed),
                               episode_quota(episodes, num_envs))
    finally:
        env.close()
    return float(np.mean([e["return"] for e in played]))


def room(steps: int) -> str:
    cfg = load_config([f"total_steps={steps}"])
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(cfg, Path(tmp))
        reached = first_step_reaching(Path(tmp), "episode/return", 0.9)
    final = summary["mean_return_last_100"]
    ok = final is not None and final >= 0.9
    print(f"Room-5x5: mean return of the last 100 episodes {final:.3f} after {summary['env_steps']:,} steps; "
          f"a logged window first reached 0.9 at {reached if reached is not None else 'never'} "
          f"({summary['steps_per_second']:,.0f} steps/s) -> {'PASS' if ok else 'FAIL'}")
    return f"room5x5 {'PASS' if ok else 'FAIL'} ({final:.3f})"


def coinrun(steps: int) -> str:
    cfg = load_config(["experiment=procgen_coinrun", f"total_steps={steps}"])
    baseline = random_policy_return(cfg.env)
    print(f"coinrun: random policy mean return {baseline:.2f} (200 episodes on the training levels)")
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(cfg, Path(tmp))
    final = summary["mean_return_last_100"]
    ok = final is not None and final > baseline
    print(f"coinrun: trained mean return {final:.2f} after {summary['env_steps']:,} steps vs random "
          f"{baseline:.2f} -> {'PASS' if ok else 'FAIL'}")
    return f"coinrun {'PASS' if ok else 'FAIL'} ({final:.2f} vs random {baseline:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["room", "coinrun"])
    parser.add_argument("--room-steps", type=int, default=500_000)
    parser.add_argument("--coinrun-steps", type=int, default=2_000_000)
    args = parser.parse_args()
    results = []
    if args.only in (None, "room"):
        results.append(room(args.room_steps))
    if args.only in (None, "coinrun"):
        results.append(coinrun(args.coinrun_steps))
    print("learning: " + "; ".join(results))


if __name__ == "__main__":
    main()
