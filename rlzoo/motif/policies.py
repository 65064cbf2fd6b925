"""Policies the collect step can run: uniform random, or a policy trained by rlzoo-train."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .collect import Policy


def random_policy(num_actions: int, seed: int) -> Policy:
    rng = np.random.default_rng(seed)

    def act(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
        return rng.integers(0, num_actions, size=len(obs["message"]))

    return act


def checkpoint_policy(path: str, num_envs: int, seed: int) -> Policy:
    """Samples from a trained policy, carrying its recurrent state (reset where `first`)."""
    from rlzoo.evaluate import load_policy

    _, model = load_policy(Path(path))
    generator = torch.Generator().manual_seed(seed)
    state = model.initial_state(num_envs)

    def act(obs: dict[str, np.ndarray], first: np.ndarray) -> np.ndarray:
        nonlocal state
        actions, _, state = model.act(obs, first, state, generator)
        return actions.numpy()

    return act
