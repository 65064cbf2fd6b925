"""MiniGrid environments as the RIDE, AMIGo and NovelD papers ran them: the agent sees the egocentric
7×7 view of (object, colour, state) integers and nothing else (not its direction, not the mission);
episodes last MiniGrid's own `max_steps`; success means reaching the goal.

Observations (uint8):
- `image` [7, 7, 3]: the partial view `gen_obs()["image"]`, what the policy reads;
- `agent` [3]: the agent's (x, y, direction), for position counts and coverage measurements (no model
  reads it);
- `full_grid` [W, H, 3], only with `env.full_grid: true`: the whole grid with the agent drawn in its
  cell (MiniGrid's FullyObsWrapper encoding), the key the references' episodic counts used.
"""
from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from rlzoo.envs.vec_env import EnvSpec, ListVecEnv, Obs, seed_stream

VIEW_SIZE = 7
# MultiRoom layouts of the RIDE paper that MiniGrid itself does not register: (rooms, largest room
# side). N10-S6 is the maze of its reward-free visitation maps (Fig. 7).
RIDE_MULTIROOMS = ((7, 4), (7, 8), (10, 4), (10, 6), (10, 10), (12, 10))


@functools.cache
def register_minigrid_ids() -> tuple[str, ...]:
    """Register MiniGrid's ids and the RIDE paper's extra MultiRoom layouts; every MiniGrid-* id."""
    import gymnasium
    import minigrid  # noqa: F401  (registers the MiniGrid-* and BabyAI-* ids on import)

    for rooms, size in RIDE_MULTIROOMS:
        name = f"MiniGrid-MultiRoom-N{rooms}-S{size}-v0"
        if name not in gymnasium.registry:
            gymnasium.register(name, entry_point="minigrid.envs:MultiRoomEnv",
                               kwargs={"minNumRooms": rooms, "maxNumRooms": rooms, "maxRoomSize": size})
    return tuple(sorted(k for k in gymnasium.registry if k.startswith("MiniGrid-")))


def _make_env(cfg: dict[str, Any]) -> Any:
    import gymnasium
    from gymnasium.envs.registration import load_env_creator

    register_minigrid_ids()
    registered = gymnasium.spec(cfg["name"])
    kwargs = {**registered.kwargs, **cfg["env_kwargs"]}
    if cfg["max_episode_steps"] is not None:
        kwargs["max_steps"] = cfg["max_episode_steps"]
    # Built from the registry entry directly: gymnasium.make's checker and order wrappers only add cost.
    return load_env_creator(registered.entry_point)(**kwargs)


@functools.cache
def _spec_for(cfg_json: str) -> EnvSpec:
    cfg = json.loads(cfg_json)
    env = _make_env(cfg)
    if env.agent_view_size != VIEW_SIZE:
        raise ValueError(f"env.env_kwargs.agent_view_size={env.agent_view_size}: the minigrid family delivers the "
                         f"papers' {VIEW_SIZE}x{VIEW_SIZE} view")
    obs_space = {
        "image": ((VIEW_SIZE, VIEW_SIZE, 3), np.dtype(np.uint8)),
        "agent": ((3,), np.dtype(np.uint8)),
    }
    if cfg["full_grid"]:
        obs_space["full_grid"] = ((env.width, env.height, 3), np.dtype(np.uint8))
    return EnvSpec(family="minigrid", name=cfg["name"], obs_space=obs_space, num_actions=int(env.action_space.n),
                   action_names=tuple(action.name for action in env.actions))


def minigrid_spec(cfg: dict[str, Any]) -> EnvSpec:
    """Spec of a validated MiniGrid config (builds one env once to read its grid size and actions)."""
    return _spec_for(json.dumps(cfg, sort_keys=True))


def full_grid_encoding(env: Any) -> np.ndarray:
    """The whole grid [W, H, 3] with the agent's cell holding (agent, red, direction), as MiniGrid's
    FullyObsWrapper draws it (the references' `frame`)."""
    from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

    grid = env.grid.encode()
    x, y = env.agent_pos
    grid[x, y] = (OBJECT_TO_IDX["agent"], COLOR_TO_IDX["red"], env.agent_dir)
    return grid


class MiniGridEnv:
    """One MiniGrid env writing its observations into row i of shared batch buffers.

    Each episode's layout comes from a seed drawn from the env's own stream (`rng`), so a run's
    episodes depend only on (seed, env id). With `num_levels` k > 0 the seed is one of the k level
    seeds start_level … start_level + k − 1 (k = 1: the same layout every episode, the singleton
    setting of RIDE's Fig. 7 and the 2023 study's num_contexts).
    """

    def __init__(self, cfg: dict[str, Any], rng: np.random.Generator) -> None:
        self.env = _make_env(cfg)
        self.rng = rng
        self.num_levels = cfg["num_levels"]
        self.start_level = cfg["start_level"]
        self.full_grid = cfg["full_grid"]
        self.episode_return = 0.0

    def _level_seed(self) -> int:
        if self.num_levels > 0:
            return self.start_level + int(self.rng.integers(self.num_levels))
        return int(self.rng.integers(2**31))

    def _write(self, obs: dict[str, Any], out: Obs, i: int) -> None:
        out["image"][i] = obs["image"]
        x, y = self.env.agent_pos
        out["agent"][i] = (x, y, self.env.agent_dir)
        if self.full_grid:
            out["full_grid"][i] = full_grid_encoding(self.env)

    def _reset(self) -> dict[str, Any]:
        obs, _ = self.env.reset(seed=self._level_seed())
        self.episode_return = 0.0
        return obs

    def reset(self, out: Obs, i: int) -> None:
        self._write(self._reset(), out, i)

    def step(self, action: int, out: Obs, i: int) -> tuple[float, bool, dict[str, float] | None]:
        obs, reward, terminated, truncated, _ = self.env.step(action)
        self.episode_return += reward
        episode = None
        if terminated or truncated:
            # MiniGrid pays 1 − 0.9·steps/max_steps only on reaching the goal; lava and time-outs pay 0.
            episode = {"return": self.episode_return, "length": self.env.step_count,
                       "success": float(terminated and reward > 0)}
            obs = self._reset()
        self._write(obs, out, i)
        return float(reward), terminated or truncated, episode

    def render(self) -> np.ndarray:
        return self.env.get_frame()  # drawn from the grid on demand: nothing to keep while stepping

    def close(self) -> None:
        self.env.close()


def make_minigrid_vec_env(cfg: dict[str, Any], num_envs: int, seed: int, env_id_offset: int,
                          evaluation: bool = False) -> ListVecEnv:
    """List-of-envs VecEnv for a validated MiniGrid config; a failed environment is rebuilt on its
    own with a fresh seed stream; evaluation environments use streams training never does."""
    spec = minigrid_spec(cfg)
    builds = [0] * num_envs

    def build(i: int) -> MiniGridEnv:
        stream = seed_stream(seed + 1_000_003 * builds[i], env_id_offset + i, evaluation)
        builds[i] += 1
        return MiniGridEnv(cfg, stream)

    return ListVecEnv([build(i) for i in range(num_envs)], spec, rebuild=build)
