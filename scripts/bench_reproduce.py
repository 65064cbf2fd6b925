"""Reproduction benchmark: the exploration-bonus papers' findings at small scale (<= 5M environment steps
per run), with the published numbers beside ours.

    python scripts/bench_reproduce.py [--claims 1,2,3,4,5] [--out bench_results/reproduce] [--scale 1.0]
                                      [--seeds 3] [--max-seeds 5] [--set KEY=VALUE ...]

1. sparse navigation (RIDE, Fig. 3a): MiniGrid-MultiRoom-N7-S4, 5M steps, experiment=ride_minigrid.
   IMPALA without a bonus fails; RIDE (episodic count division) solves it. Also RIDE's Count and RND.
2. E3B on MiniHack (E3B paper, navigation tasks): MiniHack-MultiRoom-N4-Locked, 5M steps,
   experiment=e3b_minihack; E3B ahead of RND and of no bonus (at <= 5M only the direction compares).
3. reward-free exploration (RIDE, Fig. 7 bottom row; E3B's reward-free claim): intrinsic reward only on
   procedurally generated MiniGrid-MultiRoom-N10-S6 mazes, 2M steps; distinct positions per episode of
   the trained policy on unseen levels: episodic bonuses (RIDE, episodic counts, E3B) cover more than
   global ones (global counts, RND).
4. global vs episodic (Henaff, Jiang & Raileanu 2023): position counts on MiniGrid-MultiRoom-N7-S4 with
   one fixed layout (much shared across episodes) and a new layout every episode (little shared), 5M
   steps: episodic beats global where little is shared; global × episodic at least as good as the
   better of the two on both.
5. Motif (Klissarov et al. 2023) on NetHackScore, 2M steps: a reward model trained on the spot
   (random-policy pairs labelled by the loopback judge); the agent on the Motif reward alone scores
   above a random policy; Motif + extrinsic at least matches extrinsic-only.

Each claim runs `--seeds` seeds per method and, where two CIs its verdict needs apart overlap (claims
1, 2 and 4), up to `--max-seeds`. Per claim: the paper's number or qualitative outcome (figure cited), ours (IQM over seeds
with a stratified-bootstrap 95% CI, rlzoo.reports.statistics), the test and the verdict (reproduced /
not reproduced), claim<N>.md/.csv, learning curves (claim<N>*/learning_curves.png; claim 3: the coverage
intervals) and the summary reproduction.md/.csv over every claim run so far.

Every run lives in its own directory under --out/runs and is skipped when finished (an interrupted run
resumes from its checkpoint), so rerunning the same command continues the benchmark; SIGTERM
checkpoints the current run and ends the benchmark. `--scale` multiplies every step budget (0.005 for
a smoke run). Full command and wall time: docs/reproduction.md.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd

from bench_common import positions_per_episode, run_once, write_table
from motif_pipeline import AGENT, ENV as MOTIF_ENV, MODEL as MOTIF_MODEL, RUNTIME as MOTIF_RUNTIME
from motif_pipeline import build_reward_model, evaluate as motif_evaluate

from rlzoo.bonuses.motif import read_threshold_and_exponent
from rlzoo.config import load_config
from rlzoo.motif.loopback_judge import LoopbackJudge
from rlzoo.motif.reward_model import MotifReward
from rlzoo.reports.ablation import ReportSpec, final_score, learning_curves
from rlzoo.reports.render import plot_curve_set, plot_intervals
from rlzoo.reports.runs import load_run_dir
from rlzoo.reports.statistics import iqm_interval, mean_and_se

FINAL_FRACTION = 0.1  # a run's final score: the mean over the last 10% of its steps
SOLVED_RETURN = 0.5   # claim 1: "solves" = IQM return >= this (a solved N7-S4 returns ~0.77)
FAILED_RETURN = 0.05  # claim 1: "fails" = IQM return <= this
COVERAGE_EPISODES = 32
MOTIF_EVAL_EPISODES = 64


class Interval(NamedTuple):
    """IQM over seeds and its 95% stratified-bootstrap confidence interval."""

    iqm: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.iqm:.3g} [{self.low:.3g}, {self.high:.3g}]"


def interval(values: list[float] | np.ndarray) -> Interval:
    """IQM of per-seed scores with its stratified-bootstrap 95% CI (one task)."""
    return Interval(*iqm_interval(np.asarray(values, dtype=np.float64).reshape(-1, 1)))


def above(a: Interval, b: Interval) -> bool:
    """a's whole confidence interval lies above b's."""
    return a.low > b.high


def overlapping(a: Interval, b: Interval) -> bool:
    return not (above(a, b) or above(b, a))


# ---- verdicts: pure functions of the measured intervals ------------------------------------------------

def verdict_sparse(ride: Interval, none: Interval) -> tuple[bool, str]:
    """Claim 1: IMPALA fails (IQM <= FAILED_RETURN), RIDE solves (IQM >= SOLVED_RETURN) with its CI above IMPALA's."""
    fails, solves, separated = none.iqm <= FAILED_RETURN, ride.iqm >= SOLVED_RETURN, above(ride, none)
    return fails and solves and separated, (f"IMPALA fails (IQM <= {FAILED_RETURN}): {fails}; RIDE solves "
                                            f"(IQM >= {SOLVED_RETURN}): {solves}; RIDE CI above IMPALA's: {separated}")


