"""Learning from NetHack data: behavioural cloning of a teacher's recorded games, and kickstarting.

    python scripts/bench_nld.py [--part clone|kickstart|all] [--out bench_results/nld] [--scale 1.0]
                                [--seeds 3] [--set key=value ...]

Task: MiniHack-Room-Random-5x5-v0 with a 10-step limit (random start and stairs; random actions
reach the stairs in about a fifth of the episodes, a policy that walks there in nearly all).

1. teacher: IMPALA with the symbolic crop network, TEACHER_STEPS steps.
2. dataset: the teacher plays RECORD_EPISODES episodes with its most likely actions (as
   `rlzoo-evaluate --greedy`: demonstrations without the sampling noise) while NLE records their
   ttyrecs; nle.dataset indexes them (rlzoo.nld.build_dataset).
3. clone: `algo=bc` with a small feed-forward terminal network (model=tty, env.observation=tty;
   the task needs no memory, and without an LSTM the clone learns in fewer steps) on that dataset,
   CLONE_STEPS dataset steps. Teacher and clone (each acting greedily and sampling) and random
   actions then play EVAL_EPISODES episodes each, an equal quota per environment, on the same seeds
   (rlzoo.runtime.evaluation). Bar: the clone's return >= 80% of the teacher's, both acting as the
   teacher did when recorded (greedily).
4. kickstarting: students with the teacher's network trained from scratch and kickstarted from the
   teacher (`algo.kickstart.teacher`, λ 1 → 0 linearly over the first half), `--seeds` seeds each,
   STUDENT_STEPS steps. Steps to the teacher's level: the first env step at which the mean return of
   the last LEVEL_WINDOW training episodes reaches LEVEL_FRACTION × the teacher's evaluated return
   when sampling, as the students do in training (a run that never does counts as its budget). IQM and stratified-bootstrap 95% CIs over seeds
   (rlzoo.reports.statistics). Bar: kickstarting's IQM below training from scratch's.

Every run lives in its own directory under --out and is skipped when finished (an interrupted run
resumes from its checkpoint), the dataset and the evaluations are kept, so rerunning the same
command continues the benchmark. `--scale` multiplies every step budget and episode count (e.g.
0.02 for a smoke run). Writes clone.md/.csv and kickstart.md/.csv; the last line is the verdict.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from bench_common import run_once, write_table

from rlzoo.config import load_config
from rlzoo.envs import env_spec, make_vec_env
from rlzoo.logging.metrics import read_metrics
from rlzoo.nld import build_dataset
from rlzoo.nld.dataset import INDEX_FILE
from rlzoo.reports.statistics import iqm_interval
from rlzoo.runtime.evaluation import episode_quota, load_policy, play_episodes, policy_actor, random_actor

TASK = ["env.name=MiniHack-Room-Random-5x5-v0", "env.max_episode_steps=10"]
# One process, one learner thread, 16 envs and batches of 16 × 32 steps: on a small shared machine this
# learns the task in the fewest steps and seconds (two learner threads contend with the envs).
# Progress lines would interleave with the benchmark's own; metrics every 2 s give the success curve.
RUNTIME = ["runtime=serial", "runtime.learner_threads=1", "logger.progress=false", "logger.log_interval_s=2"]
TEACHER_STEPS = 150_000
RECORD_EPISODES = 1_000
CLONE_STEPS = 40_000
STUDENT_STEPS = 100_000
EVAL_EPISODES = 400
EVAL_ENVS = 8
EVAL_SEED = 54_321  # other levels than training's
CLONE_BAR = 0.8
LEVEL_FRACTION = 0.9
LEVEL_WINDOW = 200
# The clone's terminal network: small enough for CPUs, enough for a 5x5 room.
CLONE_MODEL = ["model=tty", "env.observation=tty", "model.char_embedding_dim=16", "model.color_embedding_dim=4",
               "model.text_channels=16", "model.message_out_dim=32", "model.status_out_dim=32",
               "model.crop_channels=[16,16]", "model.screen_channels=[8,16,16]", "model.fc_sizes=[128]",
               "model.lstm_size=0"]
CLONE_RUN = ["algo=bc", "runtime.batch_size=16", "runtime.envs_per_actor=16", "runtime.unroll_length=32",
             "algo.lr=2e-3"]



def cached(path: Path, compute: Any) -> Any:
    """`compute()`'s JSON result, kept in `path` so that a rerun does not repeat it."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")
    return value


@torch.no_grad()
def play(env_cfg: Any, act_for: Any, episodes: int, seed: int, **env_kwargs: Any) -> list[dict[str, float]]:
    """`episodes` episodes, an equal quota from each of EVAL_ENVS environments."""
    num_envs = min(EVAL_ENVS, episodes)
    env = make_vec_env({**env_cfg, **env_kwargs}, num_envs, seed=seed)
    try:
        return play_episodes(env, act_for(num_envs), episode_quota(episodes, num_envs))
    finally:
        env.close()


