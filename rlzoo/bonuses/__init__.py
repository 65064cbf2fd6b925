"""Exploration bonuses, selected with `bonus=<name>`; every module here registers its bonus on import,
so a new bonus is one file in this package plus one `configs/bonus/<name>.yaml`."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import torch

from rlzoo.bonuses.base import BONUS_REGISTRY, Bonus, create_bonus, register_bonus

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_bonus(bonus_cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any,
                compute_dtype: torch.dtype = torch.float32) -> Bonus | None:
    """The bonus named by `bonus_cfg.name` for `num_envs` environments (ids 0 … num_envs−1) on
    `device`, its networks computing in `compute_dtype`; None for `none`."""
    if bonus_cfg.get("name") == "none":
        return None
    return create_bonus(bonus_cfg, spec, model_cfg, num_envs, device, compute_dtype)


__all__ = ["BONUS_REGISTRY", "Bonus", "build_bonus", "register_bonus"]
