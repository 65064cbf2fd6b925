"""Slurm support against a real single-node Slurm started by scripts/slurm_cluster.sh: the Ray-on-Slurm
template, a Hydra sweep through hydra-submitit-launcher, and a report built from that sweep."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlzoo.reports.cli import main as report_main

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "scripts" / "slurm_cluster.sh"
LAUNCH = ROOT / "slurm" / "launch.sh"
SECRET = "wandb-key-that-must-not-be-written-anywhere"


def _run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _ray_env(job_id: int, extra: str = "") -> str:
    """Evaluate shell code with slurm/ray_env.sh sourced, as in a job with this id."""
    out = _run(["bash", "-c", f"source {ROOT / 'slurm' / 'ray_env.sh'}; {extra}"],
               env={**os.environ, "SLURM_JOB_ID": str(job_id), "SLURM_LOCALID": "0"})
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return out.stdout.strip()


@pytest.fixture(scope="session")
def slurm() -> None:
    """Install and start the local Slurm once per session; stop it afterwards if it was not running."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("installing Slurm needs root and apt-get (Debian/Ubuntu)")
    was_up = _run(["bash", str(CLUSTER), "status"]).returncode == 0
    start = _run(["bash", str(CLUSTER), "start"], timeout=900)
    assert start.returncode == 0, start.stderr
    yield
    if not was_up:
        stop = _run(["bash", str(CLUSTER), "stop"])
        assert stop.returncode == 0, stop.stderr


