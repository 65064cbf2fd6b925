"""Fast NetHack resets (envs/fast_reset.py): the games of a reload, nothing carried over, flat memory."""
import ctypes
import os
import signal
import warnings

import numpy as np
import pytest
from nle import _pynethack, nethack
from nle.nethack.nethack import DLPATH as NLE_LIBRARY

from rlzoo.envs import env_spec, fast_reset, make_vec_env, validate_env_cfg
from rlzoo.envs.elf_layout import (
    DT_INIT,
    DT_INIT_ARRAY,
    DT_INIT_ARRAYSZ,
    R_X86_64_64,
    R_X86_64_RELATIVE,
    read_elf_layout,
    subtract,
)  # fmt: skip
from rlzoo.envs.nethack import NetHackEnv
from rlzoo.envs.vec_env import allocate_obs

pytestmark = [
    pytest.mark.unit,
    # NLE's own warning when random actions leave a game in a prompt it cannot quit from; both modes.
    pytest.mark.filterwarnings("ignore:Warning. smooth quitting of game failed"),
]

NETHACK = {"family": "nethack", "name": "NetHackScore-v0"}
ROOM = {"family": "minihack", "name": "MiniHack-Room-Random-5x5-v0"}
MULTIROOM = {"family": "minihack", "name": "MiniHack-MultiRoom-N2-v0"}  # MiniGrid layouts, level files
LAVA = {"family": "minihack", "name": "MiniHack-LavaCrossingS9N1-v0"}  # random walks die in the lava
# Everything a player can do but save (a saved game is restored by the next game, by NetHack's design).
ANY_ACTION = {"actions": [int(a) for a in nethack.USEFUL_ACTIONS]}


def test_subtract_takes_a_range_out_of_ranges():
    ranges = [(0, 10), (20, 30), (40, 50)]
    assert subtract(ranges, (5, 25)) == [(0, 5), (25, 30), (40, 50)]
    assert subtract(ranges, (10, 20)) == ranges
    assert subtract(ranges, (42, 45)) == [(0, 10), (20, 30), (40, 42), (45, 50)]
    assert subtract(ranges, (0, 50)) == []


def test_layout_of_nethack_library():
    # Values from `readelf -lW -dW -rW` on nle 1.3.0's libnethack.so.
    layout = read_elf_layout(NLE_LIBRARY)
    assert [s.vaddr for s in layout.loads] == [0, 0x50000, 0x27B000, 0x2F6228]
    assert layout.relro == (0x2F6228, 0x301000) and not layout.has_tls
    assert layout.plt_slots() == (0x301000, 0x305638)  # .got.plt: 3 + 2244 slots
    assert layout.writable_ranges() == [(0x301000, 0x34F700)]
    # .data and .bss: what a game writes.
    assert fast_reset.game_writable_ranges(layout) == [(0x305638, 0x34F700)]
    types = layout.relocations.types
    assert ((types == R_X86_64_RELATIVE).sum(), (types == R_X86_64_64).sum()) == (5272, 399)
    assert layout.function_array(DT_INIT_ARRAY, DT_INIT_ARRAYSZ) == (0x2F6228, 2)
    assert layout.dynamic[DT_INIT] == 0x50000
    assert layout.loaded_bytes(0x34F000, 0x34F700) == bytes(0x700)  # the end of .bss
    with open(NLE_LIBRARY, "rb") as f:  # .data starts at 0x305640, from file offset 0x304640
        f.seek(0x304640)
        assert layout.loaded_bytes(0x305640, 0x305680) == f.read(0x40)
    extension = read_elf_layout(_pynethack.__file__)
    assert (extension.plt_slot("dlopen"), extension.plt_slot("dlclose")) == (0x94828, 0x944A8)
    assert extension.plt_slot("no_such_function") is None


def _play(cfg, seed, steps, num_envs=2):
    """Observations, rewards and dones of `steps` random actions, and whether the last reset of each
    environment loaded NetHack anew."""
    venv = make_vec_env(cfg, num_envs=num_envs, seed=seed)
    try:
        frames = [{k: v.copy() for k, v in venv.reset().items()}]
        rng = np.random.default_rng(seed)
        rewards, dones = [], []
        for _ in range(steps):
            obs, reward, done, _ = venv.step(rng.integers(venv.spec.num_actions, size=num_envs))
            frames.append({k: v.copy() for k, v in obs.items()})
            rewards.append(reward)
            dones.append(done)
        reloaded = [env.fast_reset is None or env.fast_reset.reloaded for env in venv.envs]
        return (frames, np.array(rewards), np.array(dones)), reloaded
    finally:
        venv.close()


def _assert_same(a, b):
    for fa, fb in zip(a[0], b[0], strict=True):
        for key in fa:
            np.testing.assert_array_equal(fa[key], fb[key])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])