def evaluate_policy(run_dir: Path, episodes: int, greedy: bool) -> dict[str, float]:
    cfg, model = load_policy(run_dir)
    played = play(OmegaConf.to_container(cfg.env, resolve=True),
                  lambda n: policy_actor(model, n, EVAL_SEED, greedy), episodes, EVAL_SEED)
    return summarize(played)


def evaluate_random(env_overrides: list[str], episodes: int) -> dict[str, float]:
    env_cfg = OmegaConf.to_container(load_config(env_overrides).env, resolve=True)
    played = play(env_cfg, lambda n: random_actor(env_spec(env_cfg).num_actions, n, EVAL_SEED), episodes, EVAL_SEED)
    return summarize(played)


def summarize(episodes: list[dict[str, float]]) -> dict[str, float]:
    returns = np.array([e["return"] for e in episodes])
    return {"episodes": len(episodes), "return": float(returns.mean()),
            "return_se": float(returns.std(ddof=1) / np.sqrt(len(returns))),
            "success": float(np.mean([e.get("success", np.nan) for e in episodes]))}


def record_dataset(teacher_dir: Path, ttyrec_dir: Path, episodes: int) -> dict[str, Any]:
    """The teacher plays `episodes` episodes (greedily) with NLE recording every one; the index is built."""
    if (ttyrec_dir / INDEX_FILE).exists():
        dataset_info = json.loads((ttyrec_dir / "dataset.json").read_text())
        print(f"  dataset: done earlier ({dataset_info['games']} games)", flush=True)
        return dataset_info
    start = time.monotonic()
    cfg, model = load_policy(teacher_dir)
    played = play(OmegaConf.to_container(cfg.env, resolve=True), lambda n: policy_actor(model, n, 7, greedy=True),
                  episodes, 7,
                  save_ttyrec_every=1, ttyrec_dir=str(ttyrec_dir))
    dataset = build_dataset(ttyrec_dir)
    info = {"games": dataset.num_games, "teacher_return": summarize(played)["return"],
            "agent_steps": int(sum(e["length"] for e in played)), "seconds": round(time.monotonic() - start, 1)}
    (ttyrec_dir / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"  dataset: {info['games']} games, {info['agent_steps']:,} agent steps, recorded and indexed in "
          f"{info['seconds']:.0f}s", flush=True)
    return info



def evaluate(out: Path, policy: str, run_dir: Path, mode: str, scale: float) -> dict[str, float]:
    """`policy`'s evaluation acting greedily or sampling (`mode`), computed once per --out."""
    episodes = max(EVAL_ENVS, int(EVAL_EPISODES * scale))
    return cached(out / "eval" / f"{policy}_{mode}.json", lambda: evaluate_policy(run_dir, episodes, mode == "greedy"))


def teacher_part(out: Path, scale: float, extra: list[str]) -> Path:
    teacher_dir = out / "runs" / "teacher"
    print("== teacher ==", flush=True)
    run_once(teacher_dir, [*TASK, *RUNTIME, "seed=1", *extra], max(1, int(TEACHER_STEPS * scale)))
    return teacher_dir


def clone_part(out: Path, teacher_dir: Path, scale: float, extra: list[str]) -> tuple[str, bool]:
    print("== dataset ==", flush=True)
    ttyrec_dir = out / "dataset" / "ttyrecs"
    info = record_dataset(teacher_dir, ttyrec_dir, max(4 * EVAL_ENVS, int(RECORD_EPISODES * scale)))
    print("== clone ==", flush=True)
    clone_dir = out / "runs" / "clone"
    clone_steps = max(512, int(CLONE_STEPS * scale))
    clone_run = run_once(clone_dir, [*TASK, *RUNTIME, *CLONE_MODEL, *CLONE_RUN, f"algo.dataset={ttyrec_dir}", "seed=1",
                                     *extra], clone_steps)
    last = read_metrics(clone_dir)[-1]
    print("== evaluation ==", flush=True)
    results = {(policy, mode): evaluate(out, policy, run_dir, mode, scale)
               for policy, run_dir in (("teacher", teacher_dir), ("clone", clone_dir))
               for mode in ("greedy", "sampled")}
    episodes = max(EVAL_ENVS, int(EVAL_EPISODES * scale))
    rand = cached(out / "eval" / "random.json", lambda: evaluate_random(TASK, episodes))
    training = {"teacher": f"IMPALA, crop network, {TEACHER_STEPS * scale:,.0f} steps",
                "clone": f"algo=bc, tty network, {clone_run['env_steps']:,} dataset steps (final bc/loss "
                         f"{last['bc/loss']:.3f}, bc/accuracy {last['bc/accuracy']:.3f})"}
    rows = []
    for (policy, mode), result in results.items():
        teacher = results["teacher", mode]
        rows.append([policy, mode, training[policy], result["episodes"], result["return"], result["return_se"],
                     result["success"], result["return"] / teacher["return"],
                     (result["return"] - rand["return"]) / (teacher["return"] - rand["return"])])
    rows.append(["random actions", "", "", rand["episodes"], rand["return"], rand["return_se"], rand["success"],
                 "", 0.0])
    print(write_table(out, "clone", ["policy", "actions", "training", "episodes", "return", "return_se", "success",
                                     "return_vs_teacher", "(return-random)/(teacher-random)"], rows), flush=True)
    print(f"dataset: {info['games']} games of the greedy teacher ({info['agent_steps']:,} agent steps, return "
          f"{info['teacher_return']:.3f})", flush=True)
    ratio = results["clone", "greedy"]["return"] / results["teacher", "greedy"]["return"]
    ok = ratio >= CLONE_BAR
    verdict = f"clone {ratio:.0%} of the teacher's return (bar {CLONE_BAR:.0%}: {'PASS' if ok else 'FAIL'})"
    return verdict, ok


