"""IMPALA's loss (`rlzoo.algos.impala.impala_loss`) on hand-computed values: one and two reward streams."""
import math

import pytest
import torch

from rlzoo.algos.impala import ImpalaSettings, impala_loss
from rlzoo.algos.rewards import RewardMix, reward_streams
from rlzoo.config import load_config

pytestmark = pytest.mark.unit

LOG_HALF, LOG_3_4 = math.log(0.5), math.log(0.75)


def out_and_batch(values, int_values=None, behaviour_shift=0.0):
    """T = 2 steps, B = 1 column, 2 actions, action 0 taken twice. The policy gives action 0 the
    probabilities 0.5 (step 0) and 0.75 (step 1); the behaviour policy is the same unless shifted."""
    logits = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]], [[0.0, 0.0]]])  # [T+1, B, A]
    out = {"logits": logits, "baseline": torch.tensor(values).view(3, 1)}
    if int_values is not None:
        out["int_baseline"] = torch.tensor(int_values).view(3, 1)
    behaviour = logits[:-1].clone()
    behaviour[..., 0] += behaviour_shift
    return out, behaviour, torch.zeros(2, 1, dtype=torch.int64)


def test_one_stream_clips_the_sum_and_matches_hand_values():
    out, behaviour, actions = out_and_batch([0.0, 0.0, 0.0])
    extrinsic, intrinsic = torch.tensor([[2.0], [-3.0]]), torch.tensor([[0.5], [0.5]])
    mix = RewardMix(discount=0.5, clip="abs_one", extrinsic_coef=1.0, intrinsic_coef=1.0)
    loss = impala_loss(out, behaviour, actions, extrinsic, intrinsic, torch.zeros(2, 1, dtype=torch.bool),
                       ImpalaSettings(baseline_cost=0.5, entropy_cost=0.01), mix)
    # Rewards clip(2.5) = 1, clip(-2.5) = -1 (the sum is clipped, not each part); on-policy, so
    # log ρ = 0 and V-trace is the n-step return: v_1 = -1, v_0 = 1 + 0.5·(-1) = 0.5;
    # advantages A_0 = 1 + 0.5·v_1 - V_0 = 0.5, A_1 = -1.
    assert loss.baseline.item() == pytest.approx(0.5 * (0.5**2 + 1.0**2))
    assert loss.policy.item() == pytest.approx(-(LOG_HALF * 0.5 + LOG_3_4 * -1.0))
    entropy = -(2 * 0.5 * LOG_HALF) - (0.75 * LOG_3_4 + 0.25 * math.log(0.25))
    assert loss.entropy.item() == pytest.approx(entropy) and loss.entropy.item() > 0
    assert loss.total.item() == pytest.approx(loss.policy.item() + 0.5 * loss.baseline.item() - 0.01 * entropy)


def test_log_rho_is_zero_on_policy_and_clipped_off_policy():
    out, behaviour, actions = out_and_batch([0.0, 0.0, 0.0])
    rewards = torch.tensor([[1.0], [1.0]])
    dones = torch.zeros(2, 1, dtype=torch.bool)
    on = impala_loss(out, behaviour, actions, rewards, None, dones, ImpalaSettings(), RewardMix(discount=0.0))
    # γ = 0: advantages are the rewards when ρ = 1.
    assert on.policy.item() == pytest.approx(-(LOG_HALF + LOG_3_4))
    # The behaviour policy made action 0 far less likely: ρ > 1 is clipped to 1, nothing changes.
    off = impala_loss(out, behaviour - torch.tensor([5.0, 0.0]), actions, rewards, None, dones, ImpalaSettings(),
                      RewardMix(discount=0.0))
    assert off.policy.item() == pytest.approx(on.policy.item())
    # ... and far more likely: ρ = π/μ < 1 scales each advantage.
    shifted = behaviour + torch.tensor([1.0, 0.0])
    rho = torch.exp(out["logits"][:-1, 0].log_softmax(-1)[:, 0] - shifted[:, 0].log_softmax(-1)[:, 0])
    less = impala_loss(out, shifted, actions, rewards, None, dones, ImpalaSettings(), RewardMix(discount=0.0))
    assert less.policy.item() == pytest.approx(-(LOG_HALF * rho[0] + LOG_3_4 * rho[1]).item())


