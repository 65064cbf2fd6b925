"""The on-disk pair dataset: one preallocated .npy file per field, memory-mapped, plus meta.json.

`meta.json["count"]` is written (atomically) only after the arrays are flushed, so it never claims a
pair that is not on disk: an interrupted collection resumes at `count`. Loading never unpickles.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MESSAGE_LEN = 256
BLSTATS_LEN = 27
# NLE blstats indices (nle.nethack.NLE_BL_SCORE / NLE_BL_TIME).
BL_SCORE = 9
BL_TIME = 20


def _fields(seq_len: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per-pair arrays; axis 1 is the pair side (0 = first, 1 = second)."""
    return {
        "messages": ((2, seq_len, MESSAGE_LEN), "uint8"),    # messages after each of the L steps
        "blstats": ((2, seq_len, BLSTATS_LEN), "int32"),     # blstats after each of the L steps
        "length": ((2,), "int16"),                           # valid steps (≤ L)
        "score_gain": ((2,), "float32"),                     # in-game score after − before
        "turns": ((2, 2), "int32"),                          # in-game turn before and after
        "episode_return": ((2,), "float32"),                 # return of the whole source episode
    }


@dataclass
class Segment:
    """One side of a pair: consecutive transitions of one episode, as the collector builds it."""

    messages: np.ndarray     # [n, 256] uint8
    blstats: np.ndarray      # [n, 27] int32
    score_gain: float
    turns: tuple[int, int]
    episode_return: float = 0.0


class PairDataset:
    def __init__(self, path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.path = path
        self.arrays = arrays
        self.meta = meta

    @property
    def count(self) -> int:
        return int(self.meta["count"])

    @property
    def capacity(self) -> int:
        return int(self.meta["capacity"])

    @property
    def seq_len(self) -> int:
        return int(self.meta["seq_len"])

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name][: self.count]
        raise AttributeError(name)

    @classmethod
    def create(cls, path: str | os.PathLike, capacity: int, seq_len: int, info: dict[str, Any]) -> "PairDataset":
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {
            name: np.lib.format.open_memmap(path / f"{name}.npy", mode="w+", dtype=dtype, shape=(capacity, *shape))
            for name, (shape, dtype) in _fields(seq_len).items()
        }
        meta = {"format": 1, "count": 0, "capacity": capacity, "seq_len": seq_len, **info}
        dataset = cls(path, arrays, meta)
        dataset._write_meta()
        return dataset

    @classmethod
    def open(cls, path: str | os.PathLike, writable: bool = False) -> "PairDataset":
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.exists():
            raise FileNotFoundError(f"no pair dataset at {path} (meta.json missing); run the collect step first")
        meta = json.loads(meta_file.read_text())
        mode = "r+" if writable else "r"
        arrays = {}
        for name, (shape, dtype) in _fields(int(meta["seq_len"])).items():
            array = np.load(path / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
            if array.shape != (meta["capacity"], *shape) or array.dtype != np.dtype(dtype):
                raise ValueError(f"{path / name}.npy has shape {array.shape} {array.dtype}, expected {(meta['capacity'], *shape)} {dtype}")
            arrays[name] = array
        return cls(path, arrays, meta)

    def append(self, first: Segment, second: Segment) -> None:
        i = self.count
        if i >= self.capacity:
            raise IndexError(f"dataset at {self.path} is full ({self.capacity} pairs)")
        for side, seq in enumerate((first, second)):
            n = len(seq.messages)
            self.arrays["messages"][i, side] = 0
            self.arrays["messages"][i, side, :n] = seq.messages
            self.arrays["blstats"][i, side] = 0
            self.arrays["blstats"][i, side, :n] = seq.blstats
            self.arrays["length"][i, side] = n
            self.arrays["score_gain"][i, side] = seq.score_gain
            self.arrays["turns"][i, side] = seq.turns
            self.arrays["episode_return"][i, side] = seq.episode_return
        self.meta["count"] = i + 1

    def flush(self) -> None:
        for array in self.arrays.values():
            array.flush()
        self._write_meta()

    def _write_meta(self) -> None:
        tmp = self.path / "meta.json.tmp"
        tmp.write_text(json.dumps(self.meta, indent=1))
        os.replace(tmp, self.path / "meta.json")
