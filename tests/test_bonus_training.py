"""Short end-to-end training runs with every shipped bonus on MiniHack and Procgen (serial runtime)."""
from __future__ import annotations

import math
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

import rlzoo.runtime.learner as learner_module
from rlzoo.bonuses import bonus_class, runnable_bonus_options
from rlzoo.bonuses.e3b import E3BBonus
from rlzoo.config import load_config
from rlzoo.envs import env_spec
from rlzoo.logging.metrics import read_metrics
from rlzoo.runtime.checkpoint import latest_path, load_checkpoint
from rlzoo.runtime.learner import Learner
from rlzoo.runtime.rollout import RolloutWorker
from rlzoo.runtime.trainer import train
from rlzoo.unroll import Unroll

pytestmark = pytest.mark.integration

MINIHACK = ["env.name=MiniHack-Corridor-R2-v0", "model=crop"]
PROCGEN = ["env=procgen", "env.name=maze", "model.channels=[8,16,16]", "model.num_blocks=1", "model.fc_size=64"]
BONUSES = [option for option in runnable_bonus_options() if option != "none"]  # new bonuses join by themselves
LEARNER_LOSSES = {"loss/total", "loss/policy", "loss/baseline"}
LOSSES = {
    "e3b": {"loss/e3b_inverse_dynamics"},
    "rnd": {"loss/rnd_predictor"},
    "noveld": {"loss/noveld_predictor"},
    "ride": {"loss/ride_forward_dynamics", "loss/ride_inverse_dynamics"},
    "e3b_rnd": {"loss/e3b_inverse_dynamics", "loss/noveld_predictor"},  # the study's global term is NovelD's network
    "rnd_minihack": {"loss/rnd_predictor"},
    "e3b_noveld": {"loss/e3b_inverse_dynamics", "loss/noveld_predictor"},
    "e3b_counts": {"loss/e3b_inverse_dynamics"},
}


def last_metrics(run_dir: Path) -> dict:
    rows = read_metrics(run_dir)
    return next(row for row in reversed(rows) if "bonus/int_raw_mean" in row)


@pytest.mark.parametrize("env, bonus", [(env, bonus) for bonus in BONUSES for env in ("minihack", "procgen")
                                        if env in bonus_class(load_config([f"bonus={bonus}"]).bonus.name).families])
def test_training_with_bonus(compose, tmp_path, env, bonus):
    overrides = MINIHACK if env == "minihack" else PROCGEN
    summary = train(compose([*overrides, f"bonus={bonus}", "total_steps=128", "logger.log_interval_s=0.001"]), tmp_path)
    assert summary["env_steps"] >= 128
    row = last_metrics(tmp_path)
    expected = {"bonus/int_raw_mean", "bonus/int_raw_max", "bonus/int_mean", "bonus/int_max", *LOSSES.get(bonus, ())}
    assert expected <= set(row), f"missing {expected - set(row)}"
    assert all(math.isfinite(row[key]) for key in expected)
    bonus_losses = {k for k in row if k.startswith("loss/")} - LEARNER_LOSSES
    assert all(math.isfinite(row[key]) for key in bonus_losses), bonus_losses
    assert row["bonus/int_raw_max"] > 0  # every bonus pays something for new states early on


def test_intrinsic_only_run_resumes_with_bonus_state(compose, tmp_path):
    overrides = [*MINIHACK, "bonus=e3b_counts", "bonus.extrinsic_coef=0.0", "logger.log_interval_s=0.001"]
    train(compose([*overrides, "total_steps=128"]), tmp_path)
    saved = load_checkpoint(latest_path(tmp_path))["learner"]["bonus"]
    assert saved["last_unroll_index"].max() == 1  # two unrolls per env so far
    visited = len(saved["global_bonus.global_counts._extra_state"])
    # The resumed run restarts its environments (unroll_index 0, first=True): accepted as new episodes,
    # while the global counts and the networks carry on.
    summary = train(compose([*overrides, "total_steps=256"]), tmp_path)
    assert summary["env_steps"] == 256
    resumed = load_checkpoint(latest_path(tmp_path))["learner"]["bonus"]
    assert sum(resumed["global_bonus.global_counts._extra_state"].values()) == 2 * sum(
        saved["global_bonus.global_counts._extra_state"].values())
    assert len(resumed["global_bonus.global_counts._extra_state"]) >= visited
    assert not torch.equal(saved["episodic_bonus.cov_inverse"], resumed["episodic_bonus.cov_inverse"])


class _InCaller:
    """Stands in for the learner's bonus thread: runs the bonus's training at once, in the caller."""

    def submit(self, fn, *args):
        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self):
        pass


def _assert_same_state(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _two_updates(cfg, batches):
    learner = Learner(cfg, env_spec(cfg.env), cfg.runtime.envs_per_actor, torch.device("cpu"))
    metrics = [learner.update(batch, step) for step, batch in enumerate(batches)]
    return learner.state_dict(), metrics


def test_bonus_trains_alongside_the_policy_with_the_result_of_training_before_it(compose, monkeypatch):
    cfg = compose(["bonus=e3b_rnd", *MINIHACK])
    worker = RolloutWorker(cfg, 0)
    batches = [Unroll.concat([worker.rollout().unroll]) for _ in range(2)]
    alongside, alongside_metrics = _two_updates(cfg, batches)
    monkeypatch.setattr(learner_module, "ThreadPoolExecutor", lambda *args, **kwargs: _InCaller())
    before, before_metrics = _two_updates(cfg, batches)
    _assert_same_state(alongside, before)
    assert [m.keys() for m in alongside_metrics] == [m.keys() for m in before_metrics]
    assert {"loss/e3b_inverse_dynamics", "loss/noveld_predictor", "loss/policy"} <= alongside_metrics[-1].keys()


def test_a_failing_bonus_update_fails_the_learner_update(compose, monkeypatch):
    cfg = compose(["bonus=e3b", *MINIHACK])
    learner = Learner(cfg, env_spec(cfg.env), cfg.runtime.envs_per_actor, torch.device("cpu"))
    batch = RolloutWorker(cfg, 0).rollout().unroll

    def broken_train_step(self, batch, aux):
        raise RuntimeError("bonus training failed")

    monkeypatch.setattr(E3BBonus, "train_step", broken_train_step)
    with pytest.raises(RuntimeError, match="bonus training failed"):
        learner.update(batch, 0)