@pytest.mark.parametrize(
    "cfg",
    [
        {**NETHACK, "max_episode_steps": 12},
        {**NETHACK, "max_episode_steps": 40, "env_kwargs": ANY_ACTION},
        {**ROOM, "max_episode_steps": 6},
        {**ROOM, "max_episode_steps": 6, "share_nethack_code": False},
        {**MULTIROOM, "max_episode_steps": 6},
    ],
    ids=["nethack", "nethack-any-action", "minihack", "minihack-private-code", "minigrid"],
)
def test_fast_resets_play_the_games_of_reloads(cfg):
    fast, reloaded = _play({**cfg, "fast_reset": True}, seed=4, steps=400)
    assert fast[2].sum() >= 20  # many resets
    assert not any(reloaded)  # and none loaded NetHack again
    stock, reloaded = _play({**cfg, "fast_reset": False}, seed=4, steps=400)
    assert all(reloaded)
    _assert_same(fast, stock)


def test_fast_resets_write_the_same_game_recordings(tmp_path):
    cfg = {**NETHACK, "max_episode_steps": 10, "save_ttyrec_every": 2}
    kept = {}
    for fast in (True, False):
        _play({**cfg, "fast_reset": fast, "ttyrec_dir": str(tmp_path / str(fast))}, seed=1, steps=60, num_envs=1)
        files = sorted((tmp_path / str(fast)).glob("env*/nle.*.ttyrec*"))
        assert all(f.stat().st_size > 0 for f in files)
        kept[fast] = [f.name.split(".")[2] for f in files]  # the episode numbers recorded
    assert len(kept[True]) >= 3
    assert kept[True] == kept[False]


def _nethack_env(cfg):
    cfg = validate_env_cfg(cfg)
    return NetHackEnv(cfg, np.random.default_rng(0), render=False), allocate_obs(env_spec(cfg), 1)


def _continue_from_seed(env, out, steps):
    """Reset with seed 99 (core, disp and any MiniGrid layout), then `steps` seeded random actions."""
    env.rng = np.random.default_rng(99)
    if getattr(env.env, "minigrid_env", None) is not None:
        env.env.minigrid_env.reset(seed=99)
    env.reset(out, 0)
    frames = [{k: v.copy() for k, v in out.items()}]
    rng = np.random.default_rng(5)
    rewards, dones = [], []
    for _ in range(steps):
        reward, done, _ = env.step(int(rng.integers(env.env.action_space.n)), out, 0)
        frames.append({k: v.copy() for k, v in out.items()})
        rewards.append(reward)
        dones.append(done)
    return frames, np.array(rewards), np.array(dones)


