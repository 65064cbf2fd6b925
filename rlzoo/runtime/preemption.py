"""Leaving gracefully when the cluster asks: checkpoint first, then put the job back in the queue."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys


def slurm_job_id() -> str | None:
    """This Slurm job's id as scontrol and sacct take it (`<array id>_<task>` for an array task)."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")


def was_cancelled(job_id: str) -> bool:
    """Whether Slurm accounting records the job as cancelled (`scancel`), as opposed to timed out or
    preempted. False where there is no accounting (sacct fails): such a cluster cannot tell them apart."""
    if shutil.which("sacct") is None:
        return False
    proc = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode == 0 and proc.stdout.strip().startswith("CANCELLED")


def requeue_slurm_job() -> bool:
    """Requeue this Slurm job (`scontrol requeue`); True if the request was accepted.

    Slurm signals a job before preemption or its time limit; the requeued job runs the same command,
    and `resume=auto` then continues from the checkpoint just written. A job stopped by `scancel` gets
    the same SIGTERM but is not requeued: Slurm would accept the request and undo the cancellation.
    """
    job_id = slurm_job_id()
    if not job_id or shutil.which("scontrol") is None:
        return False
    if was_cancelled(job_id):
        print(f"rlzoo: Slurm job {job_id} was cancelled; not requeued", file=sys.stderr)
        return False
    proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        print(f"rlzoo: could not requeue Slurm job {job_id}: {proc.stderr.strip()}", file=sys.stderr)
    return proc.returncode == 0
