"""Faults injected into short real runs: the run survives, or stops with a clear message."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import rlzoo.runtime.rollout as rollout
from rlzoo.config import ConfigError
from rlzoo.envs import env_spec
from rlzoo.logging.metrics import read_metrics
from rlzoo.runtime.checkpoint import CheckpointError, free_bytes, latest_path, load_checkpoint, save_checkpoint
from rlzoo.runtime.learner import Learner, NonFiniteLossError
from rlzoo.runtime.ray_runtime import RayConnectionError
from rlzoo.runtime.trainer import Trainer, check_compatible, train
from process_kills import run_killing


class FaultyEnv:
    """Wraps a VecEnv; the `fail_at`-th step of the process raises or hangs, once."""

    steps = 0

    def __init__(self, env, fail_at, mode):
        self.env, self.fail_at, self.mode = env, fail_at, mode

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, actions):
        FaultyEnv.steps += 1
        if FaultyEnv.steps == self.fail_at:
            if self.mode == "raise":
                raise RuntimeError("injected environment crash")
            time.sleep(3600)  # injected hang
        return self.env.step(actions)


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_env_crash_or_hang_rebuilds_env_and_training_continues(compose, tmp_path, monkeypatch, mode):
    real = rollout.make_vec_env
    FaultyEnv.steps = 0
    monkeypatch.setattr(rollout, "make_vec_env", lambda *a, **k: FaultyEnv(real(*a, **k), 20, mode))
    with pytest.warns(UserWarning, match="rebuilding its environments"):
        summary = train(compose(["total_steps=256", "runtime.env_step_timeout_s=1"]), tmp_path)
    assert summary["env_restarts"] == 1
    assert summary["env_steps"] == 256  # training went on past the fault
    rows = read_metrics(tmp_path)
    assert rows[-1]["faults/env_restarts"] == 1


@pytest.mark.integration
def test_killed_ray_actor_is_replaced(compose, tmp_path):
    cfg = compose(["runtime=ray", "runtime.num_actors=2", "total_steps=3000", "logger.log_interval_s=0.5"])
    trainer = Trainer(cfg, tmp_path)
    import ray

    victim = ray.get(trainer.source.actors[0].pid.remote())
    summary, killed_at = run_killing(trainer, victim, lambda: trainer.env_steps >= 500)
    assert summary["actor_restarts"] == 1
    assert summary["env_steps"] >= 3000 > killed_at
    assert summary["unrolls_per_actor"]["0"] > 0


def _train_cmd(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "rlzoo.train", "runtime=serial", "logger.progress=false",
            "runtime.envs_per_actor=4", "runtime.batch_size=4", "runtime.unroll_length=16",
            "logger.log_interval_s=0.2", f"hydra.run.dir={run_dir}", *overrides]


def _wait_for(predicate, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _metric_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["env_steps"] for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_checkpoints_and_resume_continues(tmp_path, sig):
    proc = subprocess.Popen(_train_cmd(tmp_path, "total_steps=1000000"), stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_metric_steps(tmp_path)) >= 3)
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert time.monotonic() - sent < 30, "the checkpoint must be written within a bounded time"
    assert "checkpoint" in err
    saved = load_checkpoint(latest_path(tmp_path))["env_steps"]
    assert json.loads((tmp_path / "summary.json").read_text())["stopped_by"] == sig.name

    done = subprocess.run(_train_cmd(tmp_path, f"total_steps={saved + 128}"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    steps = _metric_steps(tmp_path)
    assert steps == sorted(set(steps)) and steps[-1] == saved + 128
    assert load_checkpoint(latest_path(tmp_path))["learner"]["version"] == (saved + 128) // 64


@pytest.mark.integration
def test_sigkill_resumes_from_last_complete_checkpoint(tmp_path):
    proc = subprocess.Popen(_train_cmd(tmp_path, "total_steps=1000000", "checkpoint.interval_s=1"),
                            stderr=subprocess.DEVNULL)
    _wait_for(lambda: latest_path(tmp_path).exists() and len(_metric_steps(tmp_path)) >= 5)
    time.sleep(1.5)
    proc.kill()
    proc.wait(timeout=30)
    saved = load_checkpoint(latest_path(tmp_path))["env_steps"]
    assert saved > 0
    done = subprocess.run(_train_cmd(tmp_path, f"total_steps={saved + 64}"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    steps = _metric_steps(tmp_path)
    assert steps == sorted(set(steps)) and steps[-1] == saved + 64
    assert not list(latest_path(tmp_path).parent.glob("*.tmp"))  # a kill mid-save leaves one; the next save removes it


@pytest.mark.unit
def test_half_written_checkpoint_is_never_loaded(tmp_path):
    path = latest_path(tmp_path)
    save_checkpoint(path, {"env_steps": 7})
    tmp = path.parent / f".{path.name}.crash.tmp"
    tmp.write_bytes(b"PK\x03\x04 truncated")  # what a kill in the middle of torch.save leaves
    assert load_checkpoint(path)["env_steps"] == 7
    save_checkpoint(path, {"env_steps": 8})
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest.pt"]  # the leftover is gone


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs: a file system that fills up."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


def _fill(disk: Path, leave: int) -> None:
    """Write a file that leaves `leave` bytes free on `disk` (written, not sparse: tmpfs counts pages)."""
    todo = free_bytes(disk) - leave
    with open(disk / f"filler{len(list(disk.glob('filler*')))}", "wb") as f:
        while todo > 0:
            todo -= f.write(b"\0" * min(todo, 1 << 20))


@pytest.mark.integration
def test_full_disk_keeps_the_previous_checkpoint_and_no_temporary(small_disk):
    path = latest_path(small_disk / "run")
    save_checkpoint(path, {"env_steps": 1, "w": torch.zeros(2**16)})  # 256 KiB
    _fill(small_disk, leave=512 << 10)
    # The previous checkpoint would fit beside itself, but this one does not: the write runs out of space.
    with pytest.raises(CheckpointError, match=r"^no space left on \S+/run/checkpoints writing checkpoint \(needs "
                                              r"more than 0\.\d MB, 0\.\d MB free\); the previous checkpoint "
                                              r"\S+/latest\.pt is intact; free some space"):
        save_checkpoint(path, {"env_steps": 2, "w": torch.zeros(2**20)})  # 4 MiB
    assert load_checkpoint(path)["env_steps"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest.pt"]
    # Fuller still: not even a checkpoint as large as the last one fits, so none is started.
    _fill(small_disk, leave=64 << 10)
    with pytest.raises(CheckpointError, match=r"\(needs ~0\.3 MB, 0\.\d MB free\)"):
        save_checkpoint(path, {"env_steps": 3, "w": torch.zeros(2**16)})
    assert load_checkpoint(path)["env_steps"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["latest.pt"]


@pytest.mark.integration
def test_full_disk_stops_the_run_with_one_line_then_it_resumes(small_disk):
    run_dir = small_disk / "run"
    model = ["model.lstm_size=64", "model.fc_sizes=[64]"]
    first = subprocess.run(_train_cmd(run_dir, "total_steps=128", *model), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    _fill(small_disk, leave=latest_path(run_dir).stat().st_size // 2)
    full = subprocess.run(_train_cmd(run_dir, "total_steps=256", *model), capture_output=True, text=True,
                          timeout=300)
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    assert re.fullmatch(rf"rlzoo-train: CheckpointError: no space left on {run_dir}/checkpoints writing checkpoint "
                        r"\(needs ~\d+\.\d MB, \d+\.\d MB free\); the previous checkpoint \S+ is intact; .*",
                        full.stderr.strip().splitlines()[-1]), full.stderr
    assert load_checkpoint(latest_path(run_dir))["env_steps"] == 128
    # Nothing half-written is left (history files are hard links to complete checkpoints).
    assert sorted(p.name for p in latest_path(run_dir).parent.iterdir() if not p.name.startswith("step_")) == ["latest.pt"]
    for filler in small_disk.glob("filler*"):
        filler.unlink()
    resumed = subprocess.run(_train_cmd(run_dir, "total_steps=256", *model), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(latest_path(run_dir))["env_steps"] == 256


@pytest.mark.integration
@pytest.mark.parametrize("where", ["under_a_file", "read_only_mount", "sweep_under_a_file"])
def test_output_root_that_cannot_be_created_is_a_one_line_config_error(tmp_path, where):
    (tmp_path / "a_file").write_text("")
    output_root, sweep = tmp_path / "a_file" / "runs", []
    if where == "read_only_mount":
        if os.geteuid() != 0:
            pytest.skip("mounting a read-only tmpfs needs root (and root ignores permission bits)")
        output_root = tmp_path / "read_only"
        output_root.mkdir()
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(output_root)],
                              capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    if where == "sweep_under_a_file":
        sweep = ["-m", "seed=1,2"]
    try:
        proc = subprocess.run([sys.executable, "-m", "rlzoo.train", *sweep, "runtime=serial", "total_steps=16",
                               f"output_root={output_root}"], capture_output=True, text=True, timeout=120)
    finally:
        if where == "read_only_mount":
            subprocess.run(["umount", "--lazy", str(output_root)], check=True)
    assert proc.returncode == 2
    reason = "Read-only file system" if where == "read_only_mount" else "Not a directory"
    assert re.fullmatch(rf"rlzoo-train: config error: output_root='{output_root}': cannot create "
                        rf"{output_root}/\S+: {reason}; choose a writable folder", proc.stderr.strip()), proc.stderr


@pytest.mark.unit
def test_nonfinite_updates_are_skipped_then_stop_with_message(compose):
    cfg = compose(["algo.max_nonfinite_updates=3"])
    spec = env_spec(cfg.env)
    batch = rollout.RolloutWorker(cfg, 0, spec).rollout().unroll
    learner = Learner(cfg, spec, 4, torch.device("cpu"))
    with torch.no_grad():
        learner.model.baseline_head.weight.fill_(float("nan"))
    assert learner.update(batch, 100) == {"learner/skipped_updates": 1.0}
    assert learner.update(batch, 200) == {"learner/skipped_updates": 2.0}
    with pytest.raises(NonFiniteLossError, match=r"env step 300 non-finite: .*baseline"):
        learner.update(batch, 300)
    assert learner.version == 0


@pytest.mark.integration
def test_nonfinite_stop_leaves_checkpoint(compose, tmp_path, monkeypatch):
    def nan_update(self, batch, env_steps):
        self._nonfinite_in_a_row = self.algo.max_nonfinite_updates
        return self._skip_update({"policy": float("nan")}, env_steps)

    monkeypatch.setattr(Learner, "update", nan_update)
    with pytest.raises(NonFiniteLossError, match="policy"):
        train(compose(["total_steps=640"]), tmp_path)
    assert latest_path(tmp_path).exists()


@pytest.mark.unit
def test_corrupt_checkpoint_gives_clear_error(compose, tmp_path):
    latest_path(tmp_path).parent.mkdir(parents=True)
    latest_path(tmp_path).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(compose(["total_steps=64"]), tmp_path)


@pytest.mark.integration
def test_checkpoint_of_another_model_is_refused(compose, tmp_path):
    train(compose(["total_steps=64"]), tmp_path)
    with pytest.raises(CheckpointError, match="different model config.*lstm_size"):
        train(compose(["total_steps=128", "model.lstm_size=64"]), tmp_path)


@pytest.mark.integration
def test_checkpoint_from_before_a_new_env_setting_resumes(compose, tmp_path):
    cfg = compose([])
    saved = {group: OmegaConf.to_container(cfg[group], resolve=True) for group in ("model", "bonus", "env")}
    del saved["env"]["share_nethack_code"]  # written before the setting existed: it counts as its default
    check_compatible(saved, cfg, tmp_path)
    saved["env"]["share_nethack_code"] = False  # changes speed only
    check_compatible(saved, cfg, tmp_path)
    saved["env"]["fix_moon_phase"] = not cfg.env.fix_moon_phase
    with pytest.raises(CheckpointError, match="different env config.*fix_moon_phase"):
        check_compatible(saved, cfg, tmp_path)


@pytest.mark.unit
def test_unreachable_ray_address_fails_fast(compose, tmp_path):
    start = time.monotonic()
    with pytest.raises(RayConnectionError, match="runtime.ray_address='127.0.0.1:9'"):
        train(compose(["runtime=ray", "runtime.ray_address=127.0.0.1:9", "total_steps=64"]), tmp_path)
    assert time.monotonic() - start < 60


@pytest.mark.unit
def test_more_actors_than_cpus_needs_consent(compose, tmp_path):
    with pytest.raises(ConfigError, match="allow_oversubscribe"):
        train(compose(["runtime=ray", f"runtime.num_actors={os.cpu_count() + 1}"]), tmp_path)


@pytest.mark.unit
def test_a_failing_environment_is_rebuilt_alone_and_the_others_keep_their_episodes(monkeypatch):
    from rlzoo.envs import make_vec_env
    from rlzoo.envs.nethack import NetHackEnv

    env = make_vec_env({"name": "MiniHack-Corridor-R2-v0"}, 4, seed=3)
    env.reset()
    broken = env.envs[2]
    real_step = NetHackEnv.step
    calls = {"n": 0}

    def step(self, action, out, i):
        if self is broken:
            calls["n"] += 1
            if calls["n"] == 5:
                raise RuntimeError("the game crashed")
        return real_step(self, action, out, i)

    monkeypatch.setattr(NetHackEnv, "step", step)
    lengths_before = None
    with pytest.warns(UserWarning, match="environment 2 failed.*rebuilding it alone"):
        for t in range(5):
            if t == 4:
                lengths_before = [e.episode_length for e in env.envs]
            _, reward, done, _ = env.step(np.zeros(4, dtype=np.int64))
    assert env.restarts == 1 and env.envs[2] is not broken
    assert done[2] and reward[2] == 0.0
    # The other three went on with their episodes: one more step each, nothing ended.
    assert [e.episode_length for i, e in enumerate(env.envs) if i != 2] == [n + 1 for i, n in enumerate(lengths_before)
                                                                             if i != 2]
    assert not done[[0, 1, 3]].any()
    env.close()


@pytest.mark.integration
def test_a_killed_learner_replica_restarts_the_run_from_its_last_checkpoint(compose, tmp_path):
    cfg = compose(["runtime=ray", "runtime.num_actors=1", "runtime.learners=2", "runtime.batch_size=8",
                   "runtime.envs_per_actor=4", "total_steps=3072", "runtime.allow_oversubscribe=true",
                   "checkpoint.interval_s=1e-9", "logger.log_interval_s=0.2"])  # a checkpoint after every learner step
    trainer = Trainer(cfg, tmp_path)
    victim = trainer.learner.pids()[1]
    with pytest.warns(UserWarning, match="learner replica died.*from the last checkpoint"):
        summary, killed_at = run_killing(trainer, victim,
                                         lambda: latest_path(tmp_path).exists() and trainer.env_steps >= 1024)
    assert summary["learner_restarts"] == 1
    assert summary["env_steps"] >= 3072 > killed_at
    # Training went back to the checkpoint written right before the kill, not to the start: the batch in
    # hand (8 columns × 32 steps), the unrolls of the actor's 4 envs collected for the next batch (at most
    # two) and the two in flight.
    assert 0 < summary["env_steps_lost"] <= 8 * 32 + 4 * 4 * 32 < killed_at
    steps = _metric_steps(tmp_path)
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # the log went back with the run: no duplicates


@pytest.mark.integration
def test_a_learner_replica_lost_after_the_last_checkpoint_does_not_fail_the_close(compose, tmp_path):
    cfg = compose(["runtime=ray", "runtime.num_actors=1", "runtime.learners=2", "runtime.batch_size=8",
                   "runtime.envs_per_actor=4", "runtime.allow_oversubscribe=true"])
    trainer = Trainer(cfg, tmp_path)
    survivor, victim = trainer.learner.pids()
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{victim}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    # The run is over and its state saved: closing reports the loss instead of turning it into a crash,
    # and the surviving replica is stopped after its own close.
    with pytest.warns(UserWarning, match=r"learner replica\(s\) \[1\] died"):
        trainer.close()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{survivor}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{survivor}").exists()
