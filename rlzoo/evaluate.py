"""`rlzoo-evaluate`: run a trained policy for N episodes and print a table.

    rlzoo-evaluate runs/2026-11-22/10-00-00_MiniHack-Room-5x5-v0-none-s1 --episodes 20 --video ep.gif

Procgen policies are evaluated on their training levels and on the held-out levels
(`env.eval_start_level`, `env.eval_num_levels`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from rlzoo.envs import eval_env_cfg
from rlzoo.logging.video import write_video
from rlzoo.runtime.checkpoint import CheckpointError
from rlzoo.runtime.evaluation import load_policy, run_episodes, summarize


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rlzoo-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="run directory or checkpoint file")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=12345,
                        help="seed of the evaluation environments (their streams never meet a training run's)")
    parser.add_argument("--greedy", action="store_true", help="take the most likely action instead of sampling")
    parser.add_argument("--video", type=Path, help="write environment 0's first episode as .gif or .mp4")
    parser.add_argument("--max-frames", type=int, default=1000, help="cut the video after this many frames")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    try:
        cfg, model = load_policy(args.path)
    except CheckpointError as err:
        sys.exit(f"rlzoo-evaluate: {err}")

    settings = [("train levels" if cfg.env.family == "procgen" else "episodes", cfg.env)]
    if cfg.env.family == "procgen":
        settings.append(("held-out levels", eval_env_cfg(cfg.env)))
    video: list[np.ndarray] | None = [] if args.video else None
    frames = video  # only the first setting is recorded
    print(f"{'setting':<16} {'episodes':>8} " + " ".join(f"{k:>10}" for k in ("return", "length", "success")))
    for label, env_cfg in settings:
        eps = run_episodes(model, env_cfg, args.episodes, args.seed, args.greedy, video_frames=frames,
                           max_frames=args.max_frames)
        stats = summarize(eps)
        cells = " ".join(f"{stats[k]:>10.3f}" if k in stats else f"{'-':>10}" for k in ("return", "length", "success"))
        print(f"{label:<16} {len(eps):>8} {cells}")
        frames = None
    if args.video:
        path = write_video(args.video, video)
        print(f"wrote {len(video)} frames to {path}")


if __name__ == "__main__":
    main()
