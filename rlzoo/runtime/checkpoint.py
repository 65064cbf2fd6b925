"""Atomic checkpoints: written to a temporary file, flushed, then renamed over the old one.

A crash mid-write leaves the previous checkpoint intact, and loading never unpickles code
(`torch.load(weights_only=True)`). A full disk (or quota) stops the save with a CheckpointError that
says how much space is needed; the temporary file is removed and the previous checkpoint stays.
A run directory's `checkpoints/` holds

- `latest.pt`: the whole training state, what resume reads;
- `step_<env steps>.pt`: the history, each a hard link to what was latest.pt then (no second copy on
  disk), thinned to the last `checkpoint.keep_last` plus one per `checkpoint.keep_every_steps`;
- `best.pt`: the evaluated policy weights with the best `checkpoint.best_metric` so far (model only).
"""
from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
BEST = "best.pt"
_HISTORY = re.compile(r"step_(\d+)\.pt")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used or written; the message says which file and why."""


def latest_path(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR / LATEST


def best_path(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR / BEST


def history_path(run_dir: Path, env_steps: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"step_{env_steps:012d}.pt"


def checkpoint_file(path: Path) -> Path:
    """The checkpoint a path names: a run directory's latest.pt, or the file itself."""
    return latest_path(path) if Path(path).is_dir() else Path(path)


def free_bytes(directory: Path) -> int:
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def _out_of_space(err: BaseException | None) -> bool:
    """Whether `err`, or an error it was raised from, is ENOSPC or EDQUOT (torch.save reports a failed
    write as a RuntimeError whose context is the OSError)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in _NO_SPACE:
            return True
        err = err.__cause__ or err.__context__
    return False


def _no_space_error(path: Path, needed: int, free: int, at_least: bool) -> CheckpointError:
    mb = 2**20
    need = f"needs {'more than ' if at_least else '~'}{needed / mb:.1f} MB, {free / mb:.1f} MB free"
    kept = (f"the previous checkpoint {path} is intact" if path.exists() else "no earlier checkpoint exists")
    return CheckpointError(f"no space left on {path.parent} writing checkpoint ({need}); {kept}; free some "
                           "space (or raise the quota) and rerun the same command to resume")


def _remove_temporaries(path: Path) -> None:
    """Temporary files of saves that a kill interrupted: only one process writes a run's checkpoints."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(path)
    # The new checkpoint sits beside the old one until the rename, and is about as large: check first
    # rather than fill the disk (which would also starve the metrics log and other runs).
    previous = path.stat().st_size if path.exists() else 0
    if previous > free_bytes(path.parent):
        raise _no_space_error(path, previous, free_bytes(path.parent), at_least=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _sync_dir(path.parent)
    except BaseException as err:
        written = Path(tmp).stat().st_size if Path(tmp).exists() else 0
        Path(tmp).unlink(missing_ok=True)
        if _out_of_space(err):
            raise _no_space_error(path, max(previous, written), free_bytes(path.parent),
                                  at_least=written >= previous) from None
        raise


def _sync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make a rename or unlink itself durable
    finally:
        os.close(dir_fd)


def history_to_keep(steps: Iterable[int], keep_last: int, keep_every_steps: int) -> set[int]:
    """Env steps of the history checkpoints to keep: the last `keep_last`, and the first one at or after
    each multiple of `keep_every_steps` (0: none of those)."""
    ordered = sorted(steps)
    keep = set(ordered[-keep_last:]) if keep_last else set()
    if keep_every_steps:
        first_of_period: dict[int, int] = {}
        for step in ordered:
            first_of_period.setdefault(step // keep_every_steps, step)
        keep.update(first_of_period.values())
    return keep


def passes_multiple(before: int, after: int, every: int) -> bool:
    """Whether going from env step `before` to `after` passes a multiple of `every` (0: never)."""
    return every > 0 and after // every > before // every


def add_to_history(run_dir: Path, env_steps: int, keep_last: int, keep_every_steps: int) -> None:
    """File the current latest.pt as step_<env_steps>.pt, then delete history the settings do not keep."""
    if not keep_last and not keep_every_steps:
        return
    target = history_path(run_dir, env_steps)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(latest_path(run_dir), tmp)
    except OSError:  # a file system without hard links: a copy
        shutil.copyfile(latest_path(run_dir), tmp)
    os.replace(tmp, target)
    history = {int(m.group(1)): p for p in target.parent.iterdir() if (m := _HISTORY.fullmatch(p.name))}
    keep = history_to_keep(history, keep_last, keep_every_steps)
    for step, path in history.items():
        if step not in keep:
            path.unlink(missing_ok=True)
    _sync_dir(target.parent)


class BestCheckpoint:
    """best.pt: the evaluated policy with the best value of `metric` so far (kept across resumes)."""

    def __init__(self, run_dir: Path, metric: str, mode: str) -> None:
        self.path = best_path(run_dir)
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.value: float | None = None
        if self.path.exists():
            self.value = load_checkpoint(self.path).get("eval", {}).get(metric)

    def offer(self, value: float, state: Callable[[], dict[str, Any]]) -> bool:
        """Write `state()` to best.pt if `value` beats the best so far; whether it did."""
        if value != value or (self.value is not None and self.sign * value <= self.sign * self.value):
            return False  # NaN, or no better
        save_checkpoint(self.path, state())
        self.value = value
        return True


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not Path(path).exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip archive
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers, "
            f"which could run code when loaded ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated): {err}") from None
