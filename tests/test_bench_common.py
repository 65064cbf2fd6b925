"""The benchmarks' shared bookkeeping: success rate, and what a rerun or a stop signal does."""
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_common  # noqa: E402


def test_success_rate_weights_rows_by_episodes_and_keeps_the_last_ones(tmp_path):
    rows = [{"episodes": 50, "episode/success": 0.0}, {"episodes": 100, "episode/success": 1.0},
            {"episodes": 100}, {"episodes": 160, "episode/success": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    # The last 60 episodes at 0.5 and the 50 before at 1.0 reach 100; the first 50 are left out.
    assert bench_common.success_rate(tmp_path, last_episodes=100) == pytest.approx((30 + 50) / 110)
    assert bench_common.success_rate(tmp_path, last_episodes=1000) == pytest.approx((30 + 50) / 160)


def _fake_train(monkeypatch, summary):
    calls = []
    monkeypatch.setattr(bench_common, "load_config", lambda overrides: overrides)
    monkeypatch.setattr(bench_common, "train", lambda cfg, run_dir: calls.append(cfg) or summary)
    return calls


def test_a_finished_run_is_not_trained_again(tmp_path, monkeypatch):
    calls = _fake_train(monkeypatch, {})
    (tmp_path / "summary.json").write_text(json.dumps({"env_steps": 1000, "stopped_by": "done"}))
    assert bench_common.run_once(tmp_path, ["bonus=e3b"], 1000)["env_steps"] == 1000
    assert calls == []


def test_a_run_stopped_by_a_signal_resumes_on_rerun(tmp_path, monkeypatch):
    (tmp_path / "summary.json").write_text(json.dumps({"env_steps": 400, "stopped_by": "SIGTERM"}))
    calls = _fake_train(monkeypatch, {"env_steps": 1000, "stopped_by": "done", "steps_per_second": 10.0})
    bench_common.run_once(tmp_path, ["bonus=e3b"], 1000)
    assert calls == [["bonus=e3b", "total_steps=1000", "resume=auto"]]


def test_a_stop_signal_ends_the_benchmark_instead_of_starting_the_next_run(tmp_path, monkeypatch):
    _fake_train(monkeypatch, {"env_steps": 400, "stopped_by": "SIGTERM", "steps_per_second": 10.0})
    with pytest.raises(SystemExit, match="stopped by SIGTERM at 400 steps.*rerun"):
        bench_common.run_once(tmp_path, ["bonus=e3b"], 1000)


def test_random_action_success_counts_the_episodes_of_one_env_reproducibly():
    room = {"name": "MiniHack-Room-5x5-v0"}
    rate = bench_common.random_action_success(room, episodes=10, seed=3)
    assert rate == bench_common.random_action_success(room, episodes=10, seed=3)
    assert 0.0 <= rate <= 1.0 and (rate * 10) == pytest.approx(round(rate * 10))


def test_cpu_description_says_native_bf16_exactly_when_auto_precision_picks_bf16():
    import torch

    from rlzoo.models.precision import resolve_precision

    described = bench_common.cpu_description()
    picks_bf16 = resolve_precision("auto", torch.device("cpu")) == torch.bfloat16
    assert ("(native bf16)" in described) == picks_bf16
    assert ("bf16 emulated" in described) == (not picks_bf16)
