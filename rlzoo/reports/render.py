"""Write an ablation report: plots (PNG and SVG), `report.md`, `report.html`, the tables as CSV, and
optionally a W&B run holding the tables and figures."""
from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rlzoo.reports.ablation import Curve, ReportSpec, ScoreSet  # noqa: E402
from rlzoo.reports.runs import REPORT_JOB_TYPE  # noqa: E402

FIGURE_FORMATS = ("png", "svg")


@dataclass
class Report:
    spec: ReportSpec
    num_runs: int
    scores: ScoreSet
    aggregates: pd.DataFrame
    per_task: pd.DataFrame
    improvement: pd.DataFrame
    efficiency: pd.DataFrame | None  # None when no run logged the success metric
    curves: dict[str, Curve]
    train_metric: str | None = None  # drawn dashed beside an evaluation metric: its training counterpart
    train_curves: dict[str, Curve] | None = None
    end_causes: pd.DataFrame | None = None  # final fraction of episodes per way they ended (NetHack)


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isinf(value):
            return "not reached" if value > 0 else "-inf"
        if float(value).is_integer() and abs(value) >= 1:  # counts and env steps
            return str(int(value))
        return f"{value:.3f}"
    return str(value)


def _with_intervals(frame: pd.DataFrame, pairs: dict[str, tuple[str, str, str]]) -> pd.DataFrame:
    """Fold `x, x_low, x_high` columns into one 'x [low, high]' column for display."""
    out = frame.copy()
    for title, (mid, low, high) in pairs.items():
        out[title] = [f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]" for m, lo, hi in zip(out[mid], out[low], out[high])]
        out = out.drop(columns=[mid, low, high])
    return out


def display_tables(report: Report) -> dict[str, pd.DataFrame]:
    """The report's tables as shown to a reader, keyed by section title."""
    ci = f"{report.spec.confidence:.0%} CI"
    tables = {
        f"Final performance ({report.spec.metric})": _with_intervals(
            report.aggregates, {f"mean [{ci}]": ("mean", "mean_low", "mean_high"),
                                f"IQM [{ci}]": ("iqm", "iqm_low", "iqm_high")}),
        "Mean final score per task": report.per_task.rename_axis("group").reset_index(),
    }
    if not report.improvement.empty:
        tables[f"Probability of improvement over {report.spec.baseline}"] = _with_intervals(
            report.improvement, {f"P(group > baseline) [{ci}]": ("probability", "low", "high")})
    if report.efficiency is not None:
        tables[f"Steps to reach {report.spec.success_metric} ≥ {report.spec.success_threshold:g}"] = \
            report.efficiency
    if report.end_causes is not None:
        tables["How episodes ended (mean final fraction)"] = report.end_causes
    return tables


def plot_curves(report: Report, out_dir: Path) -> list[Path]:
    """The report's curves per group; beside an evaluation metric, its training counterpart dashed."""
    return plot_curve_set(report.curves, report.spec, out_dir, report.train_curves, report.train_metric)


