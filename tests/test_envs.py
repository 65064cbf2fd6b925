"""Environment wrappers: obs contract, auto-reset and episode stats, crop, seeding, validation."""
import collections
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from nle import nethack
from nle.nethack.nethack import DLPATH as NLE_LIBRARY
from omegaconf import OmegaConf

from rlzoo.envs import env_spec, eval_env_cfg, make_vec_env, validate_env_cfg
from rlzoo.envs import minigrid_levels
from rlzoo.envs import nethack as nethack_env
from rlzoo.envs.minigrid_levels import CompiledLevelBesideArchive
from rlzoo.envs.nethack import AgentCrop
from rlzoo.envs.nethack_stats import END_CAUSES
from rlzoo.envs.registry import NETHACK_TASKS, PROCGEN_GAMES, minihack_tasks

pytestmark = pytest.mark.unit

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "env"
MINIHACK = {"family": "minihack", "name": "MiniHack-Room-5x5-v0"}
NETHACK = {"family": "nethack", "name": "NetHackScore-v0"}
PROCGEN = {"family": "procgen", "name": "coinrun", "num_levels": 200, "distribution_mode": "easy"}
END_KEYS = {f"end/{cause}" for cause in END_CAUSES}


def _check_obs(obs, spec, num_envs):
    assert set(obs) == set(spec.obs_space)
    for name, (shape, dtype) in spec.obs_space.items():
        assert obs[name].shape == (num_envs, *shape), name
        assert obs[name].dtype == dtype, name


def _run_until_episodes(venv, num_actions, min_episodes, max_steps, seed=0):
    """Step with random actions; check each episode's return/length against our own tally."""
    rng = np.random.default_rng(seed)
    returns = np.zeros(venv.num_envs)
    lengths = np.zeros(venv.num_envs, dtype=int)
    episodes = []
    for _ in range(max_steps):
        obs, reward, done, finished = venv.step(rng.integers(num_actions, size=venv.num_envs))
        assert reward.dtype == np.float32 and reward.shape == (venv.num_envs,)
        assert done.dtype == bool and done.shape == (venv.num_envs,)
        returns += reward
        lengths += 1
        assert len(finished) == done.sum()
        for episode, i in zip(finished, np.flatnonzero(done)):
            assert episode["length"] == lengths[i]
            assert episode["return"] == pytest.approx(returns[i], abs=1e-4)
        returns[done] = 0.0
        lengths[done] = 0
        episodes += finished
        if len(episodes) >= min_episodes:
            return obs, episodes
    raise AssertionError(f"fewer than {min_episodes} episodes in {max_steps} steps")


def test_configs_are_valid_and_default_names():
    names = {f: validate_env_cfg(OmegaConf.load(CONFIGS / f"{f}.yaml"))["name"] for f in
             ("minihack", "nethack", "procgen")}  # fmt: skip
    assert names == {
        "minihack": "MiniHack-Room-5x5-v0", "nethack": "NetHackScore-v0", "procgen": "coinrun"
    }


def test_task_lists():
    assert len(minihack_tasks()) == 161
    assert len(PROCGEN_GAMES) == 16 and len(NETHACK_TASKS) == 8


def test_minihack_steps_and_auto_resets():
    spec = env_spec(MINIHACK)
    assert spec.family == "minihack" and spec.num_actions == 8 == len(spec.action_names)
    venv = make_vec_env(MINIHACK, num_envs=2, seed=0)
    _check_obs(venv.reset(), spec, 2)
    obs, episodes = _run_until_episodes(venv, spec.num_actions, min_episodes=3, max_steps=2000)
    _check_obs(obs, spec, 2)
    for episode in episodes:
        assert set(episode) == {"return", "length", "success", "death", *END_KEYS}
        # Room-5x5 pays 1 only for reaching the goal (minus small time penalties).
        assert episode["success"] == float(episode["return"] > 0.5) == episode["end/task_success"]
    assert any(e["success"] == 1.0 for e in episodes)
    venv.close()


