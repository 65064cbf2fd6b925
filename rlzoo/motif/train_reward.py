"""Train-reward step: fit Motif's reward model to the labelled pairs and save it with its statistics.

Resumable: the state after every epoch goes to `<out>.train_state.pt`; a rerun continues from it.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .annotate import check_labels_name, read_labels
from .dataset import PairDataset
from .labels import Label
from .reward_model import QUANTILE_LEVELS, MessageRewardModel, preference_loss, preference_targets, save_reward_model


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 1e-5
    weight_decay: float = 0.0
    val_fraction: float = 0.2
    seed: int = 0
    embed_dim: int = 32
    channels: int = 64
    hidden: int = 256
    device: str = "cpu"

    def validate(self, key: str = "train") -> None:
        for name in ("epochs", "batch_size", "embed_dim", "channels", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}.{name}={value!r} must be an integer >= 1")
        if not self.lr > 0:
            raise ValueError(f"{key}.lr={self.lr!r} must be > 0")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"{key}.val_fraction={self.val_fraction!r} must be in (0, 1)")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"{key}.device={self.device!r}; allowed: ['cpu', 'cuda']")


def labelled_pairs(dataset: PairDataset, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices and labels of pairs usable in training (UNKNOWN and unlabelled dropped)."""
    labels = read_labels(dataset.path / f"{check_labels_name(labels_name)}.jsonl")
    items = sorted((i, int(label)) for i, label in labels.items() if label is not Label.UNKNOWN and i < dataset.count)
    if not items:
        raise ValueError(f"no usable labels in {dataset.path / labels_name}.jsonl; run the annotate step first")
    indices, values = map(np.asarray, zip(*items))
    return indices.astype(np.int64), values.astype(np.int8)


def split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    return order[n_val:], order[:n_val]


def _pair_rewards(model: MessageRewardModel, dataset: PairDataset, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """[n, 2] rewards of the pairs at dataset rows `rows` (sorted for memory-map locality)."""
    messages = torch.as_tensor(np.asarray(dataset.arrays["messages"][rows]), device=device)
    lengths = torch.as_tensor(np.asarray(dataset.arrays["length"][rows]).astype(np.int64), device=device)
    n, _, seq_len, width = messages.shape
    rewards = model.sequence_reward(messages.reshape(n * 2, seq_len, width), lengths.reshape(n * 2))
    return rewards.reshape(n, 2)


@torch.no_grad()
def evaluate(model: MessageRewardModel, dataset: PairDataset, rows: np.ndarray, labels: np.ndarray,
             batch_size: int, device: torch.device) -> dict[str, float]:
    """Loss over all pairs; accuracy over non-tie pairs (does the model prefer the labelled side?)."""
    model.eval()
    target_all, _ = preference_targets(labels)
    loss_sum, correct, decisive = 0.0, 0, 0
    for start in range(0, len(rows), batch_size):
        order = np.argsort(rows[start:start + batch_size])
        chunk = rows[start:start + batch_size][order]
        target = torch.as_tensor(target_all[start:start + batch_size][order], device=device)
        rewards = _pair_rewards(model, dataset, chunk, device)
        loss_sum += float(preference_loss(rewards[:, 0], rewards[:, 1], target)) * len(chunk)
        strict = target != 0.5
        correct += int(((rewards[:, 0] > rewards[:, 1]) == (target == 1.0))[strict].sum())
        decisive += int(strict.sum())
    return {
        "loss": loss_sum / max(1, len(rows)),
        "accuracy": correct / decisive if decisive else math.nan,
        "non_tie_pairs": decisive,
    }


@torch.no_grad()
def reward_statistics(model: MessageRewardModel, dataset: PairDataset, rows: np.ndarray,
                      batch_size: int, device: torch.device) -> tuple[float, float, np.ndarray]:
    """Mean and std of the reward over every message of the training sequences, then quantiles of
    the normalised reward over the unique ones."""
    model.eval()
    messages = np.asarray(dataset.arrays["messages"][np.sort(rows)])
    lengths = np.asarray(dataset.arrays["length"][np.sort(rows)])
    valid = np.arange(messages.shape[2])[None, None, :] < lengths[:, :, None]
    flat = messages[valid]                                      # [M, 256], with repeats
    unique, inverse = np.unique(flat, axis=0, return_inverse=True)
    rewards = np.concatenate([
        model(torch.as_tensor(unique[s:s + 4 * batch_size], device=device)).cpu().numpy()
        for s in range(0, len(unique), 4 * batch_size)
    ]).astype(np.float64)
    per_message = rewards[inverse.reshape(-1)]
    mean = float(per_message.mean())
    std = float(per_message.std()) or 1.0
    quantiles = np.quantile((rewards - mean) / std, QUANTILE_LEVELS)
    return mean, std, quantiles


def train_reward_model(
    dataset_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    settings: TrainSettings,
    labels_name: str = "labels",
    progress: bool = True,
) -> dict[str, Any]:
    settings.validate()
    device = torch.device(settings.device)
    dataset = PairDataset.open(dataset_dir)
    indices, labels = labelled_pairs(dataset, labels_name)
    train_idx, val_idx = split(len(indices), settings.val_fraction, settings.seed)
    torch.manual_seed(settings.seed)
    model = MessageRewardModel(settings.embed_dim, settings.channels, settings.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    state_path = out_path.with_name(out_path.name + ".train_state.pt")
    history: list[dict[str, float]] = []
    first_epoch = 0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch, history = int(state["epoch"]), list(state["history"])
    target_all, _ = preference_targets(labels)
    rng = np.random.default_rng(settings.seed + first_epoch)
    start = time.monotonic()
    for epoch in range(first_epoch, settings.epochs):
        model.train()
        order = rng.permutation(train_idx)
        losses = []
        bar = tqdm(range(0, len(order), settings.batch_size), desc=f"epoch {epoch + 1}/{settings.epochs}",
                   unit="batch", disable=not progress, leave=False, dynamic_ncols=True)
        for s in bar:
            batch = np.sort(order[s:s + settings.batch_size])
            target = torch.as_tensor(target_all[batch], device=device)
            rewards = _pair_rewards(model, dataset, indices[batch], device)
            loss = preference_loss(rewards[:, 0], rewards[:, 1], target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
        bar.close()
        val = evaluate(model, dataset, indices[val_idx], labels[val_idx], settings.batch_size, device)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_loss": val["loss"],
                        "val_accuracy": val["accuracy"]})
        if progress:
            print(f"epoch {epoch + 1}: train loss {history[-1]['train_loss']:.4f}  val loss {val['loss']:.4f}  "
                  f"val accuracy (non-tie) {val['accuracy']:.3f}", flush=True)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                    "history": history}, state_path.with_suffix(".tmp"))
        os.replace(state_path.with_suffix(".tmp"), state_path)
    val = evaluate(model, dataset, indices[val_idx], labels[val_idx], settings.batch_size, device)
    mean, std, quantiles = reward_statistics(model, dataset, indices[train_idx], settings.batch_size, device)
    counts = {label.name: int((labels == label).sum()) for label in (Label.FIRST, Label.SECOND, Label.TIE)}
    summary = {
        "train_pairs": int(len(train_idx)),
        "val_pairs": int(len(val_idx)),
        "label_counts": counts,
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "val_non_tie_pairs": val["non_tie_pairs"],
        "reward_mean": mean,
        "reward_std": std,
        "z_median": float(quantiles[50]),
        "seconds": time.monotonic() - start,
    }
    save_reward_model(out_path, model, mean, std, quantiles, {"history": history, **{k: v for k, v in summary.items() if k != "label_counts"}, **counts})
    return summary
