"""Peer throughput benchmark: rlzoo against Sample Factory's APPO, same tasks, same network, same machine.

    .venv/bin/python scripts/bench_peers.py --setup         # only create the Sample Factory venv
    .venv/bin/python scripts/bench_peers.py                 # search both grids, then A B A B runs
    .venv/bin/python scripts/bench_peers.py --frameworks sample_factory --tasks MiniHack-Room-5x5-v0
    .venv/bin/python scripts/bench_peers.py --sf-config 2,16,2,1024 --rlzoo-config 2,32,32

Sample Factory 2.1.1 needs gymnasium < 1.0, so it runs from its own virtualenv `.venv-sf` (nle 1.0.0,
minihack 1.0.2, pinned in scripts/peers/requirements-sf.lock), created on first use. Its side is
`scripts/peers/sf_minihack.py`; rlzoo's side is `rlzoo-train` with the crop network (`model=crop`).

For each task the script
1. measures the ceiling: one process stepping one environment with random actions;
2. finds each framework's best setting for this machine with a short trial of every point of a
   small grid, the two frameworks' trials alternating (Sample Factory: workers × envs per worker ×
   batch, then worker_num_splits 1 vs 2 on the winner; rlzoo: actors × envs per actor × batch);
3. runs the two winners alternately (rlzoo, Sample Factory, rlzoo, …) for `--seconds` each, so that
   drifting machine load hits both alike.
Both sides are measured the same way: environment steps consumed by the learner per second, from
the first progress report at least `--warmup-s` seconds into training to the last one (start-up is
excluded), with both policies held at their random start (see FROZEN_LR; `--train-policy` lets
them learn). The last line printed is `ratios: <task> <rlzoo / Sample Factory> …`.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import cpu_description, raw_env_steps_per_second, steps_per_second

from rlzoo.logging.metrics import read_metrics

# minihack 1.0.2 imports pkg_resources, which warns on every import; nothing to act on here.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

REPO = Path(__file__).resolve().parent.parent
SF_VENV = REPO / ".venv-sf"
SF_LOCK = REPO / "scripts" / "peers" / "requirements-sf.lock"
SF_RUNNER = REPO / "scripts" / "peers" / "sf_minihack.py"
SF_STAMP = SF_VENV / ".peers-lock.sha256"  # hash of the lock file the venv was installed from
RLZOO_TRAIN = REPO / ".venv" / "bin" / "rlzoo-train"

# Task -> rlzoo experiment preset; both run with rlzoo's crop network to match the peer's encoder.
TASKS = {"MiniHack-Room-5x5-v0": "minihack_room5x5", "NetHackScore-v0": "nethack_score"}
FRAMEWORKS = ("rlzoo", "sample_factory")
ROLLOUT = 32  # unroll length T on both sides

# The search grids, comparable in size: 12 points each.
SF_WORKERS = (1, 2)
SF_ENVS_PER_WORKER = (16, 32, 64)  # the same envs per process as rlzoo's grid
SF_BATCH = (1024, 2048)  # samples (env steps) per learner batch: rlzoo's batches span 512 … 4096
SF_SPLITS_DEFAULT = 2  # Sample Factory's default double buffering; 1 is tried on the winner
RLZOO_ACTORS = (1, 2)
RLZOO_ENVS_PER_ACTOR = (16, 32, 64)
RLZOO_BATCH_UNROLLS = (1, 2)  # batch = this many unrolls per actor-vector, i.e. k × envs_per_actor columns

# Learning rate of both sides unless --train-policy: env steps/s depends on episode length (a reset
# costs many steps), and a policy that solves MiniHack-Room-5x5 ends episodes after a few steps and
# more than halves the rate. Holding both policies at their random start keeps the comparison about
# the frameworks, not about which one learns the task first; every update is still computed.
FROZEN_LR = 1e-10
START_UP_ALLOWANCE_S = 240  # a run that has not finished by seconds + this is killed


class RunFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class SFConfig:
    workers: int
    envs_per_worker: int
    worker_num_splits: int
    batch_size: int  # samples

    def label(self) -> str:
        return (f"workers={self.workers} envs/worker={self.envs_per_worker} "
                f"splits={self.worker_num_splits} batch={self.batch_size}")


@dataclass(frozen=True)
class RlzooConfig:
    num_actors: int
    envs_per_actor: int
    batch_size: int  # unrolls ([T]-long environment columns), rlzoo's runtime.batch_size

    def label(self) -> str:
        return (f"actors={self.num_actors} envs/actor={self.envs_per_actor} "
                f"batch={self.batch_size}x{ROLLOUT}")


@dataclass
class Outcome:
    config: SFConfig | RlzooConfig
    runs: list[float] = field(default_factory=list)  # steps/s of each final run

    @property
    def mean(self) -> float:
        return float(np.mean(self.runs)) if self.runs else float("nan")


# ----------------------------------------------------------------------------- the peer's venv


def _lock_hash() -> str:
    return hashlib.sha256(SF_LOCK.read_bytes()).hexdigest()


def setup_sf_venv() -> Path:
    """Create or reuse `.venv-sf`; reinstall only when the lock file changed. Returns its python."""
    python = SF_VENV / "bin" / "python"
    if python.exists() and SF_STAMP.exists() and SF_STAMP.read_text().strip() == _lock_hash():
        return python
    if sys.version_info[:2] != (3, 11):
        raise SystemExit(f"creating {SF_VENV.name} needs Python 3.11 (the lock is for it); "
                         f"this is {sys.version.split()[0]}")
    steps: list[tuple[str, list[str]]] = [
        ("pip", [str(python), "-m", "pip", "install", "--quiet", "pip==26.3"]),
        # torch alone first, so pip takes the build that fits this host (the CPU one here).
        ("torch", [str(python), "-m", "pip", "install", "--quiet", "torch==2.13.0"]),
        ("Sample Factory, nle, minihack", [str(python), "-m", "pip", "install", "--quiet", "-r", str(SF_LOCK)]),
    ]
    if not python.exists():
        print(f"setup: creating {SF_VENV.name}", flush=True)
        # sys._base_executable: a venv made from inside another venv must not chain to it.
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(SF_VENV)], check=True)
    for i, (what, cmd) in enumerate(steps, 1):
        print(f"setup [{i}/{len(steps)}]: installing {what}", flush=True)
        subprocess.run(cmd, check=True)
    check = "import sample_factory, nle, minihack, gymnasium; assert gymnasium.__version__ < '1'"
    subprocess.run([str(python), "-W", "ignore", "-c", check], check=True)
    SF_STAMP.write_text(_lock_hash() + "\n")
    print(f"setup: {SF_VENV.name} ready", flush=True)
    return python


# ----------------------------------------------------------------------------- measurements


def steady_rate(reports: list[tuple[float, int]], warmup_s: float) -> tuple[float, float]:
    """(steps/s, window seconds) from (time, env_steps) reports: first report ≥ warmup_s after the
    first one, to the last."""
    if not reports:
        raise RunFailed("no progress reports")
    t0 = reports[0][0]
    start = next((r for r in reports if r[0] >= t0 + warmup_s), None)
    end = reports[-1]
    if start is None or end[0] - start[0] <= 0:
        raise RunFailed(f"{len(reports)} progress reports, none after the {warmup_s} s warm-up: run longer")
    return (end[1] - start[1]) / (end[0] - start[0]), end[0] - start[0]


def run_logged(cmd: list[str], log_path: Path, timeout_s: float, env: dict[str, str] | None = None) -> None:
    """Run `cmd` with its output in `log_path`; kill its whole process group on timeout."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise RunFailed(f"timed out after {timeout_s:.0f} s (log: {log_path})") from None
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise RunFailed(f"exit code {code} (log: {log_path}): " + " | ".join(tail))


