"""The unroll: what a rollout worker returns, and, concatenated along the environments, what the learner
trains on (a batch is an unroll of more columns, so `Batch` is the same type).

Every field declares its layout, and the operations below (allocation, concatenation, column slicing,
device transfer) follow from it, so a new field is one line here:
- `step` fields are time-major, [T, B, ...] or [T+1, B, ...]; their columns are axis 1;
- `column` fields are environment-major, [B, ...]; their columns are axis 0.
Values are numpy arrays on actors, torch tensors on the learner; `obs` is a dict and `core_state` a
tuple of such arrays. docs/design.md describes what each field means.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch

Array = Any  # np.ndarray on actors, torch.Tensor on the learner
STEP, COLUMN = 1, 0  # the axis along which a field's columns (environments) lie


def _step(doc: str, **field_kwargs: Any) -> Any:
    return dataclasses.field(metadata={"axis": STEP, "doc": doc}, **field_kwargs)


def _column(doc: str, **field_kwargs: Any) -> Any:
    return dataclasses.field(metadata={"axis": COLUMN, "doc": doc}, **field_kwargs)


@dataclasses.dataclass
class Unroll:
    """T steps of B environments."""

    obs: dict[str, Array] = _step("[T+1, B, ...] obs[t] is what the policy saw before action t; obs[T] bootstraps")
    first: Array = _step("[T+1, B] bool: obs[t] is the first observation of an episode")
    actions: Array = _step("[T, B] int64")
    rewards: Array = _step("[T, B] float32: raw extrinsic reward of transition t")
    dones: Array = _step("[T, B] bool: the episode ended with transition t (equals first[1:])")
    logits: Array = _step("[T, B, A] float32: behaviour policy logits")
    core_state: tuple[Array, ...] = _column("each [B, H]: recurrent state before obs[0]")
    env_ids: Array = _column("[B] int64: global environment id")
    unroll_index: Array = _column("[B] int64: per-environment sequence number of this unroll: 0, 1, 2, ...")
    policy_version: Array = _column("[B] int64: learner version whose weights acted")
    actor_ids: Array = _column("[B] int64: the rollout worker that stepped the environment")
    values: dict[str, Array] = _step("[T+1, B] float32 per value head: the behaviour policy's V(obs[t])",
                                     default_factory=dict, kw_only=True)
    bootstrap_state: tuple[Array, ...] = _column("each [B, H]: recurrent state before obs[T] (recorded with "
                                                 "`values`)", default_factory=tuple, kw_only=True)

    @property
    def num_columns(self) -> int:
        """B, the number of environment columns."""
        return int(self.actions.shape[1])

    @property
    def num_steps(self) -> int:
        """T, the number of transitions per column."""
        return int(self.actions.shape[0])

    @property
    def size(self) -> int:
        """Environment steps held: T · B."""
        return self.num_steps * self.num_columns

    @classmethod
    def allocate(cls, obs_space: dict[str, tuple[tuple[int, ...], np.dtype]], steps: int, columns: int,
                 num_actions: int, value_heads: Sequence[str] = ("baseline",)) -> "Unroll":
        """Empty numpy buffers for the time-major fields; the caller fills the column fields."""
        T, B = steps, columns
        return cls(
            obs={k: np.empty((T + 1, B, *shape), dtype=dtype) for k, (shape, dtype) in obs_space.items()},
            first=np.empty((T + 1, B), dtype=bool),
            actions=np.empty((T, B), dtype=np.int64),
            rewards=np.empty((T, B), dtype=np.float32),
            dones=np.empty((T, B), dtype=bool),
            logits=np.empty((T, B, num_actions), dtype=np.float32),
            core_state=(),
            env_ids=np.empty(B, dtype=np.int64),
            unroll_index=np.empty(B, dtype=np.int64),
            policy_version=np.empty(B, dtype=np.int64),
            actor_ids=np.empty(B, dtype=np.int64),
            values={k: np.empty((T + 1, B), dtype=np.float32) for k in value_heads},
        )

    @classmethod
    def concat(cls, unrolls: Sequence["Unroll"]) -> "Unroll":
        """Unrolls side by side along B (a batch) of the unrolls' own type; always a fresh, writable copy."""
        if not unrolls:
            raise ValueError("Unroll.concat needs at least one unroll")
        kind = type(unrolls[0])
        values = {}
        for f in dataclasses.fields(kind):
            parts = [getattr(u, f.name) for u in unrolls]
            values[f.name] = _zip_map(parts, lambda xs, axis=f.metadata["axis"]: _cat(xs, axis))
        return kind(**values)

    def columns(self, cols: slice | Array) -> "Unroll":
        """The unroll restricted to environment columns `cols` (a slice or an index array)."""
        return self._map(lambda x, axis: x[:, cols] if axis == STEP else x[cols])

    def to_torch(self, device: torch.device | str = "cpu") -> "Unroll":
        """torch tensors on `device`; small integer dtypes stay small until the model reads them.
        Arrays are shared, not copied (those from Ray's object store are read-only: nothing writes them)."""
        to_gpu = torch.device(device).type == "cuda"

        def convert(x: Array, _axis: int) -> torch.Tensor:
            tensor = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
            if to_gpu and tensor.device.type == "cpu":
                tensor = tensor.pin_memory()  # page-locked, so the copy below runs asynchronously
            return tensor.to(device, non_blocking=True)

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return self._map(convert)

    def _map(self, fn: Callable[[Array, int], Array]) -> "Unroll":
        values = {f.name: _apply(getattr(self, f.name), lambda x, axis=f.metadata["axis"]: fn(x, axis))
                  for f in dataclasses.fields(self)}
        return type(self)(**values)


