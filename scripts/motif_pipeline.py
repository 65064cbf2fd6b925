#!/usr/bin/env python
"""Benchmark: the whole offline Motif pipeline on NetHackScore with the score-gain annotator.

1. collect random-policy pairs, 2. label them by in-game score gain, 3. train the reward model,
report its accuracy on held-out non-tie pairs and the messages it ranks highest and lowest,
4. train an agent on the Motif reward alone (extrinsic_coef=0) for --rl-steps environment steps,
5. play the trained agent and a uniform-random policy for the same --eval-episodes episodes (the
same evaluation environments and seeds, never used in training; NetHackScore's 5000-step cap) and
compare their mean in-game scores: means ± standard errors and a bootstrap interval of the
difference. Every step resumes if the script is rerun with the same --out.

    python scripts/motif_pipeline.py --out motif_bench

`--oni` instead measures the learner's steps/s on NetHackScore without a bonus and with bonus=oni
(each variant, annotator in a thread, labels from the loopback judge server), and the annotator's
backlog and labels/s.
"""
from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from rlzoo.bonuses.motif import read_threshold_and_exponent
from rlzoo.config import load_config
from rlzoo.envs import make_vec_env
from rlzoo.motif.benchmark import EpisodeMotifReturn, GoldAndExperience, rank_messages
from rlzoo.motif.cli import compose, run_annotate, run_collect, run_train_reward
from rlzoo.motif.dataset import PairDataset
from rlzoo.motif.loopback_judge import LoopbackJudge
from rlzoo.motif.reward_model import MotifReward
from rlzoo.logging.metrics import read_metrics
from rlzoo.reports.statistics import compare_means, mean_and_se, wilson_interval
from rlzoo.runtime.evaluation import load_policy, play_episodes, policy_actor, random_actor
from rlzoo.runtime.trainer import train

ENV = "NetHackScore-v0"
# Crop-only network: the full-map conv stack dominates CPU time and the Motif reward is about messages.
MODEL = ["model.use_full_map=false", "model.lstm_size=256", "model.fc_sizes=[256,256]"]
RUNTIME = ["runtime=ray", "runtime.envs_per_actor=16", "runtime.batch_size=32", "runtime.unroll_length=32",
           "logger.progress=true", "logger.wandb=false"]
# The agent's episodes last about 1,400 steps and mostly end in starvation (it can eat only food whose
# inventory letter is a movement key). At γ = 0.99 it sees ~100 steps ahead; its episodes shorten and
# its score falls to the random policy's during training. γ = 0.999 values the whole episode.
AGENT = ["algo.discount=0.999"]
EVAL_ENVS = 8  # environments each evaluated policy plays; every one plays the same number of episodes


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def accuracy_text(accuracy: float, pairs: int) -> str:
    if pairs == 0:
        return "no held-out pair has a preferred side (collect more pairs)"
    low, high = wilson_interval(round(accuracy * pairs), pairs)
    return f"{accuracy:.3f}  95% CI [{low:.3f}, {high:.3f}] over {pairs} pairs  (chance 0.500, target >= 0.800)"


def reward_model_rows(dataset_dir: Path, reward: MotifReward, level: float | None, epsilon: float | None,
                      shown: int = 5) -> list[tuple[str, str]]:
    """What the reward model learned: ε, how much of the data passes it, the highest and lowest messages."""
    ranked = rank_messages(PairDataset.open(dataset_dir), reward)
    passing = sum(m.occurrences for m in ranked if epsilon is None or m.z > epsilon)
    share = f"{passing / sum(m.occurrences for m in ranked):.1%} of message occurrences have z > ε"
    threshold = "none" if epsilon is None else f"{epsilon:.3f} (quantile {level} of z over unique messages)"
    rows = [("threshold ε", f"{threshold}; {len(ranked)} unique messages, {share}")]
    for label, part in (("highest z", ranked[:shown]), ("lowest z", ranked[-shown:])):
        rows += [(f"{label} {i + 1}", f"z {m.z:6.2f}  mean score gain {m.mean_score_gain:5.1f}  n {m.occurrences:5d}  "
                                      f"{m.text[:60]!r}") for i, m in enumerate(part)]
    return rows