def test_nethack_steps_with_step_limit():
    cfg = {**NETHACK, "max_episode_steps": 30}
    spec = env_spec(cfg)
    assert spec.family == "nethack" and spec.num_actions == 23
    venv = make_vec_env(cfg, num_envs=1, seed=0)
    _check_obs(venv.reset(), spec, 1)
    obs, episodes = _run_until_episodes(venv, spec.num_actions, min_episodes=1, max_steps=100)
    _check_obs(obs, spec, 1)
    episode = episodes[0]
    assert set(episode) == {"return", "length", "score", "depth", "max_depth", "turns", "experience_level", "gold",
                            "death", *END_KEYS}
    assert episode["length"] <= 30 and episode["depth"] >= 1 and episode["score"] >= 0
    assert episode["end/step_limit"] == 1.0 and episode["death"] == ""
    # The next episode starts fresh: the in-game turn counter is back at 1.
    assert obs["blstats"][0, 20] == 1
    venv.close()


def test_procgen_steps_and_auto_resets():
    spec = env_spec(PROCGEN)
    assert spec.obs_space == {"rgb": ((64, 64, 3), np.dtype(np.uint8))} and spec.num_actions == 15
    venv = make_vec_env(PROCGEN, num_envs=8, seed=0)
    _check_obs(venv.reset(), spec, 8)
    _, episodes = _run_until_episodes(venv, spec.num_actions, min_episodes=4, max_steps=1500)
    for episode in episodes:
        assert set(episode) == {"return", "length", "success"}
        assert episode["success"] == float(episode["return"] > 0)  # coinrun pays 10 on completion
    venv.close()


@pytest.mark.parametrize("cfg", [MINIHACK, NETHACK], ids=["minihack", "nethack"])
def test_crop_is_centred_on_agent(cfg):
    venv = make_vec_env(cfg, num_envs=1, seed=1, render=True)
    obs = venv.reset()
    rng = np.random.default_rng(0)
    env = venv.envs[0]
    for _ in range(40):
        x, y = obs["blstats"][0, :2]
        glyphs = obs["glyphs"][0]
        reference = np.pad(glyphs, 4, constant_values=nethack.MAX_GLYPH)[y : y + 9, x : x + 9]
        np.testing.assert_array_equal(obs["crop"][0], reference)
        assert obs["crop"][0, 4, 4] == glyphs[y, x]
        # The terminal has the message line above the map: the agent's '@' is at row y + 1.
        assert env.tty_obs["tty_chars"][y + 1, x] == ord("@")
        obs, _, _, _ = venv.step(rng.integers(venv.spec.num_actions, size=1))
    venv.close()


@pytest.mark.parametrize("x, y", [(0, 0), (78, 20), (3, 17), (40, 10)])
def test_crop_pads_outside_the_map_with_nothing_glyph(x, y):
    glyphs = np.arange(21 * 79, dtype=np.int16).reshape(21, 79)
    crop = AgentCrop()(glyphs, x, y)
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            inside = 0 <= y + dy < 21 and 0 <= x + dx < 79
            expected = glyphs[y + dy, x + dx] if inside else nethack.MAX_GLYPH
            assert crop[4 + dy, 4 + dx] == expected


def _trajectory(cfg, seed, num_envs, steps, env_id_offset=0):
    venv = make_vec_env(cfg, num_envs=num_envs, seed=seed, env_id_offset=env_id_offset)
    frames = [{k: v.copy() for k, v in venv.reset().items()}]
    rng = np.random.default_rng(123)
    rewards = []
    for _ in range(steps):
        obs, reward, done, _ = venv.step(rng.integers(venv.spec.num_actions, size=num_envs))
        frames.append({k: v.copy() for k, v in obs.items()})
        rewards.append(reward)
    venv.close()
    return frames, np.array(rewards)


def _assert_same(a, b):
    for fa, fb in zip(a[0], b[0], strict=True):
        for key in fa:
            np.testing.assert_array_equal(fa[key], fb[key])
    np.testing.assert_array_equal(a[1], b[1])


