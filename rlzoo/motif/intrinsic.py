"""Motif's RL transform of a normalised message reward, shared by `bonus=motif` and `bonus=oni`."""
from __future__ import annotations

import numpy as np


def count_discounted_reward(z: np.ndarray, episode_counts: np.ndarray, epsilon: float | None, beta: float) -> np.ndarray:
    """r_int = z · 1[z > ε] / N_ep(message)^β (no threshold when ε is None).

    z: normalised reward of the message each transition reaches; episode_counts: how often that
    message has been seen in the episode so far, this time included (≥ 1).
    """
    z = np.asarray(z, dtype=np.float64)
    kept = z if epsilon is None else np.where(z > epsilon, z, 0.0)
    return (kept / np.power(np.asarray(episode_counts, dtype=np.float64), beta)).astype(np.float32)
