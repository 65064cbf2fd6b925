"""Test helper: run a trainer and kill one of its processes (an actor, a learner replica, the evaluator)
once a condition holds, as a crash, the out-of-memory killer or an operator would."""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Callable


def run_killing(trainer: Any, victim: int, when: Callable[[], bool], timeout_s: float = 300.0) -> tuple[dict, int]:
    """`trainer.run()` while process `victim` is sent SIGKILL as soon as `when()` holds; returns the
    run's summary and the trainer's env steps at the kill."""
    killed_at: list[int] = []

    def kill() -> None:
        deadline = time.monotonic() + timeout_s
        while not when():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        killed_at.append(trainer.env_steps)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    summary = trainer.run()
    killer.join(timeout=5)
    assert killed_at, "the run ended before the kill's condition held"
    return summary, killed_at[0]
