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


TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test belongs to exactly one tier (pytest.ini), so `-m unit` and the others split the suite."""
    wrong = [f"{item.nodeid} ({', '.join(tiers) or 'no tier'})" for item in items
             if len(tiers := sorted({m.name for m in item.iter_markers() if m.name in TIERS})) != 1]
    if wrong:
        raise pytest.UsageError("tests need exactly one of the markers " + ", ".join(TIERS) + ":\n  "
                                + "\n  ".join(wrong))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks run fastest on one thread, and the suite shares the machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def compose() -> Callable[[Sequence[str]], DictConfig]:
    """`compose(["bonus=e3b", "total_steps=2000"])` → a small serial-runtime config."""

    def _compose(overrides: Sequence[str] = ()) -> DictConfig:
        return load_config([*FAST_OVERRIDES, *overrides])

    return _compose