@pytest.mark.parametrize(
    "cfg, ending",
    [({**NETHACK, "env_kwargs": ANY_ACTION}, "ABORTED"), ({**LAVA, "max_episode_steps": 60}, "DEATH")],
    ids=["nethack-any-action", "minigrid-death"],
)
def test_a_played_game_leaves_nothing_behind(cfg, ending):
    played, out = _nethack_env({**cfg, "fast_reset": True})
    fresh, fresh_out = _nethack_env({**cfg, "fast_reset": False})
    try:
        played.reset(out, 0)
        rng = np.random.default_rng(0)
        endings, steps = [], 0
        # Long games that pick things up, eat, read, fight...; or games that end in the lava.
        while steps < 3000 and endings.count(ending) < 3:
            _, _, terminated, truncated, info = played.env.step(int(rng.integers(played.env.action_space.n)))
            steps += 1
            if steps % 1000 == 0 or terminated or truncated:
                endings.append(info["end_status"].name if terminated or truncated else "ABORTED")
                played.reset(out, 0)
        assert endings.count(ending) >= 3 and not played.fast_reset.reloaded
        _assert_same(_continue_from_seed(played, out, 300), _continue_from_seed(fresh, fresh_out, 300))
    finally:
        played.close()
        fresh.close()


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_stays_flat_over_thousands_of_resets():
    venv = make_vec_env({**ROOM, "max_episode_steps": 2, "fast_reset": True}, num_envs=4, seed=0)
    try:
        venv.reset()
        actions = np.zeros(4, np.int64)

        def play_episodes(count):
            for _ in range(count // 4 * 2):  # every env ends an episode every 2 steps
                venv.step(actions)

        play_episodes(1_000)  # warm-up: allocator pools, the level cache, the MiniHack caches
        before = _rss_mb()
        play_episodes(4_000)
        # A leak of one object per reset (NetHack's window state, say: about 10 kB) would add 40 MB.
        assert _rss_mb() - before < 2.0
    finally:
        venv.close()


def _load_base(env) -> int:
    """Where the env's private copy of libnethack.so is loaded (its link map's l_addr)."""
    libc = ctypes.CDLL(None)
    libc.dlopen.restype, libc.dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    libc.dlclose.argtypes = [ctypes.c_void_p]
    handle = libc.dlopen(env.env.nethack.dlpath.encode(), 1 | 4)  # RTLD_LAZY | RTLD_NOLOAD
    link_map = ctypes.c_void_p()
    assert libc.dlinfo(ctypes.c_void_p(handle), 2, ctypes.byref(link_map)) == 0  # RTLD_DI_LINKMAP
    libc.dlclose(handle)
    return ctypes.c_size_t.from_address(link_map.value).value


def test_fast_reset_keeps_the_loaded_copy_and_stock_reset_reloads_it():
    # A mark in the unused end of the copy's last page (past .bss): nothing writes there, so it stays
    # as long as the copy stays mapped.
    end = max(s.vaddr + s.memsz for s in read_elf_layout(NLE_LIBRARY).loads)
    for fast in (True, False):
        env, out = _nethack_env({**ROOM, "fast_reset": fast})
        try:
            env.reset(out, 0)
            mark = ctypes.c_uint8.from_address(_load_base(env) + end)
            mark.value = 0xAB
            for _ in range(5):
                env.reset(out, 0)
                assert env.fast_reset is None or not env.fast_reset.reloaded
            if fast:
                assert mark.value == 0xAB
            else:  # a reload maps the copy anew
                assert ctypes.c_uint8.from_address(_load_base(env) + end).value == 0
        finally:
            env.close()


def test_closing_an_environment_unloads_its_kept_copy():
    env, out = _nethack_env({**ROOM, "fast_reset": True})
    for _ in range(3):
        env.reset(out, 0)
    assert env.fast_reset.copy is not None
    inode = str(os.fstat(env.env.nethack._dl.fileno()).st_ino)
    env.close()
    with open("/proc/self/maps") as maps:
        assert not [line for line in maps if line.split()[4] == inode]


class _Alarm(Exception):
    pass


def _raise_inside_resets(signum, frame):
    """A SIGALRM handler that raises when the signal arrives during an environment's reset (which
    runs Python inside NLE's C code, in the hooks of envs/fast_reset.py)."""
    while frame is not None:
        if frame.f_code is NetHackEnv._reset_env.__code__:
            raise _Alarm
        frame = frame.f_back


def _loaded_copies() -> set[str]:
    with open("/proc/self/maps") as maps:
        return {line.split()[4] for line in maps if "memfd:nle.so" in line}


def test_an_exception_raised_by_a_signal_during_a_reset_comes_out_of_it():
    before = _loaded_copies()  # environments of earlier tests that are still open
    fresh, fresh_out = _nethack_env({**ROOM, "fast_reset": False})
    previous = signal.signal(signal.SIGALRM, _raise_inside_resets)
    rng = np.random.default_rng(0)
    raised = 0
    env = None
    try:
        for i in range(400):
            if i % 50 == 0:  # first loads (and their snapshot) get interrupted too
                if env is not None:
                    env.close()
                env, out = _nethack_env({**ROOM, "fast_reset": True})
            signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-5, 1e-3))  # at a random point of a reset
            try:
                env.reset(out, 0)
            except _Alarm:
                raised += 1
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    try:
        assert raised > 50
        env.reset(out, 0)
        assert not env.fast_reset.reloaded  # still keeping its copy
        _assert_same(_continue_from_seed(env, out, 100), _continue_from_seed(fresh, fresh_out, 100))
        env.close()
        # The closed environments' copies are all unloaded (an earlier test's may be collected meanwhile).
        kept = str(os.fstat(fresh.env.nethack._dl.fileno()).st_ino)
        assert kept in _loaded_copies() <= before | {kept}
    finally:
        env.close()
        fresh.close()


def test_where_it_cannot_work_it_warns_once_and_reloads(monkeypatch):
    def unsupported():
        raise fast_reset._Unsupported("no slot for dlopen")

    monkeypatch.setattr(fast_reset, "_hooks", None)
    monkeypatch.setattr(fast_reset, "_disabled", False)
    monkeypatch.setattr(fast_reset, "_LoaderHooks", unsupported)
    with pytest.warns(UserWarning, match="reload NetHack at every reset.*no slot for dlopen"):
        first, out = _nethack_env({**ROOM, "fast_reset": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second, _ = _nethack_env({**ROOM, "fast_reset": True})
    try:
        for _ in range(3):
            first.reset(out, 0)
            assert first.fast_reset.reloaded
    finally:
        first.close()
        second.close()


def test_fast_reset_must_be_a_boolean():
    with pytest.raises(ValueError, match="env.fast_reset"):
        validate_env_cfg({**ROOM, "fast_reset": "yes"})
    assert validate_env_cfg(ROOM)["fast_reset"] is True


@pytest.mark.unit
def test_a_signal_during_a_deferred_section_is_handled_after_it():
    from rlzoo.envs.deferred_signals import signals_deferred

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    done = []
    try:
        with pytest.raises(Interrupted):
            with signals_deferred():
                signal.raise_signal(signal.SIGUSR1)  # the handler would raise here
                done.append("section finished")
        assert done == ["section finished"] and signal.getsignal(signal.SIGUSR1) is handler
    finally:
        signal.signal(signal.SIGUSR1, previous)
