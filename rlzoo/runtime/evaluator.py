"""The evaluator: plays given policy weights on evaluation environments, in a process of its own.

`Evaluator` is the body: for every evaluation setting (NetHack/MiniHack: the task on evaluation seeds;
Procgen: the held-out levels, then the training levels) it plays `eval.episodes` episodes, a fixed
share from each environment (`runtime/evaluation.py`), and summarises them; on request it renders
environment 0's first episode into a video. Two runners host it so that the learner never waits:
`RayEvalRunner` (a Ray actor with `eval.num_cpus` CPUs) and `ProcessEvalRunner` (a spawned process,
for runtime=serial). Both take one evaluation at a time (`submit`), are polled for its result
(`poll`), and replace an evaluator that died or exceeded `eval.timeout_s` (that evaluation is lost).
`failures` counts evaluations lost in a row, so the trainer can give up on an evaluator that cannot work.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.bonuses import needs_intrinsic_value_head
from rlzoo.envs import env_spec, eval_env_cfg, validate_env_cfg
from rlzoo.logging.video import encode_video
from rlzoo.models import build_model
from rlzoo.runtime.evaluation import death_counts, run_episodes, summarize

Weights = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class EvalRequest:
    env_steps: int       # the env step whose weights are evaluated
    policy_version: int  # the learner version of those weights
    video: bool          # render one episode


@dataclass
class EvalResult:
    env_steps: int
    policy_version: int
    stats: dict[str, float]  # eval/return, eval/end/killed, eval/train_levels/return, ...
    deaths: dict[str, int]   # NetHack death reason -> episodes of the evaluation environments
    duration_s: float
    video: bytes | None = None
    video_format: str | None = None  # "mp4" or "gif"


def evaluation_settings(env_cfg: Mapping[str, Any] | DictConfig) -> list[tuple[str, dict[str, Any]]]:
    """(metric prefix, env config) of every setting an evaluation plays: `eval/` on the evaluation
    environments (Procgen: its held-out levels) and, for Procgen, `eval/train_levels/` on the training levels."""
    cfg = validate_env_cfg(env_cfg)
    settings = [("eval/", eval_env_cfg(cfg))]
    if cfg["family"] == "procgen":
        settings.append(("eval/train_levels/", cfg))
    return settings


class Evaluator:
    """Plays evaluations of a run's policy; built once per evaluator process."""

    def __init__(self, cfg: DictConfig) -> None:
        torch.set_num_threads(cfg.eval.num_cpus)
        self.model = build_model(cfg.model, env_spec(cfg.env),
                                 intrinsic_value_head=needs_intrinsic_value_head(cfg.bonus)).eval()
        self.settings = evaluation_settings(cfg.env)
        self.eval_cfg = cfg.eval
        self.seed = cfg.seed

    def evaluate(self, request: EvalRequest, weights: Weights) -> EvalResult:
        start = time.perf_counter()
        with warnings.catch_warnings():
            # Arrays from Ray's object store are read-only; load_state_dict only copies from them.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
        ev = self.eval_cfg
        frames: list[np.ndarray] | None = [] if request.video else None
        stats: dict[str, float] = {}
        deaths: dict[str, int] = {}
        for i, (prefix, env_cfg) in enumerate(self.settings):
            episodes = run_episodes(self.model, env_cfg, ev.episodes, self.seed, ev.greedy, ev.num_envs,
                                    video_frames=frames if i == 0 else None, max_frames=ev.max_video_frames)
            stats.update({prefix + k: v for k, v in summarize(episodes).items()})
            stats[prefix + "episodes"] = float(len(episodes))
            if i == 0:
                deaths = death_counts(episodes)
        video, video_format = encode_video(frames) if frames else (None, None)
        return EvalResult(request.env_steps, request.policy_version, stats, deaths,
                          time.perf_counter() - start, video, video_format)


