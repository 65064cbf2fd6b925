"""`launcher=slurm`: a sweep becomes one Slurm job array; the sweep waits for every job and ends with a
line per job.

hydra-submitit-launcher's SlurmLauncher collects results in job order and raises at the first job that
did not finish: the jobs after it go unreported although they may still be running. This launcher
submits the same way (through submitit) but waits until every job has ended, then reports each one:
finished, stopped by a signal with its checkpoint kept, or ended without a result (with its Slurm state
and the last line of its log). The sweep exits with status 1 if any job did not finish.

submitit learns that a job ended from its result file or from `sacct`. A job killed outright (SIGKILL,
out of memory, node failure) writes no result, so only Slurm accounting tells that it has ended.
"""
# No `from __future__ import annotations`: Hydra runs plugin modules before it registers them in
# sys.modules, and dataclasses cannot resolve string annotations of such a module.
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

log = logging.getLogger(__name__)

POLL_S = 2.0  # between looks at the jobs; submitit itself rate-limits its sacct calls


@dataclass(frozen=True)
class JobOutcome:
    number: int                      # hydra.job.num
    overrides: str                   # the overrides that tell this job from the sweep's others
    slurm_id: str                    # <array id>_<task id>
    slurm_state: str                 # sacct's State, e.g. COMPLETED, "CANCELLED by 0", OUT_OF_MEMORY
    summary: dict[str, Any] | None   # what the trainer returned, if it returned
    error: str | None                # why there is no summary
    log_path: str

    @property
    def finished(self) -> bool:
        return self.summary is not None and self.summary.get("stopped_by") == "done"

    def describe(self) -> str:
        head = " ".join(filter(None, [f"#{self.number}", self.overrides, f"(Slurm job {self.slurm_id})"]))
        if self.finished:
            return f"{head}: finished, {self.summary['env_steps']:,} env steps; {self.summary['run_dir']}"
        if self.summary is not None:
            return (f"{head}: {self.slurm_state}; stopped by {self.summary['stopped_by']} at env step "
                    f"{self.summary['env_steps']:,} with a checkpoint; {self.summary['run_dir']}")
        return f"{head}: {self.slurm_state}, no result: {self.error}; log {self.log_path}"


def sweep_report(sweep_dir: str, outcomes: Sequence[JobOutcome]) -> str:
    """The lines printed when jobs of a sweep did not finish."""
    unfinished = [o for o in outcomes if not o.finished]
    return "\n".join([
        f"rlzoo-train: sweep {sweep_dir}: {len(unfinished)} of {len(outcomes)} jobs did not finish",
        *(f"  {o.describe()}" for o in outcomes),
        f"  to resume the unfinished runs from their checkpoints, rerun the command with "
        f"hydra.sweep.dir={sweep_dir} (finished runs end at once)",
    ])


def distinguishing_overrides(job_overrides: Sequence[Sequence[str]]) -> list[str]:
    """Per job, its overrides that not every job of the sweep shares, space-separated."""
    shared = set.intersection(*(set(overrides) for overrides in job_overrides))
    return [" ".join(o for o in overrides if o not in shared) for overrides in job_overrides]


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "empty log"


def job_outcome(job: Any, number: int, overrides: str) -> tuple[JobOutcome, JobReturn | None]:
    """What became of an ended submitit job, and its Hydra JobReturn if it wrote one."""
    from submitit.core.utils import UncompletedJobError

    state = job.get_info(mode="force").get("State", "UNKNOWN (no Slurm accounting)")
    summary, error, job_return = None, None, None
    try:
        job_return = job.results()[0]
    except UncompletedJobError:  # no result file: killed, or the process exited without one
        error = f"last log line: {_last_line(job.stdout())}"
    else:
        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, dict):
            summary = job_return.return_value
        elif job_return.status != JobStatus.COMPLETED:
            try:
                job_return.return_value  # raises the job's exception
            except Exception as err:  # noqa: BLE001 (any error of the task is reported, not raised)
                error = f"{type(err).__name__}: {err}"
    outcome = JobOutcome(number, overrides, job.job_id, state, summary, error, str(job.paths.stdout))
    return outcome, job_return


class SlurmSweepLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit  # here, not at module level: Hydra imports every plugin at start-up

        assert self.config is not None
        params = dict(self.params)
        executor = submitit.AutoExecutor(folder=params.pop("submitit_folder"), cluster="slurm",
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
        shared = set(OmegaConf.structured(BaseQueueConf).keys())  # options every submitit executor takes
        executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})

        sweep_dir = str(self.config.hydra.sweep.dir)
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        numbers = list(range(initial_job_idx, initial_job_idx + len(job_overrides)))
        typed = distinguishing_overrides([filter_overrides(overrides) for overrides in job_overrides])
        state = Singleton.get_state()
        # Each job calls this launcher (SlurmLauncher.__call__), which runs the task in its run directory.
        jobs = executor.map_array(self, [list(o) for o in job_overrides], ["hydra.sweep.dir"] * len(numbers),
                                  numbers, [f"job_id_for_{n}" for n in numbers], [state] * len(numbers))
        log.info(f"Sweep {sweep_dir}: {len(jobs)} jobs in Slurm array {jobs[0].job_id.split('_')[0]}")
        for number, overrides in zip(numbers, job_overrides):
            log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")

        pending = dict(zip(numbers, jobs))
        while pending:
            for number, job in list(pending.items()):
                if job.done():
                    del pending[number]
                    log.info(f"#{number} (Slurm job {job.job_id}) ended; {len(jobs) - len(pending)} of "
                             f"{len(jobs)} jobs ended")
            if pending:
                time.sleep(POLL_S)

        results = [job_outcome(job, n, o) for job, n, o in zip(jobs, numbers, typed)]
        outcomes = [outcome for outcome, _ in results]
        if not all(outcome.finished for outcome in outcomes):
            # The report is complete: end here rather than raise into Hydra, which would print the
            # first failure as a stack trace and leave the others out.
            print(sweep_report(sweep_dir, outcomes), file=sys.stderr)
            raise SystemExit(1)
        for outcome in outcomes:
            log.info(outcome.describe())
        return [job_return for _, job_return in results]
