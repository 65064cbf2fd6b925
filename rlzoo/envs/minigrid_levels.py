"""A cheaper level change for MiniHack's MiniGrid-based tasks (MultiRoom, LavaCrossing, ...).

These tasks draw a new MiniGrid layout on every reset and hand NetHack its level description.
MiniHack 1.0.2 then rebuilds NetHack's data archive (nhdat) with a shell script: bash, cp, lev_comp,
rm, dlb and mv, six processes per reset. NetHack reads a level file from its own data directory when
the archive does not hold it, so here the archive is built once per environment without the level,
and a reset only compiles the level beside it: one lev_comp. The level NetHack plays is the same.
"""
from __future__ import annotations

import os
import shutil
import subprocess

LEVEL_NAME = "mylevel"  # the level MiniHack's dungeon description plays and its MiniGrid tasks define


class CompiledLevelBesideArchive:
    """Mixin placed before a MiniGridHack task class; replaces MiniHack's `update(des_file)`."""

    _archive_ready = False

    def update(self, des_file: str) -> None:
        from minihack.base import HACKDIR, LIB_DIR

        vardir = self.nethack._vardir
        if not self._archive_ready:
            lib = os.path.join(vardir, "lib")
            shutil.copytree(LIB_DIR, lib, dirs_exist_ok=True)
            _run([os.path.join(HACKDIR, "dlb"), "cf", "nhdat", *sorted(os.listdir(lib))], cwd=lib)
            os.replace(os.path.join(lib, "nhdat"), os.path.join(vardir, "nhdat"))  # replaces NLE's symlink
            self._archive_ready = True
        with open(os.path.join(vardir, f"{LEVEL_NAME}.des"), "w") as f:
            f.write(des_file)
        level = os.path.join(vardir, f"{LEVEL_NAME}.lev")
        if os.path.exists(level):
            os.remove(level)  # so a description that defines another level cannot leave a stale one
        _run([os.path.join(HACKDIR, "lev_comp"), f"{LEVEL_NAME}.des"], cwd=vardir)
        if not os.path.exists(level):
            raise RuntimeError(f"lev_comp did not write {LEVEL_NAME}.lev: the task's level description "
                               f"must define the level {LEVEL_NAME!r}")


def _run(cmd: list[str], cwd: str) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{os.path.basename(cmd[0])} failed (exit {result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()}")
