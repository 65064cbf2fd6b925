"""What evaluations play and record: seeds apart from training, Procgen's held-out levels, NetHack's
end-of-game statistics, episode videos."""
import warnings

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from nle.env.base import NLE

from rlzoo.envs import make_vec_env, validate_env_cfg
from rlzoo.envs.nethack_stats import END_CAUSES, end_cause, end_one_hot, last_death_reason, parse_xlogfile_line
from rlzoo.envs.vec_env import seed_sequence
from rlzoo.logging import video
from rlzoo.runtime.evaluation import death_counts, run_episodes, summarize
from rlzoo.runtime.evaluator import evaluation_settings

pytestmark = pytest.mark.unit

NETHACK = {"family": "nethack", "name": "NetHackScore-v0"}
PROCGEN = {"family": "procgen", "name": "coinrun", "num_levels": 200, "start_level": 0}
RESTART_STRIDE = 1_000_003  # a rebuilt training env reseeds with seed + this × restarts (runtime/rollout.py)


def _state(seq: np.random.SeedSequence) -> tuple[int, ...]:
    return tuple(seq.generate_state(8))


def test_evaluation_seed_streams_differ_from_every_training_stream():
    seeds = [0, 1, 2, 7, 12345, 2**31 - 1, 2**32 - 1]
    training = {_state(seed_sequence(s + RESTART_STRIDE * k, e)) for s in seeds for k in range(3) for e in range(64)}
    evaluation = {_state(seed_sequence(s, e, evaluation=True)) for s in seeds for e in range(64)}
    assert len(evaluation) == len(seeds) * 64 and not training & evaluation
    # NumPy pads the entropy of a sequence with a spawn key to four words with zeros before appending
    # the key: the training sequence closest in words to the evaluation one of (1, 2) still differs.
    assert _state(seed_sequence(1 + 2 * 2**32, 2**32)) != _state(seed_sequence(1, 2, evaluation=True))
    assert _state(np.random.SeedSequence([1, 2, 0, 0, 1])) == _state(seed_sequence(1, 2, evaluation=True))


def test_evaluation_games_never_use_a_training_seed(monkeypatch):
    drawn: list[int] = []
    real_seed = NLE.seed
    monkeypatch.setattr(NLE, "seed", lambda env, core, disp, reseed=False: (drawn.append(core),
                                                                            real_seed(env, core, disp, reseed)))

    def seeds_of(evaluation: bool, offset: int = 0) -> set[int]:
        drawn.clear()
        env = make_vec_env({**NETHACK, "max_episode_steps": 2}, 2, seed=1, env_id_offset=offset, evaluation=evaluation)
        env.reset()
        for _ in range(10):  # five episodes per environment
            env.step(np.zeros(2, dtype=np.int64))
        env.close()
        return set(drawn)

    training = seeds_of(False) | seeds_of(False, offset=2)
    evaluation = seeds_of(True)
    assert len(evaluation) == 12 and len(training) == 24  # every reset draws a new seed
    assert not training & evaluation


def test_procgen_evaluation_levels_lie_outside_the_training_range():
    held_out, train_levels = evaluation_settings(PROCGEN)
    assert held_out[0] == "eval/" and train_levels[0] == "eval/train_levels/"
    assert held_out[1]["start_level"] >= PROCGEN["start_level"] + PROCGEN["num_levels"]

    def level_seeds(env_cfg) -> set[int]:
        env = make_vec_env(env_cfg, 8, seed=3, evaluation=True)
        env.reset()
        rng = np.random.default_rng(0)
        seeds = set()
        for _ in range(500):
            env.step(rng.integers(15, size=8))
            seeds.update(info["level_seed"] for info in env._env.get_info())
        env.close()
        return seeds

    evaluated = level_seeds(held_out[1])
    assert len(evaluated) > 8 and min(evaluated) >= 200
    assert max(level_seeds(train_levels[1])) < 200


def test_end_causes_from_nle_status_and_how_done():
    assert end_cause("ABORTED", None) == "step_limit"
    assert end_cause("TASK_SUCCESSFUL", None) == "task_success"
    assert end_cause("DEATH", "DIED") == "killed"
    assert end_cause("DEATH", "STARVING") == "starved"
    assert end_cause("DEATH", "DROWNING") == "other_death"
    assert end_cause("DEATH", "ESCAPED") == "escaped"
    one_hot = end_one_hot("starved")
    assert sum(one_hot.values()) == 1.0 and one_hot["end/starved"] == 1.0 and len(one_hot) == len(END_CAUSES)
    with pytest.raises(ValueError, match="unknown end cause"):
        end_one_hot("bored")


