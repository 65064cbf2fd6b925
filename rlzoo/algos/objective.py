"""What the learner minimises: the algorithm's objective (IMPALA or APPO, by `algo.name`) and the
extra loss terms added to it (DrAC here; kickstarting in rlzoo/runtime/auxiliary.py).

The learner (`rlzoo/runtime/learner.py`) runs epochs × minibatches of optimizer steps over a batch and
takes each minibatch in chunks of columns. Per batch, before any epoch, it calls `Objective.prepare`
(APPO fixes its GAE advantages there) and every term's `start_update` (UCB-DrAC picks its
augmentation, kickstarting runs its teacher); per chunk, the objective's `loss` and every term on the
same `Chunk`, whose `out` is the network's forward pass over the chunk and whose `forward` runs the
network again (on augmented observations, ...).

Reductions: IMPALA's losses are sums over samples, APPO's are means over the minibatch. A term returns
a mean over its chunk's samples and the learner weights it by `Objective.sample_weight`, as the
objective counts a sample, so the chunks, and learner replicas whose gradients are summed, add up to
the gradient of the whole minibatch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
from omegaconf import DictConfig

from rlzoo.algos.appo import AppoSettings, Targets, appo_loss, gae_targets, vtrace_targets
from rlzoo.algos.drac import DracTerm
from rlzoo.algos.impala import ImpalaSettings, impala_loss
from rlzoo.algos.ppo import standardize
from rlzoo.algos.return_normalization import ReturnNormalizer
from rlzoo.algos.rewards import RewardMix, reward_streams
from rlzoo.unroll import Batch

ALGORITHMS = ("impala", "appo")  # the RL objectives; algo=bc (offline cloning) is rlzoo/runtime/auxiliary.py's
Forward = Callable[[dict[str, torch.Tensor], torch.Tensor, tuple[torch.Tensor, ...]], dict[str, torch.Tensor]]


@dataclass
class BatchTargets:
    """What the objective fixes for a whole batch before any epoch, [T, B] each; sliced with its columns."""

    intrinsic: torch.Tensor | None              # the bonus's reward (None without a bonus)
    advantages: torch.Tensor | None = None      # APPO with GAE: the advantages of every epoch
    returns: dict[str, torch.Tensor] = field(default_factory=dict)  # APPO with GAE: value head -> targets

    def columns(self, cols: slice | torch.Tensor) -> "BatchTargets":
        def take(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[:, cols]

        returns = {k: v[:, cols] for k, v in self.returns.items()}
        return BatchTargets(take(self.intrinsic), take(self.advantages), returns)


@dataclass
class Chunk:
    """A chunk of a minibatch's columns, as the objective and the loss terms see it."""

    batch: Batch                   # the chunk's columns, T+1 observations each
    targets: BatchTargets          # the batch targets of those columns
    out: dict[str, torch.Tensor]   # the network over batch.obs: logits, baseline[, int_baseline]; float32
    forward: Forward               # forward(obs, first, core_state) -> out: another pass, same precision
    share: float                   # chunk samples / this replica's minibatch samples (mean metric × share adds up)
    env_steps: int                 # environment steps so far (coefficient schedules)
    columns: torch.Tensor          # [b] int64: the chunk's column indices in the whole batch (per-batch caches)


class Objective:
    """An algorithm's loss as the learner's loop calls it."""

    reduction = "sum"                  # "sum": losses add over samples; "mean": averaged over the minibatch
    normalizes_advantages = False      # the learner then gathers the minibatch's advantage statistics
    advantages_need_forward = False    # ... which needs the current network's output (V-trace)
    bootstraps_from_learner = False    # the learner replaces values[T] by its own V(obs[T]) before `prepare`

    def sample_weight(self, minibatch_samples: int, num_steps: int) -> float:
        """The weight of one sample's loss in the minibatch's gradient (over all replicas)."""
        return 1.0 if self.reduction == "sum" else 1.0 / minibatch_samples

    def prepare(self, batch: Batch, intrinsic: torch.Tensor | None) -> BatchTargets:
        """Once per batch, before any epoch."""
        return BatchTargets(intrinsic)

    def in_reward_units(self, batch: Batch) -> Batch:
        """The batch with its behaviour values in reward units (what the extra terms read)."""
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def advantages(self, out: dict[str, torch.Tensor] | None, batch: Batch, targets: BatchTargets) -> torch.Tensor:
        """The chunk's advantages before normalisation [T, b] (only when `normalizes_advantages`)."""
        raise NotImplementedError

    def loss(self, chunk: Chunk, stats: tuple[float, float] | None) -> tuple[torch.Tensor, dict[str, float]]:
        """The chunk's loss, reduced as `reduction` says, and metrics that add up over the chunks of a
        minibatch. `stats` = (mean, std) of the minibatch's advantages when `normalizes_advantages`."""
        raise NotImplementedError


