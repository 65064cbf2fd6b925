"""The training loop shared by every runtime: unrolls → batch → learner → broadcast → log/checkpoint."""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from rlzoo.config import ConfigError, available_cpus, init_parts, validate
from rlzoo.envs import env_spec, validate_env_cfg
from rlzoo.logging.metrics import MetricLogger, format_summary
from rlzoo.models.precision import resolve_device, resolve_precision
from rlzoo.runtime.auxiliary import check_imitation
from rlzoo.runtime.checkpoint import (CheckpointError, add_to_history, checkpoint_file, latest_path, load_checkpoint,
                                      passes_multiple, save_checkpoint)
from rlzoo.runtime.learner import Learner, NonFiniteLossError
from rlzoo.runtime.preemption import requeue_slurm_job
from rlzoo.runtime.ray_runtime import LearnerReplicaLost
from rlzoo.unroll import Batch, Unroll

# What Slurm (SIGTERM, SIGUSR1 with `--signal`) and submitit (SIGUSR2) send before preemption or the time limit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
# Learner replicas lost in a row (with no checkpoint written in between) before the run gives up.
MAX_LEARNER_RESTARTS = 3


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        validate(cfg)
        self.spec = env_spec(cfg.env)  # a bad env name fails here, before any worker starts
        check_imitation(cfg, self.spec)  # datasets and teacher of algo=bc, algo.bc_aux, algo.kickstart
        self.cfg = cfg
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        record_attempt(run_dir)

        rt = cfg.runtime
        num_envs = self.num_envs = rt.num_actors * rt.envs_per_actor
        self.device = resolve_device(rt.device)
        self.precision = "bf16" if resolve_precision(rt.precision, self.device) == torch.bfloat16 else "fp32"
        eval_cpus = cfg.eval.num_cpus if cfg.eval.interval_steps else 0
        actor_cpus = rt.num_actors if rt.name == "ray" and cfg.algo.name != "bc" else 0
        torch.set_num_threads(rt.learner_threads or max(1, available_cpus() - eval_cpus - actor_cpus))
        if rt.learners > 1:
            from rlzoo.runtime.ray_runtime import RemoteLearners

            self.learner: Any = RemoteLearners(cfg, self.spec, num_envs)
        else:
            self.learner = Learner(cfg, self.spec, num_envs, self.device)

        self.env_steps = 0
        self.elapsed_before = 0.0
        self._resume()
        self._start_steps = self.env_steps
        if cfg.algo.name == "bc":  # recorded games instead of actors
            from rlzoo.runtime.demonstrations import DemonstrationSource

            self.source = DemonstrationSource(cfg, self.spec, self.env_steps)
        elif rt.name == "ray":
            from rlzoo.runtime.ray_runtime import connect
            from rlzoo.runtime.sources import RaySource

            connect(cfg)
            self.source: Any = RaySource(cfg, self.spec)
        else:
            from rlzoo.runtime.sources import SerialSource

            self.source = SerialSource(cfg, self.spec)
        self.logger = MetricLogger(run_dir, cfg, self.env_steps, self.elapsed_before)
        self.evaluation: Any = None
        if cfg.eval.interval_steps:
            from rlzoo.runtime.periodic_evaluation import PeriodicEvaluation

            self.evaluation = PeriodicEvaluation(cfg, run_dir, self.logger, self.env_steps)
        self.stop_signal: int | None = None
        self.unrolls_per_actor: Counter[str] = Counter()
        self.env_restarts = 0
        self.learner_restarts = 0
        self._learner_restarts_in_a_row = 0
        self.learner_steps_lost = 0  # env steps trained on since the checkpoint a lost replica sent us back to

    def _resume(self) -> None:
        resume = self.cfg.resume
        if resume == "never":
            self._warm_start()
            return
        path = latest_path(self.run_dir if resume == "auto" else Path(resume))
        if resume == "auto" and not path.exists():
            self._warm_start()
            return
        state = load_checkpoint(path)
        check_compatible(state.get("config", {}), self.cfg, path)
        try:
            self.learner.load_state_dict(state["learner"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(f"{path} does not fit this run's model, optimizer or bonus: {err}") from None
        self.env_steps = int(state["env_steps"])
        self.elapsed_before = float(state["elapsed_s"])

    def _warm_start(self) -> None:
        """init_from: this new run starts from another run's model (and optimizer, bonus if asked)."""
        source = self.cfg.init_from
        if source is None:
            return
        path = checkpoint_file(Path(source))
        if not path.exists():
            raise ConfigError(f"init_from={source!r}: no checkpoint there; expected a run directory "
                              "(checkpoints/latest.pt) or a checkpoint file")
        state = load_checkpoint(path)
        parts = init_parts(self.cfg)
        groups = ("model", "bonus") if "bonus" in parts else ("model",)  # the env may differ: fine-tuning
        try:
            check_compatible(state.get("config", {}), self.cfg, path, groups,
                             advice="pick a checkpoint of the same model, or change this run's")
        except CheckpointError as err:
            raise ConfigError(f"init_from={source!r}: {err}") from None
        merged = self.learner.state_dict()
        for part in parts:
            if part not in state["learner"] or part not in merged:
                where = path if part not in state["learner"] else "this run (bonus=none)"
                raise ConfigError(f"init_from_parts includes {part}, but {where} has no {part} state")
            merged[part] = state["learner"][part]
        if "objective" in state["learner"] and "objective" in merged:
            merged["objective"] = state["learner"]["objective"]  # the value heads' return statistics go with them
        try:
            self.learner.load_state_dict(merged)
        except (RuntimeError, KeyError, ValueError) as err:
            raise ConfigError(f"init_from={source!r} does not fit this run's {'/'.join(parts)}: {err}") from None

    def save(self, elapsed: float) -> None:
        save_checkpoint(latest_path(self.run_dir), {
            "learner": self.learner.state_dict(),
            "env_steps": self.env_steps,
            "elapsed_s": self.elapsed_before + elapsed,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        })
        history = self.cfg.checkpoint
        add_to_history(self.run_dir, self.env_steps, history.keep_last, history.keep_every_steps)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_signal = signum

    def run(self) -> dict[str, Any]:
        cfg, rt = self.cfg, self.cfg.runtime
        in_main_thread = threading.current_thread() is threading.main_thread()  # signals need it
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS} if in_main_thread else {}
        start = time.monotonic()
        self._last_checkpoint = start
        wait_s = 0.0
        pending: list[Unroll] = []
        columns = 0
        self.learner_publish()
        try:
            self._evaluate(0.0)  # the initial weights, in a fresh run
            while self.env_steps < cfg.total_steps and self.stop_signal is None:
                if cfg.time_limit_s and time.monotonic() - start >= cfg.time_limit_s:
                    break
                results = []
                if columns < rt.batch_size:
                    # Fetch only while a batch is incomplete: each fetch queues another rollout, so
                    # fetching ahead of the learner grows an unbounded backlog of stale unrolls.
                    # Unfetched unrolls wait in Ray with their actors idle, which keeps policy lag
                    # below 2 × num_actors × inflight_per_actor unrolls.
                    tic = time.monotonic()
                    results = self.source.next_unrolls()
                    wait_s += time.monotonic() - tic
                for result in results:
                    pending.append(result.unroll)
                    self.unrolls_per_actor[str(int(result.unroll.actor_ids[0]))] += 1
                    columns += result.unroll.num_columns
                    self.logger.add_episodes(result.episodes)
                    self.env_restarts += result.env_restarts
                    self.logger.add_update(result.timings)
                if columns < rt.batch_size:
                    continue
                batch = Unroll.concat(pending[: rt.batch_size // rt.envs_per_actor])
                pending = pending[rt.batch_size // rt.envs_per_actor:]
                columns = sum(u.num_columns for u in pending)

                self.env_steps += batch.size
                try:
                    self._train_on(batch, start, wait_s)
                except LearnerReplicaLost as err:
                    self._recover_learners(err, discarded=sum(u.size for u in pending))
                    pending, columns = [], 0
            elapsed = time.monotonic() - start
            self.save(elapsed)  # before close(): remote learners need Ray to hand over their state
            if self.evaluation is not None and cfg.eval.final and self.stop_signal is None:
                self.evaluation.finish(self.env_steps, self.learner.version, self.learner.weights,
                                       self.elapsed_before + elapsed, stop=lambda: self.stop_signal is not None)
        except NonFiniteLossError:
            self.save(time.monotonic() - start)  # kept for inspection
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.close()

        self.logger.step(self.env_steps, self.learner.version, elapsed, force=True,
                         extra=self._runtime_metrics(wait_s, elapsed))
        summary = {
            "env_steps": self.env_steps,
            "learner_steps": self.learner.version,
            "wall_time_s": round(elapsed, 2),
            "steps_per_second": round((self.env_steps - self._start_steps) / max(elapsed, 1e-9), 1),
            "episodes": self.logger.episodes_total,
            "precision": self.precision,  # what runtime.precision resolved to on the learner's device
            "unrolls_per_actor": dict(self.unrolls_per_actor),
            "actor_restarts": self.source.restarts,
            "env_restarts": self.env_restarts,
            "learner_restarts": self.learner_restarts,
            # Rollouts discarded: under way in replaced actors, collected but not trained on at the stop, or
            # trained on since the checkpoint that a lost learner replica sent the run back to.
            "env_steps_lost": self.source.steps_lost + sum(u.size for u in pending) + self.learner_steps_lost,
            "mean_return_last_100": _finite_or_none(self.logger.recent_return()),
            **({"eval": self.evaluation.summary(), "eval_restarts": self.evaluation.restarts}
               if self.evaluation is not None else {}),
            "stopped_by": signal.Signals(self.stop_signal).name if self.stop_signal else "done",
            "run_dir": str(self.run_dir),
        }
        self.logger.close(summary)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if self.stop_signal is not None:
            print(f"rlzoo: stopped by {summary['stopped_by']} at env step {self.env_steps:,} after writing a "
                  "checkpoint; rerun the same command to resume", file=sys.stderr)
            self._hand_over_signal(previous.get(self.stop_signal))
        return summary

    def _train_on(self, batch: Batch, start: float, wait_s: float) -> None:
        """One learner step on `batch`, then the broadcast, log line, evaluation and checkpoint due."""
        cfg = self.cfg
        lag = self.learner.version - float(batch.policy_version.mean())
        metrics = self._update(batch)
        metrics["learner/policy_lag"] = lag
        self.logger.add_update(metrics)
        if self.learner.version % cfg.runtime.broadcast_interval == 0:
            self.learner_publish()
        elapsed = time.monotonic() - start
        self.logger.step(self.env_steps, self.learner.version, elapsed, extra=self._runtime_metrics(wait_s, elapsed))
        self._evaluate(elapsed)
        if (time.monotonic() - self._last_checkpoint >= cfg.checkpoint.interval_s or passes_multiple(
                self.env_steps - batch.size, self.env_steps, cfg.checkpoint.keep_every_steps)):
            self.save(elapsed)
            self._last_checkpoint = time.monotonic()
            self._learner_restarts_in_a_row = 0

    def _recover_learners(self, err: LearnerReplicaLost, discarded: int) -> None:
        """A lost replica takes its share of the update with it, and the others cannot finish without it
        (their gradients are summed): every replica and every actor is replaced and training goes on
        from the last checkpoint, as a resumed run would (without one, from the start)."""
        from rlzoo.runtime.ray_runtime import RemoteLearners

        self.learner_restarts += 1
        self._learner_restarts_in_a_row += 1
        if self._learner_restarts_in_a_row > MAX_LEARNER_RESTARTS:
            raise LearnerReplicaLost(f"{err}, for the {self._learner_restarts_in_a_row}th time since the last "
                                     "checkpoint; giving up (see the replicas' logs in Ray's session directory)")
        warnings.warn(f"{err}; restarting the learner replicas and the actors from the last checkpoint", stacklevel=2)
        before = self.env_steps
        self.learner.kill()
        self.learner = RemoteLearners(self.cfg, self.spec, self.num_envs)
        path = latest_path(self.run_dir)
        self.env_steps = 0
        if path.exists():
            state = load_checkpoint(path)
            self.learner.load_state_dict(state["learner"])
            self.env_steps = int(state["env_steps"])
        # The batch in hand (counted in env_steps already), everything trained on since the checkpoint,
        # and the unrolls collected for the next batches.
        self.learner_steps_lost += before - self.env_steps + discarded
        self.logger.rewind(self.env_steps)
        self.source.restart_all("the learner replicas went back to the last checkpoint")
        self.learner_publish()

    def _hand_over_signal(self, previous_handler: Any) -> None:
        """After our checkpoint, make sure the job comes back.

        submitit signals SIGUSR2 and requeues in its own handler, so that one is called; for SIGTERM and
        SIGUSR1 (plain Slurm) we requeue the job ourselves. Other handlers (Ray's driver exits on SIGTERM)
        are not called: the run has already stopped cleanly.
        """
        if self.stop_signal == signal.SIGUSR2 and callable(previous_handler):
            previous_handler(self.stop_signal, None)
        elif self.cfg.requeue_on_signal and requeue_slurm_job():
            print("rlzoo: the Slurm job was requeued", file=sys.stderr)

    def close(self) -> None:
        if self.evaluation is not None:
            self.evaluation.close()
        self.source.close()
        self.learner.close()
        if self.cfg.runtime.name == "ray" or self.cfg.runtime.learners > 1:
            import ray

            ray.shutdown()

    def _update(self, batch: Batch) -> dict[str, float]:
        try:
            return self.learner.update(batch, self.env_steps)
        except torch.cuda.OutOfMemoryError:
            raise MemoryError(
                f"the learner ran out of GPU memory on a batch of {self.cfg.runtime.batch_size} × "
                f"{self.cfg.runtime.unroll_length} steps; lower runtime.batch_size or runtime.unroll_length"
            ) from None

    def _runtime_metrics(self, wait_s: float, elapsed: float) -> dict[str, float]:
        return {
            "learner/wait_share": wait_s / max(elapsed, 1e-9),
            "faults/actor_restarts": float(self.source.restarts),
            "faults/env_restarts": float(self.env_restarts),
            **self.source.metrics(),
        }

    def learner_publish(self) -> None:
        self.source.publish(self.learner.weights(), self.learner.version)

    def _evaluate(self, elapsed: float) -> None:
        """Start an evaluation when one is due and record finished ones; never waits for the evaluator."""
        if self.evaluation is not None:
            self.evaluation.step(self.env_steps, self.learner.version, self.learner.weights,
                                 self.elapsed_before + elapsed)


def name_sweep(cfg: DictConfig, sweep: str) -> None:
    """Runs of one sweep share a W&B group (the sweep) and carry readable tags."""
    with open_dict(cfg):
        cfg.sweep = sweep
        if cfg.logger.group is None:
            cfg.logger.group = sweep
        for tag in (cfg.env.name, cfg.logger.job_type, f"seed={cfg.seed}"):
            if tag not in cfg.logger.tags:
                cfg.logger.tags.append(tag)


def record_attempt(run_dir: Path) -> None:
    """Append this start of the run (time, host, Slurm job ids) to run_info.json; config.yaml has the sweep."""
    path = run_dir / "run_info.json"
    info = json.loads(path.read_text()) if path.exists() else {"attempts": []}
    slurm_keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")
    info["attempts"].append({
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "slurm": {k: os.environ[k] for k in slurm_keys if k in os.environ},
    })
    path.write_text(json.dumps(info, indent=2) + "\n")


# Settings that never change what training computes (its speed, where it is evaluated): a resumed
# run may change them.
_NOT_TRAINING_KEYS = {"env": {"share_nethack_code", "fast_reset", "eval_num_levels", "eval_start_level"}}


def check_compatible(saved: dict[str, Any], cfg: DictConfig, path: Path,
                     groups: tuple[str, ...] = ("model", "bonus", "env"),
                     advice: str = "start a new run directory or restore those values") -> None:
    """A checkpoint only resumes a run of the same model, bonus and environment (warm starts check
    fewer `groups`)."""
    for group in groups:
        before = saved.get(group)
        now = OmegaConf.to_container(cfg[group], resolve=True)
        if before is None:
            continue
        if group == "env":
            now = validate_env_cfg(now)
            try:  # env keys added since the checkpoint was written count with their defaults
                before = validate_env_cfg(before)
            except ValueError:
                pass  # a key that no longer exists: reported as a change below
        changed = sorted(k for k in set(before) | set(now)
                         if before.get(k) != now.get(k) and k not in _NOT_TRAINING_KEYS.get(group, ()))
        if changed:
            raise CheckpointError(
                f"{path} was written by a run with a different {group} config (keys {', '.join(changed)}: "
                f"{ {k: before.get(k) for k in changed} } there, { {k: now.get(k) for k in changed} } here); "
                f"{advice}"
            )


def _finite_or_none(x: float) -> float | None:
    return x if x == x and abs(x) != float("inf") else None


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Train with `cfg` in `run_dir` (Hydra's output directory when None); returns the summary."""
    if run_dir is None:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        run_dir = Path(hydra_cfg.runtime.output_dir)
        if hydra_cfg.mode.name == "MULTIRUN":
            name_sweep(cfg, Path(hydra_cfg.sweep.dir).name)
    try:
        trainer = Trainer(cfg, Path(run_dir))
    except ConfigError:
        raise
    except ValueError as err:  # factories (env, model, bonus) reject bad values with a ValueError
        raise ConfigError(str(err)) from err
    summary = trainer.run()
    if cfg.logger.progress:
        print(format_summary(summary))
    return summary
