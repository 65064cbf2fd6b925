"""The reproduction benchmark's verdicts, and its bookkeeping on fake run directories: finished runs are
read, not retrained; unfinished ones resume; overlapping CIs bring in more seeds; the summary collects
every claim."""
import json
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_common  # noqa: E402
import bench_reproduce as br  # noqa: E402
from bench_reproduce import Interval  # noqa: E402

SOLVED, FAILED = Interval(0.77, 0.7, 0.8), Interval(0.0, 0.0, 0.0)


def test_interval_is_the_iqm_over_seeds_with_a_bootstrap_ci():
    iv = br.interval([0.0, 1.0, 1.0, 1.0, 10.0])  # the lowest and highest quarter trimmed: mean of 1, 1, 1
    assert iv.iqm == pytest.approx(1.0) and iv.low <= 1.0 <= iv.high
    assert br.above(Interval(1, 0.6, 1.2), Interval(0.3, 0.1, 0.5))
    assert br.overlapping(Interval(1, 0.4, 1.2), Interval(0.3, 0.1, 0.5))


@pytest.mark.parametrize("ride, none, expected", [
    (SOLVED, FAILED, True),
    (Interval(0.3, 0.2, 0.4), FAILED, False),            # RIDE does not solve it
    (SOLVED, Interval(0.2, 0.1, 0.3), False),            # IMPALA does not fail
    (Interval(0.6, 0.0, 0.8), FAILED, False),            # the CIs overlap
])
def test_claim1_verdict(ride, none, expected):
    assert br.verdict_sparse(ride, none)[0] is expected


def test_claim2_verdict_needs_the_ci_above_every_other_method():
    assert br.verdict_ahead(SOLVED, {"IMPALA": FAILED, "RND": Interval(0.3, 0.2, 0.5)})[0]
    ok, text = br.verdict_ahead(SOLVED, {"IMPALA": FAILED, "RND": Interval(0.6, 0.5, 0.75)})
    assert not ok and "CI above RND's: False" in text


def test_claim3_verdict_compares_pooled_coverage():
    assert br.verdict_coverage(Interval(40, 35, 45), Interval(20, 15, 30))[0]
    assert not br.verdict_coverage(Interval(40, 28, 45), Interval(20, 15, 30))[0]


def test_claim4_verdict_episodic_wins_on_new_layouts_and_the_product_keeps_up():
    procedural = {"episodic": SOLVED, "global": FAILED, "product": Interval(0.7, 0.6, 0.78)}
    singleton = {"episodic": Interval(0.5, 0.4, 0.6), "global": SOLVED, "product": Interval(0.7, 0.6, 0.8)}
    assert br.verdict_global_episodic(procedural, singleton)[0]
    # The product's CI must reach the better single bonus's IQM on each task.
    ok, text = br.verdict_global_episodic(procedural, {**singleton, "product": Interval(0.5, 0.4, 0.6)})
    assert not ok and "singleton False" in text
    assert not br.verdict_global_episodic({**procedural, "global": Interval(0.5, 0.3, 0.72)}, singleton)[0]


def test_claim5_verdict():
    assert br.verdict_motif(Interval(30, 25, 35), 10.0, 2.0, Interval(50, 40, 60), Interval(55, 45, 65))[0]
    assert not br.verdict_motif(Interval(30, 12, 35), 10.0, 2.0, Interval(50, 40, 60), Interval(55, 45, 65))[0]
    assert not br.verdict_motif(Interval(30, 25, 35), 10.0, 2.0, Interval(40, 30, 50), Interval(55, 45, 65))[0]


# ---- claim 1 on fake run directories ------------------------------------------------------------------

CLAIM1_METHODS = ("none", "ride", "counts", "rnd")


