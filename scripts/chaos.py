"""Chaos run: train while injecting every fault rlzoo claims to survive, then compare with a calm run.

    python scripts/chaos.py [--steps 300000] [--kill-every 20] [--hang-every 30] [--learners 2]
                            [--learner-kill-at 0.3] [--sigterm-at 0.5] [overrides ...]

Faults injected into one run (Ray runtime):
- a random rollout actor killed (SIGKILL) every `--kill-every` seconds;
- an environment step that hangs past `runtime.env_step_timeout_s`, every `--hang-every` seconds;
- with `--learners 2` or more, a learner replica killed once, at `--learner-kill-at` of the steps;
- a SIGTERM (what Slurm sends before preemption) delivered while a checkpoint is being written, at
  `--sigterm-at` of the steps; the run stops with a checkpoint and the script resumes it like a
  requeued job.
At the end it prints the faults injected and survived, the env steps lost, and the final return
next to an undisturbed run of the same length.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import rlzoo.runtime.trainer as trainer_module
from rlzoo.config import load_config
from rlzoo.runtime.trainer import Trainer, train


def hang_one_environment(actor_self: Any, seconds: float) -> None:
    """Runs inside a rollout actor (`__ray_call__`): environment 0's next step sleeps `seconds`."""
    env = actor_self.worker.env.envs[0]
    real_step = env.step

    def hanging_step(*args: Any, **kwargs: Any) -> Any:
        env.step = real_step
        time.sleep(seconds)
        return real_step(*args, **kwargs)

    env.step = hanging_step


class Injector:
    """Fault injection in a thread beside the trainer; counts what it injected."""

    def __init__(self, trainer: Trainer, args: argparse.Namespace, total_steps: int) -> None:
        self.trainer, self.args, self.total_steps = trainer, args, total_steps
        self.rng = random.Random(args.seed)
        self.counts = {"actor_kills": 0, "env_hangs": 0, "learner_kills": 0, "sigterm_during_checkpoint": 0}
        self.hangs: list[Any] = []  # calls that install a hang; counted once they have run
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._arm_sigterm_during_checkpoint()

    def _arm_sigterm_during_checkpoint(self) -> None:
        real_save = trainer_module.save_checkpoint

        def save_then_maybe_interrupt(path: Path, state: dict) -> None:
            due = self.trainer.env_steps >= self.args.sigterm_at * self.total_steps
            if due and not self.counts["sigterm_during_checkpoint"]:
                self.counts["sigterm_during_checkpoint"] += 1
                os.kill(os.getpid(), signal.SIGTERM)  # arrives while the file is being written
            real_save(path, state)

        trainer_module.save_checkpoint = save_then_maybe_interrupt

    def _run(self) -> None:
        import ray

        next_kill = time.monotonic() + self.args.kill_every
        next_hang = time.monotonic() + self.args.hang_every
        hang_s = float(self.trainer.cfg.runtime.env_step_timeout_s) + 1.0
        while not self.stop.wait(0.2):
            now = time.monotonic()
            actor = self.rng.choice(self.trainer.source.actors)
            try:
                if now >= next_kill:
                    next_kill = now + self.args.kill_every
                    os.kill(ray.get(actor.pid.remote(), timeout=10), signal.SIGKILL)
                    self.counts["actor_kills"] += 1
                elif now >= next_hang:
                    next_hang = now + self.args.hang_every
                    self.hangs.append(actor.__ray_call__.remote(hang_one_environment, hang_s))
                if (self.args.learners > 1 and not self.counts["learner_kills"]
                        and self.trainer.env_steps >= self.args.learner_kill_at * self.total_steps):
                    os.kill(self.trainer.learner.pids()[-1], signal.SIGKILL)
                    self.counts["learner_kills"] += 1
                self._count_hangs_that_ran()
            except Exception:  # noqa: BLE001 - the target may be mid-replacement; the next round tries again
                pass

    def _count_hangs_that_ran(self) -> None:
        """Counts the installed hangs whose call has returned, while Ray is still up; a hang queued on an
        actor that was killed first never happened."""
        import ray

        if not self.hangs:
            return
        done, self.hangs = ray.wait(self.hangs, num_returns=len(self.hangs), timeout=0)
        for ref in done:
            try:
                ray.get(ref)
                self.counts["env_hangs"] += 1
            except Exception:  # noqa: BLE001 - its actor died before it ran
                pass

    def __enter__(self) -> "Injector":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
        try:
            self._count_hangs_that_ran()
        except Exception:  # noqa: BLE001 - Ray is already down: the loop counted what it could
            pass


