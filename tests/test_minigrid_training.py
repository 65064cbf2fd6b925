"""Training on MiniGrid end to end: RIDE's preset in the serial runtime, and its lr schedule over the
paper's budget."""
import pytest

from rlzoo.logging.metrics import read_metrics
from rlzoo.runtime.trainer import train

pytestmark = pytest.mark.integration

# Two batches of 4 envs × 140 steps: every N7-S4 episode (140 steps at most) ends inside a batch.
# A metric line per update (the lines average what was logged since the previous one).
SMALL = ["experiment=ride_minigrid", "model.fc_sizes=[32]", "model.lstm_size=32", "runtime.unroll_length=140",
         "total_steps=1120", "logger.log_interval_s=1e-6"]


def test_ride_preset_trains_on_multiroom_and_decays_lr_over_the_papers_budget(compose, tmp_path):
    summary = train(compose(SMALL), tmp_path)
    assert summary["env_steps"] == 1120 and summary["learner_steps"] == 2
    assert summary["episodes"] >= 4
    rows = read_metrics(tmp_path)
    episodes = [r for r in rows if "episode/success" in r]
    assert episodes and all(0.0 <= r["episode/success"] <= 1.0 for r in episodes)
    last = next(r for r in reversed(rows) if "learner/lr" in r)
    assert last["env_steps"] == 1120 and last["loss/ride_forward_dynamics"] > 0 and last["loss/ride_inverse_dynamics"] > 0
    # The last update ran at 1120 env steps: lr falls towards 0 at 30M (the paper's budget), not at 1120.
    assert last["learner/lr"] == pytest.approx(1e-4 * (1 - 1120 / 30_000_000))


def test_without_the_papers_budget_lr_reaches_zero_at_the_runs_end(compose, tmp_path):
    train(compose([*SMALL, "algo.lr_decay_steps=null"]), tmp_path)
    last = next(r for r in reversed(read_metrics(tmp_path)) if "learner/lr" in r)
    assert last["env_steps"] == 1120 and last["learner/lr"] == 0.0