def fake_run(run_dir: Path, method: str, final_return: float, steps: int, stopped_by: str = "done") -> None:
    """What a finished (or stopped) run leaves: its config, a metric log and its summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"env": {"name": "MiniGrid-MultiRoom-N7-S4-v0"}, "logger": {"job_type": method}, "seed": 1}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    # Nothing in the first half, `final_return` from then on.
    rows = [{"env_steps": s, "learner_steps": i, "time": float(i), "episodes": 10 * i,
             "episode/return": final_return * (2 * s > steps)}
            for i, s in enumerate(range(steps // 10, steps + 1, steps // 10))]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (run_dir / "summary.json").write_text(json.dumps({"env_steps": steps, "stopped_by": stopped_by,
                                                      "steps_per_second": 1.0}))


@pytest.fixture
def bench(tmp_path):
    return br.Bench(tmp_path, scale=0.001, seeds=3, max_seeds=5, curve_reps=20)


def arm_dir(bench, method, seed):
    return bench.out / "runs" / "claim1" / "N7-S4" / method / f"s{seed}"


def record_training(monkeypatch, bench, values):
    """Training writes a finished fake run with the method's value; returns the list of calls."""
    calls = []

    def train(overrides, run_dir):
        calls.append((run_dir.relative_to(bench.out).as_posix(), overrides))
        fake_run(run_dir, run_dir.parent.name, values[run_dir.parent.name], bench.steps(5_000_000))
        return {"env_steps": bench.steps(5_000_000), "stopped_by": "done", "steps_per_second": 1.0}

    monkeypatch.setattr(bench_common, "load_config", lambda overrides: overrides)
    monkeypatch.setattr(bench_common, "train", train)
    return calls


def test_finished_runs_are_read_and_the_claim_is_judged(bench, monkeypatch):
    values = {"none": 0.0, "ride": 0.8, "counts": 0.7, "rnd": 0.0}
    for method in CLAIM1_METHODS:
        for seed in (1, 2, 3):
            fake_run(arm_dir(bench, method, seed), method, values[method] + 0.01 * seed, bench.steps(5_000_000))
    calls = record_training(monkeypatch, bench, values)
    result = br.claim1(bench)
    assert calls == []
    assert result.reproduced, result.test
    assert "RIDE 0.82" in result.ours
    assert Path(result.figures[0]).exists()
    assert "| N7-S4 | ride |" in (bench.out / "claim1.md").read_text()


def test_overlapping_cis_add_seeds_four_and_five(bench, monkeypatch):
    # RIDE solves with two seeds of three: its CI reaches IMPALA's zero.
    values = {"none": 0.0, "ride": 0.8, "counts": 0.0, "rnd": 0.0}
    for method in CLAIM1_METHODS:
        for seed in (1, 2, 3):
            fake_run(arm_dir(bench, method, seed), method, 0.0 if seed == 2 else values[method], bench.steps(5_000_000))
    calls = record_training(monkeypatch, bench, values)
    br.claim1(bench)
    trained = sorted(path for path, _ in calls)
    assert trained == sorted(f"runs/claim1/N7-S4/{m}/s{s}" for m in CLAIM1_METHODS for s in (4, 5))
    overrides = dict(calls)["runs/claim1/N7-S4/ride/s4"]
    assert {"seed=4", "resume=auto", "total_steps=5000", "logger.job_type=ride", "experiment=ride_minigrid"} <= set(overrides)


def test_a_run_stopped_by_a_signal_resumes_and_the_others_are_kept(bench, monkeypatch):
    values = {"none": 0.0, "ride": 0.8, "counts": 0.7, "rnd": 0.0}
    for method in CLAIM1_METHODS:
        for seed in (1, 2, 3):
            fake_run(arm_dir(bench, method, seed), method, values[method], bench.steps(5_000_000),
                     stopped_by="SIGTERM" if (method, seed) == ("rnd", 2) else "done")
    calls = record_training(monkeypatch, bench, values)
    br.claim1(bench)
    assert [path for path, _ in calls] == ["runs/claim1/N7-S4/rnd/s2"]


def test_the_summary_collects_every_claim_in_order(tmp_path):
    for claim in (3, 1):
        result = br.ClaimResult(claim, f"finding {claim}", "task", "paper", "ours", "test", claim == 1, ["f.png"])
        (tmp_path / f"claim{claim}_result.json").write_text(json.dumps(result.__dict__))
    table = br.write_summary(tmp_path)
    lines = table.splitlines()
    assert lines[2].startswith("| 1 | finding 1 |") and "| reproduced |" in lines[2]
    assert lines[3].startswith("| 3 | finding 3 |") and "| not reproduced |" in lines[3]
    assert (tmp_path / "reproduction.csv").read_text().count("\n") == 3
