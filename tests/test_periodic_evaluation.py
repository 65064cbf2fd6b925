"""When evaluations start and what their results leave behind, with an evaluator that answers on cue."""
import json

import numpy as np
import pytest

from rlzoo.logging.metrics import MetricLogger
from rlzoo.runtime.checkpoint import best_path, load_checkpoint
from rlzoo.runtime.evaluator import EvalRequest, EvalResult
from rlzoo.runtime.periodic_evaluation import MAX_FAILURES, PeriodicEvaluation, first_due_index

pytestmark = pytest.mark.unit


class CueRunner:
    """Holds each submitted evaluation until the test releases it (`finish_with`) or loses it (`lose`)."""

    def __init__(self):
        self.submitted: list[EvalRequest] = []
        self.result: EvalResult | None = None
        self.busy = False
        self.restarts = self.failures = 0
        self.closed = False

    def submit(self, request, weights):
        assert not self.busy, "a second evaluation was submitted while one was running"
        self.submitted.append(request)
        self.busy = True

    def finish_with(self, value):
        request = self.submitted[-1]
        self.result = EvalResult(request.env_steps, request.policy_version, {"eval/return": value}, {}, 0.1)

    def lose(self):
        self.busy = False
        self.failures += 1

    def poll(self, timeout_s=0.0):
        result, self.result = self.result, None
        if result is not None:
            self.busy = False
        return result

    def close(self):
        self.closed = True


@pytest.fixture
def evaluation(compose, tmp_path):
    cfg = compose(["eval.interval_steps=128", "eval.video_interval=2"])
    runner = CueRunner()
    logger = MetricLogger(tmp_path, cfg, 0)
    yield PeriodicEvaluation(cfg, tmp_path, logger, 0, runner=runner), runner, tmp_path
    logger.close()


def weights(version):
    return lambda: {"w": np.full(2, float(version), np.float32)}


def test_first_due_index():
    assert first_due_index(0, 100) == 0  # a fresh run evaluates its initial weights
    assert first_due_index(250, 100) == 3 and first_due_index(300, 100) == 4


def test_due_evaluations_wait_in_one_slot_and_results_are_keyed_by_their_step(evaluation):
    ev, runner, run_dir = evaluation  # an evaluation every 128 env steps; a learner step is 64
    ev.step(0, 0, weights(0), 0.0)
    assert [r.env_steps for r in runner.submitted] == [0]
    for step in (64, 128, 192, 256):  # due at 128 and 256 while the evaluator is busy
        ev.step(step, step // 64, weights(step // 64), step / 10)
    assert len(runner.submitted) == 1 and ev.waiting[0].env_steps == 256  # 128 was replaced by 256
    runner.finish_with(0.5)
    ev.step(320, 5, weights(5), 32.0)  # collects step 0, starts 256
    runner.finish_with(0.9)
    ev.step(384, 6, weights(6), 38.4)  # 384 is due: collects 256, starts 384
    runner.finish_with(0.7)
    ev.step(448, 7, weights(7), 44.8)
    assert [(r.env_steps, r.policy_version, r.video) for r in runner.submitted] == [
        (0, 0, True), (256, 4, True), (384, 6, False)]  # a video every 2nd multiple of 128
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["env_steps"], r["eval/policy_version"], r["eval/return"], r["time"]) for r in rows] == [
        (0, 0, 0.5, 0.0), (256, 4, 0.9, 25.6), (384, 6, 0.7, 38.4)]
    best = load_checkpoint(best_path(run_dir))
    assert best["env_steps"] == 256 and best["learner"]["model"]["w"].tolist() == [4.0, 4.0]


def test_lost_evaluations_are_skipped_and_a_failing_evaluator_is_given_up(evaluation):
    ev, runner, _ = evaluation
    for i in range(MAX_FAILURES):
        ev.step(i * 128, i, weights(i), 0.0)
        runner.lose()
    with pytest.warns(UserWarning, match="no more evaluations"):
        ev.step(MAX_FAILURES * 128, 9, weights(9), 0.0)
    assert ev.given_up and runner.closed and ev.summary() is None
    ev.step(10_000, 99, weights(99), 0.0)
    assert len(runner.submitted) == MAX_FAILURES  # nothing more was submitted


def test_final_evaluation_waits_unless_a_stop_signal_comes(evaluation):
    ev, runner, _ = evaluation
    ev.step(0, 0, weights(0), 0.0)
    runner.finish_with(0.1)
    ev.finish(640, 10, weights(10), 64.0, stop=lambda: len(runner.submitted) == 2)  # stops while 640 runs
    assert [r.env_steps for r in runner.submitted] == [0, 640] and ev.summary()["env_steps"] == 0
    runner.finish_with(0.3)
    ev.finish(640, 10, weights(10), 64.0, stop=lambda: False)
    assert ev.summary()["env_steps"] == 640 and ev.summary()["eval/return"] == 0.3
