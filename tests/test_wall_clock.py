"""A seeded NetHack run does not depend on the date it runs on.

Two serial training runs with the same seed run under different faked wall clocks: libfaketime,
preloaded into the trainer, changes what time() returns to NetHack itself. With env.fix_moon_phase
(the default) they must make the same updates and end with the same weights. With it off they must
differ, which shows that this scenario does reach what the clock decides in NetHack.

The scenario makes the game read its birth date early: in wizard mode the agent's few keys are ^V
(level teleport), '2' and Enter, so a random policy soon reaches level 2, where shops are common;
short episodes give many fresh dungeons, and the message line (shopkeepers greet by name) is an input
of the policy.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlzoo.envs.birth_date import birth_date
from rlzoo.runtime.checkpoint import latest_path, load_checkpoint


ROOT = Path(__file__).resolve().parents[1]
LIBFAKETIME = "/usr/lib/*/faketime/libfaketime.so.1"  # Debian's package libfaketime, any architecture

# Two dates of one day, both in daylight, so the moon phase, Friday 13th, night and midnight agree
# and only the game's birth date (its start time) differs. Each starts a 257-s slot of the birth date
# (shopkeepers' names change from one slot to the next), which a short run does not leave.
SLOT = 257
DAY = 982_065_600  # 2001-02-13 12:00 UTC
DATES = (DAY - DAY % SLOT, DAY - DAY % SLOT + 28 * SLOT)

SCENARIO = [
    "experiment=nethack_score", "runtime=serial", "seed=1", "total_steps=6144", "logger.progress=false",
    "logger.log_interval_s=1e-6",  # a metrics line per update, so lines of two runs correspond
    "runtime.envs_per_actor=4", "runtime.batch_size=4", "runtime.unroll_length=32",
    "runtime.learner_threads=1",  # two runs side by side: more threads would only contend
    "model.use_message=true", "model.use_full_map=false", "model.fc_sizes=[64]", "model.lstm_size=64",
    "model.glyph_embedding_dim=8", "model.crop_channels=[8]", "env.max_episode_steps=300",
    "+env.env_kwargs.wizard=true", "+env.env_kwargs.allow_all_modes=true",
    "+env.env_kwargs.actions=[22,50,13,104,106,107,108]",  # ^V 2 Enter h j k l
]
# Metrics that depend on what was played and learned, not on how long it took.
PLAYED = ("env_steps", "episodes", "episode/", "loss/", "policy/", "learner/grad_norm")


@pytest.fixture(scope="module")
def libfaketime() -> Path:
    """Debian's libfaketime, installed if missing (idempotent)."""
    if not glob.glob(LIBFAKETIME) and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "libfaketime"],
                       env=env, capture_output=True, timeout=600)
    found = glob.glob(LIBFAKETIME)
    if not found:
        pytest.skip(f"no {LIBFAKETIME} (Debian package libfaketime; installing it needs root and apt-get)")
    return Path(found[0])


def _train_at(dates: tuple[int, ...], root: Path, lib: Path, *overrides: str) -> list[Path]:
    """Train the scenario once per date, the runs side by side; returns their run directories."""
    procs = []
    try:
        for date in dates:
            start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(date))
            env = {**os.environ, "PYTHONPATH": str(ROOT), "LD_PRELOAD": str(lib), "FAKETIME": f"@{start}",
                   "TZ": "UTC"}
            cmd = [sys.executable, "-m", "rlzoo.train", *SCENARIO, *overrides, f"hydra.run.dir={root / str(date)}"]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [root / str(date) for date in dates]


def _played(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k.startswith(PLAYED)} for row in rows]


def _same_weights(a: Path, b: Path) -> bool:
    model_a, model_b = (load_checkpoint(latest_path(run))["learner"]["model"] for run in (a, b))
    return model_a.keys() == model_b.keys() and all(torch.equal(model_a[k], model_b[k]) for k in model_a)


@pytest.mark.integration
def test_runs_on_different_dates_are_identical(tmp_path: Path, libfaketime: Path) -> None:
    first, second = _train_at(DATES, tmp_path / "fixed", libfaketime)
    rows = _played(first)
    assert rows[-1]["env_steps"] == 6144 and rows[-1]["episodes"] > 0
    assert rows == _played(second)
    assert _same_weights(first, second)

    # The sentinel: with the dates left to the clock, the same runs differ.
    first, second = _train_at(DATES, tmp_path / "clock", libfaketime, "env.fix_moon_phase=false")
    assert _played(first) != _played(second) and not _same_weights(first, second), (
        "this scenario no longer reaches anything the date decides in NetHack; the test above proves "
        "nothing until it does again (more total_steps, or another seed)")


@pytest.mark.unit
def test_birth_date_is_a_date_of_this_century_fixed_by_the_seed() -> None:
    assert birth_date(0) == 946_684_800  # 2000-01-01T00:00:00Z
    assert birth_date(12_345) == 946_684_800 + 12_345
    assert birth_date(50 * 365 * 86_400 + 7) == birth_date(7)  # dates repeat after 50 years of 365 days
    assert birth_date(2**63 - 2) == 1_815_060_606  # 2027-07-08T15:30:06Z: (2**63 - 2) mod 1,576,800,000 s
