"""The MiniGrid family: observations, seeding, levels, episode statistics and auto-reset, config errors."""
import numpy as np
import pytest

from rlzoo.envs import env_spec, make_vec_env

pytestmark = pytest.mark.unit

EMPTY = {"family": "minigrid", "name": "MiniGrid-Empty-5x5-v0"}  # agent at (1, 1) facing east, goal at (3, 3)
MAZE = {"family": "minigrid", "name": "MiniGrid-MultiRoom-N7-S4-v0"}
LEFT, RIGHT, FORWARD = 0, 1, 2


def rollout(cfg, seed, steps=60, num_envs=2):
    """Observations of `num_envs` envs under a fixed action sequence, copied step by step."""
    env = make_vec_env(cfg, num_envs, seed=seed)
    actions = np.random.default_rng(0).integers(3, size=(steps, num_envs))
    frames = [{k: v.copy() for k, v in env.reset().items()}]
    for a in actions:
        frames.append({k: v.copy() for k, v in env.step(a)[0].items()})
    env.close()
    return frames


def test_spec_is_the_papers_partial_view_plus_the_agents_position():
    spec = env_spec(MAZE)
    assert spec.family == "minigrid" and spec.num_actions == 7
    assert spec.action_names == ("left", "right", "forward", "pickup", "drop", "toggle", "done")
    assert spec.obs_space == {"image": ((7, 7, 3), np.dtype(np.uint8)), "agent": ((3,), np.dtype(np.uint8))}
    with_grid = env_spec({**MAZE, "full_grid": True})
    assert with_grid.obs_space["full_grid"] == ((25, 25, 3), np.dtype(np.uint8))


def test_the_view_and_the_full_grid_are_minigrids_own_encodings():
    from minigrid.wrappers import FullyObsWrapper

    env = make_vec_env({**MAZE, "full_grid": True}, 1, seed=3)
    obs = env.reset()
    inner = env.envs[0].env
    np.testing.assert_array_equal(obs["image"][0], inner.gen_obs()["image"])
    np.testing.assert_array_equal(obs["full_grid"][0], FullyObsWrapper(inner).observation(inner.gen_obs())["image"])
    assert tuple(obs["agent"][0]) == (*inner.agent_pos, inner.agent_dir)


def test_same_seed_same_episodes_other_seed_other_layouts():
    first, again, other = rollout(MAZE, seed=1), rollout(MAZE, seed=1), rollout(MAZE, seed=2)
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a["image"], b["image"]) for a, b in zip(first, other))
    # Environments of one run differ from each other too (seeded from (seed, env id)).
    assert not all(np.array_equal(f["image"][0], f["image"][1]) for f in first)


def test_reaching_the_goal_is_a_success_and_the_env_resets_itself():
    env = make_vec_env(EMPTY, 1, seed=0)
    env.reset()
    for action in (FORWARD, FORWARD, RIGHT, FORWARD):
        _, reward, done, episodes = env.step(np.array([action]))
        assert not done[0] and episodes == [] and reward[0] == 0.0
    obs, reward, done, episodes = env.step(np.array([FORWARD]))
    # MiniGrid pays 1 − 0.9 · steps / max_steps (100 on a 5x5 grid) for reaching the goal.
    assert done[0] and reward[0] == pytest.approx(1 - 0.9 * 5 / 100)
    assert episodes == [{"return": pytest.approx(0.955), "length": 5, "success": 1.0}]
    assert tuple(obs["agent"][0]) == (1, 1, 0)  # the next episode's start, facing east


def test_a_time_out_is_a_failure_after_the_configured_steps():
    env = make_vec_env({**EMPTY, "max_episode_steps": 3}, 1, seed=0)
    env.reset()
    finished = [env.step(np.array([LEFT]))[3] for _ in range(3)]
    assert finished[:2] == [[], []]
    assert finished[2] == [{"return": 0.0, "length": 3, "success": 0.0}]


def test_num_levels_one_replays_one_layout_and_zero_draws_new_ones():
    def first_grids(cfg, episodes=4):
        env = make_vec_env({**cfg, "full_grid": True, "max_episode_steps": 1}, 2, seed=5)
        grids = [env.reset()["full_grid"].copy()]
        for _ in range(episodes - 1):
            grids.append(env.step(np.array([LEFT, LEFT]))[0]["full_grid"].copy())
        return np.concatenate(grids)

    singleton = first_grids({**MAZE, "num_levels": 1})
    assert all(np.array_equal(g, singleton[0]) for g in singleton)
    procedural = first_grids(MAZE)
    assert len({g.tobytes() for g in procedural}) == len(procedural)


def test_the_ride_papers_multiroom_layouts_are_registered():
    env = make_vec_env({"name": "MiniGrid-MultiRoom-N10-S6-v0"}, 1, seed=0)
    inner = env.envs[0].env
    env.reset()
    assert len(inner.rooms) == 10 and inner.max_steps == 200


@pytest.mark.parametrize("cfg, message", [
    ({**MAZE, "num_levels": -1}, r"env.num_levels=-1 is not valid"),
    ({**MAZE, "full_grid": "yes"}, r"env.full_grid must be true or false"),
    ({**MAZE, "observation": "tty"}, r"unknown env key\(s\) \['observation'\] for family 'minigrid'"),
    ({"family": "minigrid", "name": "MiniGrid-MultiRom-N7-S4-v0"}, r"did you mean 'MiniGrid-MultiRoom-N7-S4-v0'"),
    ({"family": "minigrid", "name": "MiniHack-Room-5x5-v0"}, r"is a minihack env: use env=minihack"),
    ({**MAZE, "env_kwargs": {"agent_view_size": 5}}, r"agent_view_size=5: the minigrid family delivers the papers' 7x7"),
])
def test_bad_configs_name_the_key(cfg, message):
    with pytest.raises(ValueError, match=message):
        env_spec(cfg)
