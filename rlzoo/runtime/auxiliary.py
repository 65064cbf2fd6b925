"""The learner's auxiliary loss terms: imitation alongside the RL loss, or instead of it.

- Kickstarting (`algo.kickstart.teacher`, Schmitt et al. 2018): + λ_k(t) · KL(π_teacher ‖ π_student)
  on the learner's own batch. The teacher, a frozen policy from a checkpoint, runs in the learner once
  per batch on its observations, with its own recurrent state per environment carried across unrolls.
- Behavioural cloning on recorded games (`algo.bc_aux.dataset`, Dungeons and Data's "APPO + BC"):
  + λ_bc(t) · Σ −log π(a_data | x) over a dataset batch drawn for every update, one more
  forward/backward pass of the policy with its own recurrent state per dataset row.
- Offline behavioural cloning (`algo=bc`): the learner's batch is itself recorded games
  (rlzoo/runtime/demonstrations.py) and the mean cross-entropy is the whole loss.

The learner adds `AuxiliaryLosses.terms` (kickstarting) to its objective's loss terms
(rlzoo/algos/objective.py's `LossTerm`: once per batch, then on every chunk of its own data), calls
`finish` after each minibatch's chunks (BC on its own data, with a gradient that adds to the
learner's) and `clone` in place of the RL loss when the batch is recorded games. The losses
themselves are rlzoo/algos/imitation.py's. A recorded or teacher-labelled step is weighted as the
algorithm weighs one of its own samples (summed for IMPALA, averaged for APPO), so that a
coefficient of 1 weighs a step of either kind alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.algos.imitation import (
    KICKSTARTING_KINDS,
    SCHEDULES,
    behavioural_cloning_loss,
    coefficient_schedule,
    kickstarting_loss,
)
from rlzoo.algos.impala import entropy
from rlzoo.algos.objective import ALGORITHMS, Chunk
from rlzoo.bonuses import needs_intrinsic_value_head
from rlzoo.config import ConfigError, check_choice, check_number
from rlzoo.envs import EnvSpec, env_spec
from rlzoo.models import Policy, build_model, build_torso
from rlzoo.models.precision import autocast
from rlzoo.runtime.checkpoint import CheckpointError, latest_path, load_checkpoint
from rlzoo.runtime.demonstrations import (
    DemonstrationStream,
    check_batch_fits,
    check_reads_terminal_only,
    open_demonstrations,
    stream_seed,
)
from rlzoo.unroll import Batch, DemonstrationUnroll, Unroll


class CarriedState:
    """A policy's recurrent state per column id (an environment, a dataset row), carried from one
    unroll of the column to its next; a column whose `unroll_index` does not follow on (a new actor,
    a resumed run) starts from zeros. Its `first` flags reset it within unrolls as usual."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.rows = policy.initial_state(0)  # each [N, H]; () without an LSTM
        self.next_index = torch.empty(0, dtype=torch.long, device=policy.policy_head.weight.device)

    def get(self, ids: torch.Tensor, unroll_index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._grow(int(ids.max()) + 1)
        follows = (self.next_index[ids] == unroll_index).unsqueeze(1)
        return tuple(torch.where(follows, table[ids], 0.0) for table in self.rows)

    def put(self, ids: torch.Tensor, unroll_index: torch.Tensor, state: tuple[torch.Tensor, ...]) -> None:
        for table, rows in zip(self.rows, state):
            table[ids] = rows.detach().to(table.dtype)
        self.next_index[ids] = unroll_index + 1

    def _grow(self, size: int) -> None:
        extra = size - len(self.next_index)
        if extra > 0:
            self.rows = tuple(torch.cat([table, zeros]) for table, zeros in
                              zip(self.rows, self.policy.initial_state(extra)))
            self.next_index = torch.cat([self.next_index, self.next_index.new_full((extra,), -1)])


def cloning_pass(model: Policy, part: DemonstrationUnroll, carried: CarriedState, dtype: torch.dtype,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy over recorded steps 0..T-1 from each row's carried state: (summed cross-entropy
    on the valid steps, detached [summed cross-entropy, correct argmax, valid steps, summed entropy]).

    obs[T] is left out: it is obs[0] of the row's next batch, and the LSTM would read it twice."""
    T = part.num_steps
    with autocast(dtype, device):
        out, state = model({k: v[:T] for k, v in part.obs.items()}, part.first[:T],
                           carried.get(part.env_ids, part.unroll_index))
    carried.put(part.env_ids, part.unroll_index, state)
    logits = out["logits"].float()
    loss = behavioural_cloning_loss(logits, part.actions, part.valid)
    with torch.no_grad():
        correct = ((logits.argmax(-1) == part.actions) & part.valid).sum()
        stats = torch.stack([loss, correct.float(), part.valid.sum().float(), entropy(logits)]).cpu()
    return loss, stats


def _chunks(batch: Unroll, columns: int) -> list[Unroll]:
    step = columns or batch.num_columns
    return [batch.columns(slice(begin, begin + step)) for begin in range(0, batch.num_columns, step)]


class _Schedule:
    """λ(t) of one term from its config block (coef, schedule, decay_steps, final)."""

    def __init__(self, block: DictConfig) -> None:
        self.args = (block.schedule, float(block.coef), int(block.decay_steps), float(block.final))

    def __call__(self, env_steps: int) -> float:
        kind, initial, decay_steps, final = self.args
        return coefficient_schedule(kind, initial, env_steps, decay_steps, final)


class Kickstarting:
    """λ_k(t) · KL(π_teacher ‖ π_student) (or the cross-entropy) on the learner's batch, as a loss term
    of the learner (rlzoo/algos/objective.py's `LossTerm`): the teacher labels the whole batch once,
    before the epochs, and every chunk of every epoch compares the student with those labels."""

    name = "kickstart"

    def __init__(self, block: DictConfig, spec: EnvSpec, device: torch.device, dtype: torch.dtype) -> None:
        self.teacher = load_teacher(block.teacher, spec).to(device)
        self.carried = CarriedState(self.teacher)
        self.kind = block.kind
        self.coef = _Schedule(block)
        self.device, self.dtype = device, dtype
        self.labels: torch.Tensor | None = None  # the teacher's logits on this batch [T, B, A]; None: term off
        self.current = 0.0

    @torch.no_grad()
    def start_update(self, batch: Batch, intrinsic: torch.Tensor | None, env_steps: int) -> dict[str, float]:
        self.current = self.coef(env_steps)
        self.labels = None
        if self.current == 0.0:
            return {"kickstart/coef": 0.0}  # the teacher's forward pass is saved once its term is gone
        T = batch.num_steps
        with autocast(self.dtype, self.device):
            out, state = self.teacher({k: v[:T] for k, v in batch.obs.items()}, batch.first[:T],
                                      self.carried.get(batch.env_ids, batch.unroll_index))
        self.carried.put(batch.env_ids, batch.unroll_index, state)  # over obs[0..T-1], as the actor's
        self.labels = out["logits"].float()
        return {"kickstart/coef": self.current}

    def __call__(self, chunk: Chunk) -> tuple[torch.Tensor, dict[str, float]]:
        if self.labels is None:
            return chunk.out["logits"].new_zeros(()), {}
        loss = kickstarting_loss(chunk.out["logits"][:-1], self.labels[:, chunk.columns], kind=self.kind)
        mean = loss / chunk.batch.size
        return self.current * mean, {"kickstart/loss": float(mean.detach())}

    def state_dict(self) -> dict[str, Any]:
        return {}  # the teacher is the config's checkpoint; its carried state restarts from zeros

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class DatasetCloning:
    """λ_bc(t) · Σ −log π(a_data | x) on a batch of recorded games per optimizer step: `algo.bc_aux.ratio`
    dataset rows per actor column of the learner's minibatch, `runtime.unroll_length` steps each."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, model: Policy, device: torch.device, dtype: torch.dtype,
                 rank: int, world_size: int) -> None:
        block = cfg.algo.bc_aux
        self.dataset = open_demonstrations(block.dataset, block.dataset_name, "algo.bc_aux.dataset", spec,
                                           check_files=False)  # checked by check_imitation before the run
        self.rows = dataset_rows(cfg, world_size)
        self.spec, self.unroll_length = spec, cfg.runtime.unroll_length
        self.seed = (cfg.seed, rank)
        self.carried = CarriedState(model)
        self.coef = _Schedule(block)
        self.device, self.dtype = device, dtype
        self.stream: DemonstrationStream | None = None

    def backward(self, model: Policy, env_steps: int, chunk_columns: int, sample_weight: float) -> dict[str, float]:
        coef = self.coef(env_steps)
        if coef == 0.0:
            return {"bc/coef": 0.0}
        if self.stream is None:  # started at the first update, when the (resumed) step count is known
            self.stream = DemonstrationStream(self.dataset, self.spec, self.rows, self.unroll_length,
                                              stream_seed(*self.seed, env_steps))
        batch = next(self.stream).to_torch(self.device)
        totals = torch.zeros(4)
        for part in _chunks(batch, chunk_columns):
            loss, stats = cloning_pass(model, part, self.carried, self.dtype, self.device)
            (coef * sample_weight * loss).backward()
            totals += stats
        summed, correct, valid, _ = totals.tolist()
        return {"bc/coef": coef, "bc/loss": summed / max(valid, 1.0), "bc/accuracy": correct / max(valid, 1.0),
                **self.stream.metrics()}

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


class AuxiliaryLosses:
    """The terms the config asks for (none, kickstarting, BC on a dataset, offline BC), called by the
    learner; with none configured every call is a no-op."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec, model: Policy, device: torch.device, dtype: torch.dtype,
                 rank: int = 0, world_size: int = 1) -> None:
        self.model, self.device, self.dtype = model, device, dtype
        teacher = OmegaConf.select(cfg, "algo.kickstart.teacher", default=None)
        self.kickstarting = Kickstarting(cfg.algo.kickstart, spec, device, dtype) if teacher is not None else None
        dataset = OmegaConf.select(cfg, "algo.bc_aux.dataset", default=None)
        self.cloning = (DatasetCloning(cfg, spec, model, device, dtype, rank, world_size)
                        if dataset is not None else None)
        self.offline = CarriedState(model) if cfg.algo.name == "bc" else None

    @property
    def terms(self) -> list[Kickstarting]:
        """The terms on the learner's own batch, for its list of loss terms."""
        return [] if self.kickstarting is None else [self.kickstarting]

    def finish(self, env_steps: int, chunk_columns: int, sample_weight: float) -> dict[str, float]:
        """After a minibatch's chunks: the terms on their own data (one more backward pass, whose
        gradient adds to the learner's; a step weighs `sample_weight`, as one of the learner's), and
        their metrics."""
        if self.cloning is None:
            return {}
        return self.cloning.backward(self.model, env_steps, chunk_columns, sample_weight)

    def clone(self, batch: DemonstrationUnroll, chunk_columns: int, count: float) -> dict[str, float]:
        """`algo=bc`: the gradient of the summed cross-entropy over the batch's valid steps divided by
        `count` (the valid steps of the whole batch, over all replicas), chunk by chunk of columns."""
        self.model.zero_grad(set_to_none=False)
        totals = torch.zeros(4)
        for part in _chunks(batch, chunk_columns):
            loss, stats = cloning_pass(self.model, part, self.offline, self.dtype, self.device)
            (loss / count).backward()
            totals += stats
        summed, correct, _, policy_entropy = totals.tolist()
        return {"loss/total": summed / count, "loss/entropy": policy_entropy, "bc/loss": summed / count,
                "bc/accuracy": correct / count}

    def close(self) -> None:
        if self.cloning is not None:
            self.cloning.close()


