#!/usr/bin/env python
"""Benchmark: the whole offline Motif pipeline on NetHackScore with the score-gain annotator.

1. collect random-policy pairs, 2. label them by in-game score gain, 3. train the reward model and
report its accuracy on held-out non-tie pairs, 4. train an agent on the Motif reward alone
(extrinsic_coef=0) and compare its mean in-game score with a random policy's over the same number
of episodes. Every step resumes if the script is rerun with the same --out.

    python scripts/motif_pipeline.py --out motif_bench --pairs 40000 --rl-steps 200000

`--oni` instead measures the learner's steps/s on NetHackScore without a bonus and with bonus=oni
(each variant, annotator in a thread, labels from the loopback judge server), and the annotator's
backlog and labels/s.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rlzoo.config import load_config
from rlzoo.envs import make_vec_env
from rlzoo.evaluate import load_policy, run_episodes
from rlzoo.motif.cli import compose, run_annotate, run_collect, run_train_reward
from rlzoo.motif.loopback_judge import LoopbackJudge
from rlzoo.runtime.trainer import train

ENV = "NetHackScore-v0"
# Crop-only network: the full-map conv stack dominates CPU time and the Motif reward is about messages.
MODEL = ["model.use_full_map=false", "model.lstm_size=256", "model.fc_sizes=[256,256]"]
RUNTIME = ["runtime=ray", "runtime.envs_per_actor=16", "runtime.batch_size=32", "runtime.unroll_length=32",
           "logger.progress=true", "logger.wandb=false"]


def random_episodes(episodes: int, seed: int) -> list[dict[str, float]]:
    env_cfg = {"name": ENV}
    env = make_vec_env(env_cfg, 8, seed)
    rng = np.random.default_rng(seed)
    env.reset()
    finished: list[dict[str, float]] = []
    try:
        while len(finished) < episodes:
            _, _, _, eps = env.step(rng.integers(0, env.spec.num_actions, size=env.num_envs))
            finished.extend(eps)
    finally:
        env.close()
    return finished[:episodes]


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def offline(args: argparse.Namespace) -> None:
    out = Path(args.out)
    data = out / "data"
    start = time.monotonic()
    collected = run_collect(compose("collect", [
        f"env.name={ENV}", f"out_dir={data}", f"seed={args.seed}", f"collect.num_pairs={args.pairs}",
        "collect.num_envs=8", "collect.keep_prob=0.05", "collect.pool_size=2000",
    ]))
    labelled = run_annotate(compose("annotate", [f"dataset_dir={data}", "annotator=score_gain",
                                                 "labels_name=score_gain", "keep_replies=false"]))
    model_path = data / "reward_model.pt"
    trained = run_train_reward(compose("train-reward", [
        f"dataset_dir={data}", "labels_name=score_gain", f"out_path={model_path}", f"train.epochs={args.epochs}",
        "train.batch_size=512", "train.lr=0.0003", f"train.seed={args.seed}",
    ]))
    rows = [
        ("pairs collected", str(collected["pairs"])),
        ("labels FIRST/SECOND/TIE", "/".join(str(labelled["counts"].get(k, 0)) for k in ("FIRST", "SECOND", "TIE"))),
        ("held-out non-tie pairs", str(trained["val_non_tie_pairs"])),
        ("reward-model accuracy (held-out, non-tie)", f"{trained['val_accuracy']:.3f}  (chance 0.500, target >= 0.800)"),
    ]
    if args.rl_steps > 0:
        run_dir = out / "motif_agent"
        cfg = load_config([
            f"env.name={ENV}", "experiment=nethack_score", *RUNTIME, *MODEL, "bonus=motif",
            f"bonus.reward_model_path={model_path}", "bonus.extrinsic_coef=0.0", "bonus.coef=1.0",
            f"total_steps={args.rl_steps}", f"seed={args.seed}", f"output_root={out}",
        ])
        summary = train(cfg, run_dir)
        _, model = load_policy(run_dir)
        agent = run_episodes(model, {"name": ENV}, args.eval_episodes, seed=args.seed + 1000, greedy=False)
        rand = random_episodes(args.eval_episodes, seed=args.seed + 1000)
        agent_scores = np.array([e["score"] for e in agent])
        rand_scores = np.array([e["score"] for e in rand])
        agent_score, rand_score = float(agent_scores.mean()), float(rand_scores.mean())
        # Standard errors: with few long NetHack episodes the means are noisy; compare with care.
        agent_se = float(agent_scores.std(ddof=1) / np.sqrt(len(agent_scores)))
        rand_se = float(rand_scores.std(ddof=1) / np.sqrt(len(rand_scores)))
        rows += [
            ("RL steps (Motif reward only)", f"{summary['env_steps']}  ({summary['steps_per_second']:.0f} steps/s)"),
            (f"mean in-game score, Motif agent ({args.eval_episodes} ep.)", f"{agent_score:.1f} ± {agent_se:.1f}"),
            (f"mean in-game score, random policy ({args.eval_episodes} ep.)", f"{rand_score:.1f} ± {rand_se:.1f}"),
            ("Motif agent beats random (means)", str(agent_score > rand_score)),
        ]
    rows.append(("wall time", f"{time.monotonic() - start:.0f} s"))
    print("\nMotif offline pipeline on " + ENV)
    print(table(rows))


def oni(args: argparse.Namespace) -> None:
    out = Path(args.out)
    rows = []
    with LoopbackJudge() as server:
        runs = [("none", ["bonus=none"])] + [
            (f"oni-{variant}", ["bonus=oni", f"bonus.model={variant}", "bonus.annotator=llm",
                                f"bonus.llm.base_url={server.base_url}", "bonus.llm.model=judge",
                                "bonus.llm.api_key_env=null"])
            for variant in ("retrieval", "classification", "ranking")
        ]
        for name, overrides in runs:
            cfg = load_config([f"env.name={ENV}", "experiment=nethack_score", *RUNTIME, *MODEL, *overrides,
                               f"total_steps={args.oni_steps}", f"seed={args.seed}", f"output_root={out}"])
            summary = train(cfg, out / f"oni_speed_{name}")
            metrics = [json.loads(line) for line in (out / f"oni_speed_{name}" / "metrics.jsonl").read_text().splitlines()]
            last = next((m for m in reversed(metrics) if "bonus/oni_backlog" in m), {})
            rates = [m["bonus/oni_labels_per_s"] for m in metrics if "bonus/oni_labels_per_s" in m]
            rows.append((name, f"{summary['steps_per_second']:7.1f} steps/s   backlog {last.get('bonus/oni_backlog', 0):5.0f}   "
                               f"labelled {last.get('bonus/oni_labelled', 0):5.0f}   labels/s {np.mean(rates) if rates else 0:6.1f}"))
    print(f"\nLearner throughput on {ENV}, {args.oni_steps} steps each")
    print(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="motif_bench", help="working directory (datasets, runs); reruns resume")
    parser.add_argument("--pairs", type=int, default=40000, help="pairs to collect")
    parser.add_argument("--epochs", type=int, default=3, help="reward-model epochs")
    parser.add_argument("--rl-steps", type=int, default=200000, help="agent training steps (0 = skip RL)")
    parser.add_argument("--eval-episodes", type=int, default=16, help="episodes for each mean score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--oni", action="store_true", help="measure learner steps/s with and without ONI instead")
    parser.add_argument("--oni-steps", type=int, default=4000, help="steps per run with --oni")
    args = parser.parse_args()
    oni(args) if args.oni else offline(args)


if __name__ == "__main__":
    main()
