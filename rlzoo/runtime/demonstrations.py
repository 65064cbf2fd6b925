"""Recorded games as training data: the NLD dataset a config names, checked before anything starts,
its games as `DemonstrationUnroll`s, and the source that stands in for the actors under `algo=bc`.

A dataset is named by the directory holding its nle.dataset index (`<dir>/ttyrecs.db`, written by
`python -m rlzoo.nld <dir>`). Its games are streamed by `rlzoo.nld.TtyrecStream` in a background
thread, each batch row playing its own games one after another (so a row's next batch continues
its game) and the recorded keypresses mapped to the env's actions; the keypresses the env has no
action for are masked (`valid`), and files found unreadable when their turn comes are skipped and
counted (`nld/skipped_files`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from rlzoo.envs import EnvSpec
from rlzoo.nld import NLDDataset, TtyrecStream, indexed_files, open_dataset, ttyrec_header_problem
from rlzoo.nld.dataset import INDEX_FILE
from rlzoo.nld.stream import OBS_KEYS
from rlzoo.runtime.rollout import RolloutResult
from rlzoo.unroll import DemonstrationUnroll

NLD_FAMILIES = ("nethack", "minihack")  # the env families whose games ttyrecs record


def open_demonstrations(directory: Any, name: str, key: str, spec: EnvSpec, check_files: bool = True) -> NLDDataset:
    """The dataset indexed in `directory` (the value of config key `key`), checked for what learning
    from its actions needs. Raises ValueError naming the key, the path and the problem: no such
    directory, no index, no dataset `name` in it, no actions (screens-only alt.org games), an env
    whose games ttyrecs do not record; with `check_files`, an indexed ttyrec that is missing, empty
    or not bz2 (a header read per file: decompressing whole datasets at start would take hours; a
    file corrupt further in is skipped and counted when the stream meets it)."""
    if spec.family not in NLD_FAMILIES:
        raise ValueError(f"{key} holds NetHack games, but env.family={spec.family!r}; learning from them needs "
                         f"env.family in {list(NLD_FAMILIES)}")
    if not isinstance(directory, str) or not directory:
        raise ValueError(f"{key}={directory!r} is not valid; expected the directory of an NLD dataset "
                         f"(holding {INDEX_FILE}, built with `python -m rlzoo.nld <dir>`)")
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"{key}={directory!r}: no such directory")
    index = root / INDEX_FILE
    if not index.is_file():
        raise ValueError(f"{key}={directory!r} has no dataset index {index}; build it with "
                         f"`python -m rlzoo.nld {directory}`")
    try:
        dataset = open_dataset(index, name)
    except ValueError as err:
        raise ValueError(f"{key}={directory!r}: {err}") from None
    if not dataset.has_keypresses:
        raise ValueError(
            f"{key}={directory!r}: dataset {name!r} has no actions (ttyrec version {dataset.ttyrec_version}: "
            "screens only, as alt.org games); behavioural cloning needs NLE recordings (version >= 2)"
        )
    if check_files:
        bad = [(path, problem) for path in indexed_files(dataset) if (problem := ttyrec_header_problem(path))]
        if bad:
            more = f" ({len(bad) - 1} more unusable files)" if len(bad) > 1 else ""
            raise ValueError(f"{key}={directory!r}: ttyrec {bad[0][0]} is {bad[0][1]}{more}; rebuild the index "
                             f"without it (`python -m rlzoo.nld {directory} --overwrite`)")
    return dataset


def check_reads_terminal_only(input_keys: tuple[str, ...], key: str) -> None:
    """Recorded games hold only the terminal: a model trained on them must read nothing else."""
    other = [k for k in input_keys if k not in OBS_KEYS]
    if other:
        raise ValueError(f"{key}: recorded games hold only the terminal ({', '.join(OBS_KEYS)}), but the model "
                         f"reads {other}; use model=tty (with env.observation=tty or both)")


def check_batch_fits(dataset: NLDDataset, rows: int, key: str) -> None:
    if rows > dataset.num_games:
        raise ValueError(f"{key}: a batch of {rows} dataset rows needs at least as many games, and "
                         f"{dataset.db_path} holds {dataset.num_games}; record more games or use fewer rows")


def stream_seed(seed: int, rank: int, start_steps: int) -> int:
    """The stream's shuffling seed: replicas read different games, and a resumed run a new order."""
    return int(np.random.SeedSequence([seed, rank, start_steps]).generate_state(1)[0])


class DemonstrationStream:
    """Batches of `rows` recorded games side by side, `unroll_length` steps each, as
    `DemonstrationUnroll`s of numpy arrays; the games come round again forever."""

    def __init__(self, dataset: NLDDataset, spec: EnvSpec, rows: int, unroll_length: int, seed: int) -> None:
        self.stream = TtyrecStream(dataset, spec.action_keys, rows, unroll_length, seed=seed)
        self.num_actions = spec.num_actions
        self.index = 0

    def __iter__(self) -> DemonstrationStream:
        return self

    def __next__(self) -> DemonstrationUnroll:
        batch = next(self.stream)
        T, B = batch["actions"].shape
        unroll = DemonstrationUnroll(
            obs=batch["obs"],
            first=batch["first"],
            actions=batch["actions"],
            rewards=np.zeros((T, B), np.float32),
            dones=batch["dones"],
            logits=np.zeros((T, B, self.num_actions), np.float32),
            core_state=(),
            env_ids=np.arange(B, dtype=np.int64),
            unroll_index=np.full(B, self.index, dtype=np.int64),
            policy_version=np.zeros(B, dtype=np.int64),
            actor_ids=np.zeros(B, dtype=np.int64),
            valid=batch["valid"],
        )
        self.index += 1
        return unroll

    def metrics(self) -> dict[str, float]:
        """Counts so far: games and frames read, keypresses outside the action set, files skipped."""
        return {f"nld/{k}": float(v) for k, v in self.stream.stats().items()}

    def close(self) -> None:
        self.stream.close()


class DemonstrationSource:
    """`algo=bc`: batches of recorded games where the actors' unrolls would be (the interface of
    rlzoo/runtime/sources.py). Each batch is `runtime.batch_size` rows of `runtime.unroll_length`
    steps, so env steps count dataset steps."""

    restarts = 0  # nothing runs that could be replaced or lost
    steps_lost = 0

    def __init__(self, cfg: DictConfig, spec: EnvSpec, start_steps: int = 0) -> None:
        dataset = open_demonstrations(cfg.algo.dataset, cfg.algo.dataset_name, "algo.dataset", spec,
                                      check_files=False)  # checked by check_imitation before the run
        rt = cfg.runtime
        self.stream = DemonstrationStream(dataset, spec, rt.batch_size, rt.unroll_length,
                                          stream_seed(cfg.seed, 0, start_steps))
        self.version = 0

    def publish(self, weights: dict[str, np.ndarray], version: int) -> None:
        self.version = version  # nothing acts: the version only stamps the batches

    def next_unrolls(self, timeout_s: float = 1.0) -> list[RolloutResult]:
        unroll = next(self.stream)
        unroll.policy_version[:] = self.version
        return [RolloutResult(unroll)]

    def metrics(self) -> dict[str, float]:
        return self.stream.metrics()

    def close(self) -> None:
        self.stream.close()