def verdict_ahead(best: Interval, others: dict[str, Interval]) -> tuple[bool, str]:
    """Claim 2: the method's CI lies above every other's."""
    checks = {name: above(best, other) for name, other in others.items()}
    return all(checks.values()), "; ".join(f"CI above {name}'s: {ok}" for name, ok in checks.items())


def verdict_coverage(episodic: Interval, global_: Interval) -> tuple[bool, str]:
    """Claim 3: the pooled episodic bonuses' coverage CI lies above the pooled global ones'."""
    separated = above(episodic, global_)
    return separated, f"episodic CI above global CI: {separated}"


def verdict_global_episodic(procgen: dict[str, Interval], singleton: dict[str, Interval]) -> tuple[bool, str]:
    """Claim 4, keys episodic / global / product: where little is shared (a new layout every episode)
    episodic's CI lies above global's; on both tasks the product's CI reaches the better single bonus's IQM."""
    episodic_wins = above(procgen["episodic"], procgen["global"])
    product_ok = {task: scores["product"].high >= max(scores["episodic"].iqm, scores["global"].iqm)
                  for task, scores in (("procedural", procgen), ("singleton", singleton))}
    return episodic_wins and all(product_ok.values()), (
        f"procedural: episodic CI above global: {episodic_wins}; product at least as good as the better one "
        f"(its CI reaches the better IQM): " + ", ".join(f"{t} {ok}" for t, ok in product_ok.items()))


def verdict_motif(motif_only: Interval, random_mean: float, random_se: float, motif_ext: Interval,
                  ext_only: Interval) -> tuple[bool, str]:
    """Claim 5: Motif alone's CI lies above the random policy's (mean ± 1.96 SE); Motif + extrinsic's CI
    reaches the extrinsic-only IQM (not worse)."""
    beats_random = motif_only.low > random_mean + 1.96 * random_se
    matches = motif_ext.high >= ext_only.iqm
    return beats_random and matches, (f"Motif alone CI above random's: {beats_random}; Motif + extrinsic at least "
                                      f"matches extrinsic-only (its CI reaches that IQM): {matches}")


# ---- running -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arm:
    """One method on one task: its config overrides and step budget."""

    task: str
    method: str
    overrides: tuple[str, ...]
    steps: int


@dataclass
class Bench:
    """Where the runs live and how many: the command line's settings, shared by every claim."""

    out: Path
    scale: float
    seeds: int
    max_seeds: int
    extra: list[str] = field(default_factory=list)
    curve_reps: int = 500  # bootstrap resamples per learning-curve band

    def steps(self, full: int) -> int:
        return max(1, int(full * self.scale))

    def run_dir(self, claim: int, arm: Arm, seed: int) -> Path:
        return self.out / "runs" / f"claim{claim}" / arm.task / arm.method / f"s{seed}"

    def train(self, claim: int, arm: Arm, seeds: int) -> list[Path]:
        """Train (or find finished) seeds 1 … `seeds` of `arm`; their run directories."""
        dirs = []
        for seed in range(1, seeds + 1):
            run_dir = self.run_dir(claim, arm, seed)
            # logger.job_type names the arm in the run's config, which groups the learning curves.
            run_once(run_dir, [*arm.overrides, f"seed={seed}", f"logger.job_type={arm.method}", *self.extra],
                     arm.steps)
            dirs.append(run_dir)
        return dirs

    def measure(self, claim: int, arms: list[Arm], score: Callable[[Path], float],
                decisive: list[tuple[Arm, Arm]]) -> dict[Arm, list[float]]:
        """Per-seed scores of every arm: `seeds` seeds, then `max_seeds` where a pair of arms in
        `decisive` (the comparisons the verdict rests on) has overlapping CIs."""
        seeds = self.seeds
        while True:
            scores = {arm: [score(d) for d in self.train(claim, arm, seeds)] for arm in arms}
            if seeds >= self.max_seeds or not any(overlapping(interval(scores[a]), interval(scores[b]))
                                                  for a, b in decisive):
                return scores
            print(f"claim {claim}: the compared CIs overlap with {seeds} seeds; adding seeds up to {self.max_seeds}",
                  flush=True)
            seeds = self.max_seeds

    def curves(self, claim: int, scores: dict[Arm, list[float]], metric: str, out_dir: Path) -> str:
        """Learning curves of the measured runs (IQM over seeds, 95% bootstrap band) grouped by arm; the
        PNG's path."""
        dirs = [self.run_dir(claim, arm, seed) for arm, values in scores.items() for seed in range(1, len(values) + 1)]
        return plot_learning_curves(dirs, metric, out_dir, self.curve_reps)