def evaluate(policy: str, episodes: int, seed: int, model_path: str, epsilon: float | None,
             beta: float) -> list[dict[str, float]]:
    """`episodes` NetHackScore episodes of `policy` ("random" or a run directory), its actions sampled."""
    torch.set_num_threads(1)  # the two policies are evaluated side by side, one core each
    reward = MotifReward.load(model_path)
    env = make_vec_env({"name": ENV}, EVAL_ENVS, seed)
    try:
        act = (random_actor(env.spec.num_actions, EVAL_ENVS, seed) if policy == "random"
               else policy_actor(load_policy(Path(policy))[1], EVAL_ENVS, seed))
        return play_episodes(env, act, episodes // EVAL_ENVS,
                             [GoldAndExperience(EVAL_ENVS), EpisodeMotifReturn(reward, epsilon, beta, EVAL_ENVS)])
    finally:
        env.close()


def evaluate_both(run_dir: Path, args: argparse.Namespace, model_path: Path, epsilon: float | None,
                  beta: float) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """The agent's and the random policy's episodes, played in two processes at once."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        agent, rand = (pool.submit(evaluate, policy, args.eval_episodes, args.eval_seed, str(model_path), epsilon, beta)
                       for policy in (str(run_dir), "random"))
        return agent.result(), rand.result()


def comparison_rows(agent: list[dict[str, float]], rand: list[dict[str, float]]) -> list[tuple[str, str]]:
    def values(episodes: list[dict[str, float]], key: str) -> np.ndarray:
        return np.array([e[key] for e in episodes], dtype=np.float64)

    score = compare_means(values(agent, "score"), values(rand, "score"))
    if score.ci_low > 0:
        verdict = "yes: the whole 95% interval of the difference lies above 0"
    elif score.ci_high < 0:
        verdict = "no: the random policy scores higher (the whole interval lies below 0)"
    else:
        verdict = "no: the 95% interval of the difference contains 0"
    rows = [
        ("in-game score, Motif agent", f"{score.mean_a:6.1f} ± {score.se_a:4.1f} (SE)   median {np.median(values(agent, 'score')):5.1f}"),
        ("in-game score, random policy", f"{score.mean_b:6.1f} ± {score.se_b:4.1f} (SE)   median {np.median(values(rand, 'score')):5.1f}"),
        ("score difference, agent − random", f"{score.diff:+6.1f}   95% bootstrap CI [{score.ci_low:+.1f}, {score.ci_high:+.1f}]"),
    ]
    # Where the score comes from: experience (about 4 per point, from kills), gold, 50 per level below the first.
    for key, label, digits in (("motif_return", "Motif reward (r_int) per episode", 1),
                               ("experience", "experience points", 1), ("gold", "gold", 1),
                               ("depth", "deepest dungeon level", 2), ("length", "episode length (steps)", 0)):
        (a, a_se), (b, b_se) = mean_and_se(values(agent, key)), mean_and_se(values(rand, key))
        rows.append((f"{label}, agent / random", f"{a:.{digits}f} ± {a_se:.{digits}f}  /  {b:.{digits}f} ± {b_se:.{digits}f}"))
    rows.append(("Motif agent beats random", verdict))
    return rows


def build_reward_model(data: Path, model_path: Path, pairs: int, epochs: int, seed: int, labels_name: str,
                       annotate: list[str], keep_trained: bool = False) -> tuple[dict, dict, dict]:
    """Motif's offline steps on NetHackScore: collect `pairs` random-policy pairs into `data`, label them
    (`annotate`: the annotator's overrides) into <labels_name>.jsonl, train the reward model into
    `model_path`. Collection and labelling resume where they stopped; with `keep_trained` a model
    already at `model_path` is kept (its training summary is then empty). Returns the three summaries."""
    collected = run_collect(compose("collect", [
        f"env.name={ENV}", f"out_dir={data}", f"seed={seed}", f"collect.num_pairs={pairs}",
        "collect.num_envs=8", "collect.keep_prob=0.05", "collect.pool_size=2000",
    ]))
    labelled = run_annotate(compose("annotate", [f"dataset_dir={data}", f"labels_name={labels_name}",
                                                 "keep_replies=false", *annotate]))
    trained: dict = {}
    if not (keep_trained and model_path.exists()):
        trained = run_train_reward(compose("train-reward", [
            f"dataset_dir={data}", f"labels_name={labels_name}", f"out_path={model_path}", f"train.epochs={epochs}",
            "train.batch_size=512", "train.lr=0.0003", f"train.seed={seed}",
        ]))
    return collected, labelled, trained


def offline(args: argparse.Namespace) -> None:
    out = Path(args.out)
    data = out / "data"
    start = time.monotonic()
    model_path = data / "reward_model.pt"
    collected, labelled, trained = build_reward_model(data, model_path, args.pairs, args.epochs, args.seed,
                                                      "score_gain", ["annotator=score_gain"])
    # Motif reward alone: no extrinsic reward reaches the agent. coef 1: a kill's or gold pickup's
    # z of about 20 is clipped to 1 (algo.reward_clip) with the paper's 0.1 as well.
    cfg = load_config([
        f"env.name={ENV}", "experiment=nethack_score", *RUNTIME, *MODEL, *AGENT, "bonus=motif",
        f"bonus.reward_model_path={model_path}", "bonus.extrinsic_coef=0.0", "bonus.coef=1.0",
        f"total_steps={args.rl_steps}", f"seed={args.seed}", f"output_root={out}", *args.overrides,
    ])
    reward = MotifReward.load(model_path)
    level, beta = read_threshold_and_exponent(cfg.bonus)
    epsilon = None if level is None else reward.quantile(level)
    rows = [
        ("pairs collected (random policy)", str(collected["pairs"])),
        ("labels FIRST/SECOND/TIE", "/".join(str(labelled["counts"].get(k, 0)) for k in ("FIRST", "SECOND", "TIE"))),
        ("held-out non-tie pairs", str(trained["val_non_tie_pairs"])),
        ("reward-model accuracy (held-out, non-tie)", accuracy_text(trained["val_accuracy"], trained["val_non_tie_pairs"])),
        *reward_model_rows(data, reward, level, epsilon),
    ]
    if args.rl_steps > 0:
        run_dir = out / "motif_agent"
        summary = train(cfg, run_dir)
        agent, rand = evaluate_both(run_dir, args, model_path, epsilon, beta)
        rows += [
            ("RL on Motif reward only", f"{summary['env_steps']} env steps, {summary['steps_per_second']:.0f} steps/s, "
                                        f"{summary['wall_time_s']:.0f} s"),
            ("comparison", f"the agent after {summary['env_steps']} training steps vs a uniform-random policy, "
                           f"both playing the same {len(agent)} episodes"),
            ("evaluation episodes", f"{len(agent) // EVAL_ENVS} on each of {EVAL_ENVS} environments seeded {args.eval_seed} "
                                    "(not used in training), capped at 5000 steps, actions sampled"),
            *comparison_rows(agent, rand),
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
            metrics = read_metrics(out / f"oni_speed_{name}")
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
    parser.add_argument("--rl-steps", type=int, default=3000000, help="agent training steps (0 = skip RL)")
    parser.add_argument("--eval-episodes", type=int, default=1536,
                        help=f"episodes each policy plays in the evaluation (a multiple of {EVAL_ENVS})")
    parser.add_argument("--seed", type=int, default=0, help="collection, reward-model and agent training seed")
    parser.add_argument("--eval-seed", type=int, default=12345, help="evaluation environments' seed")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="extra rlzoo-train overrides for the Motif agent, e.g. algo.discount=0.99")
    parser.add_argument("--oni", action="store_true", help="measure learner steps/s with and without ONI instead")
    parser.add_argument("--oni-steps", type=int, default=4000, help="steps per run with --oni")
    args = parser.parse_args()
    if args.eval_episodes < EVAL_ENVS or args.eval_episodes % EVAL_ENVS:
        parser.error(f"--eval-episodes must be a positive multiple of {EVAL_ENVS}")
    oni(args) if args.oni else offline(args)


if __name__ == "__main__":
    main()