def plot_curve_set(curves: dict[str, Curve], spec: ReportSpec, out_dir: Path,
                   train_curves: dict[str, Curve] | None = None, train_metric: str | None = None) -> list[Path]:
    """Curves per group with their bootstrap bands (and `train_curves` dashed) as learning_curves.*."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group, curve in curves.items():
        (line,) = ax.plot(curve.steps, curve.value, label=group)
        ax.fill_between(curve.steps, curve.low, curve.high, color=line.get_color(), alpha=0.2, linewidth=0)
        if train_curves is not None:
            train = train_curves[group]
            ax.plot(train.steps, train.value, color=line.get_color(), linestyle="--", label=f"{group} (train)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"{spec.metric} ({spec.curve_aggregate.upper()})")
    title = f"{spec.curve_aggregate.upper()} over runs and tasks, {spec.confidence:.0%} bootstrap band"
    if train_metric is not None:
        title += f"\ndashed: {train_metric}"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(title=spec.group_key)
    return _save(fig, out_dir / "learning_curves")


def plot_intervals(frame: pd.DataFrame, columns: list[tuple[str, str, str, str]], out: Path,
                   reference: float | None = None) -> list[Path]:
    """One panel per (title, point, low, high) column set: a point with its interval per group."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 0.5 + 0.5 * len(frame)), squeeze=False)
    y = np.arange(len(frame))
    for ax, (title, mid, low, high) in zip(axes[0], columns):
        mid_v, low_v, high_v = (frame[c].to_numpy(dtype=float) for c in (mid, low, high))
        ax.errorbar(mid_v, y, xerr=[mid_v - low_v, high_v - mid_v], fmt="o", capsize=4)
        if reference is not None:
            ax.axvline(reference, color="grey", linestyle="--", linewidth=1)
        ax.set_yticks(y, frame["group"])
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    paths = [stem.with_suffix(f".{ext}") for ext in FIGURE_FORMATS]
    for path in paths:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def _markdown_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _settings(report: Report) -> list[str]:
    s = report.spec
    return [f"{report.num_runs} runs grouped by `{s.group_key}`, tasks `{s.task_key}`: "
            f"{', '.join(report.scores.tasks)}",
            f"final score: mean of `{s.metric}` over the last {s.final_fraction:.0%} of each run's steps",
            f"confidence intervals: stratified bootstrap over runs within tasks, {s.reps} resamples "
            f"({s.curve_reps} for curves), seed {s.random_seed}", *report.scores.notes]


def write_report(report: Report, out_dir: Path) -> list[Path]:
    """Write every output file; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {"Learning curves": plot_curves(report, out_dir),
               "Final performance": plot_intervals(
                   report.aggregates, [("mean", "mean", "mean_low", "mean_high"),
                                       ("IQM", "iqm", "iqm_low", "iqm_high")], out_dir / "final_performance")}
    if not report.improvement.empty:
        figures["Probability of improvement"] = plot_intervals(
            report.improvement, [(f"P(group > {report.spec.baseline})", "probability", "low", "high")],
            out_dir / "probability_of_improvement", reference=0.5)
    tables = display_tables(report)
    written = [p for paths in figures.values() for p in paths]
    for name, frame in {"final_performance": report.aggregates, "per_task": report.per_task,
                        "probability_of_improvement": report.improvement,
                        "sample_efficiency": report.efficiency, "end_causes": report.end_causes}.items():
        if frame is not None and not frame.empty:
            path = out_dir / f"{name}.csv"
            frame.to_csv(path, index=name == "per_task")
            written.append(path)

    md = ["# Ablation report", "", *(f"- {line}" for line in _settings(report)), ""]
    for title, frame in tables.items():
        md += [f"## {title}", "", _markdown_table(frame), ""]
    for title, paths in figures.items():
        md += [f"## {title}", "", f"![{title}]({paths[0].name})", ""]
    (out_dir / "report.md").write_text("\n".join(md))

    body = ["<h1>Ablation report</h1>", "<ul>",
            *(f"<li>{html.escape(line)}</li>" for line in _settings(report)), "</ul>"]
    for title, frame in tables.items():
        body += [f"<h2>{html.escape(title)}</h2>", _html_table(frame)]
    for title, paths in figures.items():
        svg = next(p for p in paths if p.suffix == ".svg")
        body += [f"<h2>{html.escape(title)}</h2>", f'<img src="{svg.name}" alt="{html.escape(title)}">']
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}")
    (out_dir / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Ablation report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    return [*written, out_dir / "report.md", out_dir / "report.html"]


def log_to_wandb(report: Report, out_dir: Path, project: str, entity: str | None, name: str) -> str:
    """Log the tables and figures as a W&B run of job type `report`; returns the run's URL or path."""
    import wandb

    run = wandb.init(project=project, entity=entity, name=name, job_type=REPORT_JOB_TYPE,
                     config=asdict(report.spec))
    for title, frame in display_tables(report).items():
        run.log({title: wandb.Table(dataframe=frame.astype(str))})
    for png in sorted(out_dir.glob("*.png")):
        run.log({png.stem: wandb.Image(str(png))})
    url = run.url or run.dir
    run.finish()
    return url
