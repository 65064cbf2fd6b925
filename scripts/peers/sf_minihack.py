"""Sample Factory 2.1.1 APPO on MiniHack / NetHack with rlzoo's crop network, for a fixed wall time.

Runs inside the peer environment made by `scripts/bench_peers.py --setup` (Sample Factory needs
gymnasium < 1.0, hence nle 1.0.0 there). Everything goes through Sample Factory's public API:
`register_env`, `global_model_factory().register_encoder_factory`, `parse_sf_args` /
`parse_full_cfg`, `make_runner` and an `AlgoObserver`.

The network matches rlzoo's `model=crop` (configs/model/crop.yaml): glyph embedding 32 over the 9×9
crop centred on the agent, two 3×3 'same' convolutions of 32 channels (ELU), a one-layer blstats MLP
of 64 (ReLU), a fully connected layer of 256 (ReLU) over the concatenation, then Sample Factory's own
LSTM core of 256 and its linear policy and value heads.

The run trains for `--seconds` counted from the learner's first report. Throughput is environment
steps consumed by the learner per second over the steady state: from the first learner report at
least `--warmup-s` seconds after the first one, to the last report. Start-up (process spawning, env
creation, the first batches) is excluded. The result is one JSON line, the last line of stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

import minihack  # noqa: F401  (registers the MiniHack-* environments with gymnasium)
import nle  # noqa: F401  (registers the NetHack* environments with gymnasium)
from nle import nethack
from sample_factory.algo.runners.runner import AlgoObserver, Runner
from sample_factory.algo.utils.context import global_model_factory
from sample_factory.algo.utils.misc import ExperimentStatus
from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
from sample_factory.envs.env_utils import register_env
from sample_factory.model.encoder import Encoder
from sample_factory.train import make_runner
from sample_factory.utils.typing import Config, ObsSpace

TASKS = ("MiniHack-Room-5x5-v0", "NetHackScore-v0")
CROP = 9  # side of the egocentric crop, as in rlzoo's `crop` observation
GLYPH_EMBED = 32
CONV_CHANNELS = 32
BLSTATS_HIDDEN = 64
FC_SIZE = 256
LSTM_SIZE = 256


class EgocentricCrop(gym.ObservationWrapper):
    """Replace the full observation by rlzoo's pair: `crop` (9×9 glyphs around the agent) and `blstats`."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        rows, cols = env.observation_space["glyphs"].shape
        half = CROP // 2
        # Cells outside the map read as MAX_GLYPH, as in rlzoo's crop.
        self._padded = np.full((rows + 2 * half, cols + 2 * half), nethack.MAX_GLYPH, dtype=np.int16)
        self._half = half
        n_blstats = env.observation_space["blstats"].shape[0]
        self.observation_space = gym.spaces.Dict(
            {
                "crop": gym.spaces.Box(0, nethack.MAX_GLYPH, (CROP, CROP), dtype=np.int16),
                "blstats": gym.spaces.Box(-np.inf, np.inf, (n_blstats,), dtype=np.float32),
            }
        )

    def observation(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h = self._half
        self._padded[h:-h, h:-h] = obs["glyphs"]
        x, y = int(obs["blstats"][0]), int(obs["blstats"][1])
        crop = self._padded[y : y + CROP, x : x + CROP].copy()
        return {"crop": crop, "blstats": obs["blstats"].astype(np.float32)}


def make_task_env(
    full_env_name: str, cfg: Config | None = None, env_config: Any = None, render_mode: str | None = None
) -> gym.Env:
    """Sample Factory's env factory: the gymnasium task reduced to the observations the network reads."""
    env = gym.make(full_env_name, observation_keys=("glyphs", "blstats"))
    return EgocentricCrop(env)


class CropEncoder(Encoder):
    """rlzoo's crop torso: embedded crop → two 3×3 convs, blstats → MLP, concatenation → FC 256."""

    def __init__(self, cfg: Config, obs_space: ObsSpace):
        super().__init__(cfg)
        self.embed = nn.Embedding(nethack.MAX_GLYPH + 1, GLYPH_EMBED)
        self.conv = nn.Sequential(
            nn.Conv2d(GLYPH_EMBED, CONV_CHANNELS, 3, padding=1),
            nn.ELU(),
            nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, 3, padding=1),
            nn.ELU(),
        )
        n_blstats = obs_space["blstats"].shape[0]
        self.blstats_mlp = nn.Sequential(nn.Linear(n_blstats, BLSTATS_HIDDEN), nn.ReLU())
        self.fc = nn.Sequential(nn.Linear(CONV_CHANNELS * CROP * CROP + BLSTATS_HIDDEN, FC_SIZE), nn.ReLU())

    def forward(self, obs_dict: dict[str, Tensor]) -> Tensor:
        crop = self.embed(obs_dict["crop"]).permute(0, 3, 1, 2)  # [N, E, 9, 9]
        crop = self.conv(crop).flatten(1)
        # rlzoo scales each blstats field by its own rule; one log compression of all fields costs the same.
        blstats = obs_dict["blstats"]
        blstats = torch.sign(blstats) * torch.log1p(blstats.abs())
        return self.fc(torch.cat([crop, self.blstats_mlp(blstats)], dim=1))

    def get_out_size(self) -> int:
        return FC_SIZE

    def type_for_input_tensor(self, input_tensor_name: str) -> torch.dtype:
        # Glyph ids index the embedding; everything else is read as floats.
        return torch.int64 if input_tensor_name == "crop" else torch.float32