def chaos_run(cfg: Any, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    trainer = Trainer(cfg, run_dir)
    real_save = trainer_module.save_checkpoint
    try:
        with Injector(trainer, args, cfg.total_steps) as injector:
            first = trainer.run()
    finally:
        trainer_module.save_checkpoint = real_save
    print(f"first attempt stopped by {first['stopped_by']} at {first['env_steps']:,} steps; resuming")
    second = train(cfg, run_dir)  # resume=auto picks up the checkpoint, as a requeued job does
    counts = injector.counts
    resumed = first["stopped_by"] == "SIGTERM" and second["env_steps"] > first["env_steps"]
    learner_restarts = first["learner_restarts"] + second["learner_restarts"]
    # A learner recovery replaces every actor too; those are not recoveries from actor kills.
    actor_recoveries = first["actor_restarts"] + second["actor_restarts"] - learner_restarts * cfg.runtime.num_actors
    recoveries = {"actor replacements": max(0, actor_recoveries),
                  "environment rebuilds": first["env_restarts"] + second["env_restarts"],
                  "learner recoveries": learner_restarts, "resumes after SIGTERM": int(resumed)}
    # Recoveries do not pair one to one with faults (a hang on an actor killed before its step times out
    # needs no rebuild; a learner recovery replaces every actor), so the run surviving every fault is
    # judged by its end: it reached its step budget.
    completed = second["stopped_by"] == "done" and second["env_steps"] >= cfg.total_steps
    return {
        **counts,
        "faults_injected": sum(counts.values()),
        "completed": completed,
        "faults_survived": sum(counts.values()) if completed else 0,
        "recoveries": recoveries,
        "env_steps_lost": first["env_steps_lost"] + second["env_steps_lost"],
        "env_steps": second["env_steps"],
        "final_return": second["mean_return_last_100"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between actor kills")
    parser.add_argument("--hang-every", type=float, default=30.0, help="seconds between environment hangs")
    parser.add_argument("--learners", type=int, default=2, help="learner replicas (>= 2 to kill one)")
    parser.add_argument("--learner-kill-at", type=float, default=0.3, help="fraction of the steps at which to kill a replica")
    parser.add_argument("--sigterm-at", type=float, default=0.5, help="fraction of the steps at which to SIGTERM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear as they happen, even in a file
    cfg = load_config(["runtime=ray", f"total_steps={args.steps}", "logger.progress=false",
                       f"runtime.learners={args.learners}", "runtime.allow_oversubscribe=true",
                       "runtime.env_step_timeout_s=5", "checkpoint.interval_s=30", *args.overrides])

    with tempfile.TemporaryDirectory() as tmp:
        print(f"chaos run: {args.steps:,} steps; an actor killed every {args.kill_every:.0f} s, an environment "
              f"hung every {args.hang_every:.0f} s, a learner replica killed at {args.learner_kill_at:.0%} "
              f"({args.learners} replicas), SIGTERM during a checkpoint at {args.sigterm_at:.0%}")
        chaos = chaos_run(cfg, Path(tmp) / "chaos", args)
        print("undisturbed run of the same length …")
        calm = train(cfg, Path(tmp) / "calm")

    print(f"\nfaults injected   {chaos['faults_injected']} ({chaos['actor_kills']} actor kills, "
          f"{chaos['env_hangs']} environment hangs, {chaos['learner_kills']} learner replica kills, "
          f"{chaos['sigterm_during_checkpoint']} SIGTERM during a checkpoint)")
    print(f"faults survived   {chaos['faults_survived']} (the run "
          f"{'reached' if chaos['completed'] else 'did not reach'} {args.steps:,} steps; "
          + ", ".join(f"{what} {n}" for what, n in chaos["recoveries"].items()) + ")")
    print(f"env steps lost    {chaos['env_steps_lost']:,} of {chaos['env_steps']:,}")
    print(f"final return      chaos {chaos['final_return']:.3f} vs undisturbed {calm['mean_return_last_100']:.3f}")


if __name__ == "__main__":
    main()