def dataset_rows(cfg: DictConfig, world_size: int = 1) -> int:
    """Dataset rows per optimizer step for `algo.bc_aux` (per learner replica)."""
    columns = cfg.runtime.batch_size / int(cfg.algo.minibatches)
    return max(1, round(float(cfg.algo.bc_aux.ratio) * columns / world_size))


def load_teacher(path_value: Any, spec: EnvSpec) -> Policy:
    """The teacher policy of `algo.kickstart.teacher` (a run directory or a checkpoint), frozen and
    in eval mode, if it can act in this run: the same action set, observations this env delivers.
    ValueError naming the key, the checkpoint and what does not fit."""
    key = f"algo.kickstart.teacher={path_value!r}"
    path = Path(str(path_value))
    checkpoint = latest_path(path) if path.is_dir() else path
    try:
        state = load_checkpoint(checkpoint)
    except CheckpointError as err:
        raise ValueError(f"{key}: {err}") from None
    saved = state.get("config") or {}
    if not all(group in saved for group in ("env", "model", "bonus")):
        raise ValueError(f"{key}: {checkpoint} has no run config (env, model, bonus) to build the teacher from")
    teacher_spec = env_spec(saved["env"])
    if (teacher_spec.family, teacher_spec.num_actions, teacher_spec.action_names, teacher_spec.action_keys) != (
            spec.family, spec.num_actions, spec.action_names, spec.action_keys):
        raise ValueError(
            f"{key}: the teacher acts in {teacher_spec.name} ({teacher_spec.family}, {teacher_spec.num_actions} "
            f"actions), this run in {spec.name} ({spec.family}, {spec.num_actions} actions); kickstarting needs "
            "the same action set"
        )
    try:
        teacher = build_model(saved["model"], spec, intrinsic_value_head=needs_intrinsic_value_head(saved["bonus"]))
    except ValueError as err:
        raise ValueError(f"{key}: the teacher's model cannot read this run's observations: {err}") from None
    try:
        teacher.load_state_dict(state["learner"]["model"])
    except (RuntimeError, KeyError) as err:
        raise ValueError(f"{key}: {checkpoint} holds weights that do not fit its own model config "
                         f"({str(err).splitlines()[0]})") from None
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def _check_schedule(cfg: DictConfig, block: str) -> None:
    check_number(cfg, f"{block}.coef", min_value=0)
    check_choice(cfg, f"{block}.schedule", SCHEDULES)
    check_number(cfg, f"{block}.final", min_value=0)
    constant = OmegaConf.select(cfg, f"{block}.schedule") == "constant"
    check_number(cfg, f"{block}.decay_steps", integer=True, min_value=0 if constant else 1)


