"""What the Motif benchmark measures: how a policy scores over whole episodes (episodes are played by
rlzoo.runtime.evaluation.play_episodes with the observers below), how much Motif reward it collects,
and which messages the reward model ranks high.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from nle import nethack

from .captions import decode_message
from .dataset import PairDataset
from .intrinsic import count_discounted_reward
from .reward_model import MotifReward

# Where an episode's score came from.
BL_GOLD = nethack.NLE_BL_GOLD
BL_EXP = nethack.NLE_BL_EXP


class EpisodeMotifReturn:
    """Observer (rlzoo.runtime.evaluation) adding `motif_return` to each episode: Motif's
    r_int = z·1[z > ε] / N_ep(msg)^β summed over the episode.

    The observation that ends an episode is replaced by the next episode's first one before it is
    seen, so the last transition of an episode goes uncounted (as in the collect step).
    """

    def __init__(self, reward: MotifReward, epsilon: float | None, beta: float, num_envs: int) -> None:
        self.reward = reward
        self.epsilon = epsilon
        self.beta = beta
        self.counts: list[Counter[bytes]] = [Counter() for _ in range(num_envs)]
        self.totals = np.zeros(num_envs, dtype=np.float64)

    def observe(self, obs: dict[str, np.ndarray], first: np.ndarray) -> None:
        """Add the reward of reaching `obs`; where `first`, a new episode starts at it (no reward)."""
        messages = obs["message"]
        counts = np.ones(len(first), dtype=np.int64)
        for i, starts in enumerate(first.tolist()):
            if starts:
                self.counts[i].clear()
            else:
                key = messages[i].tobytes()
                self.counts[i][key] += 1
                counts[i] = self.counts[i][key]
        reward = count_discounted_reward(self.reward.normalized(messages), counts, self.epsilon, self.beta)
        self.totals = np.where(first, 0.0, self.totals + reward)

    def end(self, env_index: int) -> dict[str, float]:
        return {"motif_return": float(self.totals[env_index])}


class GoldAndExperience:
    """Observer adding the gold and experience points shown on each episode's last observed step."""

    def __init__(self, num_envs: int) -> None:
        self.last = np.zeros((num_envs, nethack.NLE_BLSTATS_SIZE), dtype=np.int64)

    def observe(self, obs: dict[str, np.ndarray], first: np.ndarray) -> None:
        self.last[:] = obs["blstats"]

    def end(self, env_index: int) -> dict[str, float]:
        return {"gold": float(self.last[env_index, BL_GOLD]), "experience": float(self.last[env_index, BL_EXP])}


@dataclass(frozen=True)
class RankedMessage:
    text: str
    z: float
    occurrences: int       # in the dataset's sequences
    mean_score_gain: float  # of the sequences that reach it


def rank_messages(dataset: PairDataset, reward: MotifReward) -> list[RankedMessage]:
    """Every distinct message of the dataset with its normalised reward z, highest first."""
    length = np.asarray(dataset.arrays["length"][:dataset.count])
    messages = np.asarray(dataset.arrays["messages"][:dataset.count])
    valid = np.arange(messages.shape[2])[None, None, :] < length[:, :, None]
    flat = messages[valid]
    # A sequence's score gain is credited to each of its messages (exact for Motif's length-1 sequences).
    gains = np.broadcast_to(np.asarray(dataset.arrays["score_gain"][:dataset.count])[:, :, None], valid.shape)[valid]
    unique, inverse, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    mean_gain = np.bincount(inverse, weights=gains, minlength=len(unique)) / counts
    z = reward.normalized(unique)
    order = np.argsort(-z, kind="stable")
    return [RankedMessage(decode_message(unique[i]), float(z[i]), int(counts[i]), float(mean_gain[i])) for i in order]
