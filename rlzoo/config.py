"""Composing and validating the Hydra config.

Hydra already rejects unknown config groups, options and keys. This module checks the values:
each check names the key, the bad value and what is allowed, and runs before any worker starts.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterable, NoReturn, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rlzoo import CONFIG_DIR
from rlzoo.algos.appo import ADVANTAGES
from rlzoo.algos.augmentations import AUGMENTATIONS
from rlzoo.algos.objective import ALGORITHMS
from rlzoo.algos.rewards import REWARD_CLIPS
from rlzoo.models.precision import DEVICES, PRECISIONS



def available_cpus() -> int:
    """CPUs this process may run on (the Slurm/cgroup allocation, not the whole machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class ConfigError(ValueError):
    """A config value is wrong; the message names the key, the value and what is allowed."""


def load_config(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """Compose the config as `rlzoo-train` would, outside of a Hydra app (notebooks, tests)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def _get(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, throw_on_missing=True)
    return value


def check_choice(cfg: DictConfig, key: str, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    value = _get(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {allowed}")


def check_number(
    cfg: DictConfig,
    key: str,
    *,
    integer: bool = False,
    min_value: float | None = None,
    max_value: float | None = None,
    min_inclusive: bool = True,
) -> None:
    value = _get(cfg, key)
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(f"{key}={value!r} must be {kind}")
    if min_value is not None:
        too_small = value < min_value if min_inclusive else value <= min_value
        if too_small:
            bound = ">=" if min_inclusive else ">"
            raise ConfigError(f"{key}={value!r} must be {bound} {min_value}")
    if max_value is not None and value > max_value:
        raise ConfigError(f"{key}={value!r} must be <= {max_value}")


def check_bool(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")


def plain_name(value: Any, key: str = "run_name") -> str:
    """`value` if it is usable as one path component (no separators, no `..`), else ConfigError.

    Registered as the `plain_name` resolver, so the run directory's pattern in config.yaml rejects a
    name that would leave output_root before Hydra creates any folder.
    """
    if not isinstance(value, str) or not value or ".." in value or "/" in value or "\\" in value or "\0" in value:
        raise ConfigError(f"{key}={value!r} must be a plain name (no '/', '\\' or '..'): it names a folder "
                          f"under output_root")
    return value


OmegaConf.register_new_resolver("plain_name", plain_name, replace=True)


def check_plain_name(cfg: DictConfig, key: str) -> None:
    plain_name(_get(cfg, key), key)


def exit_with_config_error(err: ConfigError) -> NoReturn:
    """A user mistake, not a bug: one clear line instead of a stack trace, exit status 2."""
    print(f"rlzoo-train: config error: {err}", file=sys.stderr)
    sys.exit(2)


def create_output_dir(path: Path, output_root: Any) -> None:
    """mkdir -p `path`, a directory below `output_root`; ConfigError naming output_root if impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output_root={output_root!r}: cannot create {path}: {err.strerror or err}; "
                          "choose a writable folder") from None


class CreateOutputDir(Callback):
    """Hydra callback (config.yaml, hydra.callbacks): creates the run or sweep directory before Hydra
    does, so that a bad output_root or run_name stops the command with one line, not a stack trace."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._create(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._create(config, "hydra.sweep.dir")  # each job's subdir is made by its launcher

    @staticmethod
    def _create(config: DictConfig, key: str) -> None:
        try:
            plain_name(config.run_name)  # the run directory's pattern would fail on it, as a stack trace
            create_output_dir(Path(str(OmegaConf.select(config, key))), config.output_root)
        except ConfigError as err:
            exit_with_config_error(err)


def validate(cfg: DictConfig) -> None:
    """Check the values the trainer itself reads; env/model/bonus factories check their own."""
    check_plain_name(cfg, "run_name")
    # Below 2^32 the evaluation seed streams provably differ from every training stream (envs/vec_env.py).
    check_number(cfg, "seed", integer=True, min_value=0, max_value=2**32 - 1)
    check_number(cfg, "total_steps", integer=True, min_value=1)
    check_number(cfg, "time_limit_s", min_value=0)

    check_choice(cfg, "algo.optimizer", ["rmsprop", "adam"])
    check_number(cfg, "algo.lr", min_value=0, min_inclusive=False)
    check_choice(cfg, "algo.lr_decay", ["linear", "none"])
    if cfg.algo.lr_decay_steps is not None:
        check_number(cfg, "algo.lr_decay_steps", integer=True, min_value=1)
    check_number(cfg, "algo.alpha", min_value=0, max_value=1)
    check_number(cfg, "algo.eps", min_value=0, min_inclusive=False)
    check_number(cfg, "algo.momentum", min_value=0)
    check_number(cfg, "algo.discount", min_value=0, max_value=1)
    check_number(cfg, "algo.entropy_cost", min_value=0)
    check_number(cfg, "algo.baseline_cost", min_value=0)
    clip = cfg.algo.reward_clip
    if clip not in REWARD_CLIPS and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
        raise ConfigError(f"algo.reward_clip={clip!r} is not allowed; choose one of {list(REWARD_CLIPS)} "
                          "or a positive number c (clip to [-c, c])")
    check_choice(cfg, "algo.loss_reduction", ["sum", "time_sum_batch_mean"])
    check_number(cfg, "algo.grad_norm_clip", min_value=0)
    for key in ("algo.rho_bar", "algo.c_bar", "algo.pg_rho_bar"):
        check_number(cfg, key, min_value=0, min_inclusive=False)
    check_choice(cfg, "algo.name", [*ALGORITHMS, "bc"])
    if cfg.algo.name == "appo":
        if cfg.algo.loss_reduction != "sum":
            raise ConfigError(f"algo.loss_reduction={cfg.algo.loss_reduction!r} applies to IMPALA's summed losses; "
                              "APPO's are means over the minibatch: use algo.loss_reduction=sum")
        check_choice(cfg, "algo.advantages", ADVANTAGES)
        check_number(cfg, "algo.gae_lambda", min_value=0, max_value=1)
        check_number(cfg, "algo.clip_ratio", min_value=0, min_inclusive=False)
        check_number(cfg, "algo.clip_value", min_value=0)
        check_bool(cfg, "algo.normalize_advantages")
        check_bool(cfg, "algo.normalize_returns")
        if cfg.algo.normalize_returns and cfg.algo.advantages == "vtrace":
            raise ConfigError("algo.normalize_returns=true needs algo.advantages=gae: the returns are normalised "
                              "once per batch, V-trace's change every minibatch (as in Sample Factory); set "
                              "algo.normalize_returns=false for V-trace")
    _check_minibatches(cfg)
    _check_drac(cfg)

    check_choice(cfg, "runtime.name", ["ray", "serial"])
    for key in ("runtime.num_actors", "runtime.envs_per_actor", "runtime.unroll_length",
                "runtime.batch_size", "runtime.broadcast_interval", "runtime.inflight_per_actor",
                "runtime.learners"):
        check_number(cfg, key, integer=True, min_value=1)
    check_number(cfg, "runtime.learner_threads", integer=True, min_value=0)
    check_number(cfg, "runtime.learner_chunk", integer=True, min_value=0)
    check_choice(cfg, "runtime.device", DEVICES)
    check_choice(cfg, "runtime.precision", list(PRECISIONS))
    check_bool(cfg, "runtime.allow_oversubscribe")
    if cfg.runtime.batch_size % cfg.runtime.envs_per_actor:
        raise ConfigError(
            f"runtime.batch_size={cfg.runtime.batch_size} must be a multiple of "
            f"runtime.envs_per_actor={cfg.runtime.envs_per_actor} (a batch is made of whole unrolls)"
        )
    if cfg.runtime.batch_size % cfg.runtime.learners:
        raise ConfigError(
            f"runtime.batch_size={cfg.runtime.batch_size} must be divisible by "
            f"runtime.learners={cfg.runtime.learners} (each learner takes an equal share)"
        )
    if cfg.runtime.name == "ray" and cfg.runtime.ray_address is None and not cfg.runtime.allow_oversubscribe:
        cpus = available_cpus()
        if cfg.runtime.num_actors > cpus:
            raise ConfigError(
                f"runtime.num_actors={cfg.runtime.num_actors} is more than the {cpus} CPUs of this "
                "machine; lower it, or set runtime.allow_oversubscribe=true to run them anyway"
            )
    if cfg.runtime.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("runtime.device='cuda' but no CUDA device is available; use auto or cpu")
    if not isinstance(cfg.resume, str) or not cfg.resume:
        raise ConfigError(f"resume={cfg.resume!r} must be auto, never, or the path of a run directory")
    check_bool(cfg, "requeue_on_signal")
    check_number(cfg, "runtime.env_step_timeout_s", min_value=0)
    check_number(cfg, "runtime.rollout_timeout_s", min_value=0, min_inclusive=False)
    check_bool(cfg, "logger.wandb")
    check_number(cfg, "logger.log_interval_s", min_value=0, min_inclusive=False)
    _validate_checkpoint(cfg)
    _validate_eval(cfg)
    init_parts(cfg)
    if cfg.init_from is not None and (not isinstance(cfg.init_from, str) or not cfg.init_from):
        raise ConfigError(f"init_from={cfg.init_from!r} must be null or the path of a run directory or checkpoint")


def _validate_checkpoint(cfg: DictConfig) -> None:
    check_number(cfg, "checkpoint.interval_s", min_value=0, min_inclusive=False)
    check_number(cfg, "checkpoint.keep_last", integer=True, min_value=0)
    check_number(cfg, "checkpoint.keep_every_steps", integer=True, min_value=0)
    metric = cfg.checkpoint.best_metric
    if metric is not None and (not isinstance(metric, str) or not metric.startswith("eval/")):
        raise ConfigError(f"checkpoint.best_metric={metric!r} must be null or an evaluation metric "
                          "(eval/return, eval/success, eval/score, ...)")
    check_choice(cfg, "checkpoint.best_mode", ["max", "min"])


def _validate_eval(cfg: DictConfig) -> None:
    for key in ("eval.interval_steps", "eval.video_interval"):
        check_number(cfg, key, integer=True, min_value=0)
    for key in ("eval.episodes", "eval.num_envs", "eval.max_video_frames", "eval.num_cpus"):
        check_number(cfg, key, integer=True, min_value=1)
    check_bool(cfg, "eval.greedy")
    check_bool(cfg, "eval.final")
    check_number(cfg, "eval.timeout_s", min_value=0, min_inclusive=False)
    interval, batch_steps = cfg.eval.interval_steps, cfg.runtime.batch_size * cfg.runtime.unroll_length
    if 0 < interval < batch_steps:
        raise ConfigError(
            f"eval.interval_steps={interval} is below one learner batch (runtime.batch_size × "
            f"runtime.unroll_length = {batch_steps} env steps); use 0 (no evaluation) or at least {batch_steps}"
        )
    if cfg.eval.video_interval and not interval:
        raise ConfigError(f"eval.video_interval={cfg.eval.video_interval} needs evaluation while training; "
                          "set eval.interval_steps > 0 as well, or eval.video_interval=0")


INIT_PARTS = ("model", "optimizer", "bonus")


def init_parts(cfg: DictConfig) -> tuple[str, ...]:
    """`init_from_parts` as a tuple: a list (`[model,optimizer]`) or a comma-separated string."""
    value = cfg.init_from_parts
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    else:
        parts = [str(p) for p in value] if OmegaConf.is_list(value) else []
    if "model" not in parts or not set(parts) <= set(INIT_PARTS):
        raise ConfigError(f"init_from_parts={value!r} must list model and optionally optimizer and bonus, "
                          "e.g. init_from_parts=[model,optimizer]")
    return tuple(dict.fromkeys(parts))


def _check_minibatches(cfg: DictConfig) -> None:
    check_number(cfg, "algo.epochs", integer=True, min_value=1)
    check_number(cfg, "algo.minibatches", integer=True, min_value=1)
    check_bool(cfg, "algo.shuffle_minibatches")
    columns, learners = cfg.runtime.batch_size, cfg.runtime.learners
    if not isinstance(columns, int) or not isinstance(learners, int) or columns < 1 or learners < 1:
        return  # reported by the runtime checks
    # A minibatch is whole columns, split evenly between the learner replicas.
    allowed = [m for m in range(1, columns + 1) if columns % (m * learners) == 0]
    if cfg.algo.minibatches not in allowed:
        raise ConfigError(
            f"algo.minibatches={cfg.algo.minibatches!r} must split runtime.batch_size={columns} columns into equal "
            f"minibatches{f' of a multiple of runtime.learners={learners} columns' if learners > 1 else ''}; "
            f"choose one of {allowed}"
        )


def _check_drac(cfg: DictConfig) -> None:
    check_choice(cfg, "algo.drac.augmentation", ["none", "ucb", *AUGMENTATIONS])
    check_number(cfg, "algo.drac.coef", min_value=0)
    check_number(cfg, "algo.drac.ucb_exploration_coef", min_value=0)
    check_number(cfg, "algo.drac.ucb_window", integer=True, min_value=1)
    check_number(cfg, "algo.drac.return_lambda", min_value=0, max_value=1)
    if cfg.algo.drac.augmentation != "none" and cfg.env.family != "procgen":
        raise ConfigError(
            f"algo.drac.augmentation={cfg.algo.drac.augmentation!r} augments images: it needs env.family=procgen, "
            f"not {cfg.env.family!r} (use algo.drac.augmentation=none)"
        )
