"""Evaluation while training, end to end: rows at the configured steps, the learner's speed, a killed
evaluator, videos on disk and in an offline W&B run, best.pt and the bounded checkpoint history."""
import json
import time
from pathlib import Path

import imageio_ffmpeg
import pytest
import torch

from rlzoo.logging.metrics import read_metrics
from rlzoo.reports.wandb_records import read_offline_run
from rlzoo.runtime.checkpoint import best_path, load_checkpoint
from rlzoo.runtime.evaluation import load_policy
from rlzoo.runtime.periodic_evaluation import PeriodicEvaluation
from rlzoo.runtime.trainer import Trainer, train
from process_kills import run_killing

pytestmark = pytest.mark.integration


def eval_rows(run_dir: Path) -> list[dict]:
    return [row for row in read_metrics(run_dir) if "eval/env_steps" in row]


def training_steps_per_second(run_dir: Path, warmup: float = 0.25) -> float:
    """From the training lines, leaving out the first `warmup` of the run (start-up)."""
    rows = [row for row in read_metrics(run_dir) if "steps_per_second" in row]
    start = next(row for row in rows if row["time"] >= warmup * rows[-1]["time"])
    return (rows[-1]["env_steps"] - start["env_steps"]) / (rows[-1]["time"] - start["time"])


def test_ray_run_evaluates_at_its_steps_and_costs_at_most_the_evaluators_share(compose, tmp_path, monkeypatch):
    # One actor and the learner train; the evaluator is a third process with one CPU.
    base = ["runtime=ray", "runtime.num_actors=1", "runtime.envs_per_actor=16", "runtime.batch_size=16",
            "total_steps=12288", "logger.log_interval_s=0.5"]  # 48 learner steps of 256 env steps
    plain = tmp_path / "plain"
    train(compose(base), plain)

    step_seconds = []  # what the trainer spends on evaluation per learner step
    real_step = PeriodicEvaluation.step

    def timed_step(self, *args):
        tic = time.perf_counter()
        real_step(self, *args)
        step_seconds.append(time.perf_counter() - tic)

    monkeypatch.setattr(PeriodicEvaluation, "step", timed_step)
    evaluated = tmp_path / "evaluated"
    summary = train(compose([*base, "eval.interval_steps=2048", "eval.episodes=16", "eval.num_envs=2",
                             "checkpoint.best_metric=null"]), evaluated)

    rows = eval_rows(evaluated)
    steps = [row["env_steps"] for row in rows]
    # Weights are taken at multiples of the interval (every learner step is 256 env steps here); a busy
    # evaluator may skip a point, never evaluate between points. The final weights are evaluated too.
    assert steps == sorted(set(steps)) and all(s % 2048 == 0 for s in steps) and steps[-1] == 12288
    assert len(steps) >= 3, steps
    assert all(row["eval/policy_version"] == row["env_steps"] // 256 for row in rows)
    assert all(row["eval/episodes"] == 16 and 0 <= row["eval/success"] <= 1 for row in rows)
    # The trainer only hands weights over and polls: it never waits for an evaluation to finish.
    assert len(step_seconds) == 49 and max(step_seconds) < 0.5 * min(row["eval/duration_s"] for row in rows)
    assert summary["eval"]["env_steps"] == 12288 and summary["eval"]["eval/return"] == rows[-1]["eval/return"]
    assert json.loads((evaluated / "summary.json").read_text())["eval"]["eval/env_steps"] == 12288

    # The evaluator holds 1 of the 3 CPUs the run asks for; generous tolerance for a shared machine.
    share = 1 / 3
    with_eval, without = training_steps_per_second(evaluated), training_steps_per_second(plain)
    assert with_eval >= 0.6 * (1 - share) * without, (with_eval, without)


def test_killed_evaluator_is_replaced_and_training_goes_on(compose, tmp_path):
    cfg = compose(["runtime=ray", "runtime.num_actors=1", "total_steps=8192", "eval.interval_steps=1024",
                   "eval.episodes=4", "eval.num_envs=2"])
    trainer = Trainer(cfg, tmp_path)
    victim = trainer.evaluation.runner.pid()
    with pytest.warns(UserWarning, match="evaluator: it died"):
        summary, killed_at = run_killing(trainer, victim, lambda: trainer.evaluation.last is not None)
    assert summary["eval_restarts"] == 1 and summary["env_steps"] == 8192
    assert any(row["env_steps"] > killed_at for row in eval_rows(tmp_path)), "no evaluation after the kill"


def test_serial_run_writes_videos_best_checkpoint_and_bounded_history(compose, tmp_path):
    cfg = compose(["total_steps=640", "eval.interval_steps=128", "eval.episodes=2", "eval.num_envs=2",
                   "eval.video_interval=2", "eval.max_video_frames=20", "checkpoint.interval_s=1e-9",
                   "checkpoint.keep_last=2", "logger.wandb=true"])
    summary = train(cfg, tmp_path)
    assert summary["eval"]["env_steps"] == 640

    # A checkpoint after each of the 10 learner steps, and at the end: two stay in the history.
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "latest.pt", "step_000000000576.pt", "step_000000000640.pt"], names
    best = load_checkpoint(best_path(tmp_path))
    rows = eval_rows(tmp_path)
    top = max(rows, key=lambda row: row["eval/return"])
    assert best["eval"]["eval/return"] == top["eval/return"] and best["env_steps"] == top["env_steps"]
    _, policy = load_policy(best_path(tmp_path))  # what rlzoo-evaluate and init_from read
    assert all(torch.equal(policy.state_dict()[k], v) for k, v in best["learner"]["model"].items())

    videos = sorted((tmp_path / "videos").glob("eval_*.mp4"))
    assert videos and videos[-1].name == "eval_000000000640.mp4"
    for path in videos:
        reader = imageio_ffmpeg.read_frames(str(path))
        next(reader)
        assert 1 <= sum(1 for _ in reader) <= 20

    (wandb_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    history = read_offline_run(wandb_file).history
    logged = [row for row in history if row.get("eval/video/_type") == "video-file"]
    assert len(logged) == len(videos)
    assert all((wandb_file.parent / "files" / row["eval/video/path"]).stat().st_size > 0 for row in logged)
    assert sorted(row["eval/env_steps"] for row in history if "eval/env_steps" in row) == [r["env_steps"] for r in rows]
