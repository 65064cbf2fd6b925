"""What a NetHack game reached and how it ended: the statistics every NetHack/MiniHack episode reports.

In-game numbers (turns, experience level, deepest level, gold, score) come from the bottom-line
statistics (`blstats`) of the last step before the game ended, since NLE zeroes them once the game
is over. How the episode ended is one of END_CAUSES, from NLE's end status and NetHack's `how_done`;
the death reason as NetHack words it ("killed by a jackal") is the `death` field of the line NetHack
appends to its xlogfile when a game ends.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from nle import nethack

# How an episode ended. Each episode reports `end/<cause>` as 1.0 for its cause and 0.0 for the others,
# so the mean over any set of episodes is the fraction that ended each way.
END_CAUSES = ("killed", "starved", "other_death", "quit", "escaped", "ascended", "step_limit", "task_success")
_HOW_DONE_CAUSES = {"DIED": "killed", "STARVING": "starved", "QUIT": "quit", "ESCAPED": "escaped",
                    "ASCENDED": "ascended"}  # every other way the game ends (choking, drowning, ...): other_death


def end_cause(end_status: str, how_done: str | None) -> str:
    """The END_CAUSES entry of an episode that ended with NLE's StepStatus `end_status` (its name)
    and, when the game itself ended, NetHack's `how_done` (a game_end_types name)."""
    if end_status == "ABORTED":  # NLE's step limit (max_episode_steps)
        return "step_limit"
    if end_status == "TASK_SUCCESSFUL":
        return "task_success"
    return _HOW_DONE_CAUSES.get(how_done or "", "other_death")


def end_one_hot(cause: str) -> dict[str, float]:
    """`end/<cause>` for every cause: 1.0 for `cause`, 0.0 for the rest."""
    if cause not in END_CAUSES:
        raise ValueError(f"unknown end cause {cause!r}; expected one of {END_CAUSES}")
    return {f"end/{c}": float(c == cause) for c in END_CAUSES}


def parse_xlogfile_line(line: str) -> dict[str, str]:
    """One xlogfile line (tab-separated `key=value` fields) as a dict."""
    fields = {}
    for field in line.rstrip("\n").split("\t"):
        key, sep, value = field.partition("=")
        if sep:
            fields[key] = value
    return fields


def last_death_reason(xlogfile: Path, tail_bytes: int = 4096) -> str:
    """The `death` field of the last game in `xlogfile` ("" when there is none); reads only the tail,
    since the file grows by one line per finished game."""
    try:
        with open(xlogfile, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - tail_bytes))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return parse_xlogfile_line(lines[-1]).get("death", "") if lines else ""


class GameStats:
    """Keeps the last in-game bottom-line statistics of an episode and the deepest level it reached."""

    def __init__(self) -> None:
        self.last = np.zeros(nethack.NLE_BLSTATS_SIZE, dtype=np.int64)
        self.max_depth = 0

    def reset(self) -> None:
        self.last[:] = 0
        self.max_depth = 0

    def observe(self, blstats: np.ndarray) -> None:
        depth = blstats[nethack.NLE_BL_DEPTH]
        if depth > 0:  # all zeros once the game is over: keep the values from before
            self.last[:] = blstats
            self.max_depth = max(self.max_depth, int(depth))

    def summary(self) -> dict[str, float]:
        b = self.last
        return {
            "score": float(b[nethack.NLE_BL_SCORE]),
            "depth": float(b[nethack.NLE_BL_DEPTH]),  # where the episode ended
            "max_depth": float(self.max_depth),      # the deepest level reached
            "turns": float(b[nethack.NLE_BL_TIME]),  # in-game turns (not env steps)
            "experience_level": float(b[nethack.NLE_BL_XP]),
            "gold": float(b[nethack.NLE_BL_GOLD]),
        }
