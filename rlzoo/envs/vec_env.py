"""The vectorised-environment interface and its list-of-environments implementation."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Obs = dict[str, np.ndarray]
StepResult = tuple[Obs, np.ndarray, np.ndarray, list[dict[str, float]]]


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
        them, `success`, `score`, `depth`.
        """

    @abc.abstractmethod
    def render(self, index: int = 0) -> np.ndarray:
        """RGB frame [H, W, 3] uint8 of environment `index` (needs the env built with render=True)."""

    def close(self) -> None:
        """Release the environments' resources."""


class SingleEnv(Protocol):
    """One environment writing its observation straight into row `i` of shared buffers."""

    def reset(self, out: Obs, i: int) -> None: ...

    def step(self, action: int, out: Obs, i: int) -> tuple[float, bool, dict[str, float] | None]:
        """Step, auto-resetting at episode end; returns (reward, done, finished-episode stats)."""
        ...

    def render(self) -> np.ndarray: ...

    def close(self) -> None: ...


class ListVecEnv(VecEnv):
    """Steps a list of single environments in turn (for NetHack/MiniHack, which have no native
    vectorised form)."""

    def __init__(self, envs: list[SingleEnv], spec: EnvSpec) -> None:
        if not envs:
            raise ValueError("ListVecEnv needs at least one environment")
        self.envs = envs
        self.spec = spec
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
            reward, done, episode = env.step(action, self._obs, i)
            self._reward[i] = reward
            self._done[i] = done
            if episode is not None:
                episodes.append(episode)
        # The reward and done arrays are handed out, so return copies of these tiny buffers.
        return self._obs, self._reward.copy(), self._done.copy(), episodes

    def render(self, index: int = 0) -> np.ndarray:
        return self.envs[index].render()

    def close(self) -> None:
        for env in self.envs:
            env.close()


def episode_seed_stream(seed: int, env_id: int) -> np.random.Generator:
    """Deterministic random stream for environment `env_id` of a run seeded with `seed`."""
    return np.random.default_rng(np.random.SeedSequence([seed, env_id]))