def windowed_returns(run_dir: Path, window: int = LEVEL_WINDOW) -> list[tuple[int, float]]:
    """(env step, mean return of about the last `window` training episodes) at every metric row
    once that many episodes ended (each row holds the mean over the episodes since the previous)."""
    recent: deque[tuple[int, float]] = deque()
    count, previous, curve = 0, 0, []
    for row in read_metrics(run_dir):
        ended, previous = row["episodes"] - previous, row["episodes"]
        if "episode/return" not in row or ended <= 0:
            continue
        recent.append((ended, row["episode/return"]))
        count += ended
        while count - recent[0][0] >= window:
            count -= recent.popleft()[0]
        if count >= window:
            curve.append((int(row["env_steps"]), sum(n * r for n, r in recent) / count))
    return curve


def steps_to_level(run_dir: Path, level: float) -> int | None:
    """First env step at which the windowed training return reaches `level`."""
    return next((step for step, value in windowed_returns(run_dir) if value >= level), None)


def kickstart_part(out: Path, teacher_dir: Path, scale: float, seeds: int, extra: list[str]) -> tuple[str, bool]:
    teacher_return = evaluate(out, "teacher", teacher_dir, "sampled", scale)["return"]
    steps = max(1, int(STUDENT_STEPS * scale))
    level = LEVEL_FRACTION * teacher_return
    methods = {
        "from scratch": [],
        "kickstarted": [f"algo.kickstart.teacher={teacher_dir}", "algo.kickstart.schedule=linear",
                        f"algo.kickstart.decay_steps={max(1, steps // 2)}"],
    }
    reached: dict[str, list[int | None]] = {}
    final: dict[str, list[float]] = {}
    print(f"== kickstarting: steps to the teacher's level ({LEVEL_FRACTION:.0%} of {teacher_return:.3f} = {level:.3f}) ==",
          flush=True)
    for seed in range(1, seeds + 1):  # seeds outermost: a load change hits both methods alike
        for method, overrides in methods.items():
            run_dir = out / "runs" / "students" / method.replace(" ", "_") / f"s{seed}"
            summary = run_once(run_dir, [*TASK, *RUNTIME, f"seed={seed + 100}", *overrides, *extra], steps)
            budget = summary["env_steps"]  # whole batches: a little over `steps`
            reached.setdefault(method, []).append(steps_to_level(run_dir, level))
            curve = windowed_returns(run_dir)  # empty when fewer than a window of episodes ended (tiny --scale)
            final.setdefault(method, []).append(curve[-1][1] if curve else float("nan"))
    rows, iqms = [], {}
    for method, per_seed in reached.items():
        censored = np.array([budget if s is None else s for s in per_seed], dtype=np.float64)
        iqm, low, high = iqm_interval(censored[:, None])
        iqms[method] = iqm
        rows.append([method, budget, " ".join(f">{budget:,}" if s is None else f"{s:,}" for s in per_seed),
                     sum(s is not None for s in per_seed), round(iqm), round(low), round(high),
                     " ".join(f"{r:.2f}" for r in final[method])])
    print(write_table(out, "kickstart", ["method", "budget", "steps_per_seed", "seeds_reaching", "iqm_steps",
                                         "ci_low", "ci_high", f"final_return_last_{LEVEL_WINDOW}"], rows), flush=True)
    ok = iqms["kickstarted"] < iqms["from scratch"]
    return (f"kickstarting reaches the teacher's level in {iqms['kickstarted']:,.0f} steps (IQM) vs "
            f"{iqms['from scratch']:,.0f} from scratch ({'PASS' if ok else 'FAIL'})"), ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["clone", "kickstart", "all"], default="all",
                        help="both parts need the teacher, trained first")
    parser.add_argument("--out", type=Path, default=Path("bench_results/nld"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every step budget and episode count")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="extra config overrides for every run, e.g. runtime.num_actors=4")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    teacher_dir = teacher_part(args.out, args.scale, args.overrides)
    verdicts = []
    if args.part in ("clone", "all"):
        verdicts.append(clone_part(args.out, teacher_dir, args.scale, args.overrides))
    if args.part in ("kickstart", "all"):
        verdicts.append(kickstart_part(args.out, teacher_dir, args.scale, args.seeds, args.overrides))
    print(f"nld: {'; '.join(v for v, _ in verdicts)}; {time.monotonic() - start:,.0f}s this invocation "
          f"(tables in {args.out})", flush=True)
    if not all(ok for _, ok in verdicts):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
