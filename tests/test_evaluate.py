"""rlzoo-evaluate on a checkpoint of a short run: the table and the video it writes."""
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from rlzoo.runtime import evaluation
from rlzoo.runtime.trainer import train


@pytest.mark.integration
@pytest.mark.parametrize("experiment,rows,episodes", [
    ([], ["episodes"], "3"),
    (["experiment=procgen_coinrun", "env.name=bigfish", "model.lstm_size=0"], ["train levels", "held-out levels"], "1"),
])
def test_evaluate_prints_table_and_writes_gif(compose, tmp_path, experiment, rows, episodes):
    run = tmp_path / "run"
    train(compose([*experiment, "total_steps=128"]), run)
    video = tmp_path / "episode.gif"
    proc = subprocess.run([sys.executable, "-m", "rlzoo.evaluate", str(run), "--episodes", episodes,
                           "--video", str(video), "--max-frames", "50"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for row in rows:
        line = next(line for line in proc.stdout.splitlines() if line.startswith(row))
        assert line.split()[len(row.split())] == episodes  # episodes column
    frames = imageio.mimread(video)
    assert len(frames) >= 2 and frames[0].ndim == 3 and frames[0].shape[2] in (3, 4)


@pytest.mark.integration
def test_evaluate_rejects_missing_checkpoint(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rlzoo.evaluate", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "no checkpoint" in proc.stderr


@pytest.mark.integration
def test_nethack_full_network_trains_serially(compose, tmp_path):
    summary = train(compose(["experiment=nethack_score", "total_steps=64", "runtime.unroll_length=8",
                             "model.use_message=true"]), tmp_path)
    assert summary["env_steps"] == 64 and summary["learner_steps"] == 2


class _ShortAndLongEpisodes:
    """Env 0's episodes last 1 step, env 1's last 10: a length-biased sampler would mostly see env 0."""

    num_envs = 2

    def __init__(self) -> None:
        self.t = 0

    def reset(self):
        return {"x": np.zeros((2, 1), np.float32)}

    def step(self, actions):
        self.t += 1
        done = np.array([True, self.t % 10 == 0])
        eps = [{"length": 1.0}] + ([{"length": 10.0}] if done[1] else [])
        return self.reset(), np.zeros(2, np.float32), done, eps

    def close(self) -> None:
        pass


class _ConstantPolicy(torch.nn.Module):
    def initial_state(self, batch_size):
        return ()

    def act(self, obs, first, state, generator, greedy):
        return torch.zeros(len(first), dtype=torch.int64), None, state


@pytest.mark.unit
def test_run_episodes_takes_an_equal_share_from_every_env(monkeypatch):
    monkeypatch.setattr(evaluation, "make_vec_env", lambda *args, **kwargs: _ShortAndLongEpisodes())
    episodes = evaluation.run_episodes(_ConstantPolicy(), {"family": "minihack"}, 6, seed=0, greedy=True, num_envs=2)
    assert sorted(ep["length"] for ep in episodes) == [1, 1, 1, 10, 10, 10]
