"""Actor-critic policy: a torso, an optional LSTM core, and policy / value heads."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from rlzoo.models.precision import autocast


class Policy(nn.Module):
    """forward(obs [T, B, ...], first [T, B], state) -> ({logits, baseline[, int_baseline]}, state)."""

    def __init__(
        self, torso: nn.Module, num_actions: int, lstm_size: int, intrinsic_value_head: bool = False
    ) -> None:
        super().__init__()
        self.torso = torso
        self.num_actions = num_actions
        self.lstm = nn.LSTM(torso.out_dim, lstm_size) if lstm_size > 0 else None
        core_dim = lstm_size if lstm_size > 0 else torso.out_dim
        self.policy_head = nn.Linear(core_dim, num_actions)
        self.baseline_head = nn.Linear(core_dim, 1)
        self.int_baseline_head = nn.Linear(core_dim, 1) if intrinsic_value_head else None

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Zero (h, c), each [batch_size, lstm_size], on the model's device and in its dtype; () without LSTM."""
        if self.lstm is None:
            return ()
        weight = self.policy_head.weight
        zeros = torch.zeros(batch_size, self.lstm.hidden_size, device=weight.device, dtype=weight.dtype)
        return (zeros, zeros.clone())

    def forward(
        self,
        obs: dict[str, torch.Tensor],
        first: torch.Tensor,
        state: tuple[torch.Tensor, ...],
    ) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        T, B = first.shape
        flat = {key: obs[key].reshape(T * B, *obs[key].shape[2:]) for key in self.torso.input_keys}
        features = self.torso(flat).view(T, B, -1)
        if self.lstm is None:
            core = features
        else:
            core, state = self._unroll(features, first.bool(), state)
        out = {
            "logits": self.policy_head(core),
            "baseline": self.baseline_head(core).squeeze(-1),
        }
        if self.int_baseline_head is not None:
            out["int_baseline"] = self.int_baseline_head(core).squeeze(-1)
        return out, state

    @torch.no_grad()
    def step(
        self,
        obs: Mapping[str, np.ndarray],
        first: np.ndarray,
        state: tuple[torch.Tensor, ...],
    ) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        """One step of B environments from numpy observations [B, ...]: every head's output [B, ...] as
        float32 (logits, baseline[, int_baseline]) and the new state.

        A model cast to bfloat16 computes in bfloat16 (see models/precision.py).
        """
        weight = self.policy_head.weight
        with autocast(weight.dtype, weight.device):
            out, state = self({k: torch.from_numpy(v[None]) for k, v in obs.items()}, torch.from_numpy(first[None]),
                              state)
        return {k: v[0].float() for k, v in out.items()}, state

    @staticmethod
    def sample(logits: torch.Tensor, generator: torch.Generator | None = None, greedy: bool = False) -> torch.Tensor:
        """Actions [B] drawn from the policy's logits [B, A] (its most likely action when `greedy`)."""
        if greedy:
            return logits.argmax(-1)
        return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)

    @torch.no_grad()
    def act(
        self,
        obs: Mapping[str, np.ndarray],
        first: np.ndarray,
        state: tuple[torch.Tensor, ...],
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """One step of B environments from numpy observations [B, ...]: (actions [B], logits [B, A], state)."""
        out, state = self.step(obs, first, state)
        return self.sample(out["logits"], generator, greedy), out["logits"], state

    def _unroll(
        self, features: torch.Tensor, first: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run the LSTM over T, zeroing each env's state before a step where `first` is set.

        Between two steps where any env starts an episode the LSTM runs as one fused call, so the
        Python loop is over episode boundaries rather than over every time step.
        """
        T = features.shape[0]
        h, c = state
        if T == 1:
            # Acting is one step at a time; the fused cell is about twice as fast as nn.LSTM here.
            keep = (~first[0]).to(features.dtype).unsqueeze(-1)
            lstm = self.lstm
            h, c = torch.lstm_cell(features[0], (h * keep, c * keep), lstm.weight_ih_l0, lstm.weight_hh_l0,
                                   lstm.bias_ih_l0, lstm.bias_hh_l0)
            return h.unsqueeze(0), (h, c)
        boundaries = (torch.nonzero(first[1:].any(dim=1)).flatten() + 1).tolist()
        starts = [0] + boundaries
        lengths = [end - start for start, end in zip(starts, starts[1:] + [T])]
        outputs = []
        # split, not slicing: the backward of a split is one cat, while every slice's backward writes
        # into a zeroed copy of the whole input (10% of the LSTM's time with many short chunks).
        for start, chunk in zip(starts, features.split(lengths)):
            keep = (~first[start]).to(features.dtype).unsqueeze(-1)
            h, c = h * keep, c * keep
            out, (h_n, c_n) = self.lstm(chunk, (h.unsqueeze(0), c.unsqueeze(0)))
            h, c = h_n[0], c_n[0]
            outputs.append(out)
        return torch.cat(outputs), (h, c)
