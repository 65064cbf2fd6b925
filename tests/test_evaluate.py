"""rlzoo-evaluate on a checkpoint of a short run: the table and the video it writes."""
import subprocess
import sys

import imageio.v2 as imageio
import pytest

from rlzoo.runtime.trainer import train


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


def test_evaluate_rejects_missing_checkpoint(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rlzoo.evaluate", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "no checkpoint" in proc.stderr


def test_nethack_full_network_trains_serially(compose, tmp_path):
    summary = train(compose(["experiment=nethack_score", "total_steps=64", "runtime.unroll_length=8",
                             "model.use_message=true"]), tmp_path)
    assert summary["env_steps"] == 64 and summary["learner_steps"] == 2
