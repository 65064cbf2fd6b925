"""Learning from demonstrations and from a teacher policy: the loss terms and their coefficient schedule.

- Behavioural cloning: cross-entropy of the policy on the dataset's actions, −log π(a_data | x),
  over the steps whose recorded keypress is an action of the env (`valid` from rlzoo.nld).
- Kickstarting (Schmitt et al. 2018, "Kickstarting Deep Reinforcement Learning"): the student's RL
  loss plus λ_k · H(π_teacher(·|x), π_student(·|x)) on the student's own trajectories, λ_k decayed
  towards 0 over training. KL(π_teacher ‖ π_student) = H(π_teacher, π_student) − H(π_teacher)
  differs by the teacher's entropy, which has no gradient: the same update, a loss that reaches 0.
  Dungeons and Data (Hambro et al. 2022) kickstart NetHack agents with the KL.

Losses are summed over time and batch by default (as the IMPALA terms in impala.py, so that one
coefficient scale serves both); `reduction="mean"` averages over the counted steps instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rlzoo.algos.impala import action_log_probs

REDUCTIONS = ("sum", "mean")
KICKSTARTING_KINDS = ("kl", "cross_entropy")
SCHEDULES = ("constant", "linear", "exponential")


def _reduce(per_step: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not valid; allowed: {', '.join(REDUCTIONS)}")
    if mask is None:
        return per_step.sum() if reduction == "sum" else per_step.mean()
    # where(), not a product: a masked step's loss may be inf (an action the policy rules out).
    total = torch.where(mask, per_step, torch.zeros_like(per_step)).sum()
    return total if reduction == "sum" else total / mask.sum().clamp(min=1)


def behavioural_cloning_loss(
    logits: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor, reduction: str = "sum"
) -> torch.Tensor:
    """−log π(a|x) of the dataset's actions; logits [T, B, A], actions [T, B], valid [T, B] bool
    (steps whose action is not valid add nothing, and count for nothing in a mean)."""
    return _reduce(-action_log_probs(logits, actions), valid, reduction)


def kickstarting_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    kind: str = "kl",
    reduction: str = "sum",
) -> torch.Tensor:
    """KL(π_teacher ‖ π_student) or H(π_teacher, π_student) per step, [T, B, A] logits each; no
    gradient reaches the teacher. `mask` [T, B] bool keeps only some steps."""
    if kind not in KICKSTARTING_KINDS:
        raise ValueError(f"kind={kind!r} is not valid; allowed: {', '.join(KICKSTARTING_KINDS)}")
    teacher_log_probs = F.log_softmax(teacher_logits.detach(), dim=-1)
    student_log_probs = F.log_softmax(student_logits, dim=-1)
    teacher_probs = teacher_log_probs.exp()
    cross_entropy = -(teacher_probs * student_log_probs).sum(-1)
    if kind == "cross_entropy":
        return _reduce(cross_entropy, mask, reduction)
    teacher_entropy = -(teacher_probs * teacher_log_probs).sum(-1)
    return _reduce(cross_entropy - teacher_entropy, mask, reduction)


def coefficient_schedule(kind: str, initial: float, step: int, decay_steps: int, final: float = 0.0) -> float:
    """The loss coefficient at env step `step`, going from `initial` towards `final`:
    constant: `initial`; linear: reaches `final` at `decay_steps` and stays;
    exponential: the distance to `final` halves every `decay_steps`."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule={kind!r} is not valid; allowed: {', '.join(SCHEDULES)}")
    if step < 0:
        raise ValueError(f"step={step!r} is not valid; expected an integer >= 0")
    if kind == "constant":
        return initial
    if decay_steps <= 0:
        raise ValueError(f"decay_steps={decay_steps!r} is not valid; expected an integer > 0")
    if kind == "linear":
        return initial + (final - initial) * min(step / decay_steps, 1.0)
    return final + (initial - final) * 0.5 ** (step / decay_steps)
