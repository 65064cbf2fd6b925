"""Leaving gracefully when the cluster asks: checkpoint first, then put the job back in the queue."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys


def requeue_slurm_job() -> bool:
    """Requeue this Slurm job (`scontrol requeue`); True if the request was accepted.

    Slurm signals a job before preemption or its time limit; the requeued job runs the same command,
    and `resume=auto` then continues from the checkpoint just written.
    """
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job_id = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")
    if not job_id or shutil.which("scontrol") is None:
        return False
    proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        print(f"rlzoo: could not requeue Slurm job {job_id}: {proc.stderr.strip()}", file=sys.stderr)
    return proc.returncode == 0
