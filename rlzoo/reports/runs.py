"""Collect finished (or running) runs for a report: local run directories, offline and online W&B runs.

Every source becomes a `Run`: a flat config (`{"bonus.name": "e3b", "seed": 1, ...}`) and a metrics
table indexed by nothing, one row per logged line, always with an `env_steps` column. Evaluation rows
(`eval/*`) are keyed by the env step they evaluated (`eval/env_steps`), in every source alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pandas as pd
import yaml

from rlzoo.logging.metrics import METRICS_FILE, read_metrics
from rlzoo.reports.wandb_records import read_offline_run

STEP_KEY = "env_steps"
EVAL_STEP_KEY = "eval/env_steps"
_BOOKKEEPING = {STEP_KEY, "learner_steps", "time", "_step", "_runtime", "_timestamp"}
RUN_CONFIG = "config.yaml"
RUN_METRICS = METRICS_FILE


@dataclass
class Run:
    name: str
    source: str  # where it came from: a directory, a .wandb file or an online run path
    config: dict[str, Any]
    metrics: pd.DataFrame

    def get(self, key: str) -> Any:
        """A config value by dotted key, e.g. `bonus.name`; KeyError names the run and the key."""
        if key not in self.config:
            raise KeyError(f"run {self.name} ({self.source}) has no config key '{key}'")
        return self.config[key]


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def split_eval_rows(rows: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """Rows with the evaluation's metrics on rows of their own, keyed by the env step evaluated. W&B
    logs an evaluation at a later step than the one it evaluated, merged with whatever training
    metrics share that step; a run directory's metrics.jsonl already has evaluation rows of their own."""
    for row in rows:
        if EVAL_STEP_KEY not in row:
            yield dict(row)
            continue
        yield {STEP_KEY: row[EVAL_STEP_KEY], **{k: v for k, v in row.items() if k.startswith("eval/")}}
        rest = {k: v for k, v in row.items() if not k.startswith("eval/")}
        if set(rest) - _BOOKKEEPING:
            yield rest


def _metrics_frame(rows: Iterable[Mapping[str, Any]], source: str) -> pd.DataFrame:
    frame = pd.DataFrame([r for r in split_eval_rows(rows) if r.get(STEP_KEY) is not None])
    if frame.empty:
        raise ValueError(f"{source}: no metric line has '{STEP_KEY}'")
    return frame.sort_values(STEP_KEY, kind="stable").reset_index(drop=True)


def load_run_dir(path: Path) -> Run:
    """A run directory written by rlzoo-train: `config.yaml` + `metrics.jsonl`."""
    config = yaml.safe_load((path / RUN_CONFIG).read_text()) or {}
    rows = read_metrics(path)
    return Run(name=path.name, source=str(path), config=flatten(config), metrics=_metrics_frame(rows, str(path)))


REPORT_JOB_TYPE = "report"  # W&B job type of the runs `rlzoo-report --log-wandb` creates


def load_offline_wandb(path: Path) -> Run | None:
    """An offline W&B run: the `run-<id>.wandb` file (or the `offline-run-*` folder holding it).
    None for a run that logged a report rather than training."""
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if not files:
            raise FileNotFoundError(f"{path} holds no run-*.wandb file")
        path = files[0]
    wb = read_offline_run(path)
    if wb.job_type == REPORT_JOB_TYPE:
        return None
    config = flatten(wb.config)
    config.setdefault("logger.group", wb.group)
    return Run(name=wb.name or wb.run_id, source=str(path), config=config,
               metrics=_metrics_frame(wb.history, str(path)))


def discover(paths: Iterable[Path]) -> Iterator[Run]:
    """Every run found below `paths`: run directories, then offline W&B runs not inside a run directory
    (a run directory's own `wandb/` folder duplicates its metrics.jsonl)."""
    for root in paths:
        if not root.exists():
            raise FileNotFoundError(f"no such file or directory: {root}")
        if root.is_file():
            wandb_files, run_dirs = [root], []
        else:
            run_dirs = sorted({p.parent for p in root.rglob(RUN_METRICS) if (p.parent / RUN_CONFIG).exists()})
            wandb_files = [f for f in sorted(root.rglob("run-*.wandb"))
                           if not any(d in f.parents for d in run_dirs)]
        yield from (load_run_dir(d) for d in run_dirs)
        yield from (run for f in wandb_files if (run := load_offline_wandb(f)) is not None)


def load_online_wandb(project: str, filters: dict[str, Any] | None = None, api: Any = None) -> list[Run]:
    """Runs of `entity/project` through the W&B public API (needs network and WANDB_API_KEY).

    `filters` is W&B's MongoDB-style query, e.g. {"group": "2026-05-01_12-00-00"}.
    """
    if api is None:
        import wandb

        api = wandb.Api()
    runs = []
    for r in api.runs(project, filters=filters or {}):
        config = flatten({k: v for k, v in dict(r.config).items() if not k.startswith("_")})
        config.setdefault("logger.group", r.group)
        rows = r.scan_history()
        runs.append(Run(name=r.name, source=f"{project}/{r.id}", config=config,
                        metrics=_metrics_frame(rows, f"{project}/{r.id}")))
    return runs


def select(runs: Iterable[Run], where: Mapping[str, str]) -> list[Run]:
    """Runs whose config matches every `key=value` (compared as strings, as typed on a command line)."""
    return [r for r in runs if all(str(r.config.get(k)) == v for k, v in where.items())]
