"""L-NovelD (Mu et al. 2022, "Improving Intrinsic Exploration with Language Abstractions"): NovelD over
the state plus λ_l times NovelD over the language of the state, here the NetHack/MiniHack message.

    r = NovelD(s, s′) + λ_l · max(e_l(l′) − α·e_l(l), 0) · 1[N_ep(l′) = 1] · 1[l′ is not empty]

e_l is the error of a second RND pair of NovelD's kind reading the message: a frozen random character
CNN, then NovelD's target and predictor MLPs. A message is new once per episode; a step without a
message carries no language novelty. Deviations: docs/fidelity.md.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rlzoo.bonuses.common.base import BatchContext, cfg_get, register_bonus
from rlzoo.bonuses.common.counting import EpisodicCounts, state_hashes
from rlzoo.bonuses.common.encoders import FrozenEncoderRND
from rlzoo.bonuses.noveld import NovelDBonus, noveld_reward
from rlzoo.models.nethack_net import MessageCharCNN
from rlzoo.unroll import Batch

MESSAGE_EMBEDDING = 32
MESSAGE_FEATURES = 64


def lnoveld_reward(state_reward: torch.Tensor, language_novelty: torch.Tensor, alpha: float,
                   first_message: torch.Tensor, has_message: torch.Tensor, language_coef: float) -> torch.Tensor:
    """state_reward [T, B] = NovelD over states; language_novelty [T+1, B] = e_l(message of obs[t]);
    first_message / has_message [T, B] mark obs[t+1]'s message as new this episode / not empty."""
    return state_reward + language_coef * noveld_reward(language_novelty, alpha, first_message * has_message)


# Hand-computed cases, checked by the formula test of every bonus (tests/test_bonus_formulas.py):
# state 0.5; language novelty 2 → 3 with α 0.5: max(3 − 1, 0) = 2, times λ_l 0.25 = 0.5 → 1.0;
# a repeated message (mask 0) or an empty one adds nothing; falling novelty 3 → 1 clips to 0.
FORMULA_CASES = [
    (lnoveld_reward, dict(state_reward=torch.tensor([[0.5, 0.5, 0.5, 0.5]]),
                          language_novelty=torch.tensor([[2.0, 2.0, 2.0, 3.0], [3.0, 3.0, 3.0, 1.0]]),
                          alpha=0.5, first_message=torch.tensor([[1.0, 0.0, 1.0, 1.0]]),
                          has_message=torch.tensor([[1.0, 1.0, 0.0, 1.0]]), language_coef=0.25),
     torch.tensor([[1.0, 0.5, 0.5, 0.5]])),
]


@register_bonus("lnoveld")
class LNovelDBonus(NovelDBonus):
    families, needs = ("nethack", "minihack"), "the in-game message"

    def __init__(self, cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any) -> None:
        super().__init__(cfg, spec, model_cfg, num_envs, device)
        self.language_coef = cfg_get(cfg, "language_coef", float)
        if self.language_coef < 0:
            raise ValueError(f"bonus.language_coef={self.language_coef} must be non-negative")
        self.message_counts = EpisodicCounts(num_envs)
        # NovelD's RND over the message: a frozen random character CNN under the same heads.
        self.language_rnd = FrozenEncoderRND(MessageCharCNN(MESSAGE_EMBEDDING, MESSAGE_FEATURES), MESSAGE_FEATURES)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*super().trainable_parameters(), *self.language_rnd.predictor_parameters()]

    def compute(self, batch: Batch, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        state_reward, state_aux = super().compute(batch, ctx)
        messages = batch.obs["message"].to(self.device)
        steps, cols = ctx.dones.shape
        with self.network_autocast():
            error = self.language_rnd(messages.reshape(-1, messages.shape[-1])).view(steps + 1, cols, -1).norm(dim=-1)
        counts = self.message_counts.visit(state_hashes({"message": messages}, "message"), ctx)
        first_message = torch.as_tensor(counts == 1, dtype=torch.float32, device=self.device)
        has_message = (messages[1:, :, 0] != 0).float()
        reward = lnoveld_reward(state_reward, error.detach(), self.alpha, first_message, has_message,
                                self.language_coef)
        # The language predictor trains on the new observations' messages, those that say something.
        return reward, (state_aux, error[1:][has_message.bool()])

    def losses(self, batch: Batch, aux: Any) -> dict[str, torch.Tensor]:
        state_aux, language_error = aux
        losses = super().losses(batch, state_aux)
        if language_error.numel():
            losses["lnoveld_language_predictor"] = language_error.mean()
        return losses
