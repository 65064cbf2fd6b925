"""The vectorised-environment interface and its list-of-environments implementation."""
from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

Obs = dict[str, np.ndarray]
Episode = dict[str, Any]  # what a finished episode reports: numbers, and NetHack's death reason as text
StepResult = tuple[Obs, np.ndarray, np.ndarray, list[Episode]]


@dataclass(frozen=True)
class EnvSpec:
    """What a model or bonus needs to know about an environment, without building one."""

    family: str  # "nethack" | "minihack" | "procgen" | "minigrid"
    name: str
    obs_space: dict[str, tuple[tuple[int, ...], np.dtype]]  # name -> (shape without [B], dtype)
    num_actions: int
    action_names: tuple[str, ...] = field(default=())
    # NetHack/MiniHack: the keypress (byte) each action sends, to map recorded keypresses to actions.
    action_keys: tuple[int, ...] = field(default=())


def allocate_obs(spec: EnvSpec, num_envs: int) -> Obs:
    """Zeroed observation buffers with a leading [num_envs] axis."""
    return {
        name: np.zeros((num_envs, *shape), dtype=dtype)
        for name, (shape, dtype) in spec.obs_space.items()
    }


class VecEnv(abc.ABC):
    """`num_envs` environments stepped together; each resets itself when its episode ends.

    The observation dict returned by `reset` and `step` is the same set of preallocated arrays every
    time (they are overwritten in place by the next call): copy what you keep.
    """

    spec: EnvSpec
    num_envs: int

    @abc.abstractmethod
    def reset(self) -> Obs:
        """Start a new episode in every environment and return the first observations."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> StepResult:
        """Apply `actions[B]`; return (obs, reward[B] float32, done[B] bool, finished episodes).

        After `done[i]`, `obs[i]` is the first observation of environment i's next episode. Each
        finished episode is reported as a dict with `return`, `length` and, where the task defines
        them, `success` and the NetHack statistics of `envs/nethack_stats.py` (numbers, plus the
        death reason `death` as text).
        """

    @abc.abstractmethod
    def render(self, index: int = 0) -> np.ndarray:
        """RGB frame [H, W, 3] uint8 of environment `index` (needs the env built with render=True)."""

    def close(self) -> None:
        """Release the environments' resources."""


class SingleEnv(Protocol):
    """One environment writing its observation straight into row `i` of shared buffers."""

    def reset(self, out: Obs, i: int) -> None: ...

    def step(self, action: int, out: Obs, i: int) -> tuple[float, bool, Episode | None]:
        """Step, auto-resetting at episode end; returns (reward, done, finished-episode stats)."""
        ...

    def render(self) -> np.ndarray: ...

    def close(self) -> None: ...


class ListVecEnv(VecEnv):
    """Steps a list of single environments in turn (for NetHack/MiniHack, which have no native
    vectorised form).

    With `rebuild` (index -> a new environment), an environment whose step raises (a crash, or the
    step-time limit the caller's alarm enforces) is replaced by a new one on its own: that step ends
    its episode with reward 0 and the others carry on. `restarts` counts the replacements.
    """

    def __init__(self, envs: list[SingleEnv], spec: EnvSpec,
                 rebuild: Callable[[int], SingleEnv] | None = None) -> None:
        if not envs:
            raise ValueError("ListVecEnv needs at least one environment")
        self.envs = envs
        self.spec = spec
        self.rebuild = rebuild
        self.restarts = 0
        self.num_envs = len(envs)
        self._obs = allocate_obs(spec, self.num_envs)
        self._reward = np.zeros(self.num_envs, dtype=np.float32)
        self._done = np.zeros(self.num_envs, dtype=bool)

    def reset(self) -> Obs:
        for i, env in enumerate(self.envs):
            env.reset(self._obs, i)
        return self._obs

    def step(self, actions: np.ndarray) -> StepResult:
        if len(actions) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {len(actions)}")
        episodes = []
        for i, (env, action) in enumerate(zip(self.envs, actions.tolist())):
            try:
                reward, done, episode = env.step(action, self._obs, i)
            except Exception as err:  # noqa: BLE001 - any failure of one environment is survivable
                if self.rebuild is None:
                    raise
                reward, done, episode = self._replace(i, err), True, None
            self._reward[i] = reward
            self._done[i] = done
            if episode is not None:
                episodes.append(episode)
        # The reward and done arrays are handed out, so return copies of these tiny buffers.
        return self._obs, self._reward.copy(), self._done.copy(), episodes

    def _replace(self, i: int, err: Exception) -> float:
        """Rebuild environment i after `err`; its new episode's first observation goes into row i."""
        warnings.warn(f"environment {i} failed ({type(err).__name__}: {err}); rebuilding it alone", stacklevel=3)
        try:
            self.envs[i].close()
        except Exception:  # noqa: BLE001 - a broken env may not close cleanly; it is dropped anyway
            pass
        self.envs[i] = self.rebuild(i)
        self.envs[i].reset(self._obs, i)
        self.restarts += 1
        return 0.0

    def render(self, index: int = 0) -> np.ndarray:
        return self.envs[index].render()

    def close(self) -> None:
        for env in self.envs:
            env.close()


# Evaluation environments draw from their own branch of NumPy's seed tree. NumPy pads the entropy
# words to four with zeros before appending a spawn key, so an evaluation sequence hashes the words
# (seed, env id, 0, 0, 1); a training sequence hashes the words of its seed and env id, each without
# leading zeros, and would need an env id >= 2^64 to match (seeds are < 2^32, rlzoo/config.py).
EVALUATION_SPAWN_KEY = (1,)


def seed_sequence(seed: int, env_id: int, evaluation: bool = False) -> np.random.SeedSequence:
    """The seed sequence of environment `env_id` of a run seeded with `seed`: for training, or for
    evaluation (a disjoint family of streams)."""
    return np.random.SeedSequence([seed, env_id], spawn_key=EVALUATION_SPAWN_KEY if evaluation else ())


def seed_stream(seed: int, env_id: int, evaluation: bool = False) -> np.random.Generator:
    """Deterministic random stream for environment `env_id` of a run seeded with `seed`."""
    return np.random.default_rng(seed_sequence(seed, env_id, evaluation))