# Room-5x5 has a fixed layout; these draw theirs from the seeded generators.
RANDOM_ROOM = {"family": "minihack", "name": "MiniHack-Room-Random-5x5-v0"}
MINIGRID_BASED = {"family": "minihack", "name": "MiniHack-MultiRoom-N4-v0"}


@pytest.mark.parametrize(
    "cfg",
    [RANDOM_ROOM, NETHACK, MINIGRID_BASED, PROCGEN],
    ids=["minihack", "nethack", "minigrid", "procgen"],
)
def test_same_seed_same_trajectories(cfg):
    steps = 150
    first = _trajectory(cfg, seed=7, num_envs=2, steps=steps)
    _assert_same(first, _trajectory(cfg, seed=7, num_envs=2, steps=steps))
    other = _trajectory(cfg, seed=8, num_envs=2, steps=steps)
    key = "rgb" if cfg["family"] == "procgen" else "glyphs"
    assert any((f[key] != o[key]).any() for f, o in zip(first[0], other[0]))


def test_env_seeded_by_global_env_id():
    # Env 1 of the vector at offset 0 and env 0 at offset 1 are the same environment id.
    frames_a, _ = _trajectory(RANDOM_ROOM, seed=3, num_envs=2, steps=0)
    frames_b, _ = _trajectory(RANDOM_ROOM, seed=3, num_envs=1, steps=0, env_id_offset=1)
    np.testing.assert_array_equal(frames_a[0]["glyphs"][1], frames_b[0]["glyphs"][0])
    assert (frames_a[0]["glyphs"][0] != frames_a[0]["glyphs"][1]).any()


def test_minigrid_crossing_task_builds_and_steps():
    # MiniHack's Crossing tasks need the MiniGrid compatibility shim (see envs/minigrid_compat.py).
    cfg = {"family": "minihack", "name": "MiniHack-LavaCrossingS19N13-v0"}
    venv = make_vec_env(cfg, num_envs=1, seed=0)
    obs = venv.reset()
    assert (obs["glyphs"][0] != obs["glyphs"][0, 0, 0]).any()  # a level was drawn
    venv.step(np.zeros(1, dtype=np.int64))
    venv.close()


def test_render_frames():
    venv = make_vec_env(MINIHACK, num_envs=1, seed=0, render=True)
    venv.reset()
    frame = venv.render(0)
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape[0] > 24 and frame.shape[1] > 80 and frame.max() > 0
    venv.close()
    venv = make_vec_env(PROCGEN, num_envs=1, seed=0, render=True)
    venv.reset()
    venv.step(np.zeros(1, dtype=np.int64))
    frame = venv.render(0)
    assert frame.dtype == np.uint8 and frame.shape[2] == 3 and frame.shape[0] > 64
    venv.close()


@pytest.mark.parametrize(
    "cfg, expected",
    [
        ({"family": "minihack", "name": "MiniHack-Room-5x5-v1"}, "MiniHack-Room-5x5-v0"),
        ({"family": "nethack", "name": "NetHackScor-v0"}, "NetHackScore-v0"),
        ({"family": "procgen", "name": "coinrn"}, "coinrun"),
        ({"name": "MiniHack-Rom-5x5-v0"}, "MiniHack-Room-5x5-v0"),
    ],
)
def test_wrong_name_suggests_close_names(cfg, expected):
    with pytest.raises(ValueError) as error:
        make_vec_env(cfg, num_envs=1, seed=0)
    message = str(error.value)
    assert "env.name" in message and repr(cfg["name"]) in message and expected in message


def test_name_from_another_family_says_which():
    with pytest.raises(ValueError, match=r"env\.name.*procgen"):
        env_spec({"family": "minihack", "name": "coinrun"})


