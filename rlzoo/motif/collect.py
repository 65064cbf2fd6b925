"""Collect step: run a policy on a NetHack task and store random pairs of observation sequences.

Each sequence is `seq_len` consecutive transitions of one episode (the messages and blstats of the
observations they reach); a sequence waits until its episode ends so that it can carry the episode
return, then joins a pool from which random pairs are drawn — pairs therefore mix episodes and
times as Motif's random pairs do. Terminal transitions are left out: the environment has already
reset, so the observation they reach is gone.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from .dataset import BL_SCORE, BL_TIME, PairDataset, Segment

# (observations, first[B]: obs[i] starts an episode) → actions[B]
Policy = Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CollectSettings:
    num_pairs: int = 10000
    seq_len: int = 1           # transitions per sequence; Motif's captions come from one step
    num_envs: int = 8
    keep_prob: float = 0.1     # fraction of sequences kept: spreads a dataset over more episodes
    pool_size: int = 1000      # sequences waiting to be paired; larger mixes more episodes
    flush_every: int = 500     # pairs between durable flushes (the resume point)
    seed: int = 0

    def validate(self, key: str = "collect") -> None:
        for name in ("num_pairs", "seq_len", "num_envs", "pool_size", "flush_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}.{name}={value!r} must be an integer >= 1")
        if self.pool_size < 2:
            raise ValueError(f"{key}.pool_size={self.pool_size} must be >= 2")
        if not 0 < self.keep_prob <= 1:
            raise ValueError(f"{key}.keep_prob={self.keep_prob!r} must be in (0, 1]")


class _Window:
    """The sequence being built in one environment."""

    def __init__(self, blstats: np.ndarray) -> None:
        self.messages: list[np.ndarray] = []
        self.blstats: list[np.ndarray] = []
        self.start_score = int(blstats[BL_SCORE])
        self.start_turn = int(blstats[BL_TIME])

    def close(self) -> Segment:
        last = self.blstats[-1]
        return Segment(
            messages=np.stack(self.messages),
            blstats=np.stack(self.blstats),
            score_gain=float(int(last[BL_SCORE]) - self.start_score),
            turns=(self.start_turn, int(last[BL_TIME])),
        )


def collect(
    make_env: Callable[[int, int], Any],
    out_dir: str | os.PathLike,
    settings: CollectSettings,
    make_policy: Callable[[Any, int], Policy],
    info: dict[str, Any],
    progress: bool = True,
) -> dict[str, Any]:
    """Fill (or finish filling) the dataset at `out_dir` with `settings.num_pairs` pairs.

    `make_env(num_envs, seed)` builds the vectorised env, `make_policy(env, seed)` the policy. A
    resumed run reseeds with the number of pairs already stored, so it plays new episodes.
    """
    settings.validate()
    meta_file = os.path.join(out_dir, "meta.json")
    if os.path.exists(meta_file):
        dataset = PairDataset.open(out_dir, writable=True)
        if dataset.seq_len != settings.seq_len or dataset.capacity != settings.num_pairs:
            raise ValueError(
                f"{out_dir} holds a dataset with seq_len={dataset.seq_len}, num_pairs={dataset.capacity}; "
                f"collect.seq_len={settings.seq_len}, collect.num_pairs={settings.num_pairs} differ: use another out_dir"
            )
    else:
        dataset = PairDataset.create(out_dir, settings.num_pairs, settings.seq_len, {**info, "settings": vars(settings)})
    already = dataset.count
    if already >= dataset.capacity:
        return {"pairs": already, "new_pairs": 0, "env_steps": 0, "episodes": 0, "seconds": 0.0}
    seed = settings.seed + 1_000_003 * already
    env = make_env(settings.num_envs, seed)
    policy = make_policy(env, seed)
    rng = np.random.default_rng(seed)
    obs = env.reset()
    first = np.ones(env.num_envs, dtype=bool)
    windows = [_Window(obs["blstats"][i]) for i in range(env.num_envs)]
    waiting: list[list[Segment]] = [[] for _ in range(env.num_envs)]
    returns = np.zeros(env.num_envs, dtype=np.float64)
    pool: list[Segment] = []
    steps = episodes = 0
    start = time.monotonic()
    bar = tqdm(total=dataset.capacity, initial=already, desc="collect", unit="pair", disable=not progress, dynamic_ncols=True)
    try:
        while dataset.count < dataset.capacity:
            obs, rewards, dones, _ = env.step(policy(obs, first))
            first = dones
            steps += env.num_envs
            returns += rewards
            for i in range(env.num_envs):
                window = windows[i]
                if not dones[i]:
                    window.messages.append(obs["message"][i].copy())
                    window.blstats.append(obs["blstats"][i].copy())
                if window.messages and (dones[i] or len(window.messages) == settings.seq_len):
                    if rng.random() < settings.keep_prob:
                        waiting[i].append(window.close())
                    windows[i] = window = _Window(obs["blstats"][i])
                elif dones[i]:
                    windows[i] = _Window(obs["blstats"][i])
                if dones[i]:
                    episodes += 1
                    for seq in waiting[i]:
                        seq.episode_return = float(returns[i])
                    pool.extend(waiting[i])
                    waiting[i] = []
                    returns[i] = 0.0
            while len(pool) >= settings.pool_size or (len(pool) >= 2 and dataset.count + len(pool) // 2 >= dataset.capacity):
                a, b = sorted(rng.choice(len(pool), size=2, replace=False), reverse=True)
                first, second = pool.pop(a), pool.pop(b)
                dataset.append(first, second)
                bar.update(1)
                if dataset.count % settings.flush_every == 0:
                    dataset.flush()
                if dataset.count >= dataset.capacity:
                    break
            bar.set_postfix(env_steps=steps, episodes=episodes, pool=len(pool), refresh=False)
    finally:
        dataset.flush()
        bar.close()
        env.close()
    elapsed = time.monotonic() - start
    return {
        "pairs": dataset.count,
        "new_pairs": dataset.count - already,
        "env_steps": steps,
        "episodes": episodes,
        "seconds": elapsed,
        "env_steps_per_s": steps / elapsed if elapsed > 0 else 0.0,
    }
