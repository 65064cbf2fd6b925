"""Environment names, config validation and the family dispatch behind `make_vec_env`/`env_spec`."""
from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlzoo import CONFIG_DIR
from rlzoo.envs.vec_env import EnvSpec, VecEnv

FAMILIES = ("nethack", "minihack", "procgen", "minigrid")

NETHACK_TASKS = (
    "NetHackScore-v0",
    "NetHackStaircase-v0",
    "NetHackStaircasePet-v0",
    "NetHackOracle-v0",
    "NetHackGold-v0",
    "NetHackEat-v0",
    "NetHackScout-v0",
    "NetHackChallenge-v0",
)

PROCGEN_GAMES = (
    "bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot",
    "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot",
)  # fmt: skip

PROCGEN_DISTRIBUTION_MODES = ("easy", "hard", "extreme", "memory", "exploration")
# Modes only some games implement; procgen's C++ aborts the whole process on other games.
# ("exploration" is a single fixed hard level per game.)
NETHACK_OBSERVATIONS = ("symbolic", "tty", "both")  # env.observation: what a NetHack/MiniHack agent sees
# NetHack only (rlzoo/envs/nethack_prompt_fixes.py): how prompts are answered, which keys the agent has.
PROMPT_FIXES = ("none", "motif", "oni")
ACTION_SETS = ("task", "oni_extended")

PROCGEN_MODE_GAMES = {
    "extreme": ("chaser", "dodgeball", "leaper", "starpilot"),
    "memory": ("caveflyer", "dodgeball", "heist", "jumper", "maze", "miner"),
    "exploration": ("caveflyer", "climber", "coinrun", "heist", "jumper", "leaper", "maze", "ninja"),
}



