"""Procgen games on procgen's native vectorised (gym3) environment."""
from __future__ import annotations

from typing import Any

import numpy as np

from rlzoo.envs.vec_env import EnvSpec, Obs, StepResult, VecEnv, allocate_obs, seed_sequence

FRAME_SHAPE = (64, 64, 3)
NUM_ACTIONS = 15  # procgen always exposes the same 15 button combinations
PROCGEN_OBS_SPACE = {"rgb": (FRAME_SHAPE, np.dtype(np.uint8))}


def _action_names() -> tuple[str, ...]:
    from procgen.env import BaseProcgenEnv

    # get_combos is a constant table that does not touch the instance.
    combos = BaseProcgenEnv.get_combos(None)
    return tuple("+".join(combo) if combo else "NOOP" for combo in combos)


def procgen_spec(cfg: dict[str, Any]) -> EnvSpec:
    """Spec of a validated Procgen config."""
    return EnvSpec(
        family="procgen",
        name=cfg["name"],
        obs_space=dict(PROCGEN_OBS_SPACE),
        num_actions=NUM_ACTIONS,
        action_names=_action_names(),
    )


class ProcgenVecEnv(VecEnv):
    """B Procgen environments in one native env; episodes restart on their own.

    Procgen draws every environment's levels from one generator seeded with `rand_seed`, so the
    whole vector (not each env separately) is seeded from (seed, env_id_offset): the same
    seed, offset and size give the same levels.
    """

    def __init__(
        self, cfg: dict[str, Any], num_envs: int, seed: int, env_id_offset: int, render: bool = False,
        evaluation: bool = False,
    ) -> None:
        self.spec = procgen_spec(cfg)
        self.num_envs = num_envs
        self._cfg = cfg
        self._seed_seq = seed_sequence(seed, env_id_offset, evaluation)
        self._render = render
        self._resets = 0
        self._env = None
        self._obs = allocate_obs(self.spec, num_envs)
        self._returns = np.zeros(num_envs, dtype=np.float64)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._info: list[dict[str, Any]] = []

    def _build(self) -> None:
        from procgen import ProcgenGym3Env

        cfg = self._cfg
        # A fresh generator state per reset(): re-resetting must not replay the same levels.
        rand_seed = int(self._seed_seq.spawn(1)[0].generate_state(1)[0] & 0x7FFFFFFF)
        kwargs = dict(cfg["env_kwargs"])
        if cfg["distribution_mode"] != "exploration":  # exploration fixes its own single level
            kwargs.update(num_levels=cfg["num_levels"], start_level=cfg["start_level"])
        self._env = ProcgenGym3Env(
            num=self.num_envs,
            env_name=cfg["name"],
            distribution_mode=cfg["distribution_mode"],
            rand_seed=rand_seed,
            num_threads=cfg["num_threads"],
            render_mode="rgb_array" if self._render else None,
            **kwargs,
        )

    def reset(self) -> Obs:
        # gym3 envs cannot be reset on demand; a new one starts every episode afresh.
        if self._env is not None:
            self._env.close()
        self._build()
        _, ob, _ = self._env.observe()
        np.copyto(self._obs["rgb"], ob["rgb"])
        self._info = self._env.get_info()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return self._obs

    def step(self, actions: np.ndarray) -> StepResult:
        if self._env is None:
            raise RuntimeError("call reset() before step()")
        if len(actions) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {len(actions)}")
        self._env.act(np.asarray(actions, dtype=np.int32))
        reward, ob, first = self._env.observe()
        np.copyto(self._obs["rgb"], ob["rgb"])
        self._returns += reward
        self._lengths += 1
        # gym3 reports the transition that ended an episode together with first=True.
        done = np.array(first, dtype=bool)
        episodes = []
        if done.any():
            self._info = self._env.get_info()
            for i in np.flatnonzero(done):
                episodes.append(
                    {
                        "return": float(self._returns[i]),
                        "length": int(self._lengths[i]),
                        "success": float(self._info[i]["prev_level_complete"]),
                    }
                )
            self._returns[done] = 0.0
            self._lengths[done] = 0
        elif self._render:
            self._info = self._env.get_info()
        return self._obs, reward.astype(np.float32, copy=True), done, episodes

    def render(self, index: int = 0) -> np.ndarray:
        """The full-resolution frame when built with render=True, else the 64x64 observation."""
        if self._render and "rgb" in self._info[index]:
            return np.asarray(self._info[index]["rgb"], dtype=np.uint8)
        return self._obs["rgb"][index].copy()

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
