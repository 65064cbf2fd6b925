"""Recording NLE's ttyrecs of every N-th episode, in the directory layout nle.dataset indexes.

Each environment records into its own new directory under `env.ttyrec_dir`, because NLE names its
files after the process id alone (`nle.<pid>.<episode>.ttyrec3.bz2`, plus `nle.<pid>.xlogfile`):
two environments of one process sharing a directory would write the same files.

NLE 1.3.0 with `save_ttyrec_every=N` does not skip the other episodes: it appends each of them to
the last recorded file as a further bz2 stream, which nle.dataset never reads. So NLE records every
episode into its own file, and the recorder deletes each unselected file once NLE has closed it (at
the next reset). Those games keep their xlogfile lines; nle.dataset indexes only lines whose ttyrec
exists.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from nle.nethack import TTYREC_VERSION


class TtyrecRecorder:
    """Keeps the ttyrecs of episodes 0, N, 2N, ... of one environment (episodes count from 0)."""

    def __init__(self, root: str | os.PathLike[str], every: int, env_id: int) -> None:
        os.makedirs(root, exist_ok=True)
        # A fresh directory per environment instance: a rebuilt environment restarts NLE's episode
        # numbers, and NLE appends to an existing file of the same name.
        self.savedir = Path(tempfile.mkdtemp(prefix=f"env{env_id:05d}_", dir=root))
        self.every = every
        self.episode = -1

    @classmethod
    def for_env(cls, cfg: dict[str, Any], env_id: int) -> TtyrecRecorder | None:
        """The recorder a validated env config asks for, or None when it records nothing."""
        if not cfg["save_ttyrec_every"]:
            return None
        return cls(cfg["ttyrec_dir"], cfg["save_ttyrec_every"], env_id)

    def nle_kwargs(self) -> dict[str, Any]:
        """Constructor arguments that make NLE record every episode into `savedir`."""
        return {"savedir": str(self.savedir), "save_ttyrec_every": 1}

    def episode_started(self) -> None:
        """Call after every reset of the NLE env: NLE has just closed the previous episode's file."""
        self._drop_if_unselected(self.episode)
        self.episode += 1

    def close(self) -> None:
        """Call after closing the NLE env, which closes the file of the episode in progress."""
        self._drop_if_unselected(self.episode)
        self.episode = -1

    def path(self, episode: int) -> Path:
        """The file NLE writes episode `episode` to (its naming in nle/env/base.py)."""
        return self.savedir / f"nle.{os.getpid()}.{episode}.ttyrec{TTYREC_VERSION}.bz2"

    def xlogfile(self) -> Path:
        """NetHack's log of finished games, which NLE writes beside the ttyrecs when recording."""
        return self.savedir / f"nle.{os.getpid()}.xlogfile"

    def _drop_if_unselected(self, episode: int) -> None:
        if episode >= 0 and episode % self.every:
            self.path(episode).unlink(missing_ok=True)
