"""Reference fidelity (docs/fidelity.md): each effective scale against a plain transcription of the
reference code's arithmetic, written here rather than imported."""
import math

import numpy as np
import pytest
import torch

from rlzoo.bonuses import build_bonus
from rlzoo.bonuses.common.normalization import IntrinsicNormalizer, ReferenceRunningStd
from rlzoo.config import load_config
from rlzoo.envs import env_spec
from rlzoo.runtime.rollout import RolloutWorker

pytestmark = pytest.mark.unit


class ReferenceStdTranscription:
    """The E3B reference's update_running_moments / get_running_std, step by step."""

    def __init__(self) -> None:
        self.reward_sum, self.reward_m2, self.reward_count = 0.0, 0.0, 1e-8

    def update(self, batch: list[list[float]]) -> None:  # batch[t][b], the reference's [T, B] tensor
        n = len(batch)  # len() of the tensor: its first dimension, T
        total = sum(sum(row) for row in batch)
        mean = total / n
        running = self.reward_sum / self.reward_count
        squares = sum((x - mean) ** 2 for row in batch for x in row)
        self.reward_m2 += squares + self.reward_count * n / (self.reward_count + n) * (mean - running) ** 2
        self.reward_count += n
        self.reward_sum += total

    def std(self) -> float:
        return math.sqrt(self.reward_m2 / self.reward_count)


def test_reference_std_reproduces_the_reference_arithmetic_on_its_batch_shape():
    rng = np.random.default_rng(0)
    ours, reference = ReferenceRunningStd(reference_batch=8), ReferenceStdTranscription()
    for _ in range(5):
        batch = rng.gamma(1.0, 1.0, size=(80, 8))
        ours.update(torch.from_numpy(batch))
        reference.update(batch.tolist())
        assert float(ours.std()) == pytest.approx(reference.std(), rel=1e-9)
    # The bug's size: about sqrt(B + B(B-1)²μ²/σ²) = 20 times the true std for gamma(1, 1) (μ = σ = 1).
    assert reference.std() / 1.0 == pytest.approx(20.0, rel=0.1)


def raw_e3b_bonuses(unrolls: int = 6) -> np.ndarray:
    """Raw E3B bonuses (no normalisation) of random-policy MiniHack unrolls, in time order."""
    cfg = load_config(["runtime=serial", "runtime.envs_per_actor=16", "runtime.batch_size=16", "runtime.unroll_length=32",
                       "env.name=MiniHack-Room-Random-5x5-v0", "bonus=e3b", "bonus.normalize=none",
                       "model.lstm_size=0", "model.fc_sizes=[64]"])
    spec = env_spec(cfg.env)
    torch.manual_seed(0)
    worker = RolloutWorker(cfg, 0, spec)
    bonus = build_bonus(cfg.bonus, spec, cfg.model, 16, "cpu")
    rewards = []
    for _ in range(unrolls):
        batch = worker.rollout().unroll.to_torch()
        reward = bonus.intrinsic_reward(batch)
        bonus.update(batch)
        rewards.append(reward.numpy()[~batch.dones.numpy()])
    return np.concatenate(rewards)


def test_e3b_intrinsic_scale_matches_the_reference_on_the_same_rewards_whatever_our_batch_shape():
    raw = raw_e3b_bonuses()
    # The reference normalises batches of 80 steps × 8 environments; rlzoo's runs use other shapes.
    reference = ReferenceStdTranscription()
    for start in range(0, len(raw) - 639, 640):
        reference.update(raw[start:start + 640].reshape(80, 8).tolist())
    dones = torch.zeros(16, 64, dtype=torch.bool)
    for mode, near in (("reference_std", True), ("std", False)):
        ours = IntrinsicNormalizer(mode, 64, 0.99, True, reference_batch=8)
        for start in range(0, len(raw) - 1023, 1024):
            ours(torch.from_numpy(raw[start:start + 1024].reshape(16, 64)).float(), dones, torch.arange(64),
                 [np.arange(64)])
        # The intrinsic/extrinsic ratio scales as 1 / divisor: within 20% of the reference's, or
        # (the mathematically correct std) several times larger.
        ratio = reference.std() / float(ours.stats.std())
        assert (abs(ratio - 1) < 0.2) == near, (mode, ratio)
        if not near:
            assert ratio > 4
