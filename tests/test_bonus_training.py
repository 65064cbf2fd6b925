"""Short end-to-end training runs with every shipped bonus on MiniHack and Procgen (serial runtime)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlzoo.runtime.checkpoint import latest_path, load_checkpoint
from rlzoo.runtime.trainer import train

MINIHACK = ["env.name=MiniHack-Corridor-R2-v0", "model=crop"]
PROCGEN = ["env=procgen", "env.name=maze", "model.channels=[8,16,16]", "model.num_blocks=1", "model.fc_size=64"]
BONUSES = ["e3b", "rnd", "noveld", "ride", "counts", "counts_global", "e3b_rnd", "e3b_noveld", "e3b_counts",
           "counts_global_episodic"]
LOSSES = {
    "e3b": {"loss/e3b_inverse_dynamics"},
    "rnd": {"loss/rnd_predictor"},
    "noveld": {"loss/noveld_predictor"},
    "ride": {"loss/ride_forward_dynamics", "loss/ride_inverse_dynamics"},
    "e3b_rnd": {"loss/e3b_inverse_dynamics", "loss/rnd_predictor"},
    "e3b_noveld": {"loss/e3b_inverse_dynamics", "loss/noveld_predictor"},
    "e3b_counts": {"loss/e3b_inverse_dynamics"},
}


def last_metrics(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(row for row in reversed(rows) if "bonus/int_raw_mean" in row)


@pytest.mark.parametrize("env", ["minihack", "procgen"])
@pytest.mark.parametrize("bonus", BONUSES)
def test_training_with_bonus(compose, tmp_path, env, bonus):
    overrides = MINIHACK if env == "minihack" else PROCGEN
    summary = train(compose([*overrides, f"bonus={bonus}", "total_steps=128", "logger.log_interval_s=0.001"]), tmp_path)
    assert summary["env_steps"] >= 128
    row = last_metrics(tmp_path)
    expected = {"bonus/int_raw_mean", "bonus/int_raw_max", "bonus/int_mean", "bonus/int_max", *LOSSES.get(bonus, ())}
    assert expected <= set(row), f"missing {expected - set(row)}"
    assert all(math.isfinite(row[key]) for key in expected)
    assert row["bonus/int_raw_max"] >= 0


def test_intrinsic_only_run_resumes_with_bonus_state(compose, tmp_path):
    overrides = [*MINIHACK, "bonus=e3b_counts", "bonus.extrinsic_coef=0.0", "logger.log_interval_s=0.001"]
    train(compose([*overrides, "total_steps=128"]), tmp_path)
    saved = load_checkpoint(latest_path(tmp_path))["learner"]["bonus"]
    assert saved["last_unroll_index"].max() == 1  # two unrolls per env so far
    visited = len(saved["global_bonus._extra_state"]["global_counts"])
    # The resumed run restarts its environments (unroll_index 0, first=True): accepted as new episodes,
    # while the global counts and the networks carry on.
    summary = train(compose([*overrides, "total_steps=256"]), tmp_path)
    assert summary["env_steps"] == 256
    resumed = load_checkpoint(latest_path(tmp_path))["learner"]["bonus"]
    assert sum(resumed["global_bonus._extra_state"]["global_counts"].values()) == 2 * sum(
        saved["global_bonus._extra_state"]["global_counts"].values())
    assert len(resumed["global_bonus._extra_state"]["global_counts"]) >= visited
    assert not torch.equal(saved["episodic_bonus.cov_inverse"], resumed["episodic_bonus.cov_inverse"])