@pytest.mark.parametrize(
    "override, key",
    [
        ({"distribution_mode": "medium"}, "env.distribution_mode"),
        ({"num_levels": -1}, "env.num_levels"),
        ({"start_level": 1.5}, "env.start_level"),
        ({"num_levels": 200, "eval_num_levels": 50, "eval_start_level": 100}, "overlap"),
        ({"levels": 3}, "unknown env key"),
        ({"family": "procgn"}, "env.family"),
        ({"distribution_mode": "exploration", "name": "bigfish"},
         "env.name.*distribution_mode=.exploration"),  # fmt: skip
        ({"distribution_mode": "memory", "name": "coinrun"}, "env.name.*distribution_mode=.memory"),
        ({"distribution_mode": "extreme", "name": "coinrun"}, "env.name.*distribution_mode=.extreme"),
    ],
)
def test_bad_env_values_are_rejected(override, key):
    with pytest.raises(ValueError, match=key):
        validate_env_cfg({**PROCGEN, **override})


def test_bad_nethack_values_are_rejected():
    with pytest.raises(ValueError, match="env.max_episode_steps"):
        validate_env_cfg({**MINIHACK, "max_episode_steps": 0})
    with pytest.raises(ValueError, match="num_envs"):
        make_vec_env(MINIHACK, num_envs=0, seed=0)


def test_eval_config_uses_held_out_levels():
    cfg = eval_env_cfg({**PROCGEN, "eval_num_levels": 100, "eval_start_level": 1000})
    assert (cfg["num_levels"], cfg["start_level"]) == (100, 1000)
    # By default the levels right after the training range.
    assert eval_env_cfg({**PROCGEN, "start_level": 50})["start_level"] == 250
    assert eval_env_cfg(MINIHACK)["name"] == MINIHACK["name"]


def _nle_arrays(cfg):
    venv = make_vec_env(cfg, num_envs=1, seed=0)
    try:
        return set(venv.envs[0].env.nethack._obs_buffers)
    finally:
        venv.close()


# One task that reads no NLE array itself, and one for each kind that does: a reward manager that
# searches the screen descriptions (Sink, on quaff), the inventory and door lookup (KeyRoom, on
# apply), and the character map (Sokoban, on every step).
@pytest.mark.parametrize(
    "name, reads",
    [
        ("MiniHack-Room-Random-5x5-v0", set()),
        ("MiniHack-Sink-v0", {"screen_descriptions"}),
        ("MiniHack-KeyRoom-S5-v0", {"inv_strs", "inv_letters", "screen_descriptions"}),
        ("MiniHack-Sokoban1a-v1", {"chars"}),
    ],
)
def test_minihack_computes_only_the_arrays_read_and_plays_the_same(name, reads, monkeypatch):
    cfg = {"family": "minihack", "name": name}
    always = {"glyphs", "blstats", "message", "program_state", "internal"}
    assert _nle_arrays(cfg) == always | reads
    lean = _trajectory(cfg, seed=5, num_envs=2, steps=300)
    # The stock task class asks NLE for every array.
    monkeypatch.setattr(nethack_env, "_lean_minihack_class", lambda task_class, keys: task_class)
    assert "screen_descriptions" in _nle_arrays(cfg)
    _assert_same(lean, _trajectory(cfg, seed=5, num_envs=2, steps=300))


def _executable_mapping_inodes() -> Counter:
    """How many executable mappings of each file (by inode) this process has."""
    with open("/proc/self/maps") as maps:
        fields = [line.split() for line in maps]
    return Counter(int(f[4]) for f in fields if len(f) >= 5 and "x" in f[1])


@pytest.mark.parametrize("base", [NETHACK, RANDOM_ROOM], ids=["nethack", "minihack"])
def test_envs_run_one_shared_copy_of_the_nethack_code_and_play_the_same(base):
    cfg = {**base, "max_episode_steps": 30}  # NLE reloads its copy of the code on every reset
    original = os.stat(NLE_LIBRARY).st_ino
    for share in (True, False):
        venv = make_vec_env({**cfg, "share_nethack_code": share}, num_envs=3, seed=0)
        try:
            venv.reset()
            rng = np.random.default_rng(0)
            for _ in range(100):
                venv.step(rng.integers(venv.spec.num_actions, size=3))
            executable = _executable_mapping_inodes()
            private = [os.fstat(env.env.nethack._dl.fileno()).st_ino for env in venv.envs]
            if share:
                assert executable[original] >= 3
                assert not any(executable[inode] for inode in private)
            else:
                assert all(executable[inode] == 1 for inode in private)
        finally:
            venv.close()
    shared = _trajectory({**cfg, "share_nethack_code": True}, seed=3, num_envs=2, steps=150)
    _assert_same(shared, _trajectory({**cfg, "share_nethack_code": False}, seed=3, num_envs=2, steps=150))


