"""Lets MiniHack 1.0.2's MiniGrid-ported Crossing tasks (LavaCrossing*, SimpleCrossing*) build with
MiniGrid 3.x.

MiniHack creates the underlying MiniGrid env with the NetHack map's width and height, but MiniGrid's
CrossingEnv is square (`size`) and asserts that width/height are not given as well. The affected
tasks are pointed at a shim id, registered under our own namespace, that drops those two
arguments; the crossing grid (at most 19x19) fits the map either way. Other tasks are untouched.
"""
from __future__ import annotations

from typing import Any

_CROSSING_ENTRY_POINT = "minigrid.envs:CrossingEnv"
_SHIM_NAMESPACE = "rlzoo"


def square_crossing_env(width: int | None = None, height: int | None = None, **kwargs: Any) -> Any:
    """MiniGrid's CrossingEnv, ignoring the width/height MiniHack passes."""
    from minigrid.envs import CrossingEnv

    del width, height  # the grid is `size` x `size`
    return CrossingEnv(**kwargs)


def fix_minigrid_kwargs(task_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor kwargs of a MiniHack task, with a Crossing task's MiniGrid id replaced by its
    shim (registered on first use)."""
    import gymnasium

    minigrid_id = task_kwargs.get("env_name")
    if minigrid_id is None:
        return task_kwargs
    import minigrid  # noqa: F401  (registers the MiniGrid-* ids; MiniHack imports it only when building)
    original = gymnasium.spec(minigrid_id)
    if original.entry_point != _CROSSING_ENTRY_POINT:
        return task_kwargs
    shim_id = f"{_SHIM_NAMESPACE}/{minigrid_id}"
    if shim_id not in gymnasium.registry:
        gymnasium.register(shim_id, entry_point=square_crossing_env, kwargs=dict(original.kwargs))
    return {**task_kwargs, "env_name": shim_id}
