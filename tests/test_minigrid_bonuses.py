"""Bonuses on MiniGrid: every bonus runs on the 7x7 view (or says why not), the count keys, RIDE as its
MiniGrid reference computes it."""
import numpy as np
import pytest
import torch

from rlzoo.bonuses import bonus_class, build_bonus, runnable_bonus_options
from rlzoo.bonuses.common.counting import check_state_key, state_hashes
from rlzoo.bonuses.ride import impact_reward
from rlzoo.config import load_config
from rlzoo.envs import env_spec, make_vec_env
from rlzoo.unroll import Unroll

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_torch_thread")]

MAZE = {"family": "minigrid", "name": "MiniGrid-MultiRoom-N7-S4-v0", "full_grid": True}
SMALL_MODEL = ["model.fc_sizes=[32]", "model.lstm_size=0"]
LEFT = 0


@pytest.fixture(scope="module")
def spec():
    return env_spec(MAZE)


def rollout_batch(actions: np.ndarray, seed: int = 0) -> Unroll:
    """A batch of real MiniGrid observations: envs 0 … B−1 stepped with `actions` [T, B]."""
    steps, cols = actions.shape
    env = make_vec_env(MAZE, cols, seed=seed)
    frames, dones = [{k: v.copy() for k, v in env.reset().items()}], []
    for a in actions:
        obs, _, done, _ = env.step(a)
        frames.append({k: v.copy() for k, v in obs.items()})
        dones.append(done)
    env.close()
    done_t = torch.as_tensor(np.array(dones))
    return Unroll(
        obs={k: torch.from_numpy(np.stack([f[k] for f in frames])) for k in frames[0]},
        first=torch.cat([torch.ones(1, cols, dtype=torch.bool), done_t]),
        actions=torch.as_tensor(actions, dtype=torch.int64),
        rewards=torch.zeros(steps, cols),
        dones=done_t,
        logits=torch.zeros(steps, cols, 7),
        core_state=(),
        env_ids=torch.arange(cols),
        unroll_index=torch.zeros(cols, dtype=torch.int64),
        policy_version=torch.zeros(cols, dtype=torch.int64),
        actor_ids=torch.zeros(cols, dtype=torch.int64),
    )


def make_bonus(spec, *overrides, num_envs=2):
    cfg = load_config(["env=minigrid", *SMALL_MODEL, *overrides])
    torch.manual_seed(0)
    return build_bonus(cfg.bonus, spec, cfg.model, num_envs, "cpu")


@pytest.mark.parametrize("option", [o for o in runnable_bonus_options() if o != "none"])
def test_every_bonus_runs_on_minigrid_or_says_what_it_lacks(spec, option):
    batch = rollout_batch(np.random.default_rng(1).integers(7, size=(12, 2)))
    name = load_config([f"bonus={option}"]).bonus.name
    if "minigrid" not in bonus_class(name).families:
        with pytest.raises(ValueError, match=r"env family 'minigrid' has none \(it runs on: nethack, minihack\)"):
            make_bonus(spec, f"bonus={option}")
        return
    bonus = make_bonus(spec, f"bonus={option}")
    reward = bonus.intrinsic_reward(batch)
    metrics = bonus.update(batch)
    assert reward.shape == (12, 2) and torch.isfinite(reward).all()
    assert all(np.isfinite(v) for v in metrics.values())


def test_count_keys_read_the_grid_the_view_or_the_position():
    # Four left turns bring the agent back to its first state: same cell, same direction.
    batch = rollout_batch(np.full((4, 1), LEFT))
    full, view, position = (state_hashes(batch.obs, key)[:, 0] for key in ("full", "view", "position"))
    assert len(set(position.tolist())) == 1
    assert len(set(full.tolist())) == 4 and full[4] == full[0]
    assert view[4] == view[0] and view[1] != view[0]


def test_whole_grid_keys_need_the_env_to_deliver_the_grid(spec):
    assert check_state_key("auto", spec) == "full"  # RIDE's and NovelD's episodic count key
    without_grid = env_spec({**MAZE, "full_grid": False})
    for key in ("auto", "full", "full_with_time"):
        with pytest.raises(ValueError, match="env.full_grid=true; set it, or count bonus.state_key=view or position"):
            check_state_key(key, without_grid)
    assert check_state_key("view", without_grid) == "view"
    with pytest.raises(ValueError, match=r"bonus.state_key='glyphs' is not available for minigrid.*view, position"):
        check_state_key("glyphs", without_grid)


def test_ride_preset_divides_the_embedding_change_by_the_episodic_count_of_the_whole_grid(spec):
    cfg = load_config(["experiment=ride_minigrid", *SMALL_MODEL])
    torch.manual_seed(0)
    bonus = build_bonus(cfg.bonus, spec, cfg.model, 1, "cpu")
    # RIDE's MiniGrid networks: a 128-d φ from its own embedding net, a 256-wide forward model.
    assert bonus.encoder.out_dim == 128 and bonus.forward_dynamics.net[0].out_features == 256
    batch = rollout_batch(np.full((4, 1), LEFT))
    with torch.no_grad():
        phi = bonus.encoder({"image": batch.obs["image"][:, 0]})
    reward = bonus.intrinsic_reward(batch)[:, 0]
    # The 4th turn revisits the first state: N_ep = 2 there, 1 before (the coefficient applies later).
    expected = impact_reward(phi.unsqueeze(1), torch.tensor([[1], [1], [1], [2]]))[:, 0]
    torch.testing.assert_close(reward, expected)


def test_burda_rnd_reads_the_whitened_view_on_minigrid(spec):
    bonus = make_bonus(spec, "bonus=rnd", "bonus.normalize=none")
    batch = rollout_batch(np.random.default_rng(2).integers(7, size=(8, 2)))
    first = bonus.intrinsic_reward(batch)
    for _ in range(30):
        bonus.update(batch)
        bonus.intrinsic_reward(batch)
    assert bonus.rnd.image_key == "image"
    assert float(bonus.intrinsic_reward(batch).mean()) < float(first.mean())  # the predictor learns what it saw
