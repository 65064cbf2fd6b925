"""Compare groups of runs (usually bonuses) across seeds and tasks, with rliable's robust statistics.

Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice": per group a (runs × tasks)
matrix of final scores; mean and interquartile mean (IQM) with stratified-bootstrap confidence
intervals; the probability that a group improves on a baseline (Mann-Whitney, averaged over tasks).
Added here: learning curves with bootstrap bands and the steps each run needs to reach a success
threshold (sample efficiency). Runs that evaluated while training are compared on their evaluations
(`eval/return`, `eval/success`) unless told otherwise, with curves of the training counterpart
(Procgen's training levels, else the training episodes) beside the held-out ones, and how the
NetHack episodes ended (`eval/end/<cause>`).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import pandas as pd
from rliable import metrics

from rlzoo.reports.runs import STEP_KEY, Run
from rlzoo.reports.statistics import interval_estimates

AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {
    "mean": metrics.aggregate_mean,
    "iqm": metrics.aggregate_iqm,
}


@dataclass
class ReportSpec:
    """What to compare and how; every field has a command-line flag of the same name."""

    metric: str | None = None           # None: eval/return if every run evaluated, else episode/return
    group_key: str = "bonus.name"
    task_key: str = "env.name"
    seed_key: str = "seed"
    baseline: str | None = "none"       # group the others are compared with; None: no comparison
    final_fraction: float = 0.1         # final score: mean over the last fraction of each run's steps
    success_metric: str | None = None   # None: eval/success if every run evaluated, else episode/success
    success_threshold: float = 0.5
    curve_aggregate: str = "iqm"        # statistic of the learning curves: one of AGGREGATES
    curve_points: int = 50
    reps: int = 2000                    # bootstrap resamples for the table and probabilities
    curve_reps: int = 500               # ... and for each learning-curve band
    confidence: float = 0.95
    random_seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.final_fraction <= 1.0:
            raise ValueError(f"final_fraction must be in (0, 1], got {self.final_fraction}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.curve_aggregate not in AGGREGATES:
            raise ValueError(f"curve_aggregate must be one of {sorted(AGGREGATES)}, got '{self.curve_aggregate}'")
        for name in ("curve_points", "reps", "curve_reps"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2, got {getattr(self, name)}")


def resolve_metrics(runs: list[Run], spec: ReportSpec) -> ReportSpec:
    """`spec` with the metrics it leaves open chosen: the evaluation's when every run logged it."""
    def choose(stat: str) -> str:
        evaluated = all(f"eval/{stat}" in run.metrics.columns for run in runs)
        return f"eval/{stat}" if runs and evaluated else f"episode/{stat}"

    return replace(spec, metric=spec.metric or choose("return"),
                   success_metric=spec.success_metric or choose("success"))


def training_counterpart(runs: list[Run], metric: str) -> str | None:
    """The training-side metric to draw beside an evaluation metric: Procgen's training levels
    (`eval/train_levels/<stat>`) or else the training episodes (`episode/<stat>`), if every run has it."""
    if not metric.startswith("eval/") or metric.startswith("eval/train_levels/"):
        return None
    stat = metric.removeprefix("eval/")
    for candidate in (f"eval/train_levels/{stat}", f"episode/{stat}"):
        if all(candidate in run.metrics.columns for run in runs):
            return candidate
    return None


@dataclass
class ScoreSet:
    """Final scores per group as rliable wants them: group -> array [runs, tasks], tasks in `tasks` order."""

    tasks: list[str]
    scores: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)


def metric_series(run: Run, metric: str) -> pd.DataFrame:
    """(env_steps, value) rows of a run where `metric` was logged, finite values only."""
    if metric not in run.metrics.columns:
        raise KeyError(f"run {run.name} ({run.source}) never logged '{metric}'")
    frame = run.metrics[[STEP_KEY, metric]].apply(pd.to_numeric, errors="coerce")
    return frame[np.isfinite(frame[metric]) & np.isfinite(frame[STEP_KEY])]