def _wait_for_job(job_id: str, timeout: float) -> dict[str, str]:
    """Poll until the job leaves the queue; returns its scontrol fields (state, exit code)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _run(["scontrol", "show", "job", job_id]).stdout
        fields = dict(re.findall(r"(\w+)=(\S+)", info))
        if fields.get("JobState") in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}:
            return fields
        time.sleep(1)
    _run(["scancel", job_id])
    raise TimeoutError(f"Slurm job {job_id} still running after {timeout} s")


@pytest.mark.unit
def test_ports_are_per_job_and_disjoint() -> None:
    blocks = {}
    for job in (1, 2, 1101, 123456):
        ports = [int(_ray_env(job, f"ray_port {name}")) for name in ("gcs", "client", "dashboard", "agent")]
        assert all(10000 <= p < 32768 for p in ports), ports  # below the kernel's ephemeral range
        assert len(set(ports)) == 4
        blocks[job] = set(range(ports[0], ports[0] + 20))
    assert not blocks[1] & blocks[2] and not blocks[2] & blocks[123456]
    assert blocks[1] == blocks[1101]  # the block repeats every 1100 job ids


@pytest.mark.unit
def test_ray_temp_dir_is_short_enough_for_unix_sockets() -> None:
    assert _ray_env(987654, "ray_temp_dir") == "/tmp/rlzoo-ray-987654"
    with pytest.raises(RuntimeError, match="keep it at most 40"):
        _ray_env(987654, "RLZOO_RAY_TMP=/scratch/some/long/per-user/directory ray_temp_dir")


@pytest.mark.unit
def test_launch_validates_options_and_builds_sbatch_command() -> None:
    out = _run(["bash", str(LAUNCH), "--nodes", "3", "--cpus-per-node", "32", "--gpus-per-node", "4",
                "--ray-nodes-per-node", "2", "--partition", "gpu", "--dry-run", "--", "rlzoo-train", "seed=2"])
    assert out.returncode == 0, out.stderr
    cmd = out.stdout
    for part in ["--nodes=3", "--ntasks-per-node=2", "--cpus-per-task=16", "--gpus-per-task=2",
                 "--partition=gpu", "ray_cluster.sbatch rlzoo-train seed=2"]:
        assert part in cmd, (part, cmd)
    bad = _run(["bash", str(LAUNCH), "--cpus-per-node", "3", "--ray-nodes-per-node", "2", "--", "true"])
    assert bad.returncode == 2 and "multiple of --ray-nodes-per-node" in bad.stderr
    assert "no command" in _run(["bash", str(LAUNCH), "--nodes", "1"]).stderr
    assert "non-negative integer" in _run(["bash", str(LAUNCH), "--nodes", "two", "--", "true"]).stderr


# Tiny runs: a small network and short unrolls, quiet.
TINY = [
    "logger.progress=false", "runtime.envs_per_actor=4", "runtime.batch_size=4", "runtime.unroll_length=16",
    "model.fc_sizes=[64]", "model.lstm_size=64", "model.glyph_embedding_dim=16", "model.map_channels=[8,8]",
    "model.crop_channels=[8,8]",
]

# The driver the template runs: checks the cluster it was given, as rlzoo-train would use it.
DRIVER = r'''
import os, subprocess, sys
import ray

ray.init(logging_level="ERROR", log_to_driver=False)
nodes = [n for n in ray.nodes() if n["Alive"]]
print("NODES", len(nodes), "CPUS", int(ray.cluster_resources()["CPU"]), "AUTH", os.environ["RAY_AUTH_MODE"])
print("ADDRESS", os.environ["RAY_ADDRESS"])

@ray.remote(num_cpus=1)
class Actor:
    def node(self):
        return ray.get_runtime_context().get_node_id()

# Two 1-CPU actors alive at once on two 1-CPU Ray nodes: one on each, as rollout actors spread.
actors = [Actor.remote() for _ in range(2)]
print("ACTOR_NODES", len(set(ray.get([a.node.remote() for a in actors], timeout=120))))
ray.shutdown()
# A client with a wrong token is refused.
bad = subprocess.run([sys.executable, "-c", "import ray; ray.init(logging_level='ERROR')"],
                     env={**os.environ, "RAY_AUTH_TOKEN": "0" * 64}, capture_output=True, text=True, timeout=120)
print("WRONG_TOKEN_REFUSED", bad.returncode != 0)
'''


@pytest.mark.system
def test_ray_template_runs_checks_and_trainer_on_two_ray_nodes(slurm, tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # The trainer's learner and its one actor need a CPU each: one per Ray node.
    train = [sys.executable, "-m", "rlzoo.train", "runtime=ray", "runtime.ray_address=auto",
             "runtime.num_actors=1", "total_steps=512", *TINY, f"output_root={tmp_path / 'runs'}"]
    command = f"{sys.executable} {driver} && {' '.join(shlex.quote(a) for a in train)}"
    out = _run(["bash", str(LAUNCH), "--nodes", "1", "--cpus-per-node", "2", "--ray-nodes-per-node", "2",
                "--time", "10", "--output", str(tmp_path / "job.out"), "--", "bash", "-c", command],
               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline",
                              "WANDB_API_KEY": SECRET})
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    fields = _wait_for_job(job_id, timeout=400)
    log = (tmp_path / "job.out").read_text()
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", log
    assert "NODES 2 CPUS 2 AUTH token" in log
    assert "ACTOR_NODES 2" in log and "WRONG_TOKEN_REFUSED True" in log
    assert f"ADDRESS 127.0.0.1:{10000 + 20 * (int(job_id) % 1100)}" in log
    assert "RAY_AUTH_TOKEN" not in log and SECRET not in log
    (run,) = (tmp_path / "runs").glob("*/*")
    assert json.loads((run / "summary.json").read_text())["env_steps"] >= 512
    assert (run / "checkpoints" / "latest.pt").exists()
    # The Ray nodes stop with the job.
    assert _run(["pgrep", "-f", f"rlzoo-ray-{job_id}"]).returncode == 1


SWEEP_OVERRIDES = [
    "launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=3",
    "hydra.launcher.timeout_min=20", "bonus=none,e3b", "seed=1,2", "runtime=serial", "total_steps=1024",
    *TINY,
]


@pytest.mark.system
def test_sweep_through_submitit_then_report(slurm, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_API_KEY": SECRET}
    out = _run([sys.executable, "-m", "rlzoo.train", "-m", *SWEEP_OVERRIDES, f"output_root={tmp_path}"],
               timeout=900, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = (tmp_path / "sweeps").iterdir()
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [r.name.split("_", 1)[1] for r in runs] == [
        "MiniHack-Room-5x5-v0-none-s1", "MiniHack-Room-5x5-v0-none-s2",
        "MiniHack-Room-5x5-v0-e3b-s1", "MiniHack-Room-5x5-v0-e3b-s2"]
    for run in runs:
        assert (run / "checkpoints" / "latest.pt").stat().st_size > 0, run
        last = (run / "metrics.jsonl").read_text().splitlines()[-1]
        assert int(re.search(r'"env_steps": (\d+)', last).group(1)) >= 1024, run
    # One Slurm array, one task per run, each with its own log.
    tasks = sorted(p.name for p in (sweep / ".submitit").iterdir() if p.is_dir() and "_" in p.name)
    assert len(tasks) == 4 and len({t.split("_")[0] for t in tasks}) == 1
    # The API key stays in the environment: no file of the sweep holds it.
    for path in sweep.rglob("*"):
        if path.is_file() and path.suffix in {".sh", ".yaml", ".out", ".err", ".log", ".jsonl"}:
            assert SECRET not in path.read_text(errors="replace"), path

    assert report_main([str(sweep), "--out", str(tmp_path / "report"), "--reps", "200",
                        "--curve-reps", "50"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert re.search(r"\| e3b \| 2 \| 1 \|", md) and re.search(r"\| none \| 2 \| 1 \|", md)
    assert "Probability of improvement over none" in md


def _wait_for_path(pattern: str, root: Path, proc: subprocess.Popen, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        assert proc.poll() is None, f"the sweep ended early: {proc.communicate()[1][-3000:]}"
        time.sleep(1)
    raise TimeoutError(f"no {pattern} below {root} after {timeout} s")


def _kill_task(job_id: str) -> None:
    """SIGKILL the job's task (the trainer), as the kernel's out-of-memory killer would: no handler runs."""
    plain_id = re.search(r"JobId=(\d+)", _run(["scontrol", "show", "job", job_id]).stdout).group(1)  # array task's own id
    rows = [line.split() for line in _run(["scontrol", "listpids", plain_id]).stdout.splitlines()[1:]]
    (pid,) = [int(row[0]) for row in rows if row[2:4] == ["0", "0"]]  # step 0, task 0
    os.kill(pid, signal.SIGKILL)


@pytest.mark.system
@pytest.mark.parametrize("kill", [False, True], ids=["scancel", "sigkill"])
def test_cancelled_job_ends_the_sweep_with_a_report(slurm, tmp_path: Path, kill: bool) -> None:
    """One job of a 2-job sweep is stopped from outside while it trains. `scancel`: the run gets
    SIGTERM, checkpoints and stops, and is not requeued. SIGKILL to the trainer: no result is written,
    and only Slurm accounting tells the launcher that the job has ended. Either way the sweep ends in
    bounded time and reports that job as not finished and the other one as finished."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "rlzoo.train", "-m", "launcher=slurm", "hydra.launcher.cpus_per_task=1",
           "hydra.launcher.mem_gb=3", "hydra.launcher.timeout_min=20", "runtime=serial",
           "total_steps=512,100000000", "logger.log_interval_s=1", *TINY, f"output_root={tmp_path}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    array = None
    try:
        long_run = _wait_for_path("sweeps/*/1_*", tmp_path, proc, timeout=300)
        _wait_for_path("metrics.jsonl", long_run, proc, timeout=300)  # it trains
        (task,) = long_run.parent.glob(".submitit/*_1")
        array = task.name.split("_")[0]
        if kill:
            _kill_task(task.name)
        else:
            _run(["scancel", task.name])
        cancelled_at = time.monotonic()
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
        if array is not None:
            time.sleep(3)
            requeued = _run(["squeue", "-h", "-j", array]).stdout.strip()
            _run(["scancel", array])
    assert time.monotonic() - cancelled_at < 300, "the sweep must end soon after the cancellation"
    assert proc.returncode == 1, err[-3000:]
    report = err[err.index("rlzoo-train: sweep"):]
    assert "1 of 2 jobs did not finish" in report, report
    assert re.search(r"#0 total_steps=512 \(Slurm job \d+_0\): finished, 512 env steps", report), report
    assert (long_run.parent / re.search(r"#0 .*; \S+/(0_[^/\s]+)", report).group(1) / "summary.json").exists()
    if kill:
        assert re.search(r"#1 total_steps=100000000 \(Slurm job \d+_1\): (FAILED|CANCELLED\S*( by \d+)?), "
                         r"no result: last log line: .*; log \S+_1_0_log\.out", report), report
    else:
        assert re.search(r"#1 total_steps=100000000 \(Slurm job \d+_1\): CANCELLED by \d+; stopped by SIGTERM "
                         r"at env step [\d,]+ with a checkpoint", report), report
        assert json.loads((long_run / "summary.json").read_text())["stopped_by"] == "SIGTERM"
        assert (long_run / "checkpoints" / "latest.pt").exists()
        assert not requeued, "the cancellation must stand: the run must not requeue its job"
    assert f"hydra.sweep.dir={long_run.parent}" in report


