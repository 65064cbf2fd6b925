"""DrAC's regularisers and UCB-DrAC's choice of augmentation (Raileanu et al. 2021, sections 4–5).

DrAC adds α_r (G_π + G_V) to the actor-critic loss (eq. 5–7, α_r = 0.1 in the paper):

    G_π = KL[π(·|s) ‖ π(·|f(s))],   G_V = (V(f(s)) − V(s))²,

with f an augmentation and π(·|s), V(s) on the clean observation held fixed as targets, so only the
augmented branch is pulled towards them. Both are means over samples, like `ppo.py`'s losses.
`DracTerm` adds them to the learner's loss (see `objective.py`), on top of IMPALA or APPO.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from rlzoo.algos.appo import gae_targets
from rlzoo.algos.augmentations import AUGMENTATIONS, get_augmentation
from rlzoo.algos.ppo import categorical_kl
from rlzoo.algos.rewards import RewardMix, reward_streams
from rlzoo.unroll import Batch

if TYPE_CHECKING:
    from rlzoo.algos.objective import Chunk

IMAGE_KEY = "rgb"  # the observation DrAC augments: Procgen's [64, 64, 3] frames
VALUE_HEADS = ("baseline", "int_baseline")


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


@torch.no_grad()
def batch_return_target(batch: Batch, intrinsic: torch.Tensor | None, mix: RewardMix, gae_lambda: float) -> float:
    """The mean return target of a batch, UCB-DrAC's measure of how an augmentation did: the mean of the
    GAE(λ) returns over the behaviour values, as the paper's code averages its rollout's returns (with
    two reward streams, their means weighted as their advantages are)."""
    streams = reward_streams(batch.rewards, intrinsic, batch.dones, mix)
    returns = gae_targets(batch.values, streams, gae_lambda).returns
    return sum(s.advantage_weight * float(returns[s.value_key].mean()) for s in streams)


class DracTerm:
    """DrAC as a loss term of the learner: each chunk's frames augmented on the learner's device (one
    batched call, fresh parameters per image and chunk), the network run on them with the chunk's
    recurrent start states, and α_r (G_π + G_V) against the clean pass, G_V over every value head.

    `augmentation="ucb"` is UCB-DrAC: before each update the bandit picks the augmentation; the mean
    return target of the next batch is credited to it. The bandit and the augmentations' random generator
    are checkpointed with the learner.
    """

    name = "drac"

    def __init__(self, augmentation: str, coef: float, ucb_exploration_coef: float, ucb_window: int,
                 return_lambda: float, mix: RewardMix, device: torch.device, seed: int) -> None:
        if not coef >= 0:
            raise ValueError(f"algo.drac.coef={coef!r} must be >= 0")
        self.coef = coef
        self.mix = mix
        self.return_lambda = return_lambda
        self.generator = torch.Generator(device).manual_seed(seed)
        self.ucb = (UCBAugmentationSelector(list(AUGMENTATIONS), ucb_exploration_coef, ucb_window)
                    if augmentation == "ucb" else None)
        self.arm: str | None = None if self.ucb is not None else augmentation
        if self.arm is not None:
            get_augmentation(self.arm)  # an unknown name fails here, listing the known ones

    def start_update(self, batch: Batch, intrinsic: torch.Tensor | None, env_steps: int) -> dict[str, float]:
        if self.ucb is None:
            return {}
        if self.arm is not None:
            self.ucb.update(self.arm, batch_return_target(batch, intrinsic, self.mix, self.return_lambda))
        self.arm = self.ucb.select()
        return {"drac/arm": float(self.ucb.arms.index(self.arm)),
                **{f"drac/q/{arm}": q for arm, q in zip(self.ucb.arms, self.ucb.q_values())}}

    def __call__(self, chunk: "Chunk") -> tuple[torch.Tensor, dict[str, float]]:
        b = chunk.batch
        frames = b.obs[IMAGE_KEY]
        augmented = get_augmentation(self.arm)(frames.reshape(-1, *frames.shape[2:]), self.generator)
        aug_out = chunk.forward({**b.obs, IMAGE_KEY: augmented.view_as(frames)}, b.first, b.core_state)
        g_pi = policy_regulariser(aug_out["logits"][:-1], chunk.out["logits"][:-1])
        g_v = sum(value_regulariser(aug_out[k][:-1], chunk.out[k][:-1]) for k in VALUE_HEADS if k in chunk.out)
        metrics = {"drac/policy_reg": float(g_pi.detach()), "drac/value_reg": float(g_v.detach())}
        return self.coef * (g_pi + g_v), metrics

    def state_dict(self) -> dict[str, Any]:
        # The generator too: a resumed run draws the augmentations the uninterrupted run would have.
        state: dict[str, Any] = {"generator": self.generator.get_state()}
        if self.ucb is not None:
            state.update(ucb=self.ucb.state_dict(), arm=self.arm)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])
        if self.ucb is not None and "ucb" in state:
            self.ucb.load_state_dict(state["ucb"])
            self.arm = state["arm"]