def final_score(run: Run, metric: str, fraction: float) -> float:
    """Mean of `metric` over the lines logged in the last `fraction` of the run's steps."""
    series = metric_series(run, metric)
    if series.empty:
        raise ValueError(f"run {run.name} ({run.source}) has no finite '{metric}' value")
    last = series[STEP_KEY].max()
    return float(series.loc[series[STEP_KEY] >= (1.0 - fraction) * last, metric].mean())


def steps_to_threshold(run: Run, metric: str, threshold: float) -> float:
    """The first logged env_steps at which `metric` reaches `threshold`; inf if it never does."""
    series = metric_series(run, metric)
    hit = series.loc[series[metric] >= threshold, STEP_KEY]
    return float(hit.iloc[0]) if len(hit) else math.inf


def _by_group_and_task(runs: list[Run], spec: ReportSpec) -> dict[str, dict[str, list[Run]]]:
    grouped: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[str(run.get(spec.group_key))][str(run.get(spec.task_key))].append(run)
    for tasks in grouped.values():
        for members in tasks.values():
            members.sort(key=lambda r: (str(r.config.get(spec.seed_key)), r.name))
    return grouped


def final_scores(runs: list[Run], spec: ReportSpec) -> ScoreSet:
    """Final-score matrices of every group over the tasks all groups share."""
    spec = resolve_metrics(runs, spec)
    grouped = _by_group_and_task(runs, spec)
    if not grouped:
        raise ValueError("no runs to compare")
    tasks = sorted(set.intersection(*(set(t) for t in grouped.values())))
    if not tasks:
        raise ValueError(f"the groups share no value of '{spec.task_key}': nothing to compare")
    notes = []
    all_tasks = set().union(*(set(t) for t in grouped.values()))
    if dropped := sorted(all_tasks - set(tasks)):
        notes.append(f"tasks left out because not every group ran them: {', '.join(dropped)}")
    scores = {}
    for group, by_task in sorted(grouped.items()):
        n = min(len(by_task[t]) for t in tasks)
        if any(len(by_task[t]) != n for t in tasks):
            # rliable needs the same number of runs on every task of a group.
            notes.append(f"{group}: kept the first {n} runs (by {spec.seed_key}) of each task; "
                         f"counts were {', '.join(f'{t}: {len(by_task[t])}' for t in tasks)}")
        scores[group] = np.array([[final_score(by_task[t][i], spec.metric, spec.final_fraction)
                                   for t in tasks] for i in range(n)])
    return ScoreSet(tasks=tasks, scores=scores, notes=notes)


def _bootstrap(score_dict: dict, func: Callable[..., np.ndarray], reps: int,
               spec: ReportSpec) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return interval_estimates(score_dict, func, reps, spec.confidence, spec.random_seed)


def aggregate_table(score_set: ScoreSet, spec: ReportSpec) -> pd.DataFrame:
    """Mean and IQM over runs × tasks with stratified-bootstrap confidence intervals, one row per group."""
    def both(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_mean(scores), metrics.aggregate_iqm(scores)])

    point, interval = _bootstrap(score_set.scores, both, spec.reps, spec)
    rows = []
    for group, scores in score_set.scores.items():
        low, high = interval[group]
        rows.append({"group": group, "runs": scores.shape[0], "tasks": scores.shape[1],
                     "mean": point[group][0], "mean_low": low[0], "mean_high": high[0],
                     "iqm": point[group][1], "iqm_low": low[1], "iqm_high": high[1]})
    return pd.DataFrame(rows)


def per_task_table(score_set: ScoreSet) -> pd.DataFrame:
    """Mean final score of each group on each task (rows: groups, columns: tasks)."""
    return pd.DataFrame({t: {g: s[:, i].mean() for g, s in score_set.scores.items()}
                         for i, t in enumerate(score_set.tasks)})


