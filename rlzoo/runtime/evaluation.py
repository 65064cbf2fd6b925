"""Playing whole episodes with a policy: trained checkpoints, random actions, and observers that record
what an evaluation needs beyond return and length (video frames, distinct positions visited, ...).

`play_episodes` takes a fixed number of episodes from each environment. Taking whichever episodes
finish first would favour short episodes and bias every mean; a quota per environment also gives
every policy evaluated with the same seed the same levels.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.bonuses import needs_intrinsic_value_head
from rlzoo.envs import VecEnv, env_spec, make_vec_env
from rlzoo.envs.vec_env import Episode, Obs
from rlzoo.models import Policy, build_model
from rlzoo.runtime.checkpoint import checkpoint_file, load_checkpoint

Act = Callable[[Obs, np.ndarray], np.ndarray]  # (obs [B, ...], first [B]) -> actions [B]


def load_policy(path: Path) -> tuple[DictConfig, Policy]:
    """Config and policy (in eval mode) of a run directory (its latest.pt) or a checkpoint file."""
    state = load_checkpoint(checkpoint_file(path))
    cfg = OmegaConf.create(state["config"])
    model = build_model(cfg.model, env_spec(cfg.env), intrinsic_value_head=needs_intrinsic_value_head(cfg.bonus))
    model.load_state_dict(state["learner"]["model"])
    model.eval()
    return cfg, model


def policy_actor(model: Policy, num_envs: int, seed: int, greedy: bool = False) -> Act:
    """Acts with `model`, carrying its recurrent state (reset where `first`)."""
    generator = torch.Generator().manual_seed(seed)
    state = model.initial_state(num_envs)

    def act(obs: Obs, first: np.ndarray) -> np.ndarray:
        nonlocal state
        actions, _, state = model.act(obs, first, state, generator, greedy)
        return actions.numpy()

    return act


def random_actor(num_actions: int, num_envs: int, seed: int) -> Act:
    """Uniformly random actions."""
    rng = np.random.default_rng(seed)
    return lambda obs, first: rng.integers(num_actions, size=num_envs)


def episode_quota(episodes: int, num_envs: int) -> list[int]:
    """`episodes` split over `num_envs` environments as evenly as possible, the first ones taking the rest."""
    return [episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)]


class EpisodeObserver(Protocol):
    """Watches an evaluation: `observe` sees every observation a policy acts on, `end` is called for
    every episode that finishes and returns extra statistics for it (it also starts the next one)."""

    def observe(self, obs: Obs, first: np.ndarray) -> None: ...

    def end(self, env_index: int) -> dict[str, float]: ...


def play_episodes(env: VecEnv, act: Act, quota: int | Sequence[int],
                  observers: Sequence[EpisodeObserver] = ()) -> list[Episode]:
    """The first `quota[i]` episodes of every environment i (`quota` an int: the same for all), in
    environment order, each with what the environment reports plus the observers' statistics."""
    quotas = [quota] * env.num_envs if isinstance(quota, int) else list(quota)
    if len(quotas) != env.num_envs:
        raise ValueError(f"quota has {len(quotas)} entries for {env.num_envs} environments")
    obs = env.reset()
    first = np.ones(env.num_envs, dtype=bool)
    kept: list[list[Episode]] = [[] for _ in range(env.num_envs)]
    while any(len(k) < q for k, q in zip(kept, quotas)):
        for observer in observers:
            observer.observe(obs, first)
        obs, _, done, finished = env.step(act(obs, first))
        first = done.copy()
        for i, episode in zip(np.flatnonzero(done).tolist(), finished, strict=True):  # in env order
            extra: dict[str, float] = {}
            for observer in observers:
                extra.update(observer.end(i))
            if len(kept[i]) < quotas[i]:
                kept[i].append({**episode, **extra})
    return [episode for env_episodes in kept for episode in env_episodes]


def agent_positions(obs: Obs) -> np.ndarray:
    """The agent's position in each environment [B, k]: MiniGrid's (x, y), NetHack's and MiniHack's
    (x, y, dungeon depth)."""
    if "agent" in obs:
        return obs["agent"][:, :2]
    return obs["blstats"][:, [0, 1, 12]]


class DistinctPositions:
    """Adds `positions` to each episode: the number of distinct agent positions it visited (coverage)."""

    def __init__(self, num_envs: int) -> None:
        self.visited: list[set] = [set() for _ in range(num_envs)]

    def observe(self, obs: Obs, first: np.ndarray) -> None:
        for visited, position in zip(self.visited, agent_positions(obs).tolist()):
            visited.add(tuple(position))

    def end(self, env_index: int) -> dict[str, float]:
        count, self.visited[env_index] = len(self.visited[env_index]), set()
        return {"positions": count}


class VideoRecorder:
    """Appends environment 0's frames to `frames` until its first episode ends (at most `max_frames`).

    Procgen envs are best rendered from the 64×64 observation upscaled (`upscale=4`), which is what the
    agent saw; rendering full-size frames for every environment would slow evaluation down several times.
    """

    def __init__(self, env: VecEnv, frames: list[np.ndarray], max_frames: int = 1000, upscale: int = 1) -> None:
        self.env = env
        self.max_frames = max_frames
        self.upscale = upscale
        self.frames = frames
        self.recording = True

    def observe(self, obs: Obs, first: np.ndarray) -> None:
        if self.recording and len(self.frames) < self.max_frames:
            frame = self.env.render(0)
            self.frames.append(frame.repeat(self.upscale, axis=0).repeat(self.upscale, axis=1)
                               if self.upscale > 1 else frame)

    def end(self, env_index: int) -> dict[str, float]:
        if env_index == 0:
            self.recording = False
        return {}


def run_episodes(model: Policy, env_cfg: Mapping[str, Any] | DictConfig, episodes: int, seed: int,
                 greedy: bool, num_envs: int = 8, video_frames: list[np.ndarray] | None = None,
                 max_frames: int = 1000) -> list[Episode]:
    """Play `episodes` episodes of `env_cfg` on `num_envs` evaluation environments (seed streams no
    training environment uses), a fixed share from each; optionally append environment 0's first
    episode to `video_frames` (NetHack/MiniHack: the terminal; Procgen: the 64×64 frames, 4× larger)."""
    num_envs = max(1, min(num_envs, episodes))
    procgen = env_cfg["family"] == "procgen"
    env = make_vec_env(env_cfg, num_envs, seed=seed, render=video_frames is not None and not procgen,
                       evaluation=True)
    observers = []
    if video_frames is not None:
        observers.append(VideoRecorder(env, video_frames, max_frames, upscale=4 if procgen else 1))
    try:
        return play_episodes(env, policy_actor(model, num_envs, seed, greedy), episode_quota(episodes, num_envs),
                             observers)
    finally:
        env.close()


def summarize(episodes: list[Episode]) -> dict[str, float]:
    """Mean of every numeric statistic over the episodes that report it (`end/<cause>` means are the
    fractions of episodes that ended that way)."""
    keys = sorted({k for ep in episodes for k, v in ep.items() if not isinstance(v, str)})
    return {k: float(np.mean([ep[k] for ep in episodes if k in ep])) for k in keys}


def death_counts(episodes: list[Episode]) -> dict[str, int]:
    """How many episodes ended with each NetHack death reason ("killed by a jackal": 3), most frequent first."""
    return dict(Counter(ep["death"] for ep in episodes if ep.get("death")).most_common())
