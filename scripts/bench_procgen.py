"""Procgen generalisation benchmark: train on 200 easy levels, test on levels never trained on.

    python scripts/bench_procgen.py [--out bench_results/procgen] [--scale 1.0] [--seeds 3]
                                    [--games coinrun,maze] [--methods impala,appo,appo_ucb_drac]
                                    [--episodes 100] [--set key=value ...]

Methods: `impala` (experiment=procgen_coinrun), `appo` (experiment=procgen_appo: the PPO settings of
the Procgen paper and DrAC) and `appo_ucb_drac` (the same plus UCB-DrAC). Every run trains for 2M env
steps (× --scale) on levels 0–199 of the easy distribution, then its policy plays --episodes episodes
on the training levels and as many on the full level distribution (env.eval_env_cfg: the test
levels), an equal quota per environment (rlzoo.runtime.evaluation). Per method and game: the train
and test returns over seeds and the generalisation gap (train − test); per method over all runs: the
interquartile mean of the returns normalised by the Procgen paper's easy-mode ranges, with a
stratified-bootstrap 95% CI (rlzoo.reports.statistics). Reference numbers are printed beside:
openai/train-procgen's PPO result files at the same step count, and DrAC's published figures, each
marked verified or unverified.

Budget: 2M steps per run, the step count of the reference files. On a 2-core CPU the IMPALA-CNN
learner is the bottleneck: a run takes hours (docs/performance.md gives the rates), the default
18 runs days; a GPU learner (runtime.device=cuda) or fewer games, methods and seeds cut that. Every run lives in its own directory under --out and is
skipped when finished (an interrupted run resumes from its checkpoint; evaluations are kept in the
run directory), so rerunning the same command continues the benchmark. SIGTERM checkpoints the
current run and ends the benchmark. `--scale` multiplies every step budget (0.01 for a smoke run).
Writes runs.md/.csv (one row per run) and procgen.md/.csv (the summary).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench_common import run_once, write_table

from rlzoo.envs import eval_env_cfg, make_vec_env
from rlzoo.reports.statistics import iqm_interval
from rlzoo.runtime.evaluation import episode_quota, load_policy, play_episodes, policy_actor

STEPS = 2_000_000
METHODS = {
    "impala": ["experiment=procgen_coinrun"],
    "appo": ["experiment=procgen_appo"],
    "appo_ucb_drac": ["experiment=procgen_appo", "algo.drac.augmentation=ucb"],
}
EVAL_ENVS = 10
# Procgen paper, easy mode (R_min, R_max): openai/train-procgen, train_procgen/constants.py.
EASY_RANGES = {"coinrun": (5.0, 10.0), "maze": (5.0, 10.0), "bigfish": (1.0, 40.0)}
# (source, env steps, train, test, status). train-procgen: mean over its three easy-200 runs of the
# `eprewmean` column (mean of the last 100 episodes) in train_procgen/results/easy-200-run{0,1,2};
# "test" there is a worker on the full level distribution.
REFERENCES: dict[str, list[tuple[str, int, float | None, float | None, str]]] = {
    "coinrun": [("train-procgen PPO", 2_000_000, 8.23, 7.67, "verified"),
                ("train-procgen PPO", 25_000_000, 9.37, 8.70, "verified"),
                ("DrAC paper UCB-DrAC", 25_000_000, 9.5, None, "verified"),
                ("DrAC paper UCB-DrAC", 25_000_000, None, 8.5, "unverified"),
                ("DrAC paper PPO", 25_000_000, None, 8.5, "unverified")],
    "maze": [("train-procgen PPO", 2_000_000, 5.40, 5.07, "verified"),
             ("train-procgen PPO", 25_000_000, 9.10, 6.17, "verified"),
             ("DrAC paper UCB-DrAC", 25_000_000, None, 6.3, "unverified"),
             ("DrAC paper PPO", 25_000_000, None, 5.6, "unverified (recalled as 5.5–5.7)")],
    "bigfish": [("train-procgen PPO", 25_000_000, 12.83, 5.19, "verified"),
                ("DrAC paper UCB-DrAC", 25_000_000, 13.2, 9.7, "verified"),
                ("DrAC paper PPO", 25_000_000, None, 4.0, "unverified")],
}


def normalized(game: str, returns: np.ndarray) -> np.ndarray:
    low, high = EASY_RANGES[game]
    return (returns - low) / (high - low)


@torch.no_grad()
def evaluate(run_dir: Path, episodes: int, seed: int = 0) -> dict[str, float]:
    """Mean return on the training levels and on the test levels, `episodes` each, kept in the run
    directory so that a rerun does not play them again."""
    path = run_dir / "procgen_eval.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved["episodes"] == episodes:
            return saved
    cfg, model = load_policy(run_dir)
    result: dict[str, Any] = {"episodes": episodes}
    for split, env_cfg in (("train", cfg.env), ("test", eval_env_cfg(cfg.env))):
        env = make_vec_env(env_cfg, EVAL_ENVS, seed=seed + 50_000)
        try:
            played = play_episodes(env, policy_actor(model, EVAL_ENVS, seed), episode_quota(episodes, EVAL_ENVS))
        finally:
            env.close()
        result[split] = float(np.mean([e["return"] for e in played]))
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def benchmark(out: Path, games: list[str], methods: list[str], seeds: int, scale: float, episodes: int,
              extra: list[str]) -> str:
    steps = max(1, int(STEPS * scale))
    runs: list[list[Any]] = []
    scores: dict[str, dict[str, np.ndarray]] = {}  # method -> split -> [seeds, games]
    for method in methods:
        per_game = {"train": [], "test": []}
        for game in games:
            results = []
            for seed in range(1, seeds + 1):
                run_dir = out / "runs" / game / method / f"s{seed}"
                summary = run_once(run_dir, [*METHODS[method], f"env.name={game}", f"seed={seed}", *extra], steps)
                result = evaluate(run_dir, episodes)
                results.append(result)
                runs.append([method, game, seed, summary["env_steps"], result["train"], result["test"],
                             result["train"] - result["test"]])
                # Rewritten after every run, so a benchmark stopped part-way shows what it finished.
                write_table(out, "runs", ["method", "game", "seed", "steps", "train", "test", "gap"], runs)
            for split in per_game:
                per_game[split].append(normalized(game, np.array([r[split] for r in results])))
        scores[method] = {split: np.stack(v, axis=1) for split, v in per_game.items()}
    table = write_table(out, "procgen", SUMMARY_HEADER, summary_rows(runs, scores, games, methods, steps))
    print(table, flush=True)
    return table


SUMMARY_HEADER = ["method", "game", "steps", "train", "test", "gap", "per_seed_test", "status"]


def summary_rows(runs: list[list[Any]], scores: dict[str, dict[str, np.ndarray]], games: list[str],
                 methods: list[str], steps: int) -> list[list[Any]]:
    """Per method and game: mean train and test return over seeds and the gap; per method over all
    runs: IQM [95% CI] of the normalised returns; then the reference numbers."""
    rows: list[list[Any]] = []
    for method in methods:
        for game in games:
            mine = [r for r in runs if r[0] == method and r[1] == game]
            train, test = np.mean([r[4] for r in mine]), np.mean([r[5] for r in mine])
            rows.append([method, game, steps, float(train), float(test), float(train - test),
                         " ".join(f"{r[5]:.2f}" for r in mine), "rlzoo"])
        cells = []
        for split in ("train", "test"):
            iqm, low, high = iqm_interval(scores[method][split])
            cells.append(f"{iqm:.3f} [{low:.3f}, {high:.3f}]")
        rows.append([method, "all: normalised IQM [95% CI]", steps, cells[0], cells[1], "", "", "rlzoo"])
    for game in games:
        for source, ref_steps, train, test, status in REFERENCES.get(game, []):
            gap = float(train - test) if train is not None and test is not None else ""
            rows.append([source, game, ref_steps, "" if train is None else train, "" if test is None else test, gap,
                         "", status])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_results/procgen"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every step budget")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--games", default="coinrun,maze", help=f"any of {', '.join(EASY_RANGES)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"any of {', '.join(METHODS)}")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per run and level split")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="extra config overrides for every run, e.g. runtime=serial")
    args = parser.parse_args()
    games, methods = args.games.split(","), args.methods.split(",")
    for name, chosen, known in (("--games", games, EASY_RANGES), ("--methods", methods, METHODS)):
        unknown = [x for x in chosen if x not in known]
        if unknown:
            parser.error(f"{name}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    args.out.mkdir(parents=True, exist_ok=True)
    benchmark(args.out, games, methods, args.seeds, args.scale, args.episodes, args.overrides)
    print(f"procgen: tables in {args.out} (runs.md, procgen.md and their CSVs)", flush=True)


if __name__ == "__main__":
    main()
