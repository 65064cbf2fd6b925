"""NetHack data: terminal observations, ttyrec recording, datasets indexed by nle.dataset, streams.

Episodes are recorded on the spot with NLE (random actions) while a spy on NLE's game object notes
every keypress sent and the terminal before it: the ground truth the dataset must reproduce.
"""
import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nle
import nle.dataset as nld
import numpy as np
import pytest

from rlzoo.envs import env_spec, make_vec_env, validate_env_cfg
from rlzoo.nld import TtyrecStream, build_dataset, keypress_table, open_dataset, ttyrec_problem

MINIHACK = {"name": "MiniHack-Room-5x5-v0", "observation": "tty", "max_episode_steps": 12}
NETHACK = {"name": "NetHackScore-v0", "observation": "both", "max_episode_steps": 15}
TTY_KEYS = ("tty_chars", "tty_colors", "tty_cursor")
# A game played on alt.org (NLD-NAO's source), one of the ttyrecs nle ships for its own tests.
ALTORG_TTYREC = Path(nle.__file__).parent / "tests" / "2020-10-03.17_27_10.ttyrec.bz2"


@dataclass
class Episode:
    keys: list[int] = field(default_factory=list)  # every keypress NLE sent, in order
    screens: list[tuple[np.ndarray, ...]] = field(default_factory=list)  # NLE's terminal before each
    agent: list[tuple[int, int, tuple[np.ndarray, ...]]] = field(default_factory=list)  # (key index,
    # action, the tty observation rlzoo delivered for it)


@dataclass
class Recording:
    root: Path
    action_keys: tuple[int, ...]
    savedirs: list[Path]
    episodes: list[list[Episode]]  # per environment, per episode number

    def episode_of(self, ttyrec: Path) -> Episode:
        """The episode recorded in `ttyrec` (of this recording or a copy of it)."""
        env = [savedir.name for savedir in self.savedirs].index(ttyrec.parent.name)
        return self.episodes[env][int(ttyrec.name.split(".")[2])]

    def finished(self) -> list[Episode]:  # the last episode of each env was still running
        return [episode for per_env in self.episodes for episode in per_env[:-1]]


def _spy_on_nle(nle_env, episodes: list[Episode]) -> None:
    """Wrap the game object's reset and step (they still run) to note keypresses and screens."""
    game = nle_env.nethack
    reset, step = game.reset, game.step

    def spied_reset(*args, **kwargs):
        episodes.append(Episode())
        return reset(*args, **kwargs)

    def spied_step(key):
        buffers = game._obs_buffers  # NLE's own observation arrays, which each step overwrites
        episodes[-1].screens.append(tuple(buffers[k].copy() for k in TTY_KEYS))
        episodes[-1].keys.append(int(key))
        return step(key)

    game.reset, game.step = spied_reset, spied_step


def record(cfg: dict, root: Path, num_envs: int, steps: int, every: int = 1, seed: int = 0) -> Recording:
    cfg = {**cfg, "save_ttyrec_every": every, "ttyrec_dir": str(root)}
    spec = env_spec(cfg)
    venv = make_vec_env(cfg, num_envs=num_envs, seed=seed)
    episodes: list[list[Episode]] = [[] for _ in range(num_envs)]
    for env, per_env in zip(venv.envs, episodes):
        _spy_on_nle(env.env, per_env)
    rng = np.random.default_rng(seed)
    obs = venv.reset()
    for _ in range(steps):
        actions = rng.integers(spec.num_actions, size=num_envs)
        for i, per_env in enumerate(episodes):
            seen = tuple(obs[k][i].copy() for k in TTY_KEYS)
            per_env[-1].agent.append((len(per_env[-1].keys), int(actions[i]), seen))
        obs, _, _, _ = venv.step(actions)
    savedirs = [env.recorder.savedir for env in venv.envs]
    venv.close()
    return Recording(root, spec.action_keys, savedirs, episodes)


@pytest.fixture(scope="module")
def minihack_recording(tmp_path_factory) -> Recording:
    return record(MINIHACK, tmp_path_factory.mktemp("minihack") / "ttyrecs", num_envs=2, steps=60)


@pytest.fixture(scope="module")
def nethack_recording(tmp_path_factory) -> Recording:
    return record(NETHACK, tmp_path_factory.mktemp("nethack") / "ttyrecs", num_envs=1, steps=60)


