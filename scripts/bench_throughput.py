"""Raw environment speed vs end-to-end training speed, measured in one run on this machine.

    python scripts/bench_throughput.py MiniHack-Room-5x5-v0 [--seconds 60] [overrides ...]
    python scripts/bench_throughput.py MiniHack-Room-5x5-v0 --eval-interval 100000 --rounds 3

Two ceilings, both one process stepping one environment with random actions: rlzoo's environment
wrapper (which asks NLE only for the observations rlzoo uses) and, for NetHack/MiniHack, the task as
registered by NLE/MiniHack with its default observations. Last line:
`ratio training/raw = R (training X steps/s, raw Y steps/s); training/stock = S (stock Z steps/s)`.

With --eval-interval N it instead measures training with and without evaluation every N env steps
(eval.interval_steps), alternating the two settings for --rounds rounds (the order flips every round,
so drift in the machine's load hits both alike); last line:
`with/without evaluation = R (range a-b over rounds; with X steps/s, without Y steps/s)`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (  # noqa: E402
    raw_env_steps_per_second,
    steady_state_steps_per_second,
    stock_env_steps_per_second,
)

from rlzoo.config import load_config  # noqa: E402
from rlzoo.logging.metrics import read_metrics  # noqa: E402
from rlzoo.runtime.trainer import train  # noqa: E402

PRESETS = {"procgen": "experiment=procgen_coinrun", "nethack": "experiment=nethack_score"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env", help="environment name, e.g. MiniHack-Room-5x5-v0, NetHackScore-v0, coinrun")
    parser.add_argument("--seconds", type=float, default=60.0, help="training wall time")
    parser.add_argument("--raw-seconds", type=float, default=10.0)
    parser.add_argument("--eval-interval", type=int, default=0,
                        help="compare training with and without evaluation every this many env steps")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the evaluation comparison")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the training run")
    args = parser.parse_intermixed_args()

    family = "procgen" if args.env[0].islower() else ("nethack" if args.env.startswith("NetHack") else "minihack")
    overrides = [f"env={family}", f"env.name={args.env}", f"model={family}", "total_steps=1000000000",
                 f"time_limit_s={args.seconds}", "logger.progress=false", "logger.log_interval_s=2",
                 *args.overrides]
    cfg = load_config(overrides)
    if args.eval_interval:
        compare_evaluation(overrides, args.eval_interval, args.rounds)
        return

    print(f"measuring raw {args.env} speed for {args.raw_seconds:.0f} s (1 process, random actions) …")
    raw = raw_env_steps_per_second(cfg.env, args.raw_seconds)
    print(f"raw: {raw:,.0f} steps/s")
    stock = None
    if family != "procgen":
        stock = stock_env_steps_per_second(args.env, args.raw_seconds)
        print(f"stock {args.env} (gymnasium.make, default observations): {stock:,.0f} steps/s")
    print(f"training for {args.seconds:.0f} s with runtime={cfg.runtime.name}, "
          f"{cfg.runtime.num_actors} actors × {cfg.runtime.envs_per_actor} envs, batch {cfg.runtime.batch_size} …")
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(cfg, Path(tmp))
        trained = steady_state_steps_per_second(Path(tmp))
    print(f"training: {trained:,.0f} steps/s steady state ({summary['env_steps']:,} steps in "
          f"{summary['wall_time_s']:.0f} s, {summary['learner_steps']} learner steps)")
    line = f"ratio training/raw = {trained / raw:.2f} (training {trained:,.0f} steps/s, raw {raw:,.0f} steps/s)"
    if stock is not None:
        line += f"; training/stock = {trained / stock:.2f} (stock {stock:,.0f} steps/s)"
    print(line)


def measure(overrides: list[str]) -> tuple[float, int]:
    """Steady-state training steps/s of one run, and how many evaluations it logged."""
    with tempfile.TemporaryDirectory() as tmp:
        train(load_config(overrides), Path(tmp))
        evaluations = sum("eval/env_steps" in row for row in read_metrics(Path(tmp)))
        return steady_state_steps_per_second(Path(tmp)), evaluations


def compare_evaluation(overrides: list[str], interval: int, rounds: int) -> None:
    cfg = load_config(overrides)
    settings = {"without": overrides, "with": [*overrides, f"eval.interval_steps={interval}"]}
    print(f"training for {cfg.time_limit_s:.0f} s per run with runtime={cfg.runtime.name}, {cfg.runtime.num_actors} "
          f"actors × {cfg.runtime.envs_per_actor} envs, batch {cfg.runtime.batch_size}; with evaluation: every "
          f"{interval:,} env steps, {cfg.eval.episodes} episodes on {cfg.eval.num_envs} envs, "
          f"{cfg.eval.num_cpus} CPU(s) of {cfg.runtime.num_actors + cfg.runtime.learners + cfg.eval.num_cpus}")
    results: dict[str, list[float]] = {"without": [], "with": []}
    for r in range(rounds):
        order = ["without", "with"] if r % 2 == 0 else ["with", "without"]
        for label in order:
            sps, evaluations = measure(settings[label])
            results[label].append(sps)
            print(f"round {r + 1}/{rounds}, {label} evaluation: {sps:,.0f} steps/s ({evaluations} evaluations)",
                  flush=True)
    ratios = [w / wo for w, wo in zip(results["with"], results["without"])]
    for label, values in results.items():
        print(f"{label} evaluation: mean {sum(values) / len(values):,.0f} steps/s, range "
              f"{min(values):,.0f}-{max(values):,.0f}")
    mean = {k: sum(v) / len(v) for k, v in results.items()}
    print(f"with/without evaluation = {mean['with'] / mean['without']:.2f} (range {min(ratios):.2f}-{max(ratios):.2f} "
          f"over rounds; with {mean['with']:,.0f} steps/s, without {mean['without']:,.0f} steps/s)")


if __name__ == "__main__":
    main()