@functools.cache
def family_defaults(family: str) -> dict[str, Any]:
    """The keys a family accepts with their defaults: configs/env/<family>.yaml, the one source of
    truth. `family` and `name` are required; anything else in an env config is a typo and is rejected."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "env" / f"{family}.yaml"), resolve=True)
    return {**defaults, "family": None, "name": None}


@functools.cache
def minihack_tasks() -> tuple[str, ...]:
    """Every MiniHack task registered with gymnasium."""
    import gymnasium

    from rlzoo.envs.nethack import import_minihack

    import_minihack()

    return tuple(sorted(k for k in gymnasium.registry if k.startswith("MiniHack-")))


def family_names(family: str) -> tuple[str, ...]:
    """Valid `env.name` values of one family."""
    if family == "nethack":
        return NETHACK_TASKS
    if family == "minihack":
        return minihack_tasks()
    if family == "procgen":
        return PROCGEN_GAMES
    if family == "minigrid":
        from rlzoo.envs.minigrid import register_minigrid_ids

        return register_minigrid_ids()
    raise _bad_value("env.family", family, FAMILIES)


def _bad_value(key: str, value: Any, allowed: Sequence[str], hint: str = "") -> ValueError:
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=3, cutoff=0.5)
    if close:
        suggestion = f"did you mean {' or '.join(repr(c) for c in close)}?"
    elif len(allowed) <= 20:
        suggestion = f"allowed: {', '.join(map(str, allowed))}"
    else:
        suggestion = f"{len(allowed)} valid names, none close"
    return ValueError(f"{key}={value!r} is not valid; {suggestion}{hint}")


def _family_of(name: str) -> str | None:
    for family in ("nethack", "procgen", "minigrid", "minihack"):  # cheapest lookups first
        if name in family_names(family):
            return family
    return None


def _check_int(cfg: Mapping[str, Any], key: str, minimum: int, allow_none: bool = False) -> None:
    value = cfg[key]
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = f"an integer >= {minimum}" + (" or null" if allow_none else "")
        raise ValueError(f"env.{key}={value!r} is not valid; expected {expected}")


def validate_env_cfg(env_cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """Check an env config and return it as a plain dict with every key filled in.

    `family` may be omitted (it is inferred from `name`). Raises ValueError naming the bad key.
    """
    if isinstance(env_cfg, DictConfig):
        cfg = OmegaConf.to_container(env_cfg, resolve=True)
    else:
        cfg = dict(env_cfg)
    name = cfg.get("name")
    if not isinstance(name, str):
        raise ValueError(f"env.name must be a string, got {name!r}")
    family = cfg.get("family")
    if family is None:
        family = _family_of(name)
        if family is None:
            everything = [n for f in FAMILIES for n in family_names(f)]
            raise _bad_value("env.name", name, everything)
    elif family not in FAMILIES:
        raise _bad_value("env.family", family, FAMILIES)
    names = family_names(family)
    if name not in names:
        owner = _family_of(name)
        hint = f" ({name!r} is a {owner} env: use env={owner})" if owner else ""
        raise _bad_value("env.name", name, names, hint)

    allowed_keys = family_defaults(family)
    unknown = sorted(set(cfg) - set(allowed_keys))
    if unknown:
        raise ValueError(
            f"unknown env key(s) {unknown} for family {family!r}; allowed: {sorted(allowed_keys)}"
        )
    cfg = {**allowed_keys, **cfg, "family": family}
    if not isinstance(cfg["env_kwargs"], Mapping):
        raise ValueError(f"env.env_kwargs must be a mapping, got {cfg['env_kwargs']!r}")

    if family in ("nethack", "minihack"):
        _check_int(cfg, "max_episode_steps", 1, allow_none=True)
        for key in ("fix_moon_phase", "share_nethack_code", "fast_reset"):
            if not isinstance(cfg[key], bool):
                raise ValueError(f"env.{key} must be true or false, got {cfg[key]!r}")
        if cfg["observation"] not in NETHACK_OBSERVATIONS:
            raise _bad_value("env.observation", cfg["observation"], NETHACK_OBSERVATIONS)
        _check_recording(cfg)
        if family == "nethack":
            _check_prompt_fixes(cfg)
    elif family == "minigrid":
        _check_int(cfg, "max_episode_steps", 1, allow_none=True)
        for key in ("num_levels", "start_level"):
            _check_int(cfg, key, 0)
        if not isinstance(cfg["full_grid"], bool):
            raise ValueError(f"env.full_grid must be true or false, got {cfg['full_grid']!r}")
    else:
        mode = cfg["distribution_mode"]
        if mode not in PROCGEN_DISTRIBUTION_MODES:
            raise _bad_value("env.distribution_mode", mode, PROCGEN_DISTRIBUTION_MODES)
        if mode in PROCGEN_MODE_GAMES and name not in PROCGEN_MODE_GAMES[mode]:
            raise ValueError(
                f"env.name={name!r} has no env.distribution_mode={mode!r}; the games with it: "
                f"{', '.join(PROCGEN_MODE_GAMES[mode])}"
            )
        for key in ("num_levels", "start_level", "eval_num_levels", "num_threads"):
            _check_int(cfg, key, 0)
        _check_int(cfg, "eval_start_level", 0, allow_none=True)
        if cfg["eval_start_level"] is None:  # right after the training levels
            cfg["eval_start_level"] = cfg["start_level"] + cfg["num_levels"]
        _check_held_out(cfg)
    return cfg


def _check_recording(cfg: Mapping[str, Any]) -> None:
    _check_int(cfg, "save_ttyrec_every", 0)
    directory = cfg["ttyrec_dir"]
    if directory is not None and (not isinstance(directory, str) or not directory):
        raise ValueError(f"env.ttyrec_dir={directory!r} is not valid; expected a directory path or null")
    if cfg["save_ttyrec_every"] and directory is None:
        raise ValueError(
            f"env.save_ttyrec_every={cfg['save_ttyrec_every']} needs env.ttyrec_dir, the directory the "
            "ttyrecs go to (e.g. <run dir>/ttyrecs)"
        )


def _check_prompt_fixes(cfg: Mapping[str, Any]) -> None:
    if cfg["prompt_fixes"] not in PROMPT_FIXES:
        raise _bad_value("env.prompt_fixes", cfg["prompt_fixes"], PROMPT_FIXES)
    if cfg["action_set"] not in ACTION_SETS:
        raise _bad_value("env.action_set", cfg["action_set"], ACTION_SETS)
    if cfg["action_set"] == "oni_extended" and cfg["prompt_fixes"] != "oni":
        raise ValueError(f"env.action_set=oni_extended needs env.prompt_fixes=oni (it answers the CAST and QUAFF "
                         f"prompts), got env.prompt_fixes={cfg['prompt_fixes']!r}")
    if cfg["name"] == "NetHackChallenge-v0" and (cfg["prompt_fixes"], cfg["action_set"]) != ("none", "task"):
        raise ValueError("env.prompt_fixes / env.action_set apply to the tasks with NLE's prompt skipping; "
                         "NetHackChallenge-v0 has the full keyboard and skips nothing: keep none / task")


def _check_held_out(cfg: Mapping[str, Any]) -> None:
    """Evaluation levels must not overlap the training levels (num_levels 0 = all seeds, for which
    an overlap with a finite training set has negligible probability, as in the Procgen paper)."""
    train, evaluation = cfg["num_levels"], cfg["eval_num_levels"]
    if train == 0 or evaluation == 0:
        return
    lo, hi = cfg["start_level"], cfg["start_level"] + train
    eval_lo, eval_hi = cfg["eval_start_level"], cfg["eval_start_level"] + evaluation
    if eval_lo < hi and lo < eval_hi:
        raise ValueError(
            f"evaluation levels [{eval_lo}, {eval_hi}) overlap training levels [{lo}, {hi}); "
            f"set env.eval_start_level >= {hi} or env.eval_num_levels=0"
        )


def eval_env_cfg(env_cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The config to evaluate on: Procgen's held-out levels (by default the ones right after the training
    levels); other families are unchanged (their evaluation differs by its seeds: `make_vec_env(...,
    evaluation=True)`)."""
    cfg = validate_env_cfg(env_cfg)
    if cfg["family"] == "procgen":
        cfg["num_levels"], cfg["start_level"] = cfg["eval_num_levels"], cfg["eval_start_level"]
        cfg["eval_num_levels"] = 0  # these levels have no held-out levels of their own
    return cfg


