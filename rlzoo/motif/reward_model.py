"""Motif's reward model: a character-level CNN over the 256-byte message → MLP → scalar reward.

Trained with the Bradley–Terry preference loss; the saved file also carries the statistics the RL
transform needs (mean/std of rewards over the training set, quantiles of the normalised reward over
unique messages) and is loaded with `torch.load(weights_only=True)`.

The message encoder is smaller than the references' (Motif and ONI: six unpadded convolutions,
flattened to 320 → 128, then 256 → 512 before the head; here three padded convolutions and a max
over positions → 64, then 256 → 256): a deliberate choice, docs/fidelity.md.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dataset import MESSAGE_LEN
from .labels import Label

# Quantiles saved with the model: every percent, so any threshold_quantile in 0.00..1.00 resolves.
QUANTILE_LEVELS = np.round(np.linspace(0.0, 1.0, 101), 2)


class CharCNN(nn.Module):
    """Bytes → embedding → three 1-D convolutions with pooling → max over positions."""

    def __init__(self, embed_dim: int = 32, channels: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, embed_dim)
        self.convs = nn.Sequential(
            nn.Conv1d(embed_dim, channels, kernel_size=7, padding=3),
            nn.ReLU(),
            nn.MaxPool1d(3, 3),
            nn.Conv1d(channels, channels, kernel_size=7, padding=3),
            nn.ReLU(),
            nn.MaxPool1d(3, 3),
            nn.Conv1d(channels, channels, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.out_dim = channels

    def forward(self, messages: torch.Tensor) -> torch.Tensor:
        x = self.embed(messages.long()).transpose(1, 2)  # [N, E, 256]
        return self.convs(x).amax(dim=2)


class MessageRewardModel(nn.Module):
    def __init__(self, embed_dim: int = 32, channels: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.arch = {"embed_dim": embed_dim, "channels": channels, "hidden": hidden}
        self.encoder = CharCNN(embed_dim, channels)
        self.head = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, messages: torch.Tensor) -> torch.Tensor:
        """[N, 256] uint8 → [N] rewards."""
        return self.head(self.encoder(messages)).squeeze(-1)

    def sequence_reward(self, messages: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[N, L, 256] and [N] valid lengths → [N]: sum of per-step rewards (Motif uses L = 1)."""
        n, seq_len = messages.shape[:2]
        # NetHack batches repeat a few messages many times: run the network once per distinct one.
        unique, inverse = torch.unique(messages.reshape(n * seq_len, -1), dim=0, return_inverse=True)
        per_step = self(unique)[inverse].reshape(n, seq_len)
        mask = torch.arange(seq_len, device=messages.device)[None, :] < lengths[:, None]
        return (per_step * mask).sum(dim=1)


class MessageClassifier(nn.Module):
    """ONI-Classification's model: char-CNN → MLP 512, 512 → dropout 0.1 → one logit of "helpful"
    (the reference's two-class softmax, written as the logit difference)."""

    def __init__(self, embed_dim: int = 32, channels: int = 64, hidden: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = CharCNN(embed_dim, channels)
        self.head = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, messages: torch.Tensor) -> torch.Tensor:
        """[N, 256] uint8 → [N] logits."""
        return self.head(self.encoder(messages)).squeeze(-1)


def preference_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels → (probability that the first is preferred, mask of usable pairs). TIE = 0.5."""
    labels = np.asarray(labels)
    target = np.select([labels == Label.FIRST, labels == Label.SECOND], [1.0, 0.0], 0.5).astype(np.float32)
    usable = (labels == Label.FIRST) | (labels == Label.SECOND) | (labels == Label.TIE)
    return target, usable


def preference_loss(reward_first: torch.Tensor, reward_second: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry: cross-entropy between softmax(r₁, r₂) and (p, 1 − p); softmax of two is the
    sigmoid of their difference."""
    return F.binary_cross_entropy_with_logits(reward_first - reward_second, target)


def save_reward_model(
    path: str | os.PathLike,
    model: MessageRewardModel,
    mean: float,
    std: float,
    quantile_values: np.ndarray,
    info: dict[str, Any],
) -> None:
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "arch": dict(model.arch),
        "mean": float(mean),
        "std": float(std),
        "quantile_levels": torch.as_tensor(QUANTILE_LEVELS, dtype=torch.float64),
        "quantile_values": torch.as_tensor(np.asarray(quantile_values), dtype=torch.float64),
        "info": info,
    }
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


class MotifReward:
    """The trained reward as the RL transform sees it: normalised z per message, cached per
    distinct message because a batch holds few distinct messages."""

    def __init__(self, model: MessageRewardModel, mean: float, std: float, quantile_levels: np.ndarray,
                 quantile_values: np.ndarray, device: torch.device | str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.mean = mean
        self.std = std
        self.quantile_levels = np.asarray(quantile_levels, dtype=np.float64)
        self.quantile_values = np.asarray(quantile_values, dtype=np.float64)
        self.device = torch.device(device)
        self._cache: dict[bytes, float] = {}
        self.max_cache = 500_000

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "MotifReward":
        if not os.path.exists(path):
            raise FileNotFoundError(f"bonus.reward_model_path={os.fspath(path)!r} does not exist; run the train-reward step first")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model = MessageRewardModel(**payload["arch"])
        model.load_state_dict(payload["state_dict"])
        return cls(model, payload["mean"], payload["std"], payload["quantile_levels"].numpy(),
                   payload["quantile_values"].numpy(), device)

    def quantile(self, level: float, key: str = "bonus.threshold_quantile") -> float:
        """ε: the saved quantile of z over unique training messages at `level` (a fraction)."""
        hits = np.flatnonzero(np.isclose(self.quantile_levels, level))
        if not hits.size:
            raise ValueError(f"{key}={level!r} is not a saved quantile level; use a multiple of 0.01 in [0, 1]")
        return float(self.quantile_values[hits[0]])

    @torch.no_grad()
    def normalized(self, messages: np.ndarray) -> np.ndarray:
        """[N, 256] uint8 → [N] float32 z = (r − mean) / std."""
        messages = np.ascontiguousarray(messages, dtype=np.uint8)
        keys = [row.tobytes() for row in messages]
        missing = list({k for k in keys if k not in self._cache})
        if missing:
            if len(self._cache) + len(missing) > self.max_cache:
                self._cache.clear()  # bounded memory over long runs; entries are cheap to recompute
            rows = torch.from_numpy(np.frombuffer(b"".join(missing), dtype=np.uint8).reshape(len(missing), MESSAGE_LEN).copy())
            rewards = self.model(rows.to(self.device)).cpu().numpy()
            for key, reward in zip(missing, rewards):
                self._cache[key] = (float(reward) - self.mean) / self.std
        return np.array([self._cache[k] for k in keys], dtype=np.float32)
