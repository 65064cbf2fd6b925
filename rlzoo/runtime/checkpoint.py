"""Atomic checkpoints: written to a temporary file, flushed, then renamed over the old one.

A crash mid-write leaves the previous checkpoint intact, and loading never unpickles code
(`torch.load(weights_only=True)`). A full disk (or quota) stops the save with a CheckpointError that
says how much space is needed; the temporary file is removed and the previous checkpoint stays.
"""
from __future__ import annotations

import errno
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used or written; the message says which file and why."""


def latest_path(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR / LATEST


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
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except BaseException as err:
        written = Path(tmp).stat().st_size if Path(tmp).exists() else 0
        Path(tmp).unlink(missing_ok=True)
        if _out_of_space(err):
            raise _no_space_error(path, max(previous, written), free_bytes(path.parent),
                                  at_least=written >= previous) from None
        raise


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