class ImpalaObjective(Objective):
    """`impala_loss` (sums over samples), one V-trace per chunk."""

    def __init__(self, settings: ImpalaSettings, mix: RewardMix, loss_reduction: str = "sum") -> None:
        self.settings = settings
        self.mix = mix
        self.loss_reduction = loss_reduction

    def sample_weight(self, minibatch_samples: int, num_steps: int) -> float:
        # time_sum_batch_mean (the E3B and RIDE code): summed over time, averaged over the B columns.
        return num_steps / minibatch_samples if self.loss_reduction == "time_sum_batch_mean" else 1.0

    def loss(self, chunk: Chunk, stats: tuple[float, float] | None) -> tuple[torch.Tensor, dict[str, float]]:
        b = chunk.batch
        loss = impala_loss(chunk.out, b.logits, b.actions, b.rewards, chunk.targets.intrinsic, b.dones, self.settings,
                           self.mix)
        policy, baseline, entropy = torch.stack([loss.policy, loss.baseline, loss.entropy]).detach().float().tolist()
        return loss.total, {"loss/policy": policy, "loss/baseline": baseline,
                            "policy/entropy": entropy * chunk.share / b.size}


class AppoObjective(Objective):
    """`appo_loss` (means over the minibatch) with GAE advantages fixed per batch, or V-trace
    advantages recomputed from the current network for every minibatch; normalised per minibatch.
    With `normalize_returns` (GAE only) each value head works in units of its returns' running std
    (`return_normalization.py`)."""

    reduction = "mean"

    def __init__(self, settings: AppoSettings, mix: RewardMix) -> None:
        self.settings = settings
        self.mix = mix
        self.normalizes_advantages = settings.normalize_advantages
        self.advantages_need_forward = settings.advantages == "vtrace"
        # Sample Factory's GAE bootstraps from the learner's network as the batch arrives, not the actor's.
        self.bootstraps_from_learner = settings.advantages == "gae"
        # Value head -> the running statistics of its returns (Sample Factory keeps them in the model).
        heads = ("baseline", "int_baseline") if mix.two_streams else ("baseline",)
        self.normalizers = {key: ReturnNormalizer() for key in heads} if settings.normalize_returns else {}

    def prepare(self, batch: Batch, intrinsic: torch.Tensor | None) -> BatchTargets:
        if self.settings.advantages == "vtrace":
            return BatchTargets(intrinsic)
        streams = reward_streams(batch.rewards, intrinsic, batch.dones, self.mix)
        fixed = gae_targets(self.in_reward_units(batch).values, streams, self.settings.gae_lambda)
        returns = fixed.returns
        if self.normalizers:
            # As Sample Factory: the statistics absorb this batch's returns before they normalise them.
            for key, value_targets in returns.items():
                self.normalizers[key].update(value_targets)
            returns = {key: self.normalizers[key].normalize(r) for key, r in returns.items()}
        return BatchTargets(intrinsic, fixed.advantages, returns)

    def in_reward_units(self, batch: Batch) -> Batch:
        if not self.normalizers:
            return batch
        values = {key: self.normalizers[key].denormalize(v) if key in self.normalizers else v
                  for key, v in batch.values.items()}
        return dataclasses.replace(batch, values=values)

    def state_dict(self) -> dict[str, Any]:
        if not self.normalizers:
            return {}
        return {"return_normalizers": {key: n.state_dict() for key, n in self.normalizers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("return_normalizers", {})
        if set(saved) != set(self.normalizers):
            # The value heads' weights only mean something with the statistics they were trained with.
            raise ValueError(
                f"the checkpoint has return statistics for {sorted(saved) or 'no value head'}, this run expects "
                f"{sorted(self.normalizers) or 'none'}: it was trained with algo.normalize_returns="
                f"{str(bool(saved)).lower()}; resume with the same setting")
        for key, moments in saved.items():
            self.normalizers[key].load_state_dict(moments)

    def _targets(self, out: dict[str, torch.Tensor] | None, batch: Batch, targets: BatchTargets) -> Targets:
        if targets.advantages is not None:
            return Targets(targets.advantages, targets.returns)
        streams = reward_streams(batch.rewards, targets.intrinsic, batch.dones, self.mix)
        return vtrace_targets(out, batch.logits, batch.actions, streams, self.settings)

    def advantages(self, out: dict[str, torch.Tensor] | None, batch: Batch, targets: BatchTargets) -> torch.Tensor:
        return self._targets(out, batch, targets).advantages

    def loss(self, chunk: Chunk, stats: tuple[float, float] | None) -> tuple[torch.Tensor, dict[str, float]]:
        b = chunk.batch
        targets = self._targets(chunk.out, b, chunk.targets)
        if stats is not None:
            targets = targets._replace(advantages=standardize(targets.advantages, *stats))
        loss = appo_loss(chunk.out, b.logits, b.actions, targets, b.values or None, self.settings)
        reported = torch.stack([loss.policy, loss.baseline, loss.entropy, loss.kl, loss.clip_fraction])
        names = ("loss/policy", "loss/baseline", "policy/entropy", "policy/kl", "policy/clip_fraction")
        return loss.total, {k: v * chunk.share for k, v in zip(names, reported.detach().float().tolist())}


def build_objective(algo_cfg: DictConfig, bonus_cfg: DictConfig) -> Objective:
    mix = RewardMix.from_config(algo_cfg, bonus_cfg)
    if algo_cfg.name == "appo":
        return AppoObjective(AppoSettings.from_config(algo_cfg), mix)
    if algo_cfg.name == "impala":
        return ImpalaObjective(ImpalaSettings.from_config(algo_cfg), mix, str(algo_cfg.loss_reduction))
    raise ValueError(f"algo.name={algo_cfg.name!r} is not allowed; choose one of {list(ALGORITHMS)}")


class LossTerm(Protocol):
    """An extra loss the learner adds to the objective on every chunk (DrAC's regularisers; behavioural
    cloning or kickstarting alike). The learner logs its loss as `loss/<name>`."""

    name: str

    def start_update(self, batch: Batch, intrinsic: torch.Tensor | None, env_steps: int) -> dict[str, float]:
        """Once per batch, before any epoch; returns metrics."""
        ...

    def __call__(self, chunk: Chunk) -> tuple[torch.Tensor, dict[str, float]]:
        """The term's loss on the chunk as a mean over its samples, coefficient applied, and metrics
        (means over the chunk)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def needs_behaviour_values(algo_cfg: DictConfig) -> bool:
    """Whether the actors record V(obs[t]) of the behaviour policy in `Unroll.values` (one more
    inference per unroll, for obs[T]): APPO's GAE and value clipping, UCB-DrAC's return targets."""
    return algo_cfg.name == "appo" or algo_cfg.drac.augmentation == "ucb"


def build_loss_terms(cfg: DictConfig, device: torch.device, seed: int) -> list[LossTerm]:
    """The extra terms `cfg` asks for, in the order they are added."""
    terms: list[LossTerm] = []
    drac = cfg.algo.drac
    if drac.augmentation != "none":
        terms.append(DracTerm(drac.augmentation, float(drac.coef), float(drac.ucb_exploration_coef),
                              int(drac.ucb_window), float(drac.return_lambda),
                              RewardMix.from_config(cfg.algo, cfg.bonus), device, seed))
    return terms
