"""The `Bonus` interface, its registry, config validation and the per-environment unroll order check.

A bonus is owned by the learner. Per batch the learner calls `intrinsic_reward(batch)` and then
`update(batch)`; the batch is an `rlzoo.unroll.Batch` of torch tensors (docs/design.md).
"""
from __future__ import annotations

import contextlib
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from rlzoo.bonuses.common.normalization import IntrinsicNormalizer, NORMALIZE_MODES
from rlzoo.models.precision import autocast
from rlzoo.unroll import Batch

BONUS_REGISTRY: dict[str, type["Bonus"]] = {}
BONUS_PACKAGE = "rlzoo.bonuses"
OPTIMIZERS = ("adam", "rmsprop")


def register_bonus(name: str) -> Callable[[type["Bonus"]], type["Bonus"]]:
    """Class decorator: make a bonus selectable as `bonus.name: <name>`; `name` is its module's name."""

    def decorate(cls: type["Bonus"]) -> type["Bonus"]:
        module = cls.__module__.rpartition(".")[2]
        if module != name and cls.__module__.startswith(BONUS_PACKAGE + "."):
            raise ValueError(f"bonus {name!r} must live in {BONUS_PACKAGE}.{name} (found in {cls.__module__})")
        if BONUS_REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"bonus {name!r} is registered twice")
        cls.name = name
        BONUS_REGISTRY[name] = cls
        return cls

    return decorate


def bonus_names() -> tuple[str, ...]:
    """Every bonus rlzoo ships: the modules of `rlzoo/bonuses/`, one bonus each, none imported."""
    package = importlib.import_module(BONUS_PACKAGE)
    return tuple(sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.ispkg))


def bonus_class(name: str) -> type["Bonus"]:
    """The class of bonus `name`, importing its module now (so unused bonuses cost nothing)."""
    if name not in BONUS_REGISTRY:
        names = bonus_names()
        if name not in names:
            raise ValueError(f"bonus.name={name!r} is not a known bonus; allowed: {', '.join(['none', *names])}")
        importlib.import_module(f"{BONUS_PACKAGE}.{name}")
        if name not in BONUS_REGISTRY:
            raise ValueError(f"{BONUS_PACKAGE}.{name} registers no bonus (decorate its class with "
                             f"@register_bonus({name!r}))")
    return BONUS_REGISTRY[name]


def create_bonus(cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any,
                 compute_dtype: torch.dtype = torch.float32) -> "Bonus":
    """Build the bonus named by `cfg.name`, place it on `device` and give it its optimizer.

    `compute_dtype` is the learner's precision (models/precision.py), used by the bonus's networks.
    """
    cls = bonus_class(cfg_get(cfg, "name", str))
    if spec.family not in cls.families:
        raise ValueError(f"bonus={cls.name} reads {cls.needs or 'what it needs'}; env family {spec.family!r} has none "
                         f"(it runs on: {', '.join(cls.families)})")
    bonus = cls(cfg, spec, model_cfg, num_envs, device)
    bonus.to(bonus.device)  # buffers too (normalisers, C⁻¹): nothing may stay behind on the CPU
    for part in bonus.modules():  # a combined bonus holds its parts as submodules
        if isinstance(part, Bonus):
            part.compute_dtype = compute_dtype
    parameters = bonus.trainable_parameters()
    if parameters:
        bonus.optimizer = bonus.make_optimizer(parameters)
    return bonus


_MISSING = object()


def cfg_get(cfg: Any, key: str, kind: type, choices: tuple | None = None, default: Any = _MISSING) -> Any:
    """Read `cfg[key]`, check its type (and allowed values); errors name `bonus.<key>`."""
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    if value is _MISSING:
        raise ValueError(f"bonus.{key} is required")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"bonus.{key}={value!r} must be of type {kind.__name__}")
    if choices is not None and value not in choices:
        raise ValueError(f"bonus.{key}={value!r}; allowed: {', '.join(map(str, choices))}")
    return value


def batch_waves(env_ids: np.ndarray) -> list[np.ndarray]:
    """Split batch columns into waves in which each env appears at most once, keeping column order.

    A batch may hold several consecutive unrolls of one environment; they must be processed one
    after the other, so the k-th occurrence of each env goes to wave k.
    """
    occurrence = np.zeros(len(env_ids), dtype=np.int64)
    seen: dict[int, int] = {}
    for col, env in enumerate(env_ids.tolist()):
        occurrence[col] = seen.get(env, 0)
        seen[env] = occurrence[col] + 1
    return [np.flatnonzero(occurrence == k) for k in range(int(occurrence.max(initial=-1)) + 1)]