def _game_paths(dataset) -> dict[int, Path]:
    with contextlib.closing(nld.db.connect(str(dataset.db_path))) as conn:
        return {gameid: dataset.root / path for gameid, path in conn.execute("SELECT gameid, path FROM ttyrecs")}


def _read_all(stream: TtyrecStream) -> tuple[list, dict[int, list[dict]]]:
    """Every batch, and each game's frames in order (obs[T] of a batch is obs[0] of the next)."""
    batches = list(stream)
    games: dict[int, list[dict]] = {}
    for k, batch in enumerate(batches):
        T, B = batch["actions"].shape
        assert batch["first"].shape == batch["gameids"].shape == (T + 1, B)
        assert batch["dones"].shape == batch["valid"].shape == batch["keypresses"].shape == (T, B)
        assert batch["actions"].dtype == np.int64 and batch["first"].dtype == bool
        np.testing.assert_array_equal(batch["dones"], batch["first"][1:])
        if k + 1 < len(batches):
            for key, column in batch["obs"].items():
                np.testing.assert_array_equal(column[T], batches[k + 1]["obs"][key][0])
        for b in range(B):
            for t in range(T):
                gameid = int(batch["gameids"][t, b])
                if gameid == 0:
                    assert not batch["valid"][t, b]
                    continue
                frame = {key: batch[key][t, b] for key in ("keypresses", "actions", "valid", "first")}
                frame["tty"] = tuple(batch["obs"][key][t, b] for key in TTY_KEYS)
                games.setdefault(gameid, []).append(frame)
    return batches, games


@pytest.mark.integration
@pytest.mark.parametrize("which", ["minihack", "nethack"])
def test_the_stream_reproduces_the_recorded_games(which, request):
    recording: Recording = request.getfixturevalue(f"{which}_recording")
    dataset = build_dataset(recording.root, recording.root.parent / f"{which}.db")
    finished = recording.finished()
    assert dataset.ttyrec_version == 3 and dataset.num_games == len(finished) >= 2
    table = keypress_table(recording.action_keys)
    with TtyrecStream(dataset, recording.action_keys, batch_size=2 if which == "minihack" else 1,
                      unroll_length=8, loop_forever=False) as stream:  # fmt: skip
        batches, games = _read_all(stream)
        stats = stream.stats()

    paths = _game_paths(dataset)
    assert sorted(games) == sorted(paths)
    unmappable = 0
    for gameid, frames in games.items():
        episode = recording.episode_of(paths[gameid])
        # Every keypress NLE sent (the agent's and NLE's own), and the terminal before each.
        assert [int(f["keypresses"]) for f in frames] == episode.keys
        assert [bool(f["first"]) for f in frames] == [True] + [False] * (len(frames) - 1)
        for frame, screen in zip(frames, episode.screens):
            for ours, nles in zip(frame["tty"], screen):
                np.testing.assert_array_equal(ours, nles)
        # The agent's actions come back as actions, and what it saw is the recorded frame.
        for position, action, seen in episode.agent:
            frame = frames[position]
            assert frame["valid"] and frame["actions"] == action
            for ours, delivered, nles in zip(frame["tty"], seen, episode.screens[position]):
                np.testing.assert_array_equal(delivered, nles)
                np.testing.assert_array_equal(ours, delivered)
        for frame in frames:  # NLE's own keypresses map only where the action set has them
            expected = int(table[frame["keypresses"]])
            assert frame["valid"] == (expected >= 0)
            assert frame["actions"] == max(expected, 0)
        unmappable += sum(table[k] < 0 for k in episode.keys)
    assert unmappable > 0  # NLE's quit sequence (M-q) is in no task's action set
    assert stats == {"frames": sum(len(e.keys) for e in finished), "games": len(finished),
                     "unmappable_keypresses": unmappable, "skipped_files": 0}  # fmt: skip
    # The stream starts on a blank frame, and each game's end is a done.
    assert not batches[0]["gameids"][0].any() and batches[0]["first"][0].all()
    rows = np.concatenate([b["gameids"][:-1] for b in batches] + [batches[-1]["gameids"][-1:]])
    firsts = np.concatenate([b["first"][:-1] for b in batches] + [batches[-1]["first"][-1:]])
    np.testing.assert_array_equal(firsts[1:], rows[1:] != rows[:-1])


