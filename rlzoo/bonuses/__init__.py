"""Exploration bonuses, selected with `bonus=<name>`.

Each module of this package is one bonus, named after the module and registered with
`@register_bonus`; its defaults are `configs/bonus/<name>.yaml`. A bonus's module is imported only
when the bonus is built, so actors and runs without it never load its code (Motif's LLM stack, say).
Shared building blocks live in `rlzoo.bonuses.common`.
"""
from __future__ import annotations

from typing import Any

import torch

from rlzoo import CONFIG_DIR
from rlzoo.bonuses.common.base import BONUS_REGISTRY, Bonus, bonus_class, bonus_names, create_bonus, register_bonus


def bonus_options() -> list[str]:
    """Every `bonus=<option>` (configs/bonus/*.yaml: the methods and their combinations), `none` first."""
    return sorted((p.stem for p in (CONFIG_DIR / "bonus").glob("*.yaml")), key=lambda name: (name != "none", name))


def runnable_bonus_options() -> list[str]:
    """The options a run can use with nothing but its config (not Motif's trained reward model or
    ONI's LLM server): what tests and benchmarks cover by default."""
    from rlzoo.config import load_config

    return [option for option in bonus_options()
            if option == "none" or bonus_class(load_config([f"bonus={option}"]).bonus.name).requires is None]


def build_bonus(bonus_cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any,
                compute_dtype: torch.dtype = torch.float32) -> Bonus | None:
    """The bonus named by `bonus_cfg.name` for `num_envs` environments (ids 0 … num_envs−1) on
    `device`, its networks computing in `compute_dtype`; None for `none`."""
    if bonus_cfg.get("name") == "none":
        return None
    return create_bonus(bonus_cfg, spec, model_cfg, num_envs, device, compute_dtype)


def needs_intrinsic_value_head(bonus_cfg: Any) -> bool:
    """Whether the policy needs a second value head: the bonus trains a separate intrinsic stream."""
    return bonus_cfg.get("name") != "none" and bool(bonus_cfg.get("separate_value_head", False))


__all__ = ["BONUS_REGISTRY", "Bonus", "bonus_class", "bonus_names", "bonus_options", "build_bonus",
           "needs_intrinsic_value_head", "register_bonus", "runnable_bonus_options"]
