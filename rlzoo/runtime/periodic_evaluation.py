"""Evaluation while training, as the trainer sees it: when an evaluation is due, handing it to the
evaluator (`runtime/evaluator.py`) without waiting, and what a finished one leaves behind: a metric
row keyed by the env step it evaluated, a video in `<run dir>/videos`, and best.pt.

Evaluations are due at every multiple of `eval.interval_steps` (a fresh run also evaluates its
initial weights at step 0). The weights are taken at the first learner step at or past the multiple.
One evaluation runs at a time; a due one waits in a single slot, and a newer due one replaces it, so a
slow evaluator skips points instead of piling up weights. An evaluator that loses MAX_FAILURES
evaluations in a row (it cannot start, or crashes every time) is given up with a warning: training goes on.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.logging.metrics import MetricLogger
from rlzoo.runtime.checkpoint import BestCheckpoint
from rlzoo.runtime.evaluator import (EvalRequest, EvalResult, ProcessEvalRunner, RayEvalRunner, Weights,
                                     start_runner)

VIDEO_DIR = "videos"
MAX_FAILURES = 3


def first_due_index(start_steps: int, interval: int) -> int:
    """Index k of the first evaluation (at env step k × interval) a run starting at `start_steps` owes:
    0 for a fresh run, the next multiple after the step a resumed run continues from."""
    return 0 if start_steps == 0 else start_steps // interval + 1


class PeriodicEvaluation:
    """Owns the evaluator of a run and everything its results leave behind."""

    def __init__(self, cfg: DictConfig, run_dir: Path, logger: MetricLogger, start_steps: int,
                 runner: RayEvalRunner | ProcessEvalRunner | None = None) -> None:
        self.cfg = cfg
        self.interval = cfg.eval.interval_steps
        self.video_interval = cfg.eval.video_interval
        self.run_dir = run_dir
        self.logger = logger
        self.runner = runner or start_runner(cfg)
        self.given_up = False
        self.next_index = first_due_index(start_steps, self.interval)
        self.best_metric = cfg.checkpoint.best_metric
        self.best = BestCheckpoint(run_dir, self.best_metric, cfg.checkpoint.best_mode) if self.best_metric else None
        # (request, weights, training seconds at that step): waiting for the evaluator, and running on it.
        self.waiting: tuple[EvalRequest, Weights, float] | None = None
        self.running: tuple[EvalRequest, Weights, float] | None = None
        self.last: dict[str, Any] | None = None  # the row of the latest finished evaluation
        self.logged_step = start_steps  # W&B's step only goes forward

    @property
    def restarts(self) -> int:
        return self.runner.restarts

    def step(self, env_steps: int, version: int, weights: Callable[[], Weights], time_s: float) -> None:
        """After a learner step: queue an evaluation if one is due, record finished ones, start the next."""
        self.logged_step = max(self.logged_step, env_steps)
        if self.given_up:
            return
        if env_steps >= self.next_index * self.interval:
            index = env_steps // self.interval
            video = self.video_interval > 0 and index % self.video_interval == 0
            self.waiting = (EvalRequest(env_steps, version, video), weights(), time_s)
            self.next_index = index + 1
        self._collect(self.runner.poll())
        self._dispatch()

    def _dispatch(self) -> None:
        if self.waiting is not None and not self.runner.busy:
            request, weights, _ = self.waiting
            self.runner.submit(request, weights)
            self.running, self.waiting = self.waiting, None

    def _collect(self, result: EvalResult | None) -> None:
        if result is None:
            if not self.runner.busy and self.running is not None:
                self.running = None  # lost: it failed, or its evaluator was replaced
            if self.runner.failures >= MAX_FAILURES:
                warnings.warn(f"{MAX_FAILURES} evaluations in a row were lost; no more evaluations in this run",
                              stacklevel=3)
                self.given_up = True
                self.waiting = self.running = None
                self.runner.close()
            return
        _, weights, time_s = self.running
        self.running = None
        row = {
            "env_steps": result.env_steps,
            "learner_steps": result.policy_version,
            "time": round(time_s, 3),
            "eval/env_steps": result.env_steps,
            "eval/policy_version": result.policy_version,
            "eval/duration_s": round(result.duration_s, 3),
            **result.stats,
        }
        video = None
        if result.video is not None:
            video = self.run_dir / VIDEO_DIR / f"eval_{result.env_steps:012d}.{result.video_format}"
            video.parent.mkdir(parents=True, exist_ok=True)
            video.write_bytes(result.video)
        self.logger.log_eval(row, self.logged_step, video, result.deaths)
        self.last = {**row, "eval/deaths": result.deaths, "video": str(video) if video else None}
        if self.best is not None and self.best_metric in row:
            self.best.offer(row[self.best_metric], lambda: self._best_state(weights, row))

    def _best_state(self, weights: Weights, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "learner": {"model": {k: torch.from_numpy(v.copy()) for k, v in weights.items()},
                        "version": row["eval/policy_version"]},
            "env_steps": row["env_steps"],
            "eval": {k: v for k, v in row.items() if k.startswith("eval/")},
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        }

    def finish(self, env_steps: int, version: int, weights: Callable[[], Weights], time_s: float,
               stop: Callable[[], bool]) -> None:
        """Evaluate the final weights unless the latest evaluation did, waiting for it (eval.final);
        `stop()` true (a stop signal came) ends the wait."""
        self.waiting = None  # older than the final weights
        if self.given_up:
            return
        self._wait(stop)
        if self.last is None or self.last["env_steps"] != env_steps:
            self.waiting = (EvalRequest(env_steps, version, self.video_interval > 0), weights(), time_s)
            self._wait(stop)

    def _wait(self, stop: Callable[[], bool]) -> None:
        while (self.waiting is not None or self.running is not None) and not (self.given_up or stop()):
            self._dispatch()
            self._collect(self.runner.poll(timeout_s=1.0))

    def summary(self) -> dict[str, Any] | None:
        """The latest finished evaluation, for summary.json."""
        if self.last is None:
            return None
        best = None if self.best is None else {"metric": self.best_metric, "value": self.best.value}
        return {**self.last, "best": best}

    def close(self) -> None:
        if not self.given_up:
            self.runner.close()