@pytest.mark.integration
def test_tty_observations_are_nles_own_and_symbolic_ones_stay(nethack_recording):
    spec = env_spec(NETHACK)
    assert set(spec.obs_space) == {"glyphs", "crop", "blstats", "message", *TTY_KEYS}
    assert spec.obs_space["tty_colors"] == ((24, 80), np.dtype(np.int8))
    assert spec.obs_space["tty_cursor"] == ((2,), np.dtype(np.uint8))
    # The default observation set is unchanged.
    assert set(env_spec({"name": "NetHackScore-v0"}).obs_space) == {"glyphs", "crop", "blstats", "message"}
    checked = 0
    for episodes in nethack_recording.episodes:
        for episode in episodes:
            for position, _, seen in episode.agent:
                for delivered, nles in zip(seen, episode.screens[position]):
                    assert delivered.dtype == nles.dtype
                    np.testing.assert_array_equal(delivered, nles)
                checked += 1
    assert checked == 60


@pytest.mark.integration
def test_every_nth_episode_is_kept(tmp_path):
    recording = record({**MINIHACK, "max_episode_steps": 4}, tmp_path / "ttyrecs", num_envs=1, steps=30, every=3)
    (savedir,) = recording.savedirs
    episodes = len(recording.episodes[0])
    assert episodes >= 7
    kept = sorted(int(p.name.split(".")[2]) for p in savedir.glob("nle.*.ttyrec3.bz2"))
    assert kept == [n for n in range(episodes) if n % 3 == 0]
    dataset = build_dataset(tmp_path / "ttyrecs")
    assert dataset.num_games == len([n for n in range(episodes - 1) if n % 3 == 0])
    for path in _game_paths(dataset).values():
        assert ttyrec_problem(path) is None


@pytest.mark.integration
def test_build_errors_name_what_and_where(tmp_path, minihack_recording):
    with pytest.raises(ValueError, match=r"ttyrec directory .*nowhere does not exist"):
        build_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty holds no NLE recordings"):
        build_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"layout='nld' is not valid"):
        build_dataset(minihack_recording.root, tmp_path / "x.db", layout="nld")

    # An episode still running when its environment closed is in no xlogfile.
    unfinished = record(MINIHACK, tmp_path / "unfinished", num_envs=1, steps=3)
    assert len(unfinished.episodes[0]) == 1
    with pytest.raises(ValueError, match=r"no finished game in .*unfinished"):
        build_dataset(unfinished.root)

    copy = tmp_path / "copy"
    shutil.copytree(minihack_recording.root, copy)
    ttyrec = min(copy.glob("*/nle.*.0.ttyrec3.bz2"))
    data = ttyrec.read_bytes()
    ttyrec.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"ttyrec {ttyrec} is truncated"):
        build_dataset(copy)
    ttyrec.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"ttyrec {ttyrec} is empty"):
        build_dataset(copy)
    assert not list(copy.glob("*.db*"))  # a failed build leaves no index behind

    ttyrec.write_bytes(data)
    build_dataset(copy)
    with pytest.raises(ValueError, match=r"ttyrecs\.db already exists"):
        build_dataset(copy)
    assert build_dataset(copy, overwrite=True).num_games == len(minihack_recording.finished())
    with pytest.raises(ValueError, match=r"dataset 'other' is not in .*ttyrecs\.db; it holds \['rlzoo'\]"):
        open_dataset(copy / "ttyrecs.db", "other")


@pytest.mark.integration
def test_files_broken_after_indexing_are_skipped_and_counted(tmp_path, minihack_recording):
    copy = tmp_path / "copy"
    shutil.copytree(minihack_recording.root, copy)
    dataset = build_dataset(copy)
    paths = _game_paths(dataset)
    truncated, deleted = sorted(paths)[:2]
    data = paths[truncated].read_bytes()
    paths[truncated].write_bytes(data[:-20])
    paths[deleted].unlink()

    with TtyrecStream(dataset, minihack_recording.action_keys, batch_size=2, unroll_length=8,
                      loop_forever=False) as stream:  # fmt: skip
        _, games = _read_all(stream)
        stats = stream.stats()
    assert sorted(games) == sorted(set(paths) - {truncated, deleted})
    for gameid, frames in games.items():
        assert [int(f["keypresses"]) for f in frames] == minihack_recording.episode_of(paths[gameid]).keys
    assert stats["skipped_files"] == 2 and stats["games"] == len(paths) - 2
    assert stream.skipped == {str(paths[truncated]): "truncated (its bz2 stream ends early)",
                              str(paths[deleted]): "missing"}  # fmt: skip

    with TtyrecStream(dataset, minihack_recording.action_keys, batch_size=2, unroll_length=8) as forever:
        for _ in range(20):  # more frames than the dataset holds: the games come round again
            next(forever)
        assert forever.stats()["skipped_files"] >= 2


