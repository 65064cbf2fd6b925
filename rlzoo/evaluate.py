"""`rlzoo-evaluate`: run a trained policy for N episodes and print a table.

    rlzoo-evaluate runs/2026-11-22/10-00-00_MiniHack-Room-5x5-v0-none-s1 --episodes 20 --video ep.gif

Procgen policies are evaluated on their training levels and on the held-out levels
(`env.eval_start_level`, `env.eval_num_levels`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.envs import env_spec, eval_env_cfg, make_vec_env
from rlzoo.models import build_model
from rlzoo.runtime.checkpoint import CheckpointError, latest_path, load_checkpoint
from rlzoo.runtime.learner import uses_separate_value_head


def load_policy(path: Path) -> tuple[DictConfig, torch.nn.Module]:
    """Config and policy of a run directory or a checkpoint file."""
    ckpt_path = latest_path(path) if path.is_dir() else path
    state = load_checkpoint(ckpt_path)
    cfg = OmegaConf.create(state["config"])
    model = build_model(cfg.model, env_spec(cfg.env), intrinsic_value_head=uses_separate_value_head(cfg))
    model.load_state_dict(state["learner"]["model"])
    model.eval()
    return cfg, model


def run_episodes(model: torch.nn.Module, env_cfg: Any, episodes: int, seed: int, greedy: bool,
                 num_envs: int = 8, video_frames: list[np.ndarray] | None = None,
                 max_frames: int = 1000) -> list[dict[str, float]]:
    """Play `episodes` episodes, a fixed share from each environment; optionally record environment
    0's first episode.

    Taking whichever episodes finish first would favour short episodes (and bias the mean return);
    each environment instead contributes its first `episodes // num_envs` (+1 for the first few).

    Procgen videos use the 64×64 observation (upscaled), which is what the agent saw; rendering
    full-size frames for every environment would slow evaluation down several times.
    """
    num_envs = max(1, min(num_envs, episodes))
    full_render = video_frames is not None and env_cfg["family"] != "procgen"
    env = make_vec_env(env_cfg, num_envs, seed=seed, render=full_render)
    generator = torch.Generator().manual_seed(seed)
    obs = env.reset()
    first = np.ones(num_envs, dtype=bool)
    state = model.initial_state(num_envs)
    quota = np.full(num_envs, episodes // num_envs)
    quota[: episodes % num_envs] += 1
    kept: list[list[dict[str, float]]] = [[] for _ in range(num_envs)]
    recording = video_frames is not None
    try:
        while any(len(k) < q for k, q in zip(kept, quota)):
            if recording:
                frame = env.render(0)
                video_frames.append(frame if full_render else frame.repeat(4, axis=0).repeat(4, axis=1))
            actions, _, state = model.act(obs, first, state, generator, greedy)
            obs, _, done, eps = env.step(actions.numpy())
            first = done.copy()
            recording = recording and not done[0] and len(video_frames) < max_frames
            for i, episode in zip(np.flatnonzero(done).tolist(), eps, strict=True):  # eps come in env order
                if len(kept[i]) < quota[i]:
                    kept[i].append(episode)
    finally:
        env.close()
    return [episode for env_episodes in kept for episode in env_episodes]


def summarize(episodes: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for ep in episodes for k in ep})
    return {k: float(np.mean([ep[k] for ep in episodes if k in ep])) for k in keys}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rlzoo-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="run directory or checkpoint file")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=12345, help="evaluation seed (differs from training's)")
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
        write_video(args.video, video)


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mp4":
        imageio.mimwrite(path, frames, fps=10)
    else:
        imageio.mimwrite(path, frames, duration=0.1, loop=0)
    print(f"wrote {len(frames)} frames to {path}")


if __name__ == "__main__":
    main()
