"""Batches of recorded games shaped like rlzoo's unrolls, converted from ttyrecs in a background thread.

nle.dataset's TtyrecDataset yields [B, T] frames: frame t is the screen before keypress t. Here
they become unrolls (docs/design.md, "Unrolls and batches"), plus what only a dataset has:

| key | shape | meaning |
| --- | --- | --- |
| `obs[name]` | [T+1, B, ...] | tty_chars uint8, tty_colors int8, tty_cursor uint8 [2] (row, column) |
| `first` | [T+1, B] bool | `obs[t]` is the first frame of a game (or of the stream, or of padding) |
| `dones` | [T, B] bool | `first[1:]` |
| `actions` | [T, B] int64 | the env's action index of keypress t (0 where `valid` is false) |
| `valid` | [T, B] bool | keypress t is a real keypress the env's action set has |
| `keypresses` | [T, B] uint8 | the raw keypresses |
| `gameids` | [T+1, B] int32 | the game of each frame in the index; 0 = padding (no game) |

`obs[T]` is `obs[0]` of the next batch. The stream starts with one blank frame (gameid 0), so no
recorded frame is dropped. Datasets without keypresses (alt.org) have no `actions`, `valid` or
`keypresses`.

Keypresses NLE or a player sent outside the env's action set (NLE answers prompts with ESC and
space, quits a game with M-q y) are not valid actions: they are counted, and masked via `valid`.
Where two actions send the same keypress (the full NetHack action set has three such pairs), the
keypress maps to the first. Files that are missing, empty or truncated when their turn comes are
skipped and counted, instead of ending the stream (nle's converter raises on a missing file and
silently drops the frames of a truncated one).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import nle.dataset as nld
import numpy as np

from rlzoo.nld.dataset import NLDDataset, ttyrec_problem

Batch = dict[str, Any]
TTY_ROWS, TTY_COLS = 24, 80
OBS_KEYS = ("tty_chars", "tty_colors", "tty_cursor")
_END = object()


def keypress_table(action_keys: Sequence[int]) -> np.ndarray:
    """[256] int64: keypress -> index of the first action sending it, -1 for keypresses of no action."""
    table = np.full(256, -1, dtype=np.int64)
    for index, key in reversed(list(enumerate(action_keys))):
        if not 0 <= key < 256:
            raise ValueError(f"action key {key} (action {index}) is not a byte")
        table[key] = index
    return table


class _SkippingTtyrecDataset(nld.TtyrecDataset):
    """nle's TtyrecDataset whose loader checks each file before handing it to the converter and
    moves on to the next game when one is unreadable (`on_skip(path, reason)` is told)."""

    def __init__(self, dataset: NLDDataset, on_skip: Callable[[Path, str], None], **kwargs: Any) -> None:
        super().__init__(dataset.name, dbfilename=str(dataset.db_path), **kwargs)
        self.root = dataset.root
        self.on_skip = on_skip
        self.readable: set[tuple[Path, int, int]] = set()  # (path, size, mtime) checked once

    def _readable(self, path: Path) -> bool:
        try:
            stat = path.stat()
        except FileNotFoundError:
            self.on_skip(path, "missing")
            return False
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key in self.readable:
            return True
        problem = ttyrec_problem(path)
        if problem is not None:
            self.on_skip(path, problem)
            return False
        self.readable.add(key)
        return True

    def _make_one_load_fn(self, gameids: list[int]) -> Callable[[Any], bool]:
        """Loads the next part of the converter's game, else the next game (as nle's loader does),
        skipping unreadable files; a game with an unreadable part ends there.

        Replaces the loader of nle 1.3.0's TtyrecDataset (the version setup.py pins), the one hook
        where a file can be refused before the converter reads it."""
        next_game = [0]

        def load(converter: Any) -> bool:
            gameid, part = converter.gameid, converter.part + 1
            files = self.get_paths(gameid)
            failures = 0
            while True:
                if gameid == 0 or part >= len(files):
                    if not self.loop_forever and next_game[0] >= len(gameids):
                        return False
                    gameid = gameids[next_game[0] % len(gameids)]
                    next_game[0] += 1
                    files, part = self.get_paths(gameid), 0
                path = self.root / files[part]
                if self._readable(path):
                    try:
                        converter.load_ttyrec(str(path), gameid=gameid, part=part)
                        return True
                    except (OSError, RuntimeError) as err:  # changed after the check
                        self.on_skip(path, f"unloadable ({err})")
                failures += 1
                if failures > len(gameids):
                    raise ValueError(f"none of the {len(gameids)} games of a batch row is readable")
                part = len(files)  # the rest of this game is skipped

        return load


class TtyrecStream:
    """Iterator over batches (see the module docstring) of `batch_size` games side by side and
    `unroll_length` steps, converted in a background thread, `prefetch` batches ahead.

    `action_keys` is the env's action set as keypresses (`EnvSpec.action_keys`). `loop_forever`
    cycles through the games (each batch row its own shuffled share); otherwise the stream ends
    after every game was read once, the rows that ran out padded with gameid 0. `num_workers` > 0
    converts the rows in that many threads (the converter releases the GIL).
    """

    def __init__(
        self,
        dataset: NLDDataset,
        action_keys: Sequence[int],
        batch_size: int,
        unroll_length: int,
        *,
        loop_forever: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        prefetch: int = 2,
        require_actions: bool = True,
    ) -> None:
        for key, value, minimum in (("batch_size", batch_size, 1), ("unroll_length", unroll_length, 1),
                                    ("num_workers", num_workers, 0), ("prefetch", prefetch, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{key}={value!r} is not valid; expected an integer >= {minimum}")
        if require_actions and not dataset.has_keypresses:
            raise ValueError(
                f"dataset {dataset.name!r} ({dataset.db_path}) has no actions: its ttyrecs are version "
                f"{dataset.ttyrec_version}, screens only (alt.org games); actions need NLE recordings "
                "(version >= 2), or pass require_actions=False"
            )
        if batch_size > dataset.num_games:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {dataset.num_games} games of dataset "
                f"{dataset.name!r} ({dataset.db_path}); each batch row plays its own games"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.unroll_length = unroll_length
        self.table = keypress_table(action_keys) if dataset.has_keypresses else None
        self.counts = {"frames": 0, "games": 0, "unmappable_keypresses": 0, "skipped_files": 0}
        self.skipped: dict[str, str] = {}  # path -> reason
        self._lock = threading.Lock()

        gameids = _game_ids(dataset)
        np.random.default_rng(seed).shuffle(gameids)
        self._pool = ThreadPoolExecutor(num_workers) if num_workers else None
        self._source = _SkippingTtyrecDataset(
            dataset,
            self._skip,
            batch_size=batch_size,
            seq_length=unroll_length,
            rows=TTY_ROWS,
            cols=TTY_COLS,
            threadpool=self._pool,
            gameids=gameids,
            shuffle=False,
            loop_forever=loop_forever,
        )
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, name="ttyrec-stream", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._finished = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        return item

    def stats(self) -> dict[str, int]:
        """Frames and games read, keypresses outside the action set, files skipped, so far."""
        with self._lock:
            return dict(self.counts)

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:  # unblock a producer waiting on a full queue
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _skip(self, path: Path, reason: str) -> None:
        with self._lock:
            self.counts["skipped_files"] += 1
            self.skipped[str(path)] = reason

    def _produce(self) -> None:
        try:
            for batch in self._batches():
                if not self._put(batch):
                    return
            self._put(_END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(err)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _batches(self) -> Iterator[Batch]:
        B = self.batch_size
        # The frame before the first batch is blank and belongs to no game; every later batch
        # starts with the previous batch's last frame.
        carry = {key: np.zeros((B, *shape), dtype) for key, (shape, dtype) in _FRAME_FIELDS.items()}
        carry_first = np.ones(B, dtype=bool)
        for frames in self._source:  # [B, T, ...] arrays that nle reuses
            columns = {
                key: np.concatenate([carry[key][None], frames[key].swapaxes(0, 1).astype(dtype, copy=False)])
                for key, (_, dtype) in _FRAME_FIELDS.items()
                if key in frames
            }
            gameids = columns["gameids"]
            # nle marks each game's first frame except the first game's; a change of game (to or
            # from padding) is also a first frame.
            first = np.concatenate([carry_first[None], frames["done"].T.astype(bool)])
            first[1:] |= gameids[1:] != gameids[:-1]
            batch: Batch = {
                "obs": {key: columns[key] for key in OBS_KEYS},
                "first": first,
                "dones": first[1:].copy(),
                "gameids": gameids,
            }
            real = gameids[:-1] != 0
            unmappable = 0
            if self.table is not None:
                keypresses = columns["keypresses"][:-1]
                actions = self.table[keypresses]
                valid = real & (actions >= 0)
                batch.update(keypresses=keypresses, actions=np.where(valid, actions, 0), valid=valid)
                unmappable = int((real & (actions < 0)).sum())
            with self._lock:
                self.counts["frames"] += int(real.sum())
                self.counts["games"] += int((first[:-1] & real).sum())
                self.counts["unmappable_keypresses"] += unmappable
            carry = {key: column[-1].copy() for key, column in columns.items()}
            carry_first = first[-1].copy()
            yield batch


# What each frame carries: (shape, dtype) as delivered.
_FRAME_FIELDS = {
    "tty_chars": ((TTY_ROWS, TTY_COLS), np.uint8),
    "tty_colors": ((TTY_ROWS, TTY_COLS), np.int8),
    "tty_cursor": ((2,), np.uint8),
    "keypresses": ((), np.uint8),
    "gameids": ((), np.int32),
}


def _game_ids(dataset: NLDDataset) -> list[int]:
    with nld.db.db(filename=str(dataset.db_path)) as conn:
        return sorted(gameid for _, gameid, _, _ in nld.db.get_games(dataset.name, conn=conn))