@pytest.mark.unit
def test_sweep_report_names_each_job_by_the_overrides_that_set_it_apart() -> None:
    from hydra_plugins.rlzoo_launcher.slurm_sweep import JobOutcome, distinguishing_overrides, sweep_report

    jobs = [["bonus=none", "seed=1", "total_steps=9"], ["bonus=e3b", "seed=1", "total_steps=9"]]
    assert distinguishing_overrides(jobs) == ["bonus=none", "bonus=e3b"]
    done = {"stopped_by": "done", "env_steps": 1024, "run_dir": "runs/sweeps/s/0_a"}
    outcomes = [JobOutcome(0, "bonus=none", "7_0", "COMPLETED", done, None, "log0"),
                JobOutcome(1, "bonus=e3b", "7_1", "OUT_OF_MEMORY", None, "last log line: Killed", "log1")]
    assert sweep_report("runs/sweeps/s", outcomes).splitlines() == [
        "rlzoo-train: sweep runs/sweeps/s: 1 of 2 jobs did not finish",
        "  #0 bonus=none (Slurm job 7_0): finished, 1,024 env steps; runs/sweeps/s/0_a",
        "  #1 bonus=e3b (Slurm job 7_1): OUT_OF_MEMORY, no result: last log line: Killed; log log1",
        "  to resume the unfinished runs from their checkpoints, rerun the command with "
        "hydra.sweep.dir=runs/sweeps/s (finished runs end at once)",
    ]
