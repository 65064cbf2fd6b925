"""End-to-end training in the serial and Ray runtimes, checkpoints and resume, config errors."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlzoo.config import ConfigError
from rlzoo.envs import env_spec
from rlzoo.logging.metrics import read_metrics
from rlzoo.models import build_model
from rlzoo.runtime.checkpoint import latest_path, load_checkpoint
from rlzoo.runtime.learner import Learner
from rlzoo.runtime.trainer import train


def model_params(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(latest_path(run_dir))["learner"]["model"]


@pytest.mark.integration
def test_serial_training_writes_run_directory(compose, tmp_path):
    summary = train(compose(["total_steps=300"]), tmp_path)
    assert summary["env_steps"] >= 300
    assert summary["learner_steps"] == summary["env_steps"] // (16 * 4)
    assert summary["episodes"] > 0  # Room-5x5 episodes are short: some must have finished
    rows = read_metrics(tmp_path)
    assert rows[-1]["env_steps"] == summary["env_steps"]
    assert "loss/total" in rows[-1], rows[-1]
    assert any("episode/return" in row for row in rows)
    assert (tmp_path / "config.yaml").read_text().count("MiniHack-Room-5x5-v0") >= 1
    assert json.loads((tmp_path / "summary.json").read_text())["env_steps"] == summary["env_steps"]


@pytest.mark.integration
def test_serial_runs_are_reproducible(compose, tmp_path):
    cfg = compose(["total_steps=128", "seed=7"])
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    a, b = model_params(tmp_path / "a"), model_params(tmp_path / "b")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.mark.integration
def test_resume_continues_steps_and_metric_log(compose, tmp_path):
    first = train(compose(["total_steps=256", "logger.log_interval_s=0.001"]), tmp_path)
    before = model_params(tmp_path)
    second = train(compose(["total_steps=512", "logger.log_interval_s=0.001"]), tmp_path)
    assert first["env_steps"] == 256 and second["env_steps"] == 512
    steps = [row["env_steps"] for row in read_metrics(tmp_path)]
    assert steps == sorted(set(steps)), "metric log has duplicates or goes backwards"
    assert steps[-1] == 512
    state = load_checkpoint(latest_path(tmp_path))
    assert state["learner"]["version"] == 512 // 64
    assert any(not torch.equal(before[k], state["learner"]["model"][k]) for k in before)


@pytest.mark.integration
def test_ray_runtime_trains_with_two_actors(compose, tmp_path):
    cfg = compose(["runtime=ray", "runtime.num_actors=2", "runtime.envs_per_actor=4",
                   "runtime.batch_size=4", "total_steps=1024"])
    summary = train(cfg, tmp_path)
    assert summary["env_steps"] >= 1024
    assert sorted(summary["unrolls_per_actor"]) == ["0", "1"], "both actors must have delivered rollouts"
    assert summary["learner_steps"] >= 1024 // 64
    torch.manual_seed(cfg.seed)  # the learner's initial weights, rebuilt
    init = build_model(cfg.model, env_spec(cfg.env)).state_dict()
    final = model_params(tmp_path)
    assert any(not torch.equal(init[k], final[k]) for k in init), "weights did not change"
    rows = read_metrics(tmp_path)
    assert rows[-1]["learner/policy_lag"] >= 0
    assert 0 <= rows[-1]["learner/wait_share"] <= 1


@pytest.mark.integration
def test_ray_policy_lag_stays_bounded_with_a_slow_learner(compose, tmp_path, monkeypatch):
    # Actors far faster than the learner must wait for it, not pile up stale unrolls.
    lags = []
    real_update = Learner.update

    def slow_update(self, batch, env_steps):
        lags.append(self.version - float(batch.policy_version.min()))
        time.sleep(0.3)
        return real_update(self, batch, env_steps)

    monkeypatch.setattr(Learner, "update", slow_update)
    cfg = compose(["runtime=ray", "runtime.num_actors=2", "runtime.envs_per_actor=4", "runtime.batch_size=4",
                   "runtime.inflight_per_actor=2", "total_steps=1600"])  # 25 updates of 4 × 16 steps
    train(cfg, tmp_path)
    assert len(lags) == 25
    # At most num_actors × inflight_per_actor unrolls queued on actors and as many fetched ahead of
    # it: one unroll per batch here, so lag ≤ 2 × 2 × 2 − 1 updates however slow the learner is.
    assert max(lags) <= 7, lags


@pytest.mark.unit
def test_bad_env_name_suggests_close_names(compose, tmp_path):
    with pytest.raises(ConfigError, match="MiniHack-Room-5x5-v0"):
        train(compose(["env.name=MiniHack-Room-5x6-v0"]), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.unit
@pytest.mark.parametrize("override,key", [
    ("algo.lr=-0.1", "algo.lr"),
    ("runtime.unroll_length=0", "runtime.unroll_length"),
    ("algo.optimizer=sgd", "algo.optimizer"),
    ("runtime.batch_size=6", "runtime.batch_size"),
])
def test_bad_values_name_the_key(compose, tmp_path, override, key):
    with pytest.raises(ConfigError, match=key):
        train(compose([override]), tmp_path)


@pytest.mark.integration
def test_cli_reports_config_errors_without_traceback(tmp_path):
    cmd = [sys.executable, "-m", "rlzoo.train", "runtime=serial", "algo.lr=-1", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "algo.lr=-1" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.integration
def test_cli_rejects_unknown_key(tmp_path):
    cmd = [sys.executable, "-m", "rlzoo.train", "algo.learning_rate=1", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "learning_rate" in proc.stderr
