"""Checkpoint history and best.pt: which files stay, that each is whole, and that disk use is bounded."""
import os

import pytest
import torch

from rlzoo.runtime.checkpoint import (
    BestCheckpoint,
    add_to_history,
    best_path,
    history_path,
    history_to_keep,
    latest_path,
    load_checkpoint,
    passes_multiple,
    save_checkpoint,
)

pytestmark = pytest.mark.unit


def test_history_keeps_the_last_and_the_first_of_every_period():
    steps = [100, 250, 900, 1000, 1100, 2500, 2600, 3100]
    assert history_to_keep(steps, keep_last=2, keep_every_steps=0) == {2600, 3100}
    # Periods of 1000: [0, 1000) first 100, [1000, 2000) first 1000, [2000, 3000) 2500, [3000, 4000) 3100.
    assert history_to_keep(steps, keep_last=0, keep_every_steps=1000) == {100, 1000, 2500, 3100}
    assert history_to_keep(steps, keep_last=2, keep_every_steps=1000) == {100, 1000, 2500, 2600, 3100}
    assert history_to_keep(steps, keep_last=0, keep_every_steps=0) == set()
    assert history_to_keep([], keep_last=3, keep_every_steps=10) == set()


def test_passing_a_multiple():
    assert passes_multiple(900, 1024, 1000) and passes_multiple(999, 1000, 1000)
    assert not passes_multiple(1000, 1999, 1000) and not passes_multiple(0, 5000, 0)


def _save_latest(run_dir, step):
    save_checkpoint(latest_path(run_dir), {"env_steps": step, "weights": torch.full((3,), float(step))})


def test_keep_last_two_after_five_checkpoints_leaves_two_and_best(tmp_path):
    best = BestCheckpoint(tmp_path, "eval/return", "max")
    for i, (step, evaluated) in enumerate([(64, 0.2), (128, 0.9), (192, 0.4), (256, 0.5), (320, 0.1)]):
        _save_latest(tmp_path, step)
        add_to_history(tmp_path, step, keep_last=2, keep_every_steps=0)
        best.offer(evaluated, lambda: {"eval": {"eval/return": evaluated}, "env_steps": step})
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["best.pt", "latest.pt", "step_000000000256.pt", "step_000000000320.pt"]
    assert load_checkpoint(best_path(tmp_path))["env_steps"] == 128 and best.value == 0.9
    # The newest history file is latest.pt itself (a hard link): no second copy on disk.
    assert os.stat(history_path(tmp_path, 320)).st_ino == os.stat(latest_path(tmp_path)).st_ino
    assert torch.equal(load_checkpoint(history_path(tmp_path, 256))["weights"], torch.full((3,), 256.0))


def test_best_checkpoint_survives_a_restart_and_respects_the_mode(tmp_path):
    best = BestCheckpoint(tmp_path, "eval/turns", "min")
    assert best.offer(50.0, lambda: {"eval": {"eval/turns": 50.0}})
    assert not best.offer(60.0, lambda: {"eval": {"eval/turns": 60.0}})
    assert not best.offer(float("nan"), lambda: {"eval": {"eval/turns": float("nan")}})
    again = BestCheckpoint(tmp_path, "eval/turns", "min")  # a resumed run
    assert again.value == 50.0
    assert again.offer(40.0, lambda: {"eval": {"eval/turns": 40.0}})
    assert load_checkpoint(best_path(tmp_path))["eval"]["eval/turns"] == 40.0


def test_no_history_settings_write_no_history(tmp_path):
    _save_latest(tmp_path, 64)
    add_to_history(tmp_path, 64, keep_last=0, keep_every_steps=0)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["latest.pt"]
