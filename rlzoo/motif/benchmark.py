"""What the Motif benchmark measures: how a policy scores over whole episodes, how much Motif reward
it collects, and which messages the reward model ranks high.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from nle import nethack

from .captions import decode_message
from .collect import Policy
from .dataset import PairDataset
from .intrinsic import count_discounted_reward
from .reward_model import MotifReward

# Where an episode's score came from.
BL_GOLD = nethack.NLE_BL_GOLD
BL_EXP = nethack.NLE_BL_EXP


class EpisodeMotifReturn:
    """Motif's r_int = z·1[z > ε] / N_ep(msg)^β summed over each environment's current episode.

    The observation that ends an episode is replaced by the next episode's first one before it is
    seen, so the last transition of an episode goes uncounted (as in the collect step).
    """

    def __init__(self, reward: MotifReward, epsilon: float | None, beta: float, num_envs: int) -> None:
        self.reward = reward
        self.epsilon = epsilon
        self.beta = beta
        self.counts: list[Counter[bytes]] = [Counter() for _ in range(num_envs)]
        self.totals = np.zeros(num_envs, dtype=np.float64)

    def step(self, messages: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """Add the reward of reaching `messages` [B, 256]; return the finished episodes' totals [B]
        (meaningful where `dones`) and start new episodes there."""
        finished = self.totals.copy()
        counts = np.ones(len(dones), dtype=np.int64)
        for i, done in enumerate(dones.tolist()):
            if done:
                self.counts[i].clear()
            else:
                key = messages[i].tobytes()
                self.counts[i][key] += 1
                counts[i] = self.counts[i][key]
        reward = count_discounted_reward(self.reward.normalized(messages), counts, self.epsilon, self.beta)
        self.totals = np.where(dones, 0.0, self.totals + reward)
        return finished


def play_episodes(env: Any, policy: Policy, per_env: int,
                  motif_return: EpisodeMotifReturn | None = None) -> list[dict[str, float]]:
    """The first `per_env` episodes of every environment, in environment order, each with the gold
    and experience points shown on its last observed step.

    Taking the first episodes to finish overall would favour short episodes, and NetHack's score
    grows with episode length; a fixed number per environment also gives every policy evaluated
    with the same seed the same dungeons.
    """
    obs = env.reset()
    first = np.ones(env.num_envs, dtype=bool)
    last_blstats = obs["blstats"].copy()
    kept: list[list[dict[str, float]]] = [[] for _ in range(env.num_envs)]
    while min(len(k) for k in kept) < per_env:
        obs, _, dones, episodes = env.step(policy(obs, first))
        first = dones
        totals = None if motif_return is None else motif_return.step(obs["message"], dones)
        # The env reports finished episodes in environment order.
        for i, episode in zip(np.flatnonzero(dones).tolist(), episodes):
            if len(kept[i]) < per_env:
                extra = {"gold": float(last_blstats[i, BL_GOLD]), "experience": float(last_blstats[i, BL_EXP])}
                if totals is not None:
                    extra["motif_return"] = float(totals[i])
                kept[i].append({**episode, **extra})
        # A done env's observation already belongs to its next episode.
        last_blstats[~dones] = obs["blstats"][~dones]
    return [episode for env_episodes in kept for episode in env_episodes]


@dataclass(frozen=True)
class Comparison:
    mean_a: float
    se_a: float
    mean_b: float
    se_b: float
    diff: float
    ci_low: float     # bootstrap confidence interval of mean_a − mean_b
    ci_high: float


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% for z = 1.96); sound for small samples
    and proportions near 0 or 1, where the normal approximation is not."""
    if trials < 1:
        return float("nan"), float("nan")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return float(centre - half), float(centre + half)


def compare_means(a: np.ndarray, b: np.ndarray, level: float = 0.95, resamples: int = 10000,
                  seed: int = 0) -> Comparison:
    """Means ± standard errors of two independent samples and a percentile-bootstrap interval of
    the difference of their means (each sample resampled on its own)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boot_a = a[rng.integers(0, len(a), size=(resamples, len(a)))].mean(axis=1)
    boot_b = b[rng.integers(0, len(b), size=(resamples, len(b)))].mean(axis=1)
    low, high = np.quantile(boot_a - boot_b, [(1 - level) / 2, (1 + level) / 2])
    (mean_a, se_a), (mean_b, se_b) = mean_and_se(a), mean_and_se(b)
    return Comparison(mean_a, se_a, mean_b, se_b, mean_a - mean_b, float(low), float(high))


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
