"""Learner step time against batch size: one process, the learner's thread count, fixed unrolls.

    python scripts/bench_learner.py [--env MiniHack-Room-5x5-v0] [--batches 16 32 64 128] [--threads 1]

Prints ms per update and samples/s per batch size, wall-clock and in this process's CPU time (the
steadier figure on a shared machine: other processes' load stretches wall time, not CPU time); the
last line is the time ratio of the largest to the smallest batch next to their size ratio (linear
scaling: the two are equal). Procgen: `--env coinrun env=procgen`.
"""
from __future__ import annotations

import argparse
import time

import torch

from rlzoo.config import load_config
from rlzoo.envs import env_spec
from rlzoo.runtime.learner import Learner
from rlzoo.runtime.rollout import RolloutWorker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="MiniHack-Room-5x5-v0")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    torch.set_num_threads(args.threads)

    times, cpu_times = {}, {}
    for columns in args.batches:
        cfg = load_config(["runtime=serial", f"env.name={args.env}", f"runtime.envs_per_actor={columns}",
                           f"runtime.batch_size={columns}", "algo.lr_decay=none", *args.overrides])
        spec = env_spec(cfg.env)
        batch = RolloutWorker(cfg, 0, spec).rollout().unroll
        learner = Learner(cfg, spec, columns, torch.device("cpu"))
        learner.update(batch, 0)  # warm-up
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(args.repeats):
            learner.update(batch, 0)
        times[columns] = (time.perf_counter() - start) / args.repeats
        cpu_times[columns] = (time.process_time() - cpu_start) / args.repeats
        samples = batch.size
        print(f"batch {columns:>4} × {cfg.runtime.unroll_length} steps: {times[columns] * 1000:8.1f} ms per update, "
              f"{samples / times[columns]:8,.0f} samples/s; CPU {cpu_times[columns] * 1000:8.1f} ms, "
              f"{samples / cpu_times[columns]:8,.0f} samples per CPU-second", flush=True)
    small, large = min(times), max(times)
    print(f"scaling: time ×{times[large] / times[small]:.2f} for batch ×{large / small:.0f}")


if __name__ == "__main__":
    main()
