"""Environments: NetHack (NLE), MiniHack, Procgen and MiniGrid behind one vectorised interface."""
from rlzoo.envs.registry import (
    FAMILIES,
    env_spec,
    eval_env_cfg,
    family_names,
    make_vec_env,
    validate_env_cfg,
)
from rlzoo.envs.vec_env import EnvSpec, VecEnv

__all__ = [
    "FAMILIES",
    "EnvSpec",
    "VecEnv",
    "env_spec",
    "eval_env_cfg",
    "family_names",
    "make_vec_env",
    "validate_env_cfg",
]