class SteadyStateMeter(AlgoObserver):
    """Records the learner's env-step count over time and ends the run after a fixed training time.

    The clock starts at the first learner report, so start-up never eats into the run. Sample Factory
    2.1.1 never advances the counter that `--train_for_seconds` is compared with, so it is set here
    from the wall clock; the runner then stops after that training step.
    """

    def __init__(self, seconds: float, warmup_s: float):
        self.seconds = seconds
        self.warmup_s = warmup_s
        self.reports: list[tuple[float, int]] = []

    def on_training_step(self, runner: Runner, training_iteration_since_resume: int) -> None:
        if not runner.env_steps:
            return
        now = time.monotonic()
        self.reports.append((now, sum(runner.env_steps.values())))
        elapsed = now - self.reports[0][0]
        if elapsed >= self.seconds:
            runner.total_train_seconds = elapsed

    def steady_state(self) -> dict[str, float]:
        """Steps per second from the first report after the warm-up to the last report."""
        t_first = self.reports[0][0] if self.reports else 0.0
        start = next((r for r in self.reports if r[0] >= t_first + self.warmup_s), None)
        if start is None or start is self.reports[-1]:
            raise RuntimeError(
                f"{len(self.reports)} learner reports, none after the {self.warmup_s} s warm-up: run longer"
            )
        end = self.reports[-1]
        window = end[0] - start[0]
        return {
            "env_steps": end[1],
            "window_s": round(window, 2),
            "steps_per_second": round((end[1] - start[1]) / window, 1),
        }


def sf_argv(args: argparse.Namespace, train_dir: str) -> list[str]:
    """Sample Factory settings: CPU APPO, asynchronous, one LSTM core of 256."""
    return [
        "--algo=APPO",
        f"--env={args.env}",
        "--experiment=bench",
        f"--train_dir={train_dir}",
        "--restart_behavior=overwrite",
        "--device=cpu",
        "--serial_mode=False",
        "--async_rl=True",
        f"--num_workers={args.workers}",
        f"--num_envs_per_worker={args.envs_per_worker}",
        f"--worker_num_splits={args.worker_num_splits}",
        f"--batch_size={args.batch_size}",
        f"--rollout={args.rollout}",
        f"--recurrence={args.rollout}",
        "--use_rnn=True",
        "--rnn_type=lstm",
        f"--rnn_size={LSTM_SIZE}",
        # Sample Factory's default APPO loss: its V-trace option crashes in 2.1.1 when summaries are
        # recorded (`advantages` missing), and the loss costs the same either way.
        "--normalize_input=False",  # glyph ids are indices, not features
        f"--seed={args.seed}",
        f"--train_for_seconds={int(args.seconds)}",  # enforced by SteadyStateMeter, see there
        *([f"--learning_rate={args.learning_rate}"] if args.learning_rate is not None else []),
        "--with_wandb=False",
        # No checkpoints inside the measured window (one is still written at the end).
        "--save_every_sec=1000000",
        "--save_best_after=1000000000000",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", choices=TASKS, default=TASKS[0])
    p.add_argument("--workers", type=int, default=2, help="rollout worker processes")
    p.add_argument("--envs-per-worker", type=int, default=16)
    p.add_argument("--worker-num-splits", type=int, default=2,
                   help="env groups per worker stepped alternately (double buffering)")
    p.add_argument("--batch-size", type=int, default=1024, help="samples (env steps) per learner batch")
    p.add_argument("--rollout", type=int, default=32, help="unroll length T")
    p.add_argument("--seconds", type=float, default=60.0, help="training time, counted from the first learner report")
    p.add_argument("--warmup-s", type=float, default=10.0,
                   help="seconds after the first learner report left out of the measurement")
    p.add_argument("--learning-rate", type=float, default=None, help="default: Sample Factory's own")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    for key in ("workers", "envs_per_worker", "worker_num_splits", "batch_size", "rollout"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')}={getattr(args, key)} must be >= 1")
    if args.envs_per_worker % args.worker_num_splits:
        p.error(f"--envs-per-worker={args.envs_per_worker} must be a multiple of "
                f"--worker-num-splits={args.worker_num_splits}")
    if args.batch_size % args.rollout:
        p.error(f"--batch-size={args.batch_size} must be a multiple of --rollout={args.rollout}")
    if args.seconds <= args.warmup_s:
        p.error(f"--seconds={args.seconds} must exceed --warmup-s={args.warmup_s}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for task in TASKS:
        register_env(task, make_task_env)
    global_model_factory().register_encoder_factory(CropEncoder)

    with tempfile.TemporaryDirectory(prefix="sf_bench_") as train_dir:
        argv_sf = sf_argv(args, train_dir)
        parser, _ = parse_sf_args(argv_sf)
        cfg = parse_full_cfg(parser, argv_sf)
        cfg, runner = make_runner(cfg)
        meter = SteadyStateMeter(args.seconds, args.warmup_s)
        runner.register_observer(meter)
        status = runner.init()
        if status == ExperimentStatus.SUCCESS:
            status = runner.run()
    if status != ExperimentStatus.SUCCESS:
        print(f"Sample Factory ended with status {status}", file=sys.stderr)
        return 1

    result = {
        "framework": "sample_factory",
        "env": args.env,
        "workers": args.workers,
        "envs_per_worker": args.envs_per_worker,
        "worker_num_splits": args.worker_num_splits,
        "batch_size": args.batch_size,
        "rollout": args.rollout,
        "seconds": args.seconds,
        **meter.steady_state(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