Batch = Unroll  # a batch is unrolls concatenated along B: the same fields


@dataclasses.dataclass
class DemonstrationUnroll(Unroll):
    """T steps of B recorded games (rlzoo.runtime.demonstrations): `actions` are the recorded ones,
    `rewards` and `logits` are zero, `core_state` is empty (the learner carries the recurrent state
    of each row from one batch to the next), `env_ids` are the dataset's rows and `unroll_index`
    counts the batches."""

    valid: Array = _step("[T, B] bool: actions[t] is a recorded keypress that the env's action set has")


def synthetic_unroll(obs_space: dict[str, tuple[tuple[int, ...], np.dtype]], num_actions: int, steps: int,
                     columns: int, lstm_size: int = 0, seed: int = 0, value_heads: Sequence[str] = ()) -> Unroll:
    """Random observations, actions, rewards, logits (and behaviour values of `value_heads`) shaped
    like an actor's unroll: learner benchmarks and device tests run on it without stepping an environment."""
    rng = np.random.default_rng(seed)
    unroll = Unroll.allocate(obs_space, steps, columns, num_actions, value_heads)
    for array in unroll.values.values():
        array[...] = rng.standard_normal(array.shape)
    for array in unroll.obs.values():
        high = 256 if array.dtype == np.uint8 else 5000  # bytes, or ids below the glyph count
        array[...] = rng.integers(0, high, size=array.shape).astype(array.dtype)
    unroll.first[...] = rng.random(unroll.first.shape) < 0.02
    unroll.dones[...] = unroll.first[1:]
    unroll.actions[...] = rng.integers(num_actions, size=unroll.actions.shape)
    unroll.rewards[...] = rng.standard_normal(unroll.rewards.shape)
    unroll.logits[...] = rng.standard_normal(unroll.logits.shape)
    unroll.core_state = tuple(np.zeros((columns, lstm_size), np.float32) for _ in range(2)) if lstm_size else ()
    unroll.bootstrap_state = unroll.core_state if value_heads else ()
    unroll.env_ids[...] = np.arange(columns)
    unroll.unroll_index[...] = 0
    unroll.policy_version[...] = 0
    unroll.actor_ids[...] = 0
    return unroll


def _apply(value: Any, fn: Callable[[Array], Array]) -> Any:
    if isinstance(value, dict):
        return {k: fn(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(fn(v) for v in value)
    return fn(value)


def _zip_map(parts: list[Any], fn: Callable[[list[Array]], Array]) -> Any:
    first = parts[0]
    if isinstance(first, dict):
        return {k: fn([p[k] for p in parts]) for k in first}
    if isinstance(first, tuple):
        return tuple(fn(list(xs)) for xs in zip(*parts))
    return fn(parts)


def _cat(parts: list[Array], axis: int) -> Array:
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts, dim=axis)
    return np.concatenate(parts, axis=axis)