def test_two_streams_clip_only_the_extrinsic_reward_and_weight_the_advantages():
    out, behaviour, actions = out_and_batch([0.0, 0.0, 0.0], int_values=[0.0, 0.0, 0.0])
    extrinsic, intrinsic = torch.tensor([[2.0], [-3.0]]), torch.tensor([[3.0], [0.0]])
    mix = RewardMix(discount=0.5, extrinsic_coef=2.0, intrinsic_coef=1.0, two_streams=True, int_discount=0.5,
                    int_episodic=False)
    dones = torch.tensor([[True], [False]])
    loss = impala_loss(out, behaviour, actions, extrinsic, intrinsic, dones, ImpalaSettings(), mix)
    # Extrinsic: clipped to 1, -1, cut at the done: v = (1, -1), A = (1, -1).
    # Intrinsic: 3 not clipped, not cut: v_1 = 0, v_0 = 3, A = (3, 0). Mixed: 2·A_ext + 1·A_int = (5, -2).
    assert loss.policy.item() == pytest.approx(-(LOG_HALF * 5.0 + LOG_3_4 * -2.0))
    assert loss.baseline.item() == pytest.approx(0.5 * (1 + 1) + 0.5 * 9)


@pytest.mark.parametrize("episodic, advantages", [(False, (2.0, 4.0)), (True, (0.0, 4.0))])
def test_the_intrinsic_stream_flows_across_episode_ends_unless_episodic(episodic, advantages):
    out, behaviour, actions = out_and_batch([0.0, 0.0, 0.0], int_values=[0.0, 0.0, 0.0])
    mix = RewardMix(discount=0.5, extrinsic_coef=0.0, intrinsic_coef=1.0, two_streams=True, int_discount=0.5,
                    int_episodic=episodic)
    loss = impala_loss(out, behaviour, actions, torch.zeros(2, 1), torch.tensor([[0.0], [4.0]]),
                       torch.tensor([[True], [False]]), ImpalaSettings(), mix)
    # Not cut: A_0 = 0 + 0.5·4 = 2; cut at the done after step 0: A_0 = 0. A_1 = 4 either way.
    assert loss.policy.item() == pytest.approx(-(LOG_HALF * advantages[0] + LOG_3_4 * advantages[1]))


def test_baseline_loss_is_half_the_summed_squared_error_to_the_targets():
    out, behaviour, actions = out_and_batch([1.0, -1.0, 2.0])
    loss = impala_loss(out, behaviour, actions, torch.tensor([[0.0], [0.0]]), None,
                       torch.zeros(2, 1, dtype=torch.bool), ImpalaSettings(), RewardMix(discount=1.0, clip="none"))
    # v_1 = 0 + 1·2 = 2, v_0 = 0 + 1·2 = 2 (c = 1, on-policy): errors (2 - 1) and (2 - (-1)).
    assert loss.baseline.item() == pytest.approx(0.5 * (1.0**2 + 3.0**2))


def test_without_a_bonus_the_extrinsic_reward_alone_is_clipped():
    streams = reward_streams(torch.tensor([[5.0]]), None, torch.tensor([[False]]), RewardMix(discount=0.9))
    assert len(streams) == 1 and streams[0].rewards.item() == 1.0
    assert streams[0].discounts.item() == pytest.approx(0.9)


def test_motif_reward_is_a_hundredth_of_the_game_reward_plus_a_tenth_of_the_motif_reward_unclipped():
    # The reference: its actor scales the game's reward by 0.1 and clips it to ±10; its learner adds
    # 0.1 × that and 0.1 × the Motif reward, without clipping the sum.
    def reference(r_ext: float, r_int: float) -> float:
        return 0.1 * min(max(0.1 * r_ext, -10.0), 10.0) + 0.1 * r_int

    cfg = load_config(["bonus=motif"])
    mix = RewardMix.from_config(cfg.algo, cfg.bonus)  # bonus=motif's defaults
    extrinsic, intrinsic = torch.tensor([[20.0], [500.0], [-3.0]]), torch.tensor([[4.0], [0.0], [12.0]])
    rewards = reward_streams(extrinsic, intrinsic, torch.zeros(3, 1, dtype=torch.bool), mix)[0].rewards
    expected = [reference(20.0, 4.0), reference(500.0, 0.0), reference(-3.0, 12.0)]  # 0.6, 1.0, 1.17
    assert rewards[:, 0].tolist() == pytest.approx(expected)


def test_oni_clips_the_raw_game_reward_to_ten_and_leaves_the_sum_unclipped():
    cfg = load_config(["bonus=oni"])
    mix = RewardMix.from_config(cfg.algo, cfg.bonus)  # bonus=oni's defaults
    rewards = reward_streams(torch.tensor([[50.0], [4.0]]), torch.tensor([[1.0], [3.0]]),
                             torch.zeros(2, 1, dtype=torch.bool), mix)[0].rewards
    assert rewards[:, 0].tolist() == pytest.approx([0.1 * 10 + 0.4 * 1, 0.1 * 4 + 0.4 * 3])
