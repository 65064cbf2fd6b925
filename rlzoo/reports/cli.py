"""`rlzoo-report`: compare groups of runs (bonuses, environments, any config key) across seeds and tasks.

    rlzoo-report runs/sweeps/2026-05-01_12-00-00 --baseline none --out report/
    rlzoo-report runs/ --where logger.group=my-sweep --metric episode/success --group-by bonus.name
    rlzoo-report --wandb-project me/rlzoo --wandb-filter '{"group": "my-sweep"}' --out report/

Paths are searched for run directories (config.yaml + metrics.jsonl) and offline W&B runs. Runs that
evaluated while training are compared on their evaluations (eval/return, eval/success) unless
--metric / --success-metric say otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

from rlzoo.reports.ablation import (
    AGGREGATES,
    ReportSpec,
    aggregate_table,
    end_cause_table,
    final_scores,
    improvement_table,
    learning_curves,
    per_task_table,
    resolve_metrics,
    sample_efficiency_table,
    training_counterpart,
)
from rlzoo.reports.render import Report, log_to_wandb, write_report
from rlzoo.reports.runs import Run, discover, load_online_wandb, select


def build_report(runs: list[Run], spec: ReportSpec) -> Report:
    """All statistics of the report, from runs already loaded."""
    spec = resolve_metrics(runs, spec)
    scores = final_scores(runs, spec)
    has_success = any(spec.success_metric in r.metrics.columns for r in runs)
    train_metric = training_counterpart(runs, spec.metric)
    return Report(
        spec=spec,
        num_runs=len(runs),
        scores=scores,
        aggregates=aggregate_table(scores, spec),
        per_task=per_task_table(scores),
        improvement=improvement_table(scores, spec),
        efficiency=sample_efficiency_table(runs, spec) if has_success else None,
        curves=learning_curves(runs, spec, scores.tasks),
        train_metric=train_metric,
        train_curves=(learning_curves(runs, replace(spec, metric=train_metric), scores.tasks)
                      if train_metric else None),
        end_causes=end_cause_table(runs, spec, scores.tasks),
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlzoo-report", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    d = ReportSpec()
    p.add_argument("paths", nargs="*", type=Path, help="run directories or folders holding them")
    p.add_argument("--wandb-project", help="also read online runs of ENTITY/PROJECT")
    p.add_argument("--wandb-filter", type=json.loads, default=None, help="W&B query as JSON")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep runs whose config has KEY=VALUE (repeatable)")
    p.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report)")
    p.add_argument("--metric", default=d.metric,
                   help="metric compared (default: eval/return if every run evaluated, else episode/return)")
    p.add_argument("--group-by", dest="group_key", default=d.group_key, help="config key naming a group")
    p.add_argument("--task-key", default=d.task_key, help="config key naming a task")
    p.add_argument("--seed-key", default=d.seed_key)
    p.add_argument("--baseline", default=d.baseline, help="group to compare with; 'null' for none")
    p.add_argument("--final-fraction", type=float, default=d.final_fraction)
    p.add_argument("--success-metric", default=d.success_metric,
                   help="default: eval/success if every run evaluated, else episode/success")
    p.add_argument("--success-threshold", type=float, default=d.success_threshold)
    p.add_argument("--curve-aggregate", choices=sorted(AGGREGATES), default=d.curve_aggregate)
    p.add_argument("--curve-points", type=int, default=d.curve_points)
    p.add_argument("--reps", type=int, default=d.reps, help="bootstrap resamples")
    p.add_argument("--curve-reps", type=int, default=d.curve_reps)
    p.add_argument("--confidence", type=float, default=d.confidence)
    p.add_argument("--random-seed", type=int, default=d.random_seed)
    p.add_argument("--log-wandb", metavar="PROJECT", help="log the report as a W&B run in PROJECT")
    p.add_argument("--wandb-entity", default=None)
    return p


def _parse_where(items: list[str]) -> dict[str, str]:
    where = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--where expects KEY=VALUE, got '{item}'")
        where[key] = value
    return where


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.paths and not args.wandb_project:
        parser.error("give run directories, or --wandb-project")
    try:
        spec = ReportSpec(**{f.name: getattr(args, f.name) for f in fields(ReportSpec)})
        if spec.baseline == "null":
            spec.baseline = None
        runs = list(discover(args.paths))
        if args.wandb_project:
            runs += load_online_wandb(args.wandb_project, args.wandb_filter)
        runs = select(runs, _parse_where(args.where))
        if not runs:
            raise ValueError("no runs found (check the paths and --where)")
        print(f"rlzoo-report: {len(runs)} runs; computing statistics ({spec.reps} bootstrap resamples)",
              file=sys.stderr)
        report = build_report(runs, spec)
        written = write_report(report, args.out)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"rlzoo-report: error: {err}", file=sys.stderr)
        return 2
    for line in report.scores.notes:
        print(f"rlzoo-report: note: {line}", file=sys.stderr)
    groups = ", ".join(f"{row.group} (IQM {row.iqm:.3f})" for row in report.aggregates.itertuples())
    print(f"rlzoo-report: {len(report.scores.scores)} groups on {len(report.scores.tasks)} tasks: {groups}")
    print(f"rlzoo-report: wrote {len(written)} files to {args.out}/ (open report.md or report.html)")
    if args.log_wandb:
        print(f"rlzoo-report: logged to W&B: "
              f"{log_to_wandb(report, args.out, args.log_wandb, args.wandb_entity, args.out.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
