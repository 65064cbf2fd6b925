"""What the Motif benchmark measures: unbiased episode sampling, Motif return per episode, the
bootstrap comparison and the message ranking."""
import numpy as np
import pytest

from rlzoo.motif.benchmark import BL_EXP, BL_GOLD, EpisodeMotifReturn, GoldAndExperience, rank_messages
from rlzoo.reports.statistics import compare_means, wilson_interval
from rlzoo.runtime.evaluation import play_episodes
from rlzoo.motif.captions import encode_message
from rlzoo.motif.dataset import BL_SCORE, PairDataset, Segment

pytestmark = pytest.mark.unit

Z = {"You kill the newt!": 5.0, "$ - 3 gold pieces.": 3.0, "It's a wall.": -1.0, "": 0.0}


class TableReward:
    """Stands in for MotifReward: z looked up by message text."""

    def normalized(self, messages):
        return np.array([Z[bytes(m).split(b"\0", 1)[0].decode()] for m in messages], dtype=np.float32)


class ScriptedEnv:
    """Env i's episodes last lengths[i] steps; every step shows `texts[t % len(texts)]`."""

    def __init__(self, lengths, texts):
        self.lengths, self.texts = lengths, texts
        self.num_envs = len(lengths)
        self.t = np.zeros(self.num_envs, dtype=int)
        self.episode = np.zeros(self.num_envs, dtype=int)

    def obs(self):
        blstats = np.zeros((self.num_envs, 27), np.int32)
        blstats[:, BL_GOLD] = 10 * self.t  # gold grows with the step, so the last seen value is known
        blstats[:, BL_EXP] = self.episode
        return {"message": np.stack([encode_message(self.texts[t % len(self.texts)]) for t in self.t]),
                "blstats": blstats}

    def reset(self):
        return self.obs()

    def step(self, actions):
        assert len(actions) == self.num_envs
        self.t += 1
        dones = self.t >= np.array(self.lengths)
        episodes = []
        for i in np.flatnonzero(dones):
            episodes.append({"env": int(i), "episode": int(self.episode[i]), "length": int(self.t[i])})
            self.episode[i] += 1
            self.t[i] = 0
        return self.obs(), np.zeros(self.num_envs, np.float32), dones, episodes


def no_op(obs, first):
    return np.zeros(len(obs["message"]), dtype=np.int64)


def test_every_env_contributes_its_first_episodes_however_long():
    env = ScriptedEnv([2, 7, 3], [""])
    episodes = play_episodes(env, no_op, 3, [GoldAndExperience(3)])
    # First-to-finish sampling would have filled up with env 0's short episodes.
    assert [(e["env"], e["episode"]) for e in episodes] == [(i, k) for i in range(3) for k in range(3)]
    assert [e["length"] for e in episodes] == [2] * 3 + [7] * 3 + [3] * 3
    # Gold and experience come from each episode's last observation before the reset.
    assert [e["gold"] for e in episodes] == [10.0] * 3 + [60.0] * 3 + [20.0] * 3
    assert [e["experience"] for e in episodes] == [0.0, 1.0, 2.0] * 3


def test_motif_return_thresholds_and_divides_by_episode_counts():
    texts = ["", "You kill the newt!", "It's a wall.", "You kill the newt!", "$ - 3 gold pieces."]
    env = ScriptedEnv([5, 3], texts)
    episodes = play_episodes(env, no_op, 2, [EpisodeMotifReturn(TableReward(), 0.5, 3.0, 2)])
    # Steps 1..length-1 are seen (the last observation is already the next episode's first).
    # Env 0 sees newt, wall, newt, gold: 5 + 0 + 5/2³ + 3; env 1 sees newt, wall: 5 + 0.
    assert [e["motif_return"] for e in episodes] == pytest.approx([8 + 5 / 8, 8 + 5 / 8, 5.0, 5.0])
    # Without a threshold the wall's negative z counts too.
    env = ScriptedEnv([5], texts)
    episodes = play_episodes(env, no_op, 1, [EpisodeMotifReturn(TableReward(), None, 1.0, 1)])
    assert episodes[0]["motif_return"] == pytest.approx(5 - 1 + 5 / 2 + 3)


def test_bootstrap_interval_separates_different_means_only():
    rng = np.random.default_rng(1)
    low, high = rng.normal(0, 10, 200), rng.normal(10, 10, 200)
    apart = compare_means(high, low)
    assert apart.diff == pytest.approx(high.mean() - low.mean())
    assert apart.se_a == pytest.approx(high.std(ddof=1) / np.sqrt(200))
    assert 0 < apart.ci_low < apart.diff < apart.ci_high
    same = compare_means(low, rng.normal(0, 10, 200))
    assert same.ci_low < 0 < same.ci_high


def test_wilson_interval_known_values():
    # 30 of 31 correct: the interval stays inside (0, 1) and matches the closed form.
    low, high = wilson_interval(30, 31)
    assert (low, high) == pytest.approx((0.8381, 0.9943), abs=1e-4)
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_rank_messages_orders_by_z_with_counts_and_gains(tmp_path):
    data = PairDataset.create(tmp_path, 3, 1, {})

    def seg(text, gain):
        blstats = np.zeros((1, 27), np.int32)
        blstats[0, BL_SCORE] = gain
        return Segment(encode_message(text)[None], blstats, gain, (1, 2))

    data.append(seg("It's a wall.", 0), seg("You kill the newt!", 4))
    data.append(seg("$ - 3 gold pieces.", 3), seg("You kill the newt!", 6))
    data.append(seg("It's a wall.", 0), seg("It's a wall.", 0))
    data.flush()
    ranked = rank_messages(PairDataset.open(tmp_path), TableReward())
    assert [(m.text, m.z, m.occurrences, m.mean_score_gain) for m in ranked] == [
        ("You kill the newt!", 5.0, 2, 5.0), ("$ - 3 gold pieces.", 3.0, 1, 3.0), ("It's a wall.", -1.0, 3, 0.0)]