def altorg_directory(root: Path) -> Path:
    """The alt.org layout around ALTORG_TTYREC: <player>/<start time>.ttyrec.bz2, the xlogfile
    line of its game (the fields nle.dataset reads: player, start and end time, turns) and an
    empty blacklist."""
    (root / "Anarchos").mkdir(parents=True)
    shutil.copy(ALTORG_TTYREC, root / "Anarchos" / ALTORG_TTYREC.name)
    start = 1601745430  # 2020-10-03 17:17:10 UTC, ten minutes before the ttyrec was started
    fields = {"version": "3.6.6", "points": 100, "deathlev": 1, "maxlvl": 1, "role": "Val", "race": "Hum",
              "gender": "Fem", "align": "Neu", "name": "Anarchos", "death": "killed by a jackal",
              "turns": 500, "starttime": start, "endtime": start + 7200}  # fmt: skip
    (root / "xlogfile.nh366").write_text("\t".join(f"{k}={v}" for k, v in fields.items()) + "\n")
    (root / "blacklist.txt").write_text("")
    return root


@pytest.mark.integration
def test_a_dataset_without_actions(tmp_path):
    dataset = build_dataset(altorg_directory(tmp_path / "altorg"), tmp_path / "altorg.db", layout="altorg")
    assert dataset.ttyrec_version == 1 and not dataset.has_keypresses and dataset.num_games > 0
    with pytest.raises(ValueError, match=r"dataset 'rlzoo' \(.*altorg\.db\) has no actions"):
        TtyrecStream(dataset, env_spec(MINIHACK).action_keys, batch_size=1, unroll_length=4)
    with TtyrecStream(dataset, (), batch_size=1, unroll_length=4, require_actions=False) as stream:
        batch = next(stream)
    assert set(batch) == {"obs", "first", "dones", "gameids"}
    assert batch["obs"]["tty_chars"].shape == (5, 1, 24, 80)
    assert batch["obs"]["tty_chars"][1:].any()  # screens, no keypresses


@pytest.mark.integration
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 99}, r"batch_size=99 exceeds the \d+ games"),
        ({"batch_size": 0}, r"batch_size=0 is not valid"),
        ({"unroll_length": 2.5}, r"unroll_length=2\.5 is not valid"),
    ],
)
def test_bad_stream_arguments(kwargs, message, minihack_recording, tmp_path):
    dataset = build_dataset(minihack_recording.root, tmp_path / "x.db")
    with pytest.raises(ValueError, match=message):
        TtyrecStream(dataset, minihack_recording.action_keys, **{"batch_size": 1, "unroll_length": 4, **kwargs})


@pytest.mark.unit
def test_keypress_table_maps_to_the_first_action_with_that_key():
    table = keypress_table([107, 34, 106, 34])
    assert table[107] == 0 and table[34] == 1 and table[106] == 2
    assert (np.delete(table, [107, 34, 106]) == -1).all()
    with pytest.raises(ValueError, match="action key 300"):
        keypress_table([300])


@pytest.mark.unit
@pytest.mark.parametrize(
    "override, message",
    [
        ({"observation": "pixels"}, r"env\.observation='pixels' is not valid"),
        ({"save_ttyrec_every": 5}, r"env\.save_ttyrec_every=5 needs env\.ttyrec_dir"),
        ({"save_ttyrec_every": -1, "ttyrec_dir": "x"}, r"env\.save_ttyrec_every=-1 is not valid"),
        ({"ttyrec_dir": ""}, r"env\.ttyrec_dir='' is not valid"),
    ],
)
def test_bad_tty_env_values_are_rejected(override, message):
    with pytest.raises(ValueError, match=message):
        validate_env_cfg({"name": "NetHackScore-v0", **override})