def env_spec(env_cfg: Mapping[str, Any] | DictConfig) -> EnvSpec:
    """Observation space and action count of the configured environment."""
    cfg = validate_env_cfg(env_cfg)
    if cfg["family"] == "procgen":
        from rlzoo.envs.procgen import procgen_spec

        return procgen_spec(cfg)
    if cfg["family"] == "minigrid":
        from rlzoo.envs.minigrid import minigrid_spec

        return minigrid_spec(cfg)
    from rlzoo.envs.nethack import nethack_spec

    return nethack_spec(cfg)


def make_vec_env(
    env_cfg: Mapping[str, Any] | DictConfig,
    num_envs: int,
    seed: int,
    env_id_offset: int = 0,
    *,
    render: bool = False,
    evaluation: bool = False,
) -> VecEnv:
    """`num_envs` auto-resetting environments; environment i is seeded from (seed, env_id_offset+i).

    `render=True` additionally keeps what `VecEnv.render` needs (terminal screen / full-size frame;
    MiniGrid draws its frame from the grid whenever asked); leave it off for training.
    `evaluation=True` seeds from streams no training environment ever uses (`envs/vec_env.py`), so
    evaluation games are never training games.
    """
    cfg = validate_env_cfg(env_cfg)
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    if cfg["family"] == "procgen":
        from rlzoo.envs.procgen import ProcgenVecEnv

        return ProcgenVecEnv(cfg, num_envs, seed, env_id_offset, render=render, evaluation=evaluation)
    if cfg["family"] == "minigrid":
        from rlzoo.envs.minigrid import make_minigrid_vec_env

        return make_minigrid_vec_env(cfg, num_envs, seed, env_id_offset, evaluation=evaluation)
    from rlzoo.envs.nethack import make_nethack_vec_env

    return make_nethack_vec_env(cfg, num_envs, seed, env_id_offset, render=render, evaluation=evaluation)
