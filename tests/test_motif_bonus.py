"""bonus=motif: the r_int transform (threshold, episodic count division) on hand-computed values."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlzoo.bonuses.common.base import create_bonus
from rlzoo.motif.captions import encode_message
from rlzoo.motif.intrinsic import count_discounted_reward
from rlzoo.motif.reward_model import QUANTILE_LEVELS, MessageRewardModel, save_reward_model
from unrolls import make_unroll

pytestmark = pytest.mark.unit

SPEC = SimpleNamespace(family="nethack", num_actions=23)


def test_transform_threshold_and_count_division():
    z = np.array([2.0, 0.5, -1.0, 3.0, 0.6])
    n = np.array([1, 2, 1, 3, 1])
    assert count_discounted_reward(z, n, 0.6, 3.0).tolist() == pytest.approx([2.0, 0.0, 0.0, 3 / 27, 0.0])
    assert count_discounted_reward(z, n, None, 3.0).tolist() == pytest.approx([2.0, 0.5 / 8, -1.0, 3 / 27, 0.6])
    # A negative ε lets mildly negative rewards through, as the formula says.
    assert count_discounted_reward(z, n, -1.5, 1.0).tolist() == pytest.approx([2.0, 0.25, -1.0, 1.0, 0.6])


@pytest.fixture
def model_path(tmp_path):
    torch.manual_seed(0)
    model = MessageRewardModel(embed_dim=8, channels=16, hidden=16)
    # ε (the 0.5 level) = −10: every message passes the threshold, so counts alone shape the reward.
    quantiles = np.where(QUANTILE_LEVELS < 0.5, -20.0, np.where(QUANTILE_LEVELS == 0.5, -10.0, 10.0))
    path = tmp_path / "rm.pt"
    save_reward_model(path, model, mean=0.1, std=0.5, quantile_values=quantiles, info={})
    return path


def config(path, **kw):
    return {"name": "motif", "coef": 0.1, "extrinsic_coef": 0.1, "separate_value_head": False, "int_discount": 0.99,
            "extrinsic_scale": 1.0, "extrinsic_clip": None, "clip_total": True, "reference_batch": 8, "grad_norm_clip": 0.0,
            "int_episodic": True, "normalize": "none", "reward_model_path": str(path), "threshold_quantile": 0.5,
            "count_exponent": 3.0, **kw}


def batch(texts_per_env, dones, unroll_index):
    """obs messages [T+1, B] from texts; dones [T, B]."""
    messages = np.stack([np.stack([encode_message(t) for t in col]) for col in texts_per_env], axis=1)
    dones = torch.tensor(dones, dtype=torch.bool).T
    first = torch.zeros(messages.shape[:2], dtype=torch.bool)
    first[1:] = dones
    first[0] = torch.tensor([i == 0 for i in unroll_index])
    obs = {"message": torch.from_numpy(messages), "blstats": torch.zeros(*messages.shape[:2], 27, dtype=torch.int32)}
    return make_unroll(obs, first, dones, torch.arange(len(texts_per_env)), torch.tensor(unroll_index))


def test_motif_bonus_counts_messages_per_episode_across_unrolls(model_path):
    bonus = create_bonus(config(model_path), SPEC, None, num_envs=2, device="cpu")
    z = {t: float(bonus.reward_model.normalized(encode_message(t)[None])[0]) for t in "ABC"}
    b1 = batch([["A", "B", "A", "A", "C"], ["C", "C", "C", "C", "C"]],
               [[0, 0, 1, 0], [0, 0, 0, 0]], [0, 0])
    r1 = bonus.intrinsic_reward(b1)
    bonus.update(b1)
    # env 0: A counted at the start; B:1, A:2, done → 0 (the new episode starts by seeing A), C:1.
    # env 1: C counted at the start, then C is seen 2, 3, 4, 5 times.
    expected = [[z["B"], z["A"] / 8, 0.0, z["C"]], [z["C"] / 8, z["C"] / 27, z["C"] / 64, z["C"] / 125]]
    assert r1.T.tolist() == [pytest.approx(row, rel=1e-5) for row in expected]
    # The next unroll of env 0 continues its episode: A was seen once since the reset.
    b2 = batch([["C", "A", "B"], ["C", "B", "B"]], [[0, 0], [0, 1]], [1, 1])
    r2 = bonus.intrinsic_reward(b2)
    # B was seen before the reset only, so it is new again.
    assert r2.T.tolist() == [pytest.approx([z["A"] / 8, z["B"]], rel=1e-5), pytest.approx([z["B"], 0.0], rel=1e-5)]


def test_motif_threshold_zeroes_rewards_below_epsilon(model_path):
    bonus = create_bonus(config(model_path, threshold_quantile=0.6), SPEC, None, num_envs=1, device="cpu")
    assert bonus.epsilon == 10.0  # from the saved quantiles; every z here is far below
    r = bonus.intrinsic_reward(batch([["A", "B", "C"]], [[0, 0]], [0]))
    assert torch.all(r == 0)


def test_motif_bonus_config_errors(model_path, tmp_path):
    with pytest.raises(ValueError, match="bonus.reward_model_path is required"):
        create_bonus(config(model_path, reward_model_path=None), SPEC, None, 1, "cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_bonus(config(tmp_path / "missing.pt"), SPEC, None, 1, "cpu")
    with pytest.raises(ValueError, match="threshold_quantile=1.5"):
        create_bonus(config(model_path, threshold_quantile=1.5), SPEC, None, 1, "cpu")
    with pytest.raises(ValueError, match="no message|has none"):
        create_bonus(config(model_path), SimpleNamespace(family="procgen", num_actions=15), None, 1, "cpu")
