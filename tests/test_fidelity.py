"""Reference fidelity (docs/fidelity.md): each effective scale against a plain transcription of the
reference code's arithmetic, written here rather than imported."""
import math

import numpy as np
import pytest
import torch

from rlzoo.algos.objective import BatchTargets
from rlzoo.bonuses import build_bonus
from rlzoo.bonuses.common.normalization import IntrinsicNormalizer, ReferenceRunningStd
from rlzoo.config import load_config
from rlzoo.envs import env_spec
from rlzoo.runtime.rollout import RolloutWorker



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


@pytest.mark.unit
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


@pytest.mark.integration  # steps real environments for its rewards
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


@pytest.mark.unit
def test_dynamics_losses_are_summed_over_time_and_averaged_over_environments_as_in_the_reference():
    from rlzoo.bonuses.common.dynamics import ForwardDynamics, InverseDynamics

    torch.manual_seed(0)
    phi = torch.randn(4, 2, 3)  # [T+1, B, d]
    actions = torch.tensor([[0, 1], [1, 1], [0, 0]])
    dones = torch.tensor([[False, False], [False, True], [False, False]])
    forward = ForwardDynamics(3, 2, hidden=5)
    inverse = InverseDynamics(3, 2)
    # RIDE's reference: Σ_t mean_b ‖f(φ_t, a_t) − φ_{t+1}‖₂ (a norm, not its square); the transition
    # into a new episode is left out here.
    with torch.no_grad():
        f_total, i_total = 0.0, 0.0
        for t in range(3):
            for b in range(2):
                if dones[t, b]:
                    continue
                one_hot = torch.nn.functional.one_hot(actions[t, b], 2).float()
                predicted = forward.net(torch.cat([phi[t, b], one_hot]))
                f_total += float(torch.sqrt(((predicted - phi[t + 1, b]) ** 2).sum())) / 2
                logits = inverse.net(torch.cat([phi[t, b], phi[t + 1, b]]))
                i_total += float(-torch.log_softmax(logits, -1)[actions[t, b]]) / 2
        assert float(forward.loss(phi, actions, dones)) == pytest.approx(f_total, rel=1e-5)
        assert float(inverse.loss(phi, actions, dones)) == pytest.approx(i_total, rel=1e-5)
        squared = ForwardDynamics(3, 2, hidden=5, loss="squared")
        squared.load_state_dict(forward.state_dict())
        assert float(squared.loss(phi, actions, dones)) != pytest.approx(f_total, rel=1e-3)


@pytest.mark.unit
def test_the_full_with_time_key_counts_the_turn_counter_and_full_does_not():
    from rlzoo.bonuses.common.counting import state_hashes

    obs = {"glyphs": torch.zeros(2, 1, 21, 79, dtype=torch.int16), "blstats": torch.zeros(2, 1, 27, dtype=torch.int32),
           "message": torch.zeros(2, 1, 256, dtype=torch.uint8)}
    obs["blstats"][1, 0, 20] = 7  # only the turn counter moved (NLE_BL_TIME)
    with_time, without = state_hashes(obs, "full_with_time"), state_hashes(obs, "full")
    assert with_time[0, 0] != with_time[1, 0] and without[0, 0] == without[1, 0]


def make_learner(overrides):
    from rlzoo.runtime.learner import Learner

    cfg = load_config(["runtime=serial", "runtime.envs_per_actor=4", "runtime.batch_size=4", "runtime.unroll_length=8",
                       "model.lstm_size=0", "model.fc_sizes=[32]", "algo.grad_norm_clip=0", *overrides])
    spec = env_spec(cfg.env)
    return cfg, spec, Learner(cfg, spec, 4, torch.device("cpu"))