def check_imitation(cfg: DictConfig, spec: EnvSpec) -> None:
    """Everything the imitation terms and `algo=bc` read, checked before any worker starts: the
    config values, the datasets (index, actions, files) and the teacher (checkpoint, action set,
    observations). Raises ConfigError with one line naming the key, the path and the problem."""
    try:
        _check_imitation(cfg, spec)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_imitation(cfg: DictConfig, spec: EnvSpec) -> None:
    name = cfg.algo.name
    teacher = OmegaConf.select(cfg, "algo.kickstart.teacher", default=None)
    bc_aux = OmegaConf.select(cfg, "algo.bc_aux.dataset", default=None)
    if name == "bc":
        for key, value in (("algo.kickstart.teacher", teacher), ("algo.bc_aux.dataset", bc_aux)):
            if value is not None:
                raise ConfigError(f"{key}={value!r} applies to online runs (algo in {list(ALGORITHMS)}); "
                                  "algo=bc learns from algo.dataset alone")
        if cfg.bonus.name != "none":
            raise ConfigError(f"bonus={cfg.bonus.name!r}: algo=bc learns from recorded games, which have no "
                              "intrinsic reward; use bonus=none")
        if cfg.algo.dataset is None:
            raise ConfigError("algo=bc needs algo.dataset=<directory of an NLD dataset> (its index ttyrecs.db, "
                              "built with `python -m rlzoo.nld <dir>`)")
        dataset = open_demonstrations(cfg.algo.dataset, cfg.algo.dataset_name, "algo.dataset", spec)
        check_reads_terminal_only(build_torso(cfg.model, spec).input_keys, "algo.dataset")
        check_batch_fits(dataset, cfg.runtime.batch_size, "algo.dataset (runtime.batch_size rows)")
        return
    if bc_aux is not None:
        _check_schedule(cfg, "algo.bc_aux")
        check_number(cfg, "algo.bc_aux.ratio", min_value=0, min_inclusive=False)
        dataset = open_demonstrations(bc_aux, cfg.algo.bc_aux.dataset_name, "algo.bc_aux.dataset", spec)
        check_reads_terminal_only(build_torso(cfg.model, spec).input_keys, "algo.bc_aux.dataset")
        check_batch_fits(dataset, dataset_rows(cfg, cfg.runtime.learners), "algo.bc_aux.dataset (algo.bc_aux.ratio "
                                                                            "× runtime.batch_size rows)")
    if teacher is not None:
        _check_schedule(cfg, "algo.kickstart")
        check_choice(cfg, "algo.kickstart.kind", KICKSTARTING_KINDS)
        load_teacher(teacher, spec)
