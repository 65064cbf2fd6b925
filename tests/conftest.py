"""Shared test helpers: compose configs exactly as `rlzoo-train` does."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import pytest
from omegaconf import DictConfig

from rlzoo.config import load_config

os.environ.setdefault("WANDB_MODE", "offline")
# Commands the tests start (ray, rlzoo-train, Slurm job scripts) must come from this interpreter's
# environment even when it was not activated (`.venv/bin/python -m pytest`).
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

# Small, quiet settings every test run starts from; tests add their own overrides after these.
FAST_OVERRIDES = [
    "runtime=serial",
    "logger.progress=false",
    "runtime.envs_per_actor=4",
    "runtime.batch_size=4",
    "runtime.unroll_length=16",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long runs, excluded by default (run with -m slow)")
    config.addinivalue_line("markers", "unit: seconds, no Ray, no subprocess")
    config.addinivalue_line("markers", "integration: Ray or CLI subprocesses")
    config.addinivalue_line("markers", "system: Slurm or other services the test starts; long")


@pytest.fixture
def compose() -> Callable[[Sequence[str]], DictConfig]:
    """`compose(["bonus=e3b", "total_steps=2000"])` → a small serial-runtime config."""

    def _compose(overrides: Sequence[str] = ()) -> DictConfig:
        return load_config([*FAST_OVERRIDES, *overrides])

    return _compose
