"""rlzoo-report on synthetic run directories whose statistics are computed by hand below."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from rlzoo.reports.ablation import (
    ReportSpec,
    final_score,
    final_scores,
    improvement_table,
    steps_to_threshold,
)
from rlzoo.reports.cli import build_report, main
from rlzoo.reports.runs import discover, load_run_dir, select
from rlzoo.reports.wandb_records import iter_records

STEPS = list(range(0, 1001, 100))
# Final returns per (bonus, task) and seeds 1, 2, 3. Return ramps linearly to its final value at step
# 800 and stays there, so the final score (last 10% of steps: 900 and 1000) is exactly this value.
FINAL = {
    ("none", "A"): [0.1, 0.2, 0.3], ("none", "B"): [0.0, 0.1, 0.5],
    ("e3b", "A"): [0.5, 0.6, 0.7], ("e3b", "B"): [0.4, 0.9, 1.0],
}
# First step with episode/success = 1 (0 before); None: never succeeds.
SUCCESS_AT = {
    ("none", "A"): [None, 800, None], ("none", "B"): [None, None, None],
    ("e3b", "A"): [200, 300, 400], ("e3b", "B"): [500, None, 100],
}
# By hand: none's 6 finals sorted 0, .1, .1, .2, .3, .5 -> mean 1.2/6 = 0.2; IQM drops one value at
# each end (25% of 6, rounded down) -> mean(.1, .1, .2, .3) = 0.175.
# e3b: .4, .5, .6, .7, .9, 1 -> mean 4.1/6; IQM mean(.5, .6, .7, .9) = 0.675.
# P(e3b > none): task A every pair wins -> 1; task B: .4 beats 2 of 3, .9 and 1 beat 3 -> 8/9.
EXPECTED = {"none": (0.2, 0.175), "e3b": (4.1 / 6, 0.675)}
EXPECTED_POI = (1.0 + 8 / 9) / 2


def write_run(root: Path, bonus: str, task: str, seed: int, final: float, success_at: int | None,
              extra_lines: int = 0) -> Path:
    run = root / f"{task}-{bonus}-s{seed}"
    run.mkdir(parents=True)
    config = {"seed": seed, "env": {"name": task}, "bonus": {"name": bonus}, "logger": {"group": "sweep1"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    lines = []
    for s in STEPS:
        lines.append({"env_steps": s, "learner_steps": s // 10, "time": s / 100,
                      "episode/return": final * min(s / 800, 1.0),
                      "episode/success": float(success_at is not None and s >= success_at)})
        lines.append({"env_steps": s, "learner_steps": s // 10, "time": s / 100, "loss/total": 1.0})
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (run / "metrics.jsonl").write_text(text + '{"env_steps": 11')  # a line cut off by a kill
    return run


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    for (bonus, task), finals in FINAL.items():
        for i, final in enumerate(finals):
            write_run(tmp_path / "sweep", bonus, task, i + 1, final, SUCCESS_AT[bonus, task][i])
    return tmp_path / "sweep"


def spec(**kw) -> ReportSpec:
    return ReportSpec(**{"reps": 300, "curve_reps": 100, "curve_points": 11, **kw})


@pytest.mark.unit
def test_final_score_averages_the_last_fraction_of_steps(sweep: Path) -> None:
    run = load_run_dir(sweep / "A-none-s2")
    assert final_score(run, "episode/return", 0.1) == pytest.approx(0.2)
    # Last 30%: steps 700 (0.2 * 7/8), 800, 900, 1000 (0.2 each).
    assert final_score(run, "episode/return", 0.3) == pytest.approx((0.175 + 0.6) / 4)
    assert steps_to_threshold(run, "episode/success", 0.5) == 800
    assert steps_to_threshold(load_run_dir(sweep / "A-none-s1"), "episode/success", 0.5) == math.inf


@pytest.mark.unit
def test_report_tables_match_hand_computed_values(sweep: Path) -> None:
    runs = list(discover([sweep]))
    assert len(runs) == 12
    report = build_report(runs, spec())
    table = report.aggregates.set_index("group")
    for group, (mean, iqm) in EXPECTED.items():
        row = table.loc[group]
        assert row["mean"] == pytest.approx(mean) and row["iqm"] == pytest.approx(iqm)
        assert row["runs"] == 3 and row["tasks"] == 2
        finals = [f for (g, _), fs in FINAL.items() if g == group for f in fs]
        # A bootstrap interval holds the point estimate and stays within the data.
        assert min(finals) <= row["mean_low"] <= mean <= row["mean_high"] <= max(finals)
        assert min(finals) <= row["iqm_low"] <= iqm <= row["iqm_high"] <= max(finals)
        assert row["mean_high"] > row["mean_low"]
    assert report.per_task.loc["e3b", "B"] == pytest.approx(2.3 / 3)

    poi = report.improvement.set_index("group").loc["e3b"]
    assert poi["probability"] == pytest.approx(EXPECTED_POI)
    assert poi["baseline"] == "none" and poi["low"] <= EXPECTED_POI <= poi["high"] <= 1.0

    eff = report.efficiency.set_index("group")
    assert eff.loc["e3b", "reached"] == 5 and eff.loc["e3b", "median_steps"] == 350
    assert eff.loc["e3b", "mean_steps_reached"] == pytest.approx(300)
    assert eff.loc["none", "reached"] == 1 and eff.loc["none", "median_steps"] == math.inf
    assert eff.loc["none", "mean_steps_reached"] == 800

    curve = report.curves["e3b"]
    assert curve.steps[[0, 4, -1]] == pytest.approx([0, 400, 1000])
    # Returns scale linearly until step 800, and so does their IQM.
    assert curve.value[[0, 4, -1]] == pytest.approx([0.0, 0.675 / 2, 0.675])
    assert np.all(curve.low <= curve.value + 1e-12) and np.all(curve.value <= curve.high + 1e-12)


@pytest.mark.unit
def test_bootstrap_is_reproducible_and_narrows_with_confidence(sweep: Path) -> None:
    runs = list(discover([sweep]))
    a = build_report(runs, spec()).aggregates
    b = build_report(runs, spec()).aggregates
    assert a.equals(b)
    narrow = build_report(runs, spec(confidence=0.5)).aggregates
    assert (narrow["iqm_high"] - narrow["iqm_low"] <= a["iqm_high"] - a["iqm_low"] + 1e-12).all()


@pytest.mark.unit
def test_unequal_seed_counts_are_balanced_with_a_note(sweep: Path) -> None:
    write_run(sweep, "e3b", "A", 4, 0.0, None)
    scores = final_scores(list(discover([sweep])), spec())
    assert scores.scores["e3b"].shape == (3, 2)
    assert any("e3b: kept the first 3 runs" in n for n in scores.notes)


@pytest.mark.unit
def test_tasks_not_run_by_every_group_are_left_out(sweep: Path) -> None:
    write_run(sweep, "e3b", "C", 1, 0.3, None)
    scores = final_scores(list(discover([sweep])), spec())
    assert scores.tasks == ["A", "B"] and any("C" in n for n in scores.notes)


@pytest.mark.unit
def test_bad_input_is_reported_clearly(sweep: Path) -> None:
    runs = list(discover([sweep]))
    with pytest.raises(ValueError, match="baseline 'rnd' is not among the groups"):
        improvement_table(final_scores(runs, spec()), spec(baseline="rnd"))
    with pytest.raises(KeyError, match="no config key 'algo.name'"):
        final_scores(runs, spec(group_key="algo.name"))
    with pytest.raises(KeyError, match="never logged 'episode/score'"):
        final_scores(runs, spec(metric="episode/score"))
    with pytest.raises(ValueError, match="final_fraction"):
        ReportSpec(final_fraction=0.0)
    with pytest.raises(ValueError, match="curve_aggregate must be one of"):
        ReportSpec(curve_aggregate="median")


@pytest.mark.unit
def test_select_filters_on_config_values(sweep: Path) -> None:
    runs = list(discover([sweep]))
    assert len(select(runs, {"bonus.name": "e3b", "seed": "2"})) == 2
    assert select(runs, {"logger.group": "other"}) == []


@pytest.mark.integration
def test_cli_writes_plots_markdown_html_and_csv(sweep: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out), "--reps", "300", "--curve-reps", "100",
                 "--where", "logger.group=sweep1"]) == 0
    for name in ["learning_curves.png", "learning_curves.svg", "final_performance.png",
                 "probability_of_improvement.svg", "report.md", "report.html", "final_performance.csv",
                 "sample_efficiency.csv"]:
        assert (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    assert "| e3b | 3 | 2 | 0.683 [" in md and "0.675 [" in md and "0.944 [" in md
    assert "not reached" in md  # none's median steps to the success threshold
    assert "<td>0.675 [" in (out / "report.html").read_text()
    assert "e3b (IQM 0.675)" in capsys.readouterr().out

    assert main([str(sweep), "--out", str(out), "--baseline", "rnd", "--reps", "10"]) == 2
    assert "baseline 'rnd'" in capsys.readouterr().err


@pytest.mark.integration
def test_offline_wandb_runs_are_read(tmp_path: Path) -> None:
    # A real offline run written by wandb in a subprocess, read back without the W&B service.
    script = (
        "import wandb\n"
        "r = wandb.init(project='p', group='sweep1', job_type='e3b', dir=%r,"
        " config={'env': {'name': 'A'}, 'bonus': {'name': 'e3b'}, 'seed': 1})\n"
        "for s in range(0, 1001, 100):\n"
        "    r.log({'env_steps': s, 'episode/return': 0.5 * s / 1000})\n"
        "r.finish()\n"
        # A report logged by `rlzoo-report --log-wandb` is no training run: it is skipped.
        "wandb.init(project='p', job_type='report', dir=%r).finish()\n" % (str(tmp_path), str(tmp_path))
    )
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    assert len(list(tmp_path.rglob("run-*.wandb"))) == 2
    (run,) = discover([tmp_path])
    assert run.get("bonus.name") == "e3b" and run.get("seed") == 1 and run.get("logger.group") == "sweep1"
    assert run.metrics["env_steps"].tolist() == STEPS
    assert final_score(run, "episode/return", 0.1) == pytest.approx((0.45 + 0.5) / 2)


@pytest.mark.unit
def test_wandb_reader_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "run-x.wandb"
    bad.write_bytes(b"not a wandb file")
    with pytest.raises(ValueError, match="bad header"):
        list(iter_records(bad))


@pytest.mark.unit
def test_online_wandb_runs_go_through_the_public_api() -> None:
    from rlzoo.reports.runs import load_online_wandb

    class FakeRun:
        id, name, group = "abc", "A-e3b-s1", "sweep1"
        config = {"env": {"name": "A"}, "bonus": {"name": "e3b"}, "seed": 1, "_wandb": {}}

        def scan_history(self):
            return [{"_step": 0, "env_steps": 0, "episode/return": 0.0},
                    {"_step": 1, "env_steps": 100, "episode/return": 1.0}, {"_step": 2, "other": 3}]

    class FakeApi:
        def runs(self, path, filters):
            assert path == "me/rlzoo" and filters == {"group": "sweep1"}
            return [FakeRun()]

    (run,) = load_online_wandb("me/rlzoo", {"group": "sweep1"}, api=FakeApi())
    assert run.source == "me/rlzoo/abc" and run.get("logger.group") == "sweep1"
    assert "_wandb" not in run.config and len(run.metrics) == 2


# Runs that evaluated while training: held-out eval/return ramps to EVAL_FINAL[group][seed] at step 800,
# training-level evaluations sit 0.1 above it, training episodes stay at 0. By hand: none's finals
# .2, .4, .6 -> mean .4; e3b's .5, .7, .9 -> mean .7. Ends: none killed 1/4 of episodes, e3b 1/2.
EVAL_FINAL = {"none": [0.2, 0.4, 0.6], "e3b": [0.5, 0.7, 0.9]}
KILLED = {"none": 0.25, "e3b": 0.5}


def write_evaluated_run(root: Path, bonus: str, seed: int, final: float) -> Path:
    run = root / f"A-{bonus}-s{seed}"
    run.mkdir(parents=True)
    config = {"seed": seed, "env": {"name": "A"}, "bonus": {"name": bonus}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [{"env_steps": s, "learner_steps": s // 10, "time": s / 100, "steps_per_second": 100.0,
              "episode/return": 0.0} for s in STEPS]
    for s in range(0, 1001, 200):  # logged late, as the evaluator finishes: out of step order
        value = final * min(s / 800, 1.0)
        lines.append({"env_steps": s, "learner_steps": s // 10, "time": s / 100, "eval/env_steps": s,
                      "eval/return": value, "eval/train_levels/return": value + 0.1,
                      "eval/end/killed": KILLED[bonus], "eval/end/step_limit": 1 - KILLED[bonus],
                      "eval/end/starved": 0.0, "eval/deaths": {"killed by a newt": 1}})
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run


@pytest.fixture
def evaluated_sweep(tmp_path: Path) -> Path:
    for bonus, finals in EVAL_FINAL.items():
        for i, final in enumerate(finals):
            write_evaluated_run(tmp_path / "sweep", bonus, i + 1, final)
    return tmp_path / "sweep"


@pytest.mark.unit
def test_runs_that_evaluated_are_compared_on_their_evaluations(evaluated_sweep: Path) -> None:
    report = build_report(list(discover([evaluated_sweep])), spec())
    assert report.spec.metric == "eval/return"
    table = report.aggregates.set_index("group")
    assert table.loc["none", "mean"] == pytest.approx(0.4) and table.loc["e3b", "mean"] == pytest.approx(0.7)
    assert report.train_metric == "eval/train_levels/return"
    assert report.train_curves["e3b"].value[-1] == pytest.approx(0.7 + 0.1)
    ends = report.end_causes.set_index("group")
    assert list(ends.columns) == ["killed", "step_limit"]  # starved never happened
    assert ends.loc["e3b", "killed"] == pytest.approx(0.5) and ends.loc["none", "step_limit"] == pytest.approx(0.75)
    # Asked for explicitly, the training episodes are compared instead.
    explicit = build_report(list(discover([evaluated_sweep])), spec(metric="episode/return"))
    assert explicit.aggregates.set_index("group").loc["e3b", "mean"] == 0.0 and explicit.train_metric is None


@pytest.mark.integration
def test_cli_report_shows_evaluation_curves_and_end_causes(evaluated_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main([str(evaluated_sweep), "--out", str(out), "--reps", "100", "--curve-reps", "50"]) == 0
    md = (out / "report.md").read_text()
    assert "Final performance (eval/return)" in md and "How episodes ended" in md
    assert (out / "end_causes.csv").exists() and (out / "learning_curves.svg").stat().st_size > 0


@pytest.mark.unit
def test_wandb_rows_are_split_into_training_and_evaluation_rows() -> None:
    from rlzoo.reports.runs import split_eval_rows

    merged = {"_step": 1500, "env_steps": 1500, "loss/total": 1.0, "eval/env_steps": 1024, "eval/return": 0.5}
    assert list(split_eval_rows([merged])) == [
        {"env_steps": 1024, "eval/env_steps": 1024, "eval/return": 0.5},
        {"_step": 1500, "env_steps": 1500, "loss/total": 1.0},
    ]
    alone = {"_step": 1600, "eval/env_steps": 1536, "eval/return": 0.7}
    assert list(split_eval_rows([alone])) == [{"env_steps": 1536, "eval/env_steps": 1536, "eval/return": 0.7}]
