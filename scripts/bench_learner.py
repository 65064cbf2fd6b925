"""Learner speed: samples/s of one update per model and batch size, on CPU or GPU, on synthetic batches.

    python scripts/bench_learner.py [--device cpu|cuda] [--models crop nethack e3b impala_cnn]
                                    [--batches 16 32 64 128] [--threads 1] [--precision auto|fp32|bf16]

Batches are random observations of the model's environment family (no environment is stepped), so
the figure is the learner's alone. Prints ms per update and samples/s, wall-clock and (on CPU) in this
process's CPU time, which is steadier on a shared machine; the last line per model is the time ratio
of the largest to the smallest batch next to their size ratio (linear scaling: the two are equal).
"""
from __future__ import annotations

import argparse
import time

import torch

from rlzoo.algos.objective import needs_behaviour_values
from rlzoo.bonuses import needs_intrinsic_value_head
from rlzoo.config import load_config
from rlzoo.envs import env_spec
from rlzoo.runtime.learner import Learner
from rlzoo.unroll import synthetic_unroll

# Each model with an environment of its family (the spec only; nothing is stepped).
MODELS = {"crop": [], "nethack": ["experiment=nethack_score"], "e3b": ["model=e3b"],
          "impala_cnn": ["experiment=procgen_coinrun"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=["crop"], choices=sorted(MODELS))
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("overrides", nargs="*",
                        help="config overrides for every run, e.g. runtime.learner_chunk=16 or algo=appo")
    args = parser.parse_intermixed_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_learner: --device cuda but no CUDA device is available")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, precision {args.precision}")
    print(f"{'model':<12} {'batch':>6} {'ms/update':>10} {'samples/s':>10} {'CPU samples/s':>14}")
    for model in args.models:
        times = {}
        for columns in args.batches:
            cfg = load_config([*MODELS[model], "runtime=serial", f"runtime.envs_per_actor={columns}",
                               f"runtime.batch_size={columns}", "algo.lr_decay=none",
                               f"runtime.precision={args.precision}", *args.overrides])
            spec = env_spec(cfg.env)
            heads = ("baseline", "int_baseline") if needs_intrinsic_value_head(cfg.bonus) else ("baseline",)
            batch = synthetic_unroll(spec.obs_space, spec.num_actions, cfg.runtime.unroll_length, columns,
                                     int(cfg.model.lstm_size),
                                     value_heads=heads if needs_behaviour_values(cfg.algo) else ())
            learner = Learner(cfg, spec, columns, device)
            learner.update(batch, 0)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(args.repeats):
                batch.unroll_index += 1  # each environment's next unroll, as episodic bonuses require
                learner.update(batch, 0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[columns] = (time.perf_counter() - start) / args.repeats
            cpu = (time.process_time() - cpu_start) / args.repeats
            cpu_rate = f"{batch.size / cpu:14,.0f}" if device.type == "cpu" else f"{'-':>14}"
            print(f"{model:<12} {columns:>6} {times[columns] * 1000:10.1f} {batch.size / times[columns]:10,.0f} {cpu_rate}",
                  flush=True)
        small, large = min(times), max(times)
        print(f"{model}: time ×{times[large] / times[small]:.2f} for batch ×{large / small:.0f}")


if __name__ == "__main__":
    main()