# Sample Factory 2.1.1's CPU learner has no autocast: it always computes in float32.
SF_PRECISION = "fp32"


def run_sf(python: Path, task: str, cfg: SFConfig, seconds: float, warmup_s: float, log_path: Path,
           lr: float | None) -> float:
    cmd = [str(python), str(SF_RUNNER), f"--env={task}", f"--workers={cfg.workers}",
           f"--envs-per-worker={cfg.envs_per_worker}", f"--worker-num-splits={cfg.worker_num_splits}",
           f"--batch-size={cfg.batch_size}", f"--rollout={ROLLOUT}", f"--seconds={seconds}",
           f"--warmup-s={warmup_s}", *([f"--learning-rate={lr}"] if lr is not None else [])]
    run_logged(cmd, log_path, seconds + START_UP_ALLOWANCE_S)
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return float(json.loads(line)["steps_per_second"])
    raise RunFailed(f"no result line (log: {log_path})")


def run_rlzoo(task: str, cfg: RlzooConfig, seconds: float, warmup_s: float, log_path: Path,
              lr: float | None, overrides: list[str]) -> tuple[float, str]:
    """Steady-state steps/s, and the precision runtime.precision resolved to (from summary.json)."""
    with tempfile.TemporaryDirectory(prefix="rlzoo_bench_") as run_dir:
        cmd = [str(RLZOO_TRAIN), f"experiment={TASKS[task]}", "model=crop",
               f"runtime.num_actors={cfg.num_actors}", f"runtime.envs_per_actor={cfg.envs_per_actor}",
               f"runtime.batch_size={cfg.batch_size}", f"runtime.unroll_length={ROLLOUT}",
               f"time_limit_s={seconds}", "total_steps=1000000000000", "resume=never",
               "checkpoint.interval_s=1000000", "logger.wandb=false", "logger.progress=false",
               "logger.log_interval_s=1", f"hydra.run.dir={run_dir}",
               *([f"algo.lr={lr}"] if lr is not None else []), *overrides]
        # PYTHONPATH: measure this checkout's rlzoo whatever .venv has installed.
        pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": pythonpath}
        run_logged(cmd, log_path, seconds + START_UP_ALLOWANCE_S, env=env)
        summary_path = Path(run_dir) / "summary.json"
        if not summary_path.exists():
            raise RunFailed(f"no summary.json: the run did not finish (log: {log_path})")
        summary = json.loads(summary_path.read_text())
        # summary.json's steps_per_second averages over the whole run; the per-second metric lines
        # give the same steady-state window as Sample Factory's side.
        rows = read_metrics(Path(run_dir))
        reports = [(float(r["time"]), int(r["env_steps"])) for r in rows]
        if not reports or reports[-1][1] != int(summary["env_steps"]):
            raise RunFailed(f"metrics.jsonl does not end at summary.json's env_steps (log: {log_path})")
        return steady_rate(reports, warmup_s)[0], summary["precision"]