class EvalActor:
    """The body of the Ray evaluator actor (decorated with ray.remote by RayEvalRunner)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.evaluator = Evaluator(OmegaConf.create(cfg))

    def pid(self) -> int:
        return os.getpid()

    def evaluate(self, request: EvalRequest, weights: Weights) -> EvalResult:
        return self.evaluator.evaluate(request, weights)


class RayEvalRunner:
    """The evaluator as a Ray actor reserving `eval.num_cpus` CPUs."""

    def __init__(self, cfg: DictConfig) -> None:
        import ray

        self.ray = ray
        self.actor_cls = ray.remote(num_cpus=cfg.eval.num_cpus)(EvalActor)
        self.plain_cfg = OmegaConf.to_container(cfg, resolve=True)
        self.timeout_s = cfg.eval.timeout_s
        self.actor = self.actor_cls.remote(self.plain_cfg)
        self.ref: Any = None
        self.submitted = 0.0
        self.restarts = 0
        self.failures = 0

    @property
    def busy(self) -> bool:
        return self.ref is not None

    def submit(self, request: EvalRequest, weights: Weights) -> None:
        self.ref = self.actor.evaluate.remote(request, weights)
        self.submitted = time.monotonic()

    def poll(self, timeout_s: float = 0.0) -> EvalResult | None:
        """The finished evaluation, or None (still running, or lost with a warning)."""
        if self.ref is None:
            return None
        ready, _ = self.ray.wait([self.ref], timeout=timeout_s)
        if not ready:
            if time.monotonic() - self.submitted > self.timeout_s:
                self._replace(f"no result after {self.timeout_s:.0f} s (eval.timeout_s)")
            return None
        ref, self.ref = self.ref, None
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as err:
            self._replace(f"it died ({type(err).__name__})")
            return None
        except self.ray.exceptions.RayError as err:
            warnings.warn(f"evaluation failed and is skipped: {err}", stacklevel=2)
            self.failures += 1
            return None
        self.failures = 0
        return result

    def _replace(self, reason: str) -> None:
        warnings.warn(f"evaluator: {reason}; starting a replacement (this evaluation is lost)", stacklevel=3)
        self.ray.kill(self.actor, no_restart=True)
        self.actor = self.actor_cls.remote(self.plain_cfg)
        self.ref = None
        self.restarts += 1
        self.failures += 1

    def pid(self) -> int:
        return self.ray.get(self.actor.pid.remote())

    def close(self) -> None:
        self.ray.kill(self.actor)


def _serve(cfg: dict[str, Any], conn: Any) -> None:
    """The evaluator process: build the Evaluator, say so, then answer requests until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it ends this process
    evaluator = Evaluator(OmegaConf.create(cfg))
    conn.send(("ready", None))
    try:
        while (message := conn.recv()) is not None:
            try:
                conn.send(("done", evaluator.evaluate(*message)))
            except Exception:  # noqa: BLE001 - reported to the trainer, which skips this evaluation
                conn.send(("error", traceback.format_exc(limit=5)))
    except EOFError:  # the trainer is gone
        pass


class ProcessEvalRunner:
    """The evaluator in a spawned process of its own (runtime=serial): the same interface as RayEvalRunner.

    Requests go out only once the process has built its evaluator (`ready`), so sending the weights
    never waits for a process still importing its libraries.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.plain_cfg = OmegaConf.to_container(cfg, resolve=True)
        self.timeout_s = cfg.eval.timeout_s
        self.restarts = 0
        self.failures = 0
        self._start()

    def _start(self) -> None:
        self.conn, child_conn = self.context.Pipe()
        self.process = self.context.Process(target=_serve, args=(self.plain_cfg, child_conn),
                                            name="rlzoo-evaluator", daemon=True)
        self.process.start()
        child_conn.close()
        self.ready = False
        self.pending = False
        self.submitted = 0.0

    @property
    def busy(self) -> bool:
        if not self.ready and self.conn.poll():
            self._receive()
        return not self.ready or self.pending

    def submit(self, request: EvalRequest, weights: Weights) -> None:
        self.conn.send((request, weights))
        self.pending = True
        self.submitted = time.monotonic()

    def poll(self, timeout_s: float = 0.0) -> EvalResult | None:
        """The finished evaluation, or None (still running, or lost with a warning)."""
        if not self.pending and self.ready:
            return None
        if self.conn.poll(timeout_s):
            return self._receive()
        if not self.process.is_alive():
            self._replace(f"it died (exit code {self.process.exitcode})")
        elif self.pending and time.monotonic() - self.submitted > self.timeout_s:
            self._replace(f"no result after {self.timeout_s:.0f} s (eval.timeout_s)")
        return None

    def _receive(self) -> EvalResult | None:
        try:
            status, payload = self.conn.recv()
        except (EOFError, OSError):
            self._replace(f"it died (exit code {self.process.exitcode})")
            return None
        if status == "ready":
            self.ready = True
            return None
        self.pending = False
        if status == "error":
            warnings.warn(f"evaluation failed and is skipped:\n{payload}", stacklevel=3)
            self.failures += 1
            return None
        self.failures = 0
        return payload

    def _replace(self, reason: str) -> None:
        warnings.warn(f"evaluator: {reason}; starting a replacement (this evaluation is lost)", stacklevel=3)
        self._stop()
        self._start()
        self.restarts += 1
        self.failures += 1

    def pid(self) -> int:
        return self.process.pid

    def _stop(self) -> None:
        self.conn.close()
        self.process.kill()
        self.process.join(timeout=10)

    def close(self) -> None:
        self._stop()


def start_runner(cfg: DictConfig) -> RayEvalRunner | ProcessEvalRunner:
    """The evaluator for this run's runtime (Ray must already be connected for runtime=ray)."""
    return RayEvalRunner(cfg) if cfg.runtime.name == "ray" else ProcessEvalRunner(cfg)