def improvement_table(score_set: ScoreSet, spec: ReportSpec) -> pd.DataFrame:
    """P(group > baseline) averaged over tasks, with a stratified-bootstrap interval."""
    if spec.baseline is None:
        return pd.DataFrame(columns=["group", "baseline", "probability", "low", "high"])
    if spec.baseline not in score_set.scores:
        raise ValueError(f"baseline '{spec.baseline}' is not among the groups: {sorted(score_set.scores)}")
    base = score_set.scores[spec.baseline]
    pairs = {g: (s, base) for g, s in score_set.scores.items() if g != spec.baseline}
    if not pairs:
        return pd.DataFrame(columns=["group", "baseline", "probability", "low", "high"])

    def poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.array([metrics.probability_of_improvement(x, y)])

    point, interval = _bootstrap(pairs, poi, spec.reps, spec)
    return pd.DataFrame([{"group": g, "baseline": spec.baseline, "probability": point[g][0],
                          "low": interval[g][0][0], "high": interval[g][1][0]} for g in pairs])


def sample_efficiency_table(runs: list[Run], spec: ReportSpec) -> pd.DataFrame:
    """Steps to reach the success threshold: how many runs reach it, median over all runs (inf when
    at most half reach it) and mean over those that do."""
    spec = resolve_metrics(runs, spec)
    rows = []
    for group, by_task in sorted(_by_group_and_task(runs, spec).items()):
        steps = np.array([steps_to_threshold(r, spec.success_metric, spec.success_threshold)
                          for members in by_task.values() for r in members])
        reached = steps[np.isfinite(steps)]
        rows.append({"group": group, "runs": len(steps), "reached": len(reached),
                     "median_steps": float(np.median(steps)),
                     "mean_steps_reached": float(reached.mean()) if len(reached) else math.inf})
    return pd.DataFrame(rows)


def end_cause_table(runs: list[Run], spec: ReportSpec, tasks: list[str]) -> pd.DataFrame | None:
    """Per group, the mean final fraction of episodes that ended each way (`eval/end/<cause>`, or
    `episode/end/<cause>` for a training metric), over the causes that occurred; None without NetHack runs."""
    spec = resolve_metrics(runs, spec)
    prefix = "eval/end/" if spec.metric.startswith("eval/") else "episode/end/"
    causes = sorted({c for run in runs for c in run.metrics.columns if c.startswith(prefix)})
    if not causes or not all(set(causes) <= set(run.metrics.columns) for run in runs):
        return None
    rows = []
    for group, by_task in sorted(_by_group_and_task(runs, spec).items()):
        members = [r for t in tasks for r in by_task.get(t, [])]
        rows.append({"group": group, **{c.removeprefix(prefix): float(np.mean(
            [final_score(r, c, spec.final_fraction) for r in members])) for c in causes}})
    table = pd.DataFrame(rows)
    occurred = [c for c in table.columns[1:] if table[c].max() > 0]
    return table[["group", *occurred]]


@dataclass
class Curve:
    steps: np.ndarray
    value: np.ndarray
    low: np.ndarray
    high: np.ndarray


def learning_curves(runs: list[Run], spec: ReportSpec, tasks: list[str]) -> dict[str, Curve]:
    """Per group: `spec.curve_aggregate` of the metric over runs × tasks on a grid of env steps, with a
    stratified-bootstrap band. The grid spans the steps every run of the group has logged (no
    extrapolation); between logged lines values are interpolated linearly."""
    spec = resolve_metrics(runs, spec)
    aggregate = AGGREGATES[spec.curve_aggregate]
    stacks: dict[str, np.ndarray] = {}
    grids: dict[str, np.ndarray] = {}
    for group, by_task in sorted(_by_group_and_task(runs, spec).items()):
        series = {t: [metric_series(r, spec.metric) for r in by_task[t]] for t in tasks}
        start = max(s[STEP_KEY].min() for ss in series.values() for s in ss)
        end = min(s[STEP_KEY].max() for ss in series.values() for s in ss)
        grid = np.linspace(start, end, spec.curve_points)
        n = min(len(ss) for ss in series.values())
        stacks[group] = np.array([[np.interp(grid, series[t][i][STEP_KEY], series[t][i][spec.metric])
                                   for t in tasks] for i in range(n)])  # [runs, tasks, points]
        grids[group] = grid

    def per_point(scores: np.ndarray) -> np.ndarray:
        return np.array([aggregate(scores[..., k]) for k in range(scores.shape[-1])])

    point, interval = _bootstrap(stacks, per_point, spec.curve_reps, spec)
    return {g: Curve(grids[g], point[g], interval[g][0], interval[g][1]) for g in stacks}