def env_ceiling(task: str, seconds: float) -> tuple[float, str]:
    """Random-action env steps/s of one environment in this process, and what was stepped."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # this checkout's rlzoo, as for the training runs
    try:
        from rlzoo.config import load_config
        from rlzoo.envs import make_vec_env  # noqa: F401  (the ceiling steps rlzoo's env wrapper)
    except ImportError:
        return _gymnasium_ceiling(task, seconds), "gymnasium"
    env_cfg = load_config([f"experiment={TASKS[task]}"]).env
    return raw_env_steps_per_second(env_cfg, seconds), "rlzoo.envs"


def _gymnasium_ceiling(task: str, seconds: float) -> float:
    import gymnasium as gym
    import minihack  # noqa: F401  (registers MiniHack-*)
    import nle  # noqa: F401  (registers NetHack*)

    env = gym.make(task, observation_keys=("glyphs", "blstats"))
    env.reset(seed=0)

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()

    try:
        return steps_per_second(step, seconds)
    finally:
        env.close()


# ----------------------------------------------------------------------------- search and rounds


def sf_grid() -> list[SFConfig]:
    return [SFConfig(w, e, SF_SPLITS_DEFAULT, b)
            for w, e, b in itertools.product(SF_WORKERS, SF_ENVS_PER_WORKER, SF_BATCH)]


def rlzoo_grid() -> list[RlzooConfig]:
    return [RlzooConfig(a, e, k * e)
            for a, e, k in itertools.product(RLZOO_ACTORS, RLZOO_ENVS_PER_ACTOR, RLZOO_BATCH_UNROLLS)]


def parse_sf_config(text: str) -> SFConfig:
    parts = _ints(text, "--sf-config", "WORKERS,ENVS_PER_WORKER,SPLITS,BATCH", 4)
    cfg = SFConfig(*parts)
    if cfg.envs_per_worker % cfg.worker_num_splits or cfg.batch_size % ROLLOUT:
        raise SystemExit(f"--sf-config={text}: envs per worker must be a multiple of splits, "
                         f"and batch a multiple of {ROLLOUT}")
    return cfg


def parse_rlzoo_config(text: str) -> RlzooConfig:
    cfg = RlzooConfig(*_ints(text, "--rlzoo-config", "ACTORS,ENVS_PER_ACTOR,BATCH_UNROLLS", 3))
    if cfg.batch_size % cfg.envs_per_actor:
        raise SystemExit(f"--rlzoo-config={text}: the batch (in unrolls) must be a multiple of envs per actor")
    return cfg


def _ints(text: str, key: str, form: str, n: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n or min(values) < 1:
        raise SystemExit(f"{key}={text!r} must be {n} positive integers: {form}")
    return values


class Bench:
    def __init__(self, args: argparse.Namespace, sf_python: Path | None, log_dir: Path):
        self.args = args
        self.sf_python = sf_python
        self.log_dir = log_dir
        self.lr = None if args.train_policy else FROZEN_LR
        self.rlzoo_overrides = args.rlzoo_overrides
        self.count = 0
        self.precisions: dict[str, set[str]] = {}

    def run(self, framework: str, task: str, cfg: SFConfig | RlzooConfig, seconds: float, warmup_s: float,
            stage: str) -> float | None:
        """One run; prints a progress line and returns steps/s, or None if the run failed."""
        self.count += 1
        log_path = self.log_dir / f"{self.count:03d}-{framework}-{task}-{stage}.log"
        load = os.getloadavg()[0]
        print(f"  [{self.count}] {stage:5s} {framework:14s} {cfg.label():48s} ", end="", flush=True)
        try:
            if framework == "sample_factory":
                sps, precision = run_sf(self.sf_python, task, cfg, seconds, warmup_s, log_path, self.lr), SF_PRECISION
            else:
                sps, precision = run_rlzoo(task, cfg, seconds, warmup_s, log_path, self.lr, self.rlzoo_overrides)
        except RunFailed as err:
            print(f"failed: {err}", flush=True)
            return None
        self.precisions.setdefault(framework, set()).add(precision)
        print(f"{sps:8.1f} steps/s  {precision}  (load before {load:.1f})", flush=True)
        return sps

    def search(self, task: str, frameworks: list[str]) -> dict[str, SFConfig | RlzooConfig | None]:
        """Best setting per framework. Trials of the frameworks alternate, so that drifting machine
        load favours neither; Sample Factory then tries worker_num_splits=1 on its winner."""
        a = self.args
        grids: dict[str, list[Any]] = {fw: (sf_grid() if fw == "sample_factory" else rlzoo_grid()) for fw in frameworks}
        scores: dict[str, dict[Any, float | None]] = {fw: {} for fw in frameworks}
        for round_ in itertools.zip_longest(*grids.values()):
            for fw, cfg in zip(grids, round_):
                if cfg is not None:
                    scores[fw][cfg] = self.run(fw, task, cfg, a.trial_seconds, a.trial_warmup_s, "trial")
        best = _best(scores.get("sample_factory", {}))
        if best is not None:
            single = SFConfig(best.workers, best.envs_per_worker, 1, best.batch_size)
            scores["sample_factory"][single] = self.run("sample_factory", task, single, a.trial_seconds,
                                                        a.trial_warmup_s, "trial")
        return {fw: _best(scores[fw]) for fw in frameworks}


def _best(scores: dict[Any, float | None]) -> Any:
    ok = {cfg: s for cfg, s in scores.items() if s is not None}
    return max(ok, key=ok.get) if ok else None


def print_table(outcomes: dict[str, dict[str, Outcome]], ceilings: dict[str, tuple[float, str]]) -> None:
    header = (f"{'task':22s} {'framework':14s} {'setting':48s} {'runs (steps/s)':24s} {'mean':>8s} "
              f"{'ratio':>6s} {'env ceiling':>12s}")
    print("\n" + header)
    print("-" * len(header))
    for task, by_fw in outcomes.items():
        ratio = _ratio(by_fw)
        for fw, out in by_fw.items():
            runs = " ".join(f"{r:.0f}" for r in out.runs) or "-"
            ratio_text = _format_ratio(ratio) if fw == "rlzoo" else ""
            print(f"{task:22s} {fw:14s} {out.config.label():48s} {runs:24s} {out.mean:8.1f} {ratio_text:>6s} "
                  f"{ceilings[task][0]:12.0f}")
    sources = {src for _, src in ceilings.values()}
    print(f"env ceiling: one environment, random actions, one process ({', '.join(sorted(sources))}); "
          f"ratio = rlzoo / Sample Factory mean steps/s")


def _ratio(by_fw: dict[str, Outcome]) -> float:
    if "rlzoo" in by_fw and "sample_factory" in by_fw and by_fw["sample_factory"].mean > 0:
        return by_fw["rlzoo"].mean / by_fw["sample_factory"].mean
    return float("nan")


def _format_ratio(ratio: float) -> str:
    return f"{ratio:.2f}" if ratio == ratio else "n/a"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"only create (or check) {SF_VENV.name} and exit")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    p.add_argument("--seconds", type=float, default=60.0, help="training seconds of each final run")
    p.add_argument("--warmup-s", type=float, default=10.0, help="seconds of each final run left out of the rate")
    p.add_argument("--rounds", type=int, default=2, help="A B pairs of final runs per task")
    p.add_argument("--trial-seconds", type=float, default=25.0, help="training seconds of each grid trial")
    p.add_argument("--trial-warmup-s", type=float, default=8.0)
    p.add_argument("--ceiling-seconds", type=float, default=10.0, help="seconds of random-action stepping per task")
    p.add_argument("--sf-config", type=parse_sf_config, metavar="W,E,S,B",
                   help="skip Sample Factory's search: workers, envs per worker, worker_num_splits, batch (samples)")
    p.add_argument("--rlzoo-config", type=parse_rlzoo_config, metavar="A,E,B",
                   help="skip rlzoo's search: actors, envs per actor, batch (unrolls)")
    p.add_argument("--rlzoo-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra Hydra overrides for rlzoo's runs, e.g. bonus=e3b")
    p.add_argument("--train-policy", action="store_true",
                   help=f"train with each framework's own learning rate (default: {FROZEN_LR:g} on both sides)")
    p.add_argument("--log-dir", type=Path, default=None,
                   help="where each run's log goes (default: bench_results/peers-<time>)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    for key in ("seconds", "trial_seconds", "ceiling_seconds"):
        if getattr(args, key) <= 0:
            p.error(f"--{key.replace('_', '-')} must be > 0")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.warmup_s >= args.seconds or args.trial_warmup_s >= args.trial_seconds:
        p.error("each warm-up must be shorter than its run "
                "(--warmup-s < --seconds, --trial-warmup-s < --trial-seconds)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sf_python = setup_sf_venv() if args.setup or "sample_factory" in args.frameworks else None
    if args.setup:
        return 0
    if "rlzoo" in args.frameworks and not RLZOO_TRAIN.exists():
        raise SystemExit(f"{RLZOO_TRAIN.relative_to(REPO)} not found: run scripts/bootstrap.sh first")
    log_dir = args.log_dir or REPO / "bench_results" / time.strftime("peers-%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, sf_python, log_dir)
    fixed = {"sample_factory": args.sf_config, "rlzoo": args.rlzoo_config}
    order = [fw for fw in FRAMEWORKS if fw in args.frameworks]  # rlzoo first: A B A B
    policy = "trained" if args.train_policy else f"held at its start (learning rate {FROZEN_LR:g})"
    print(f"peer benchmark: {', '.join(args.tasks)}; {', '.join(order)}; {os.cpu_count()} CPUs; "
          f"policy {policy}; logs in {log_dir}")
    cpu = cpu_description()
    print(f"cpu: {cpu}")

    ceilings: dict[str, tuple[float, str]] = {}
    outcomes: dict[str, dict[str, Outcome]] = {}
    for task in args.tasks:
        ceilings[task] = env_ceiling(task, args.ceiling_seconds)
        rate, source = ceilings[task]
        print(f"\n{task}: env ceiling {rate:.0f} steps/s ({source}, random actions)", flush=True)
        to_search = [fw for fw in order if fixed[fw] is None]
        found = bench.search(task, to_search) if to_search else {}
        best = {fw: fixed[fw] or found[fw] for fw in order}
        for fw, cfg in best.items():
            print(f"  best {fw}: {cfg.label() if cfg else 'none (every trial failed)'}", flush=True)
        outcomes[task] = {fw: Outcome(cfg) for fw, cfg in best.items() if cfg is not None}
        for round_ in range(1, args.rounds + 1):
            for fw, out in outcomes[task].items():
                sps = bench.run(fw, task, out.config, args.seconds, args.warmup_s, f"run{round_}")
                if sps is not None:
                    out.runs.append(sps)

    print_table(outcomes, ceilings)
    precisions = {fw: "/".join(sorted(bench.precisions.get(fw, set()))) or "-" for fw in order}
    print("precision: " + ", ".join(f"{fw} {p}" for fw, p in precisions.items()))
    if args.json:
        args.json.write_text(json.dumps({
            "cpus": os.cpu_count(),
            "cpu": cpu,
            "precision": precisions,
            "learning_rate": None if args.train_policy else FROZEN_LR,
            "tasks": {task: {"env_ceiling": ceilings[task][0], "ceiling_source": ceilings[task][1],
                             **{fw: {"setting": out.config.label(), "runs": out.runs, "mean": out.mean}
                                for fw, out in by_fw.items()}}
                      for task, by_fw in outcomes.items()},
        }, indent=2) + "\n")
    ratios = " ".join(f"{task} {_format_ratio(_ratio(by_fw))}" for task, by_fw in outcomes.items())
    print(f"ratios: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