@pytest.mark.unit
def test_the_references_batch_mean_reduction_divides_the_gradient_by_the_batch_width():
    cfg, spec, summed = make_learner(["algo.loss_reduction=sum"])
    _, _, averaged = make_learner(["algo.loss_reduction=time_sum_batch_mean"])
    batch = RolloutWorker(cfg, 0, spec).rollout().unroll.to_torch()
    for learner in (summed, averaged):
        learner._accumulate_gradients(batch, BatchTargets(None), batch.size, torch.arange(batch.num_columns), 0)
    for a, b in zip(summed.model.parameters(), averaged.model.parameters()):
        torch.testing.assert_close(b.grad, a.grad / 4)


@pytest.mark.unit
def test_each_bonus_network_has_its_gradient_norm_clipped_on_its_own():
    cfg = load_config(["bonus=ride", "bonus.grad_norm_clip=0.01", "bonus.normalize=none", "model.lstm_size=0",
                       "model.fc_sizes=[32]", "runtime=serial", "runtime.envs_per_actor=4", "runtime.batch_size=4",
                       "runtime.unroll_length=8"])
    spec = env_spec(cfg.env)
    bonus = build_bonus(cfg.bonus, spec, cfg.model, 4, "cpu")
    batch = RolloutWorker(cfg, 0, spec).rollout().unroll.to_torch()
    steps = []
    original = bonus.optimizer.step
    bonus.optimizer.step = lambda: steps.append([torch.nn.utils.get_total_norm([p.grad for p in group if p.grad is not None])
                                                 for group in bonus.clip_groups()]) or original()
    bonus.intrinsic_reward(batch)
    bonus.update(batch)
    assert len(steps[0]) == 3 and all(float(norm) <= 0.01 + 1e-6 for norm in steps[0])


@pytest.mark.unit
def test_e3b_times_rnd_is_the_frozen_encoder_novelty_of_the_next_state_times_the_e3b_bonus():
    import copy

    cfg = load_config(["bonus=e3b_rnd", "bonus.normalize=none", "model.lstm_size=0", "model.fc_sizes=[32]",
                       "runtime=serial", "runtime.envs_per_actor=4", "runtime.batch_size=4", "runtime.unroll_length=8"])
    spec = env_spec(cfg.env)
    bonus = build_bonus(cfg.bonus, spec, cfg.model, 4, "cpu")
    batch = RolloutWorker(cfg, 0, spec).rollout().unroll.to_torch()
    e3b_alone = copy.deepcopy(bonus.episodic_bonus)
    with torch.no_grad():
        flat = {k: v[1:].reshape(-1, *v.shape[2:]) for k, v in batch.obs.items()}
        novelty = bonus.global_bonus.rnd(flat).norm(dim=-1).view(8, 4)  # e(s′): L2 norm, no whitening, α = 0
    expected = novelty * e3b_alone.intrinsic_reward(batch)
    torch.testing.assert_close(bonus.intrinsic_reward(batch), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.unit
@pytest.mark.parametrize("option, expected", [
    ("e3b", {"coef": 1.0, "normalize": "reference_std", "reference_batch": 8, "grad_norm_clip": 40.0}),
    ("e3b_rnd", {"coef": 1.0, "normalize": "reference_std", "global_bonus.alpha": 0.0,
                 "global_bonus.first_visit_mask": False, "global_bonus.name": "noveld"}),
    ("e3b_noveld", {"coef": 1.0, "normalize": "reference_std", "global_bonus.alpha": 0.1}),
    ("noveld", {"coef": 1.0, "alpha": 0.1, "normalize": "reference_std", "state_key": "full_with_time"}),
    ("ride", {"forward_loss": "l2", "forward_loss_coef": 1.0, "inverse_loss_coef": 0.1, "state_key": "full_with_time",
              "optimizer": "rmsprop", "grad_norm_clip": 40.0}),
    ("counts_global_episodic", {"normalize": "reference_std", "op": "product"}),
    ("rnd_minihack", {"coef": 0.001, "normalize": "none", "separate_value_head": False, "variant": "e3b_minihack"}),
])
def test_defaults_that_cite_a_paper_are_its_effective_settings(option, expected):
    from omegaconf import OmegaConf

    cfg = load_config([f"bonus={option}"]).bonus
    assert {key: OmegaConf.select(cfg, key) for key in expected} == expected