def test_death_reason_is_read_from_the_last_xlogfile_line(tmp_path):
    line = ("version=3.6.7\tpoints=47\tdeathlev=1\tmaxlvl=1\tdeath=killed by a newt\tturns=308\n"
            "version=3.6.7\tpoints=66\tmaxlvl=2\tdeath=choked on a lichen corpse\tturns=1239\n")
    assert parse_xlogfile_line(line.splitlines()[0])["turns"] == "308"
    path = tmp_path / "xlogfile"
    path.write_text(line)
    assert last_death_reason(path) == "choked on a lichen corpse"
    assert last_death_reason(path, tail_bytes=60) == "choked on a lichen corpse"  # the tail holds the line
    assert last_death_reason(tmp_path / "missing") == ""


def test_nethack_episodes_report_game_statistics_and_how_they_ended():
    env = make_vec_env(validate_env_cfg(NETHACK), 1, seed=3)
    env.reset()
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(8000):  # a random agent dies within a few hundred turns
        _, _, _, finished = env.step(rng.integers(env.spec.num_actions, size=1))
        episodes += finished
        if any(ep["death"] for ep in episodes):
            break
    env.close()
    deaths = [ep for ep in episodes if ep["death"]]
    assert deaths, "no game ended in death"
    ep = deaths[0]
    assert sum(ep[f"end/{c}"] for c in END_CAUSES) == 1.0 and ep["end/step_limit"] == 0.0
    assert ep["end/killed"] == float(ep["death"].startswith("killed by"))
    assert 1 <= ep["turns"] and 1 <= ep["experience_level"] and 1 <= ep["depth"] <= ep["max_depth"]
    assert ep["gold"] >= 0 and ep["score"] >= 0
    stats = summarize(episodes)
    assert "death" not in stats and stats["turns"] >= 1
    assert death_counts(episodes) == {ep["death"]: 1}


def _frames(n: int, height: int = 50, width: int = 70) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in range(n)]


def _mp4_frames(path) -> tuple[int, tuple[int, int]]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return sum(1 for _ in reader), meta["size"]


def test_written_mp4_decodes_with_every_frame(tmp_path):
    path = video.write_video(tmp_path / "episode.mp4", _frames(7))
    assert path.suffix == ".mp4"
    assert _mp4_frames(path) == (7, (80, 64))  # padded to multiples of 16, not scaled


def test_without_ffmpeg_the_video_is_a_gif(tmp_path, monkeypatch):
    import imageio.v2 as imageio

    def no_ffmpeg(*args, **kwargs):
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(video, "write_mp4", no_ffmpeg)
    with pytest.warns(UserWarning, match="could not write MP4"):
        path = video.write_video(tmp_path / "episode.mp4", _frames(5))
    assert path == tmp_path / "episode.gif" and not (tmp_path / "episode.mp4").exists()
    assert len(imageio.mimread(path)) == 5


class _FirstAction(torch.nn.Module):
    def initial_state(self, batch_size):
        return ()

    def act(self, obs, first, state, generator, greedy):
        return torch.zeros(len(first), dtype=torch.int64), None, state


def test_evaluation_video_holds_the_first_episode_of_env_0(tmp_path):
    frames: list[np.ndarray] = []
    cfg = {"family": "minihack", "name": "MiniHack-Room-5x5-v0", "max_episode_steps": 12}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        episodes = run_episodes(_FirstAction(), validate_env_cfg(cfg), 2, seed=0, greedy=True, num_envs=2,
                                video_frames=frames, max_frames=100)
    assert len(frames) == episodes[0]["length"] == 12  # one frame per step: what the agent acted on
    assert frames[0].shape[2] == 3 and frames[0].dtype == np.uint8
    data, fmt = video.encode_video(frames)
    (tmp_path / f"v.{fmt}").write_bytes(data)
    assert fmt == "mp4" and _mp4_frames(tmp_path / "v.mp4")[0] == 12
