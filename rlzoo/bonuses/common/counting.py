"""State keys and visit counts shared by the count-based parts of the bonuses.

Observations are reduced to a 64-bit key (BLAKE2b of the chosen fields' bytes — stable across
processes, unlike Python's `hash`) and counted per episode (`EpisodicCounts`, one table per
environment) or over the whole run (`GlobalCounts`, one table in the learner for all actors).
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from torch import nn

from rlzoo.bonuses.common.base import BatchContext

STATE_KEYS = ("full", "full_with_time", "glyphs", "position", "message")
PROCGEN_STATE_KEYS = ("full", "full_with_time")  # both the frame: pixels have no turn counter
# MiniGrid: full (and full_with_time: no turn counter) = the whole grid, view = the 7x7x3 the agent
# sees, position = the agent's (x, y).
MINIGRID_STATE_KEYS = ("full", "full_with_time", "view", "position")
# blstats entries: x, y (agent position) and dungeon depth, time (turn counter).
_BL_X, _BL_Y, _BL_DEPTH, _BL_TIME = 0, 1, 12, 20


def check_state_key(key: str, spec: Any) -> str:
    """The state key to count with: `key` itself, or for `auto` the agent's position on NetHack/MiniHack
    (the count runs of Henaff, Jiang & Raileanu 2023), the frame on Procgen and the whole grid on
    MiniGrid (RIDE's and NovelD's episodic counts). Fails early when the key does not exist for the
    environment `spec` describes."""
    family = spec.family
    if key == "auto":
        key = {"procgen": "full", "minigrid": "full"}.get(family, "position")
    allowed = {"procgen": PROCGEN_STATE_KEYS, "minigrid": MINIGRID_STATE_KEYS}.get(family, STATE_KEYS)
    if key not in allowed:
        raise ValueError(f"bonus.state_key={key!r} is not available for {family} observations; allowed: "
                         f"{', '.join(['auto', *allowed])}")
    if family == "minigrid" and key.startswith("full") and "full_grid" not in spec.obs_space:
        raise ValueError(f"bonus.state_key={key!r} counts MiniGrid's whole grid, which the env delivers only with "
                         "env.full_grid=true; set it, or count bonus.state_key=view or position")
    return key


def _key_fields(obs: dict[str, torch.Tensor], key: str) -> list[torch.Tensor]:
    if "rgb" in obs:
        return [obs["rgb"]]
    if "image" in obs:  # MiniGrid
        if key == "view":
            return [obs["image"]]
        if key == "position":
            return [obs["agent"][..., :2]]
        return [obs["full_grid"]]
    if key == "glyphs":
        return [obs["glyphs"]]
    if key == "message":
        return [obs["message"]]
    blstats = obs["blstats"]
    if key == "position":
        return [blstats[..., [_BL_X, _BL_Y, _BL_DEPTH]]]
    if key == "full_with_time":
        # The E3B reference's whole-observation key: with the turn counter in it nearly every step is
        # a new state, so an episodic count is 1 almost always (what its NovelD and RIDE runs saw).
        return [obs["glyphs"], blstats, obs["message"]]
    # The turn counter is left out of the full key: with it every step would be a new state and
    # the count bonus would be constant.
    keep = [i for i in range(blstats.shape[-1]) if i != _BL_TIME]
    return [obs["glyphs"], blstats[..., keep], obs["message"]]


def state_hashes(obs: dict[str, torch.Tensor], key: str) -> np.ndarray:
    """64-bit keys [T+1, B] (uint64) of observations [T+1, B, ...] under state key `key`."""
    fields = _key_fields(obs, key)
    lead = fields[0].shape[:2]
    rows = np.concatenate(
        [np.ascontiguousarray(f.detach().cpu().numpy()).reshape(lead[0] * lead[1], -1).view(np.uint8) for f in fields],
        axis=1,
    )
    digests = b"".join(hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in rows)
    return np.frombuffer(digests, dtype=np.uint64).reshape(lead)


class EpisodicCounts(nn.Module):
    """Visit counts within the current episode of each environment; part of its owner's checkpoint."""

    def __init__(self, num_envs: int) -> None:
        super().__init__()
        self.tables: list[dict[int, int]] = [{} for _ in range(num_envs)]

    def visit(self, keys: np.ndarray, ctx: BatchContext) -> np.ndarray:
        """Register obs[1..T] (and obs[0] where the env is fresh); return N_ep(obs[t+1]) [T, B].

        On dones[t] the table is cleared before obs[t+1], the new episode's first state, is counted.
        """
        dones = ctx.dones.cpu().numpy()
        ids = ctx.env_ids.cpu().numpy().tolist()
        steps, cols = dones.shape
        out = np.zeros((steps, cols), dtype=np.int64)
        # Columns in batch order: repeated envs appear in unroll order (checked by Bonus.make_context).
        for col in range(cols):
            column = keys[:, col].tolist()
            done = dones[:, col].tolist()
            table = self.tables[ids[col]]
            if ctx.fresh[col]:
                table = {column[0]: 1}
            for t in range(steps):
                if done[t]:
                    table = {}
                n = table.get(column[t + 1], 0) + 1
                table[column[t + 1]] = n
                out[t, col] = n
            self.tables[ids[col]] = table
        return out

    def get_extra_state(self) -> list[dict[int, int]]:
        return self.tables

    def set_extra_state(self, tables: list[dict[int, int]]) -> None:
        if len(tables) != len(self.tables):
            raise ValueError(f"episodic counts for {len(tables)} envs cannot be loaded into {len(self.tables)}")
        self.tables = [dict(t) for t in tables]


class GlobalCounts(nn.Module):
    """Visit counts over the whole run, shared by all actors; part of its owner's checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.table: dict[int, int] = {}

    def visit(self, keys: np.ndarray) -> np.ndarray:
        """Register `keys` in order (flattened row-major); return each visit's count including itself."""
        flat = keys.reshape(-1)
        if flat.size == 0:
            return np.zeros(keys.shape, dtype=np.int64)
        uniq, inverse, per_key = np.unique(flat, return_inverse=True, return_counts=True)
        # Rank of each visit among the batch's visits of the same key, in order of appearance.
        order = np.argsort(inverse, kind="stable")
        group_start = np.cumsum(per_key) - per_key
        rank = np.empty(flat.size, dtype=np.int64)
        rank[order] = np.arange(flat.size) - group_start[inverse[order]]
        uniq_list = uniq.tolist()
        before = np.fromiter((self.table.get(k, 0) for k in uniq_list), dtype=np.int64, count=len(uniq_list))
        for k, total in zip(uniq_list, (before + per_key).tolist()):
            self.table[k] = total
        return (before[inverse] + rank + 1).reshape(keys.shape)

    def __len__(self) -> int:
        return len(self.table)

    def get_extra_state(self) -> dict[int, int]:
        return self.table

    def set_extra_state(self, table: dict[int, int]) -> None:
        self.table = dict(table)
