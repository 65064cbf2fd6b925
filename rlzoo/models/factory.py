"""Model names, config validation and `build_model` / `build_torso`."""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from rlzoo.envs.vec_env import EnvSpec
from rlzoo.models.impala_cnn import ImpalaCNNTorso
from rlzoo.models.minigrid_net import MiniGridTorso
from rlzoo.models.nethack_net import NetHackTorso
from rlzoo.models.policy import Policy
from rlzoo.models.tty_net import TtyTorso

# model.name -> env families it can read.
MODEL_FAMILIES = {
    "nethack_cnn": ("nethack", "minihack"),
    "tty_cnn": ("nethack", "minihack"),
    "impala_cnn": ("procgen",),
    "minigrid_cnn": ("minigrid",),
}
# model.name -> observations it reads, and the env.observation setting that delivers them.
_MODEL_INPUTS = {
    "nethack_cnn": (("crop", "blstats"), "env.observation=symbolic or both"),
    "tty_cnn": (TtyTorso.input_keys, "env.observation=tty or both"),
}

_INT, _INT_LIST, _BOOL = "a positive integer", "a non-empty list of positive integers", "true or false"
_ODD = "an odd positive integer"
_SIZES = "a list of positive integers (may be empty)"
_SCALE = "a positive number"
# model.name -> {key: kind}; every key is required so that configs state their sizes explicitly.
_MODEL_KEYS = {
    "nethack_cnn": {
        "glyph_embedding_dim": _INT,
        "use_full_map": _BOOL,
        "map_channels": _INT_LIST,
        "crop_channels": _INT_LIST,
        "blstats_hidden": _INT_LIST,
        "use_message": _BOOL,
        "message_embedding_dim": _INT,
        "message_out_dim": _INT,
        "fc_sizes": _INT_LIST,
        "lstm_size": "an integer >= 0",
    },
    "tty_cnn": {
        "char_embedding_dim": _INT,
        "color_embedding_dim": _INT,
        "text_channels": _INT,
        "message_out_dim": _INT,
        "status_out_dim": _INT,
        "crop_size": _ODD,
        "crop_channels": _INT_LIST,
        "screen_channels": _INT_LIST,
        "fc_sizes": _INT_LIST,
        "lstm_size": "an integer >= 0",
    },
    "impala_cnn": {
        "channels": _INT_LIST,
        "num_blocks": _INT,
        "fc_size": _INT,
        "lstm_size": "an integer >= 0",
    },
    "minigrid_cnn": {
        "conv_channels": _INT_LIST,
        "fc_sizes": _SIZES,
        "input_scale": _SCALE,
        "lstm_size": "an integer >= 0",
    },
}


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _valid(value: Any, kind: str) -> bool:
    if kind == _INT:
        return _is_int(value, 1)
    if kind == _INT_LIST:
        return isinstance(value, list) and bool(value) and all(_is_int(v, 1) for v in value)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _ODD:
        return _is_int(value, 1) and value % 2 == 1
    if kind == _SIZES:
        return isinstance(value, list) and all(_is_int(v, 1) for v in value)
    if kind == _SCALE:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return _is_int(value, 0)


def validate_model_cfg(model_cfg: Mapping[str, Any] | DictConfig, spec: EnvSpec) -> dict[str, Any]:
    """Check a model config against the env it will read; returns it as a plain dict."""
    if isinstance(model_cfg, DictConfig):
        cfg = OmegaConf.to_container(model_cfg, resolve=True)
    else:
        cfg = dict(model_cfg)
    name = cfg.get("name")
    if name not in MODEL_FAMILIES:
        close = difflib.get_close_matches(str(name), list(MODEL_FAMILIES), n=2, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(MODEL_FAMILIES)}"
        raise ValueError(f"model.name={name!r} is not valid; {hint}")
    if spec.family not in MODEL_FAMILIES[name]:
        fitting = [m for m, families in MODEL_FAMILIES.items() if spec.family in families]
        raise ValueError(
            f"model.name={name!r} cannot read {spec.family} observations (env {spec.name}); "
            f"use model.name in {fitting}"
        )
    if name in _MODEL_INPUTS:
        needed, setting = _MODEL_INPUTS[name]
        missing_obs = [key for key in needed if key not in spec.obs_space]
        if missing_obs:
            raise ValueError(
                f"model.name={name!r} reads {missing_obs}, which env {spec.name} does not deliver; "
                f"set {setting}"
            )
    kinds = _MODEL_KEYS[name]
    unknown = sorted(set(cfg) - set(kinds) - {"name"})
    missing = sorted(set(kinds) - set(cfg))
    if unknown or missing:
        raise ValueError(
            f"model config for {name!r}: unknown keys {unknown}, missing keys {missing}; "
            f"expected {sorted(kinds)}"
        )
    for key, kind in kinds.items():
        if not _valid(cfg[key], kind):
            raise ValueError(f"model.{key}={cfg[key]!r} is not valid; expected {kind}")
    return cfg


def build_torso(model_cfg: Mapping[str, Any] | DictConfig, spec: EnvSpec) -> nn.Module:
    """Feature extractor without recurrence: obs dict of [N, ...] tensors -> [N, torso.out_dim]."""
    cfg = validate_model_cfg(model_cfg, spec)
    if cfg["name"] == "impala_cnn":
        return ImpalaCNNTorso(spec, cfg["channels"], cfg["num_blocks"], cfg["fc_size"])
    if cfg["name"] == "minigrid_cnn":
        return MiniGridTorso(spec, cfg["conv_channels"], cfg["fc_sizes"], float(cfg["input_scale"]))
    if cfg["name"] == "tty_cnn":
        return TtyTorso(**{key: value for key, value in cfg.items() if key not in ("name", "lstm_size")})
    return NetHackTorso(
        spec,
        glyph_embedding_dim=cfg["glyph_embedding_dim"],
        use_full_map=cfg["use_full_map"],
        map_channels=cfg["map_channels"],
        crop_channels=cfg["crop_channels"],
        blstats_hidden=cfg["blstats_hidden"],
        use_message=cfg["use_message"],
        message_embedding_dim=cfg["message_embedding_dim"],
        message_out_dim=cfg["message_out_dim"],
        fc_sizes=cfg["fc_sizes"],
    )


def build_model(
    model_cfg: Mapping[str, Any] | DictConfig, spec: EnvSpec, intrinsic_value_head: bool = False
) -> Policy:
    """Torso + optional LSTM (model.lstm_size > 0) + policy and value heads."""
    torso = build_torso(model_cfg, spec)
    return Policy(torso, spec.num_actions, model_cfg["lstm_size"], intrinsic_value_head)
