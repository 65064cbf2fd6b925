"""Chaos run: train while killing a random rollout actor every N seconds and sending SIGTERM once.

    python scripts/chaos.py [--steps 300000] [--kill-every 20] [--sigterm-at 0.5] [overrides ...]

The SIGTERM stops the run with a checkpoint, as a preempted Slurm job would; the script then resumes
it like a requeued job. At the end it prints the faults injected and survived, the env steps lost,
and the final return next to an undisturbed run of the same length.
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

from rlzoo.config import load_config
from rlzoo.runtime.trainer import Trainer, train


def chaos_run(cfg, run_dir: Path, kill_every: float, sigterm_at: float, seed: int) -> dict:
    rng = random.Random(seed)
    faults = {"actor_kills": 0, "sigterm": 0}
    trainer = Trainer(cfg, run_dir)
    stop = threading.Event()

    def inject() -> None:
        import ray

        sent_sigterm = False
        next_kill = time.monotonic() + kill_every
        while not stop.wait(0.2):
            if not sent_sigterm and trainer.env_steps >= sigterm_at * cfg.total_steps:
                faults["sigterm"] += 1
                sent_sigterm = True
                os.kill(os.getpid(), signal.SIGTERM)
            if time.monotonic() >= next_kill:
                actor = rng.choice(trainer.source.actors)
                try:
                    os.kill(ray.get(actor.pid.remote(), timeout=10), signal.SIGKILL)
                    faults["actor_kills"] += 1
                except Exception:  # noqa: BLE001 - the actor may be mid-replacement; try the next one
                    pass
                next_kill = time.monotonic() + kill_every

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    first = trainer.run()
    stop.set()
    injector.join()
    print(f"first attempt stopped by {first['stopped_by']} at {first['env_steps']:,} steps; resuming")
    second = train(cfg, run_dir)  # resume=auto picks up the checkpoint, as a requeued job does
    return {
        "faults_injected": faults["actor_kills"] + faults["sigterm"],
        "faults_survived": first["actor_restarts"] + second["actor_restarts"]
        + int(first["stopped_by"] == "SIGTERM" and second["env_steps"] > first["env_steps"]),
        "actor_kills": faults["actor_kills"],
        "env_steps_lost": first["env_steps_lost"] + second["env_steps_lost"],
        "env_steps": second["env_steps"],
        "final_return": second["mean_return_last_100"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between actor kills")
    parser.add_argument("--sigterm-at", type=float, default=0.5, help="fraction of the steps at which to SIGTERM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear as they happen, even in a file
    cfg = load_config(["runtime=ray", f"total_steps={args.steps}", "logger.progress=false", *args.overrides])

    with tempfile.TemporaryDirectory() as tmp:
        print(f"chaos run: {args.steps:,} steps, an actor killed every {args.kill_every:.0f} s, "
              f"SIGTERM at {args.sigterm_at:.0%}")
        chaos = chaos_run(cfg, Path(tmp) / "chaos", args.kill_every, args.sigterm_at, args.seed)
        print("undisturbed run of the same length …")
        calm = train(cfg, Path(tmp) / "calm")

    print(f"\nfaults injected   {chaos['faults_injected']} ({chaos['actor_kills']} actor kills, 1 SIGTERM)")
    print(f"faults survived   {chaos['faults_survived']}")
    print(f"env steps lost    {chaos['env_steps_lost']:,} of {chaos['env_steps']:,}")
    print(f"final return      chaos {chaos['final_return']:.3f} vs undisturbed {calm['mean_return_last_100']:.3f}")


if __name__ == "__main__":
    main()