@pytest.mark.parametrize("name", ["MiniHack-MultiRoom-N2-v0", "MiniHack-LavaCrossingS9N1-v0"])
def test_minigrid_tasks_compile_each_level_beside_the_archive_and_play_the_same(name, monkeypatch):
    cfg = {"family": "minihack", "name": name, "max_episode_steps": 15}  # a new layout every 15 steps
    venv = make_vec_env(cfg, num_envs=1, seed=0)
    try:
        venv.reset()
        vardir = Path(venv.envs[0].env.nethack._vardir)
        assert (vardir / "mylevel.lev").is_file() and not (vardir / "nhdat").is_symlink()
    finally:
        venv.close()
    monkeypatch.setattr(CompiledLevelBesideArchive, "_compiled", collections.OrderedDict())
    compiled_beside = _trajectory(cfg, seed=2, num_envs=2, steps=150)
    from_cache = _trajectory(cfg, seed=2, num_envs=2, steps=150)  # the same layouts: every level cached
    monkeypatch.setattr(nethack_env, "_lean_minihack_class", lambda task_class, keys: task_class)
    stock = _trajectory(cfg, seed=2, num_envs=2, steps=150)
    _assert_same(compiled_beside, stock)
    _assert_same(from_cache, stock)


@pytest.mark.parametrize("name", ["MiniHack-MultiRoom-N6-Locked-v0", "MiniHack-MultiRoom-N4-Lava-v0",
                                  "MiniHack-LavaCrossingS19N17-v0", "MiniHack-MultiRoom-N2-Monster-v0"])
def test_the_layout_reader_matches_minihacks(name):
    from minihack.envs.minigrid import MiniGridHack

    venv = make_vec_env({"family": "minihack", "name": name}, num_envs=1, seed=0)
    try:
        env = venv.envs[0].env
        for seed in range(100):
            env.minigrid_env.reset(seed=seed)
            assert env.get_env_map(env.minigrid_env) == MiniGridHack.get_env_map(env, env.minigrid_env), seed
    finally:
        venv.close()


def test_a_layout_seen_before_is_not_compiled_again(monkeypatch):
    monkeypatch.setattr(CompiledLevelBesideArchive, "_compiled", collections.OrderedDict())
    monkeypatch.setattr(minigrid_levels, "LEVEL_CACHE_SIZE", 2)
    venv = make_vec_env({"family": "minihack", "name": "MiniHack-MultiRoom-N2-v0"}, num_envs=1, seed=0)
    try:
        venv.reset()
        env = venv.envs[0].env
        level = Path(env.nethack._vardir) / "mylevel.lev"
        descriptions = [env.get_env_desc() for _ in range(3)]
        assert len(set(descriptions)) == 3
        compiled = []
        for des in descriptions:
            env.update(des)
            compiled.append(level.read_bytes())
        compiles = []
        real_run = minigrid_levels._run
        monkeypatch.setattr(minigrid_levels, "_run", lambda cmd, cwd: compiles.append(cmd) or real_run(cmd, cwd))
        env.update(descriptions[1])  # cached: written back byte for byte, no lev_comp
        assert level.read_bytes() == compiled[1] and compiles == []
        env.update(descriptions[0])  # evicted: the cache holds the 2 most recent levels
        assert level.read_bytes() == compiled[0] and len(compiles) == 1
    finally:
        venv.close()


def test_a_level_description_that_does_not_compile_is_an_error():
    venv = make_vec_env({"family": "minihack", "name": "MiniHack-MultiRoom-N2-v0"}, num_envs=1, seed=0)
    try:
        venv.reset()
        with pytest.raises(RuntimeError, match="lev_comp"):
            venv.envs[0].env.update('MAZE: "mylevel", \' \'\nTHIS IS NOT A LEVEL\n')
    finally:
        venv.close()