def final_return(run_dir: Path) -> float:
    return final_score(load_run_dir(run_dir), "episode/return", FINAL_FRACTION)


def plot_learning_curves(run_dirs: list[Path], metric: str, out_dir: Path, curve_reps: int) -> str:
    """Learning curves of runs grouped by their logger.job_type; the PNG's path (or why there is none)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [load_run_dir(d) for d in run_dirs]
    spec = ReportSpec(metric=metric, group_key="logger.job_type", baseline=None, curve_reps=curve_reps)
    try:
        curves = learning_curves(runs, spec, sorted({str(r.get("env.name")) for r in runs}))
    except (KeyError, ValueError) as err:  # a run too short to have finished an episode
        return f"(no curve: {err})"
    return str(next(p for p in plot_curve_set(curves, spec, out_dir) if p.suffix == ".png"))


@dataclass
class ClaimResult:
    claim: int
    title: str
    task: str
    paper: str
    ours: str
    test: str
    reproduced: bool
    figures: list[str]

    def row(self) -> list[str]:
        return [str(self.claim), self.title, self.task, self.paper, self.ours, self.test,
                "reproduced" if self.reproduced else "not reproduced", " ".join(self.figures)]


SUMMARY_HEADER = ["claim", "finding", "task", "paper", "ours (IQM [95% CI] over seeds)", "test", "verdict", "figures"]
ARM_HEADER = ["task", "method", "paper", "steps", "seeds", "ours: IQM", "CI low", "CI high", "per seed"]


def intervals_by_method(scores: dict[Arm, list[float]]) -> dict[str, Interval]:
    return {arm.method: interval(values) for arm, values in scores.items()}


def arm_rows(scores: dict[Arm, list[float]], intervals: dict[str, Interval], paper: dict[str, str]) -> list[list]:
    rows = []
    for arm, values in scores.items():
        iv = intervals[arm.method]
        rows.append([arm.task, arm.method, paper.get(arm.method, ""), arm.steps, len(values), iv.iqm, iv.low, iv.high,
                     " ".join(f"{v:.3g}" for v in values)])
    return rows


# ---- claims ------------------------------------------------------------------------------------------

# Read from the RIDE paper's Fig. 3a (the figure ships in its repository as figures/ride_results.png):
# average return on MultiRoom-N7-S4 at 5M frames, 40 actors.
CLAIM1_PAPER = {"none": "0 (0 until 30M)", "ride": "~0.77 (rises 3.5-5M)", "counts": "~0.6-0.77 (rises 4.5-6M)",
                "rnd": "0 (rises ~6.5M)"}


def claim1(bench: Bench) -> ClaimResult:
    task, steps = "MiniGrid-MultiRoom-N7-S4-v0", bench.steps(5_000_000)
    base = ("experiment=ride_minigrid", f"env.name={task}")
    arms = {
        "none": Arm("N7-S4", "none", (*base, "bonus=none"), steps),
        "ride": Arm("N7-S4", "ride", base, steps),
        # RIDE's Count: global 1/√N of the whole grid, unnormalised.
        "counts": Arm("N7-S4", "counts", (*base, "bonus=counts_global", "bonus.state_key=full", "bonus.normalize=none",
                                          "bonus.coef=0.005"), steps),
        # RIDE's RND: L2 error between its embedding network (target, fixed) and a trained copy.
        "rnd": Arm("N7-S4", "rnd", (*base, "bonus=rnd_minihack", "bonus.coef=0.1"), steps),
    }
    scores = bench.measure(1, list(arms.values()), final_return, [(arms["ride"], arms["none"])])
    by_method = intervals_by_method(scores)
    ok, test = verdict_sparse(by_method["ride"], by_method["none"])
    print(write_table(bench.out, "claim1", ARM_HEADER, arm_rows(scores, by_method, CLAIM1_PAPER)), flush=True)
    figure = bench.curves(1, scores, "episode/return", bench.out / "claim1")
    return ClaimResult(1, "IMPALA fails, an episodic bonus (RIDE) solves a sparse procedurally generated maze",
                       f"{task}, {steps:,} steps", "RIDE Fig. 3a at 5M frames: RIDE ~0.77, Count ~0.6-0.77, RND 0, "
                       "IMPALA 0 (0 at 30M)",
                       f"RIDE {by_method['ride']}; Count {by_method['counts']}; RND {by_method['rnd']}; "
                       f"IMPALA {by_method['none']}", test, ok, [figure])


def claim2(bench: Bench) -> ClaimResult:
    task, steps = "MiniHack-MultiRoom-N4-Locked-v0", bench.steps(5_000_000)
    base = ("experiment=e3b_minihack", f"env.name={task}")
    arms = {
        # The reference's IMPALA baseline decayed its lr; its bonus runs did not.
        "none": Arm("N4-Locked", "none", (*base, "bonus=none", "algo.lr_decay=linear"), steps),
        "e3b": Arm("N4-Locked", "e3b", (*base, "bonus=e3b"), steps),
        "rnd": Arm("N4-Locked", "rnd", (*base, "bonus=rnd_minihack"), steps),
    }
    scores = bench.measure(2, list(arms.values()), final_return,
                           [(arms["e3b"], arms["none"]), (arms["e3b"], arms["rnd"])])
    by_method = intervals_by_method(scores)
    ok, test = verdict_ahead(by_method["e3b"], {"IMPALA": by_method["none"], "RND": by_method["rnd"]})
    paper = {"e3b": "ahead (50M budget)", "rnd": "behind E3B", "none": "behind E3B"}
    print(write_table(bench.out, "claim2", ARM_HEADER, arm_rows(scores, by_method, paper)), flush=True)
    figure = bench.curves(2, scores, "episode/return", bench.out / "claim2")
    return ClaimResult(2, "E3B ahead of RND and of no bonus on a procedurally generated sparse MiniHack task",
                       f"{task}, {steps:,} steps", "E3B paper (NeurIPS 2022), MiniHack navigation results at 50M: E3B "
                       "ahead of RND and IMPALA; at <= 5M only the direction compares (values unverified)",
                       f"E3B {by_method['e3b']}; RND {by_method['rnd']}; IMPALA {by_method['none']}", test, ok, [figure])


CLAIM3_KINDS = {"ride": "episodic", "counts": "episodic", "e3b": "episodic", "counts_global": "global", "rnd": "global"}


def claim3(bench: Bench) -> ClaimResult:
    task, steps = "MiniGrid-MultiRoom-N10-S6-v0", bench.steps(2_000_000)
    base = ("experiment=ride_minigrid", f"env.name={task}", "bonus.extrinsic_coef=0.0")  # reward-free
    arms = [
        Arm("N10-S6", "ride", base, steps),
        # Position counts: positions are what new layouts share, which is what a global count remembers.
        Arm("N10-S6", "counts", (*base, "bonus=counts", "bonus.state_key=position", "bonus.normalize=none",
                                 "bonus.coef=0.1"), steps),
        Arm("N10-S6", "e3b", (*base, "bonus=e3b", "bonus.coef=1.0"), steps),
        Arm("N10-S6", "counts_global", (*base, "bonus=counts_global", "bonus.state_key=position",
                                        "bonus.normalize=none", "bonus.coef=0.1"), steps),
        Arm("N10-S6", "rnd", (*base, "bonus=rnd_minihack", "bonus.coef=0.1"), steps),
    ]
    episodes = COVERAGE_EPISODES

    def coverage(run_dir: Path) -> float:
        return float(np.mean(positions_per_episode(run_dir, episodes, seed=0)))

    def pooled(scores: dict[Arm, list[float]], kind: str) -> Interval:
        # Runs × methods of one kind: the IQM over all of them, bootstrapped within methods.
        columns = [s for arm, s in scores.items() if CLAIM3_KINDS[arm.method] == kind]
        return Interval(*iqm_interval(np.array(columns, dtype=np.float64).T))

    scores = bench.measure(3, arms, coverage, [])
    episodic, global_ = pooled(scores, "episodic"), pooled(scores, "global")
    ok, test = verdict_coverage(episodic, global_)
    paper = {"ride": "covers the maze", "counts_global": "stays near the start", "rnd": "stays near the start"}
    by_method = intervals_by_method(scores)
    rows = arm_rows(scores, by_method, paper)
    rows += [[arms[0].task, f"all {kind} (pooled)", "", steps, "", *pooled_iv, ""]
             for kind, pooled_iv in (("episodic", episodic), ("global", global_))]
    print(write_table(bench.out, "claim3", ARM_HEADER, rows), flush=True)
    out = bench.out / "claim3"
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([{"group": f"{method} ({CLAIM3_KINDS[method]})", **iv._asdict()}
                          for method, iv in by_method.items()])
    figure = str(plot_intervals(frame, [("distinct positions per episode (IQM, 95% CI)", "iqm", "low", "high")],
                                out / "coverage")[0])
    return ClaimResult(3, "reward-free: episodic bonuses cover more of each new level than global ones",
                       f"{task}, intrinsic reward only, {steps:,} steps; {episodes} episodes on unseen levels per run",
                       "RIDE Fig. 7 (bottom row, 50M frames): on procedurally generated N10-S6 mazes RIDE's visits "
                       "span the maze, Count's and RND's stay in the first rooms",
                       f"positions per episode: episodic {episodic}; global {global_}", test, ok, [figure])


def claim4(bench: Bench) -> ClaimResult:
    task, steps = "MiniGrid-MultiRoom-N7-S4-v0", bench.steps(5_000_000)
    base = ("experiment=ride_minigrid", f"env.name={task}", "bonus.state_key=position", "bonus.coef=1.0")
    layouts = {"singleton": ("env.num_levels=1",), "procedural": ("env.num_levels=0",)}
    methods = {"episodic": ("bonus=counts",), "global": ("bonus=counts_global",),
               "product": ("bonus=counts_global_episodic", "bonus.global_bonus.state_key=position",
                           "bonus.episodic_bonus.state_key=position")}
    arms = {(t, m): Arm(t, m, (*base, *layout, *extra), steps) for t, layout in layouts.items()
            for m, extra in methods.items()}
    scores = bench.measure(4, list(arms.values()), final_return,
                           [(arms["procedural", "episodic"], arms["procedural", "global"])])
    by = {t: {m: interval(scores[arms[t, m]]) for m in methods} for t in layouts}
    ok, test = verdict_global_episodic(by["procedural"], by["singleton"])
    paper = {"singleton": {"global": "best (much shared)", "product": "at least the better one"},
             "procedural": {"episodic": "best (little shared)", "product": "at least the better one"}}
    rows = [row for t in layouts
            for row in arm_rows({a: v for a, v in scores.items() if a.task == t}, by[t], paper[t])]
    print(write_table(bench.out, "claim4", ARM_HEADER, rows), flush=True)
    figures = [bench.curves(4, {arm: v for arm, v in scores.items() if arm.task == t}, "episode/return",
                            bench.out / f"claim4_{t}") for t in layouts]
    return ClaimResult(4, "episodic wins where little is shared across episodes; global × episodic as good as the "
                          "better of the two", f"{task} one fixed layout vs a new one every episode, position counts, "
                                               f"{steps:,} steps",
                       "Henaff, Jiang & Raileanu 2023: episodic bonuses most effective with little shared structure, "
                       "global ones with more; the combination robust across both (abstract, verified)",
                       "; ".join(f"{t}: " + ", ".join(f"{m} {iv}" for m, iv in by[t].items()) for t in layouts),
                       test, ok, figures)


def claim5(bench: Bench) -> ClaimResult:
    steps = bench.steps(2_000_000)
    data = bench.out / "runs" / "claim5" / "motif_data"
    model_path = data / "reward_model_loopback.pt"
    pairs = max(200, int(40_000 * bench.scale))
    with LoopbackJudge() as judge:
        build_reward_model(data, model_path, pairs, epochs=3, seed=0, labels_name="loopback", keep_trained=True,
                           annotate=["annotator=llm", f"llm.base_url={judge.base_url}", "llm.model=judge",
                                     "llm.api_key_env=null", "progress=false"])
    base = (f"env.name={MOTIF_ENV}", "experiment=nethack_score", *MOTIF_RUNTIME, *MOTIF_MODEL, *AGENT, "bonus=motif",
            f"bonus.reward_model_path={model_path}")
    arms = {
        "motif_only": Arm("NetHackScore", "motif_only", (*base, "bonus.extrinsic_coef=0.0", "bonus.coef=1.0"), steps),
        "motif_ext": Arm("NetHackScore", "motif_ext", base, steps),
        # The same extrinsic stream (0.01·r_ext, not clipped in sum) without the Motif reward.
        "ext_only": Arm("NetHackScore", "ext_only", (*base, "bonus.coef=0.0"), steps),
    }
    level, beta = read_threshold_and_exponent(load_config(["bonus=motif"]).bonus)
    epsilon = None if level is None else MotifReward.load(model_path).quantile(level)
    episodes = max(8, int(MOTIF_EVAL_EPISODES * min(1.0, bench.scale * 10)) // 8 * 8)

    def mean_score(policy: str) -> list[float]:
        return [e["score"] for e in motif_evaluate(policy, episodes, 12345, str(model_path), epsilon, beta)]

    # No pair to separate: the random policy is not an arm, and "at least matches" allows overlap.
    scores = bench.measure(5, list(arms.values()), lambda d: float(np.mean(mean_score(str(d)))), [])
    random_mean, random_se = mean_and_se(np.array(mean_score("random")))
    by = intervals_by_method(scores)
    ok, test = verdict_motif(by["motif_only"], random_mean, random_se, by["motif_ext"], by["ext_only"])
    paper = {"motif_only": "above the score-trained agent (1B steps)", "motif_ext": "above extrinsic-only"}
    rows = arm_rows(scores, by, paper) + [["NetHackScore", "random policy", "", 0, "", random_mean,
                                       random_mean - 1.96 * random_se, random_mean + 1.96 * random_se, ""]]
    print(write_table(bench.out, "claim5", ARM_HEADER, rows), flush=True)
    figure = bench.curves(5, scores, "episode/score", bench.out / "claim5")
    return ClaimResult(5, "Motif alone beats a random policy; Motif + extrinsic at least matches extrinsic-only",
                       f"{MOTIF_ENV}, {steps:,} steps, reward model from {pairs:,} loopback-judged pairs; "
                       f"{episodes} evaluation episodes per run",
                       "Motif abstract / Fig. 1 (verified): Motif alone scores above an agent trained on the score; "
                       "Motif + score above both (~1B steps)",
                       f"in-game score: Motif alone {by['motif_only']}; Motif + extrinsic {by['motif_ext']}; "
                       f"extrinsic only {by['ext_only']}; random {random_mean:.3g} ± {1.96 * random_se:.2g}",
                       test, ok, [figure])


CLAIMS = {1: claim1, 2: claim2, 3: claim3, 4: claim4, 5: claim5}


def write_summary(out: Path) -> str:
    """reproduction.md/.csv over every claim whose result is under `out` (this run's and earlier ones)."""
    results = [json.loads(p.read_text()) for p in sorted(out.glob("claim*_result.json"))]
    rows = [ClaimResult(**r).row() for r in sorted(results, key=lambda r: r["claim"])]
    return write_table(out, "reproduction", SUMMARY_HEADER, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", default="1,2,3,4,5", help="comma-separated claim numbers")
    parser.add_argument("--out", type=Path, default=Path("bench_results/reproduce"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every step budget")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-seeds", type=int, default=5, help="seeds where the compared CIs overlap")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="extra config overrides for every run, e.g. runtime=serial")
    args = parser.parse_args()
    claims = [int(c) for c in args.claims.split(",")]
    if unknown := sorted(set(claims) - set(CLAIMS)):
        parser.error(f"--claims: unknown claim(s) {unknown}; allowed: {sorted(CLAIMS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.out, args.scale, args.seeds, max(args.seeds, args.max_seeds), args.overrides)
    for number in claims:
        print(f"== claim {number} ==", flush=True)
        result = CLAIMS[number](bench)
        (args.out / f"claim{number}_result.json").write_text(json.dumps(result.__dict__, indent=2) + "\n")
        print(f"claim {number}: {'reproduced' if result.reproduced else 'not reproduced'} ({result.test})", flush=True)
    print(write_summary(args.out), flush=True)


if __name__ == "__main__":
    main()
