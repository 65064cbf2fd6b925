"""Test helper: run a trainer and kill one of its processes (an actor, a learner replica, the evaluator)
once a condition holds, as a crash, the out-of-memory killer or an operator would."""
from __future__ import annotations

import os
import signal
from typing import Any, Callable


def run_killing(trainer: Any, victim: int, when: Callable[[], bool]) -> tuple[dict, int]:
    """`trainer.run()` while process `victim` is sent SIGKILL after the first learner step at which `when()`
    holds; returns the run's summary and the trainer's env steps at the kill.

    The kill is made from the trainer's own loop, between two learner steps, so that it always lands while
    the run is under way: a killer thread polling `when()` can lose the race to a fast run's last steps and
    kill the process while the run is already closing, which tests nothing."""
    killed_at: list[int] = []
    train_on = trainer._train_on

    def train_on_then_kill(*args: Any, **kwargs: Any) -> None:
        train_on(*args, **kwargs)
        if not killed_at and when():
            killed_at.append(trainer.env_steps)
            os.kill(victim, signal.SIGKILL)

    trainer._train_on = train_on_then_kill
    summary = trainer.run()
    assert killed_at, "the run ended before the kill's condition held"
    assert summary["env_steps"] > killed_at[0] or summary["stopped_by"] != "done", "nothing ran after the kill"
    return summary, killed_at[0]
