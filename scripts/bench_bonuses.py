"""Exploration-bonus benchmark: reward-free coverage, sparse-reward success, and cost.

    python scripts/bench_bonuses.py [--part exploration|sparse|cost|all] [--out bench_results/bonuses]
                                    [--scale 1.0] [--seeds 3] [--methods none,e3b,...] [--set key=value ...]

1. exploration: intrinsic-only training (the environment's reward is set to 0) for 500k steps on
   MiniHack-Labyrinth-Small-v0, `--seeds` seeds, then distinct agent positions visited per episode by
   the trained policy. The papers' finding: episodic bonuses (E3B, counts) cover far more of each new level than
   global ones (RND) alone.
2. sparse: MiniHack-MultiRoom-N2-v0 and MiniHack-Corridor-R2-v0, 2M steps, `--seeds` seeds; success
   rate per method with the interquartile mean over all runs and a stratified-bootstrap 95% CI, under
   the success rate of uniformly random actions on each task (the level a method has to beat).
3. cost: the same short run per method, `--repeats` rounds alternating the methods; median learner
   seconds per batch and steady-state steps/s relative to `bonus=none` measured in the same
   invocation. Bar: E3B and RND keep >= 75% of the no-bonus steps/s.

Every run lives in its own directory under --out and is skipped when finished (an interrupted run
resumes from its checkpoint), so rerunning the same command continues the benchmark. SIGTERM (what
Slurm sends before a time limit) checkpoints the current run and ends the benchmark. `--scale`
multiplies every step budget (e.g. 0.01 for a smoke run). Each part writes <part>.md and <part>.csv.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import run_once, steady_state_steps_per_second, write_table

from rlzoo.bonuses import runnable_bonus_options
from rlzoo.config import load_config
from rlzoo.envs import make_vec_env
from rlzoo.logging.metrics import read_metrics
from rlzoo.reports.statistics import iqm_interval
from rlzoo.runtime.evaluation import load_policy, play_episodes, policy_actor, random_actor

METHODS = runnable_bonus_options()  # every bonus that needs nothing beyond its config, `none` first
EXPLORATION_TASK = "MiniHack-Labyrinth-Small-v0"
EXPLORATION_STEPS = 500_000
SPARSE_TASKS = ["MiniHack-MultiRoom-N2-v0", "MiniHack-Corridor-R2-v0"]
SPARSE_STEPS = 2_000_000
RANDOM_EPISODES = 300
COST_STEPS = 20_000
COST_BAR = 0.75
# The environment pays nothing: the agent is driven by the intrinsic reward alone.
REWARD_FREE = ["+env.env_kwargs.reward_win=0.0", "+env.env_kwargs.reward_lose=0.0",
               "+env.env_kwargs.penalty_step=0.0", "+env.env_kwargs.penalty_time=0.0", "bonus.extrinsic_coef=0.0"]


def is_episodic(option: str) -> bool:
    """Whether the bonus keeps per-episode state at its heart: E3B, episodic counts, or a global × episodic product."""
    cfg = load_config([f"bonus={option}"]).bonus
    return cfg.name in ("e3b", "global_episodic") or (cfg.name == "counts" and cfg.scope == "episodic")


class DistinctPositions:
    """Observer adding `positions` to each episode: the distinct (x, y, depth) agent positions it visited."""

    def __init__(self, num_envs: int) -> None:
        self.visited: list[set] = [set() for _ in range(num_envs)]

    def observe(self, obs: dict[str, np.ndarray], first: np.ndarray) -> None:
        for i, visited in enumerate(self.visited):
            visited.add(tuple(obs["blstats"][i, [0, 1, 12]].tolist()))

    def end(self, env_index: int) -> dict[str, float]:
        count, self.visited[env_index] = len(self.visited[env_index]), set()
        return {"positions": count}


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


def exploration(out: Path, methods: list[str], scale: float, seeds: int, extra: list[str]) -> str:
    steps = max(1, int(EXPLORATION_STEPS * scale))
    rows = []
    for method in methods:
        per_seed = []
        for seed in range(1, seeds + 1):
            run_dir = out / "runs" / "exploration" / method / f"s{seed}"
            run_once(run_dir, [f"env.name={EXPLORATION_TASK}", f"bonus={method}", f"seed={seed}", *REWARD_FREE, *extra],
                     steps)
            per_seed.append(np.array(positions_per_episode(run_dir, episodes=32, seed=0)))
        means = [float(c.mean()) for c in per_seed]
        coverage = np.concatenate(per_seed)
        rows.append([method, "episodic" if is_episodic(method) else "global/none", steps, float(coverage.mean()),
                     float(np.std(means)), " ".join(f"{m:.1f}" for m in means), int(coverage.max())])
        print(f"{method}: {coverage.mean():.1f} distinct positions per episode", flush=True)
    print(write_table(out, "exploration", ["method", "kind", "steps", "positions_mean", "std_over_seeds",
                                           "per_seed", "positions_max"], rows), flush=True)
    by_kind = {kind: [r[3] for r in rows if r[1] == kind] for kind in ("episodic", "global/none")}
    if all(by_kind.values()):
        return (f"exploration: episodic bonuses {np.mean(by_kind['episodic']):.1f} vs global/none "
                f"{np.mean(by_kind['global/none']):.1f} positions per episode")
    return "exploration: done"


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


def random_action_success(task: str, episodes: int, seed: int = 0) -> float:
    """Success rate of uniformly random actions over `episodes` episodes of one environment (with
    several, the short episodes would finish first and be over-counted)."""
    env = make_vec_env({"family": "minihack", "name": task}, 1, seed=seed)
    try:
        played = play_episodes(env, random_actor(env.spec.num_actions, 1, seed), episodes)
    finally:
        env.close()
    return float(np.mean([e["success"] for e in played]))


def sparse(out: Path, methods: list[str], scale: float, seeds: int, extra: list[str]) -> str:
    steps = max(1, int(SPARSE_STEPS * scale))
    rows = [["random actions", task, 0, random_action_success(task, RANDOM_EPISODES), "", "", "", ""]
            for task in SPARSE_TASKS]
    best = ("", -1.0)
    for method in methods:
        per_task = []
        for task in SPARSE_TASKS:
            rates = []
            for seed in range(1, seeds + 1):
                run_dir = out / "runs" / "sparse" / task / method / f"s{seed}"
                run_once(run_dir, [f"env.name={task}", f"bonus={method}", f"seed={seed}", *extra], steps)
                rates.append(success_rate(run_dir))
            per_task.append(np.array(rates))
            rows.append([method, task, steps, float(np.mean(rates)), " ".join(f"{r:.2f}" for r in rates), "", "", ""])
        iqm, low, high = iqm_interval(np.stack(per_task, axis=1))  # [seeds, tasks]
        rows.append([method, "all (IQM)", steps, iqm, "", iqm, low, high])
        best = max(best, (method, iqm), key=lambda b: b[1])
        # Rewritten after every method, so a benchmark stopped part-way still shows what it finished.
        table = write_table(out, "sparse", ["method", "task", "steps", "success", "per_seed", "iqm", "ci_low",
                                            "ci_high"], rows)
    print(table, flush=True)
    return f"sparse: best IQM success {best[1]:.2f} ({best[0]})"


def cost(out: Path, methods: list[str], scale: float, repeats: int, extra: list[str]) -> str:
    steps = max(1, int(COST_STEPS * scale))
    stamp = time.strftime("%Y%m%d-%H%M%S")  # fresh runs each time: speeds must come from one invocation
    samples: dict[str, list[tuple[float, float]]] = {m: [] for m in ["none", *[m for m in methods if m != "none"]]}
    # Rounds alternate the methods so that a change in machine load hits all of them alike.
    for round_ in range(repeats):
        for method in samples:
            run_dir = out / "runs" / "cost" / stamp / f"{method}-r{round_}"
            run_once(run_dir, [f"env.name={SPARSE_TASKS[0]}", f"bonus={method}", "logger.log_interval_s=1", *extra],
                     steps)
            update_s = [row["learner/update_s"] for row in read_metrics(run_dir) if "learner/update_s" in row]
            samples[method].append((float(np.median(update_s)), steady_state_steps_per_second(run_dir)))
    measured = {m: tuple(np.median(np.array(v), axis=0)) for m, v in samples.items()}
    base_update, base_sps = measured["none"]
    rows, verdicts = [], []
    for method, (update_s, sps) in measured.items():
        relative = sps / base_sps
        bar = "" if method not in ("e3b", "rnd") else ("PASS" if relative >= COST_BAR else "FAIL")
        if bar:
            verdicts.append(f"{method} {relative:.0%} {bar}")
        rows.append([method, update_s, update_s / base_update, sps, relative, bar])
    print(write_table(out, "cost", ["method", "learner_s_per_batch", "learner_time_vs_none", "steps_per_s",
                                    "steps_per_s_vs_none", f"bar_{COST_BAR:.0%}"], rows), flush=True)
    return "cost: " + ", ".join(verdicts) if verdicts else "cost: done"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["exploration", "sparse", "cost", "all"], default="all")
    parser.add_argument("--out", type=Path, default=Path("bench_results/bonuses"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every step budget")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="cost rounds per method")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="extra config overrides for every run, e.g. runtime=serial")
    args = parser.parse_args()
    methods = args.methods.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    parts = ["exploration", "sparse", "cost"] if args.part == "all" else [args.part]
    summaries = []
    for part in parts:
        print(f"== {part} ==", flush=True)
        if part == "exploration":
            summaries.append(exploration(args.out, methods, args.scale, args.seeds, args.overrides))
        elif part == "sparse":
            summaries.append(sparse(args.out, methods, args.scale, args.seeds, args.overrides))
        else:
            summaries.append(cost(args.out, methods, args.scale, args.repeats, args.overrides))
    print("summary: " + "; ".join(summaries) + f" (tables in {args.out})", flush=True)


if __name__ == "__main__":
    main()
