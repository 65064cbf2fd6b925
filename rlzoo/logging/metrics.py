"""Metrics: always JSON lines in the run directory, optionally W&B, plus the console progress bar."""
from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig

from rlzoo.logging.wandb_run import WandbRun

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The metric lines of a run directory, oldest first; a last line cut short by a kill is skipped."""
    rows = []
    for line in (Path(run_dir) / METRICS_FILE).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_metrics(path: Path, max_env_steps: int) -> None:
    """Drop lines logged after the checkpoint a run resumes from, so the log has no duplicates."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["env_steps"] <= max_env_steps:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            continue  # a line cut short by a kill
    path.write_text("".join(line + "\n" for line in kept))


class MetricLogger:
    """Aggregates episode stats and learner metrics between log lines."""

    def __init__(self, run_dir: Path, cfg: DictConfig, start_env_steps: int, start_time: float = 0.0) -> None:
        self.path = run_dir / METRICS_FILE
        truncate_metrics(self.path, start_env_steps)
        self.file = self.path.open("a", buffering=1)
        self.interval = cfg.logger.log_interval_s
        self.wandb = WandbRun(cfg, run_dir) if cfg.logger.wandb else None
        self.progress = Progress(cfg.total_steps, start_env_steps) if cfg.logger.progress else None
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.episodes_total = 0
        self._episodes: dict[str, list[float]] = defaultdict(list)
        self._updates: dict[str, list[float]] = defaultdict(list)
        self._last_time = time.monotonic()
        self._last_steps = start_env_steps
        self._elapsed_before = start_time  # training seconds of earlier attempts of this run

    def rewind(self, env_steps: int) -> None:
        """Continue the log from `env_steps` (a run that went back to its last checkpoint)."""
        self.file.close()
        truncate_metrics(self.path, env_steps)
        self.file = self.path.open("a", buffering=1)
        self._last_steps = env_steps
        if self.progress is not None:
            self.progress.update(env_steps, self.recent_return())

    def add_episodes(self, episodes: Iterable[dict[str, Any]]) -> None:
        for ep in episodes:
            self.episodes_total += 1
            self.recent_returns.append(float(ep["return"]))
            for k, v in ep.items():
                if not isinstance(v, str):  # text (NetHack's death reason) is counted by evaluations only
                    self._episodes[f"episode/{k}"].append(float(v))

    def add_update(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self._updates[k].append(float(v))

    def recent_return(self) -> float:
        return sum(self.recent_returns) / len(self.recent_returns) if self.recent_returns else math.nan

    def step(self, env_steps: int, learner_steps: int, elapsed: float, force: bool = False,
             extra: dict[str, float] | None = None) -> dict[str, Any] | None:
        """Update the progress bar; write a metric line when the interval has passed (or `force`)."""
        now = time.monotonic()
        if self.progress is not None:
            self.progress.update(env_steps, self.recent_return())
        if env_steps == self._last_steps or (not force and now - self._last_time < self.interval):
            return None  # one line per step count: a resumed log never repeats one
        sps = (env_steps - self._last_steps) / max(now - self._last_time, 1e-9)
        row: dict[str, Any] = {
            "env_steps": env_steps,
            "learner_steps": learner_steps,
            "time": round(self._elapsed_before + elapsed, 3),
            "steps_per_second": sps,
            "episodes": self.episodes_total,
        }
        for source in (self._episodes, self._updates):
            row.update({k: sum(v) / len(v) for k, v in source.items() if v})
            source.clear()
        row.update(extra or {})
        self.file.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log(row, env_steps)
        self._last_time, self._last_steps = now, env_steps
        return row

    def log_eval(self, row: dict[str, Any], wandb_step: int, video: Path | None = None,
                 deaths: dict[str, int] | None = None) -> None:
        """Write an evaluation's row, keyed by the env step it evaluated (`row["env_steps"]`), which the
        training lines have usually passed by then. W&B steps only go forward, so there the row goes
        to the current step `wandb_step` and its charts use `eval/env_steps` as their x-axis."""
        line = {**row, "eval/deaths": deaths} if deaths else row
        self.file.write(json.dumps(line) + "\n")
        if self.wandb is not None:
            self.wandb.log_eval(row, wandb_step, video, deaths or {})

    def close(self, summary: dict[str, Any] | None = None) -> None:
        if self.progress is not None:
            self.progress.close()
        self.file.close()
        if self.wandb is not None:
            self.wandb.finish(summary or {})


class Progress:
    """One console line: env steps, steps/s and the mean return of the last 100 episodes."""

    def __init__(self, total: int, initial: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True,
                        file=sys.stderr, mininterval=1.0, smoothing=0.1)

    def update(self, env_steps: int, recent_return: float) -> None:
        self.bar.update(env_steps - self.bar.n)
        if not math.isnan(recent_return):
            self.bar.set_postfix_str(f"return {recent_return:.3f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def format_summary(summary: dict[str, Any]) -> str:
    width = max(len(k) for k in summary)
    lines = ["", "Run summary"]
    for k, v in summary.items():
        shown = f"{v:,.3f}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else str(v))
        lines.append(f"  {k:<{width}}  {shown}")
    return "\n".join(lines)
