"""DrAC's regularisers and UCB-DrAC's choice of augmentation (Raileanu et al. 2021, sections 4–5).

DrAC adds α_r (G_π + G_V) to the actor-critic loss (eq. 5–7, α_r = 0.1 in the paper):

    G_π = KL[π(·|s) ‖ π(·|f(s))],   G_V = (V(f(s)) − V(s))²,

with f an augmentation and π(·|s), V(s) on the clean observation held fixed as targets, so only the
augmented branch is pulled towards them. Both are means over samples, like `ppo.py`'s losses.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rlzoo.algos.ppo import categorical_kl


def policy_regulariser(aug_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """G_π: mean KL(π(·|s) ‖ π(·|f(s))) over samples; logits [..., A], the clean ones detached.

    The paper's code estimates this with −log π(a|f(s)) for one a ~ π(·|s) (a cross-entropy whose
    gradient has the same expectation); the exact KL over the action set has no sampling noise.
    """
    return categorical_kl(logits.detach(), aug_logits).mean()


def value_regulariser(aug_values: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """G_V: mean (V(f(s)) − V(s))² over samples, V(s) detached (the paper's eq.; its code adds a ½)."""
    return ((aug_values - values.detach()) ** 2).mean()


def drac_loss(
    aug_logits: torch.Tensor,
    logits: torch.Tensor,
    aug_values: torch.Tensor,
    values: torch.Tensor,
    coef: float,
) -> torch.Tensor:
    """α_r (G_π + G_V), the term DrAC adds to the loss being minimised."""
    if not coef >= 0:
        raise ValueError(f"DrAC coefficient alpha_r={coef!r} must be >= 0")
    return coef * (policy_regulariser(aug_logits, logits) + value_regulariser(aug_values, values))


class UCBAugmentationSelector:
    """UCB-DrAC's bandit over augmentations (section 5, "UCB-DrAC").

    At each update it picks f = argmax_f Q(f) + c·sqrt(log N / N(f)), where N(f) counts the updates
    that used f, N counts all updates, and Q(f) is the mean of the last W returns obtained after
    using f. As in the paper's code, N and every N(f) start at 1 and Q(f) at 0, so the first choices
    go to untried arms in order; ties go to the first arm.
    """

    def __init__(self, arms: Sequence[str], exploration_coef: float, window: int) -> None:
        if not arms or len(set(arms)) != len(arms):
            raise ValueError(f"arms={list(arms)!r} must be a non-empty list of distinct names")
        if not exploration_coef >= 0:
            raise ValueError(f"UCB exploration_coef={exploration_coef!r} must be >= 0")
        if not (isinstance(window, int) and window >= 1):
            raise ValueError(f"UCB window={window!r} must be an integer >= 1")
        self.arms = list(arms)
        self.exploration_coef = exploration_coef
        self.window = window
        self.total = 1
        self.counts = [1] * len(self.arms)
        self.returns: list[deque[float]] = [deque(maxlen=window) for _ in self.arms]

    def q_values(self) -> list[float]:
        """Q(f): the mean of each arm's last `window` returns (0 before its first)."""
        return [sum(r) / len(r) if r else 0.0 for r in self.returns]

    def scores(self) -> list[float]:
        """Q(f) + c·sqrt(log N / N(f)) for every arm."""
        log_total = math.log(self.total)
        return [q + self.exploration_coef * math.sqrt(log_total / n) for q, n in zip(self.q_values(), self.counts)]

    def select(self) -> str:
        """The arm with the highest score."""
        scores = self.scores()
        return self.arms[scores.index(max(scores))]

    def update(self, arm: str, episode_return: float) -> None:
        """Credit `arm` with the return measured after an update that used it."""
        if arm not in self.arms:
            raise ValueError(f"arm {arm!r} is not one of: {', '.join(self.arms)}")
        if not math.isfinite(episode_return):
            raise ValueError(f"return {episode_return!r} for arm {arm!r} is not finite")
        i = self.arms.index(arm)
        self.total += 1
        self.counts[i] += 1
        self.returns[i].append(float(episode_return))

    def state_dict(self) -> dict[str, Any]:
        return {
            "arms": list(self.arms),
            "total": self.total,
            "counts": list(self.counts),
            "returns": [list(r) for r in self.returns],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["arms"]) != self.arms:
            raise ValueError(f"checkpoint arms {list(state['arms'])} differ from this selector's {self.arms}")
        self.total = int(state["total"])
        self.counts = [int(n) for n in state["counts"]]
        self.returns = [deque((float(x) for x in r), maxlen=self.window) for r in state["returns"]]