@dataclass
class BatchContext:
    """What the episodic bookkeeping needs to know about a batch, computed once per batch."""

    env_ids: torch.Tensor  # [B] int64, on the bonus's device
    dones: torch.Tensor  # [T, B] bool
    fresh: np.ndarray  # [B] bool: the env's episodic state starts here (new env_id or restarted env)
    waves: list[np.ndarray]  # column groups with each env at most once, in processing order


class Bonus(nn.Module):
    """Base class: subclasses implement `compute` (raw reward) and, if they train networks,
    `trainable_parameters` and `losses`.

    Common config fields (configs/bonus/common/defaults.yaml), read by the learner and validated here:
    `coef`, `extrinsic_coef`, `separate_value_head`, `int_discount`, `int_episodic`, `normalize`,
    `extrinsic_scale`, `extrinsic_clip`, `clip_total`, `reference_batch`, `grad_norm_clip`.
    """

    name: ClassVar[str] = ""
    # What a run needs beyond its config (a trained model, a server); None: nothing. Tests and
    # benchmarks cover the bonuses that need nothing by default.
    requires: ClassVar[str | None] = None
    # The environment families the bonus can read, and what the others lack (for the error).
    families: ClassVar[tuple[str, ...]] = ("nethack", "minihack", "procgen", "minigrid")
    needs: ClassVar[str | None] = None

    def __init__(self, cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any) -> None:
        super().__init__()
        if num_envs <= 0:
            raise ValueError(f"num_envs must be positive, got {num_envs}")
        self.cfg = cfg
        self.spec = spec
        self.model_cfg = model_cfg
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.compute_dtype = torch.float32  # set by create_bonus to the learner's precision
        self.num_actions = int(spec.num_actions)
        # Read by the learner; checked here so that a bad value fails before training starts.
        cfg_get(cfg, "coef", float)
        cfg_get(cfg, "extrinsic_coef", float)
        cfg_get(cfg, "separate_value_head", bool)
        cfg_get(cfg, "extrinsic_scale", float)
        cfg_get(cfg, "clip_total", bool)
        extrinsic_clip = cfg_get(cfg, "extrinsic_clip", object)
        if extrinsic_clip is not None and (isinstance(extrinsic_clip, bool) or not isinstance(extrinsic_clip, (int, float))
                                           or extrinsic_clip <= 0):
            raise ValueError(f"bonus.extrinsic_clip={extrinsic_clip!r} must be a positive number or null")
        int_discount = cfg_get(cfg, "int_discount", float)
        if not 0.0 <= int_discount <= 1.0:
            raise ValueError(f"bonus.int_discount={int_discount} must lie in [0, 1]")
        int_episodic = cfg_get(cfg, "int_episodic", bool)
        mode = cfg_get(cfg, "normalize", str, NORMALIZE_MODES)
        reference_batch = cfg_get(cfg, "reference_batch", int)
        if reference_batch < 1:
            raise ValueError(f"bonus.reference_batch={reference_batch} must be >= 1")
        self.normalizer = IntrinsicNormalizer(mode, num_envs, int_discount, int_episodic, reference_batch)
        self.grad_norm_clip = cfg_get(cfg, "grad_norm_clip", float)
        if self.grad_norm_clip < 0:
            raise ValueError(f"bonus.grad_norm_clip={self.grad_norm_clip} must be >= 0 (0 = no clipping)")
        # Last unroll index seen per env id; -1 = never seen.
        self.register_buffer("last_unroll_index", torch.full((num_envs,), -1, dtype=torch.int64))
        self.optimizer: torch.optim.Optimizer | None = None  # built by create_bonus
        # Weight of each named loss in the summed objective (1 when absent); losses log unweighted.
        self.loss_weights: dict[str, float] = {}
        self._pending: tuple[Batch, Any, dict[str, float]] | None = None

    # ---- subclass interface -------------------------------------------------------------------
    def compute(self, batch: Batch, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        """Raw intrinsic reward [T, B] and whatever `losses` needs (tensors may carry gradient).

        Advances the episodic state by this batch. Rewards of done transitions are zeroed after.
        """
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters `bonus.optimizer` trains (none by default)."""
        return []

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups whose gradient norms `bonus.grad_norm_clip` clips separately (the
        references clip each network on its own); one group by default."""
        return [self.trainable_parameters()]

    def losses(self, batch: Batch, aux: Any) -> dict[str, torch.Tensor]:
        """Named scalar losses of the bonus's networks, summed for one optimizer step."""
        return {}

    def close(self) -> None:
        """Release what the bonus started (threads, processes); called once when training ends."""

    # ---- learner interface --------------------------------------------------------------------
    def intrinsic_reward(self, batch: Batch) -> torch.Tensor:
        """Intrinsic reward [T, B] of every transition, normalised as configured, without gradient."""
        ctx = self.make_context(batch)
        return self.reward(batch, ctx)

    def update(self, batch: Batch) -> dict[str, float]:
        """One training step of the bonus's networks on `batch`; returns losses and metrics."""
        if self._pending is None or self._pending[0] is not batch:
            raise RuntimeError(f"{type(self).__name__}.update() must follow intrinsic_reward() on the same batch")
        _, aux, metrics = self._pending
        self._pending = None
        return {**metrics, **self.train_step(batch, aux)}

    # ---- shared machinery ---------------------------------------------------------------------
    def make_context(self, batch: Batch) -> BatchContext:
        """Check that each env's unrolls arrive in order and find where episodic state starts."""
        env_ids = batch.env_ids.to(self.device)
        ids = env_ids.cpu().numpy()
        index = batch.unroll_index.cpu().numpy()
        first0 = batch.first[0].cpu().numpy()
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_envs):
            raise ValueError(f"env_ids must lie in [0, {self.num_envs}) (num_envs given to build_bonus), got {ids.tolist()}")
        last = self.last_unroll_index.cpu().numpy().copy()
        fresh = np.zeros(len(ids), dtype=bool)
        for col, (env, idx) in enumerate(zip(ids.tolist(), index.tolist())):
            if last[env] < 0 or (idx == 0 and first0[col]):
                # A new env id, or an environment restarted from scratch (a resumed run): both begin
                # a new episode, so any carried episodic state is dropped.
                fresh[col] = True
            elif idx != last[env] + 1:
                raise RuntimeError(
                    f"unrolls of env_id {env} arrived out of order: got unroll_index {idx} after "
                    f"{last[env]}; episodic bonuses need each environment's unrolls in sequence"
                )
            last[env] = idx
        self.last_unroll_index.copy_(torch.from_numpy(last))
        return BatchContext(env_ids, batch.dones.to(self.device).bool(), fresh, batch_waves(ids))

    def reward(self, batch: Batch, ctx: BatchContext) -> torch.Tensor:
        """Raw reward → done-masked → normalised; keeps what `update` needs for this batch."""
        with torch.enable_grad():  # the learner may call us under no_grad; our losses reuse this pass
            raw, aux = self.compute(batch, ctx)
        raw = raw.detach().float().masked_fill(ctx.dones, 0.0)
        normalised = self.normalizer(raw, ctx.dones, ctx.env_ids, ctx.waves)
        metrics = {
            "bonus/int_raw_mean": raw.mean().item(),
            "bonus/int_raw_max": raw.max().item(),
            "bonus/int_mean": normalised.mean().item(),
            "bonus/int_max": normalised.max().item(),
        }
        self._pending = (batch, aux, metrics)
        return normalised

    def train_step(self, batch: Batch, aux: Any) -> dict[str, float]:
        losses = self.losses(batch, aux)
        if not losses:
            return {}
        if self.optimizer is None:
            raise RuntimeError(f"{type(self).__name__} returned losses but trainable_parameters() is empty")
        total = torch.stack([self.loss_weights.get(key, 1.0) * loss for key, loss in losses.items()]).sum()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_norm_clip > 0:
            for group in self.clip_groups():
                torch.nn.utils.clip_grad_norm_(group, self.grad_norm_clip)
        self.optimizer.step()
        return {f"loss/{key}": value.item() for key, value in losses.items()}

    def network_autocast(self) -> contextlib.AbstractContextManager:
        """Run the bonus's networks in the learner's precision; rewards and state updates stay float32."""
        return autocast(self.compute_dtype, self.device)

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The bonus's own optimizer from `bonus.optimizer` and `bonus.lr`."""
        kind = cfg_get(self.cfg, "optimizer", str, OPTIMIZERS)
        lr = cfg_get(self.cfg, "lr", float)
        if kind == "adam":
            return torch.optim.Adam(params, lr=lr)
        # The RMSprop of the RIDE / E3B reference code (α 0.99, ε 1e-5).
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-5)

    def get_extra_state(self) -> dict:
        return {"optimizer": None if self.optimizer is None else self.optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])


def flat_obs(obs: dict[str, torch.Tensor], start: int = 0) -> dict[str, torch.Tensor]:
    """obs [T+1, B, ...] from time `start` on, flattened to [N, ...] for a network."""
    return {k: v[start:].reshape(-1, *v.shape[2:]) for k, v in obs.items()}
