"""ONI (Zheng et al. 2024): Motif's idea with the LLM annotating online, while the agent trains.

The learner sends each message it has not sent before (deduplicated against everything already
labelled or in flight) to an asynchronous annotator and never waits for it. Variants (`bonus.model`):
- retrieval: the LLM says whether a message is helpful (1) or not (0); reward = that label, 0 until
  labelled;
- classification: those labels train a char-CNN classifier online; reward = 1[p(helpful) > 0.5],
  so unlabelled messages get a prediction too;
- ranking: each new message is paired with a random seen one and the LLM's preferences train
  Motif's reward model online; reward = z · 1[z > ε] with z normalised by the mean/std of the model's
  reward over the messages seen (the reference normalised and then used the raw reward: here the
  normalised one is used).
Every variant divides by N_ep(message)^β. The reference re-queued messages already in flight; here a
message is sent once.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlzoo.bonuses.common.base import BatchContext, Bonus, cfg_get, register_bonus
from rlzoo.bonuses.common.counting import EpisodicCounts, state_hashes
from rlzoo.bonuses.motif import read_threshold_and_exponent
from rlzoo.motif.captions import decode_message
from rlzoo.motif.dataset import BL_SCORE
from rlzoo.motif.intrinsic import count_discounted_reward
from rlzoo.motif.oni_annotator import ANNOTATORS, MODES, AnnotatorSpec, OnlineAnnotator
from rlzoo.motif.prompts import check_goal
from rlzoo.motif.reward_model import CharCNN, MessageRewardModel, preference_loss
from rlzoo.unroll import Batch

VARIANTS = ("retrieval", "classification", "ranking")


class MessageTable:
    """Every distinct message seen: its bytes, the score gain when first seen, its label."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}          # message hash → id
        self.rows: list[np.ndarray] = []       # id → [256] uint8
        self.gains: list[float] = []
        self.labels: list[float] = []          # id → 1.0 / 0.0, nan while unlabelled

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, key: int, row: np.ndarray, gain: float) -> int:
        self.ids[key] = len(self.rows)
        self.rows.append(row.copy())
        self.gains.append(gain)
        self.labels.append(float("nan"))
        return self.ids[key]

    def text(self, i: int) -> str:
        return decode_message(self.rows[i])

    def matrix(self, ids: np.ndarray) -> np.ndarray:
        return np.stack([self.rows[i] for i in ids]) if len(ids) else np.zeros((0, 256), np.uint8)


@register_bonus("oni")
class ONIBonus(Bonus):
    requires = "an OpenAI-compatible LLM server (bonus.llm.base_url), unless bonus.annotator=score_gain"
    families, needs = ("nethack", "minihack"), "the in-game message"

    def __init__(self, cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any) -> None:
        super().__init__(cfg, spec, model_cfg, num_envs, device)
        self.variant = cfg_get(cfg, "model", str, VARIANTS)
        level, self.count_exponent = read_threshold_and_exponent(cfg)
        self.threshold_quantile = level if self.variant == "ranking" else None
        self.min_labels = cfg_get(cfg, "min_labels", int)
        self.train_batch_size = cfg_get(cfg, "train_batch_size", int)
        self.stats_interval = cfg_get(cfg, "stats_interval", int)
        for key in ("min_labels", "train_batch_size", "stats_interval"):
            if getattr(self, key) < 1:
                raise ValueError(f"bonus.{key}={getattr(self, key)} must be >= 1")
        annotator = cfg_get(cfg, "annotator", str, ANNOTATORS)
        mode = cfg_get(cfg, "annotator_mode", str, MODES)
        llm = cfg.get("llm")
        self.annotator_spec = AnnotatorSpec(
            task="pair" if self.variant == "ranking" else "message",
            annotator=annotator,
            goal=check_goal(cfg_get(cfg, "goal", str), "bonus.goal"),
            batch_size=cfg_get(cfg, "annotation_batch_size", int),
            llm=dict(llm) if llm is not None and annotator == "llm" else None,
        )
        self.annotator_mode = mode
        self.annotator = OnlineAnnotator(self.annotator_spec, mode)
        self.table = MessageTable()
        self.pairs: list[tuple[int, int, int]] = []          # (id_a, id_b, Label) for ranking
        self.pending_pairs: dict[int, tuple[int, int]] = {}  # pair key → ids, while in flight
        self._next_pair_key = 0
        self.rng = np.random.default_rng(0)
        self.episodic_counts = EpisodicCounts(num_envs)
        self.updates = 0
        self.trained = False
        if self.variant == "classification":
            self.net: nn.Module = nn.Sequential(CharCNN(), nn.Linear(64, 1))
        elif self.variant == "ranking":
            self.net = MessageRewardModel()
        self.mean, self.std, self.epsilon = 0.0, 1.0, None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [] if self.variant == "retrieval" else list(self.net.parameters())

    # ---- annotation traffic ---------------------------------------------------------------------
    def _receive(self) -> None:
        for key, value in self.annotator.poll():
            if self.variant == "ranking":
                a, b = self.pending_pairs.pop(key)
                if value is not None:
                    self.pairs.append((a, b, int(value)))
            else:
                # No verdict after the retry counts as "not helpful", as an unlabelled message would.
                self.table.labels[key] = float(value or 0)

    def _send(self, new_ids: list[int]) -> None:
        if not new_ids:
            return
        if self.variant != "ranking":
            self.annotator.submit([(i, (self.table.text(i), self.table.gains[i])) for i in new_ids])
            return
        jobs = []
        for i in new_ids:
            # Pair each new message with a random other one seen so far (the first waits for a partner).
            if len(self.table) < 2:
                continue
            j = int(self.rng.integers(len(self.table) - 1))
            j += j >= i
            key = self._next_pair_key
            self._next_pair_key += 1
            self.pending_pairs[key] = (i, j)
            jobs.append((key, ((self.table.text(i), self.table.gains[i]), (self.table.text(j), self.table.gains[j]))))
        self.annotator.submit(jobs)

    def _ensure_annotator(self) -> None:
        """A dead annotator (crashed process) is restarted with the work it had not returned."""
        if self.annotator.alive():
            return
        self.annotator = OnlineAnnotator(self.annotator_spec, self.annotator_mode)
        if self.variant == "ranking":
            lost = list(self.pending_pairs.items())
            self.annotator.submit([(k, ((self.table.text(a), self.table.gains[a]), (self.table.text(b), self.table.gains[b])))
                                   for k, (a, b) in lost])
        else:
            self._send([i for i, label in enumerate(self.table.labels) if np.isnan(label)])

    # ---- reward ------------------------------------------------------------------------------------
    def compute(self, batch: Batch, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        self._ensure_annotator()
        self._receive()
        obs = batch.obs
        messages = obs["message"].cpu().numpy()
        keys = state_hashes({"message": obs["message"]}, "message")  # [T+1, B]
        score = obs["blstats"][..., BL_SCORE].cpu().numpy().astype(np.float64)
        gains = np.where(ctx.dones.cpu().numpy(), 0.0, score[1:] - score[:-1])
        steps, cols = gains.shape
        flat_keys = keys[1:].reshape(-1)
        uniq, first, inverse = np.unique(flat_keys, return_index=True, return_inverse=True)
        ids = np.empty(len(uniq), dtype=np.int64)
        new_ids = []
        flat_rows = messages[1:].reshape(steps * cols, -1)
        flat_gains = gains.reshape(-1)
        for u, (key, pos) in enumerate(zip(uniq.tolist(), first.tolist())):
            known = self.table.ids.get(key)
            if known is None:
                known = self.table.add(key, flat_rows[pos], float(flat_gains[pos]))
                new_ids.append(known)
            ids[u] = known
        self._send(new_ids)
        values = self._values(ids)[inverse].reshape(steps, cols)
        counts = self.episodic_counts.visit(keys, ctx)
        reward = count_discounted_reward(values, counts, self.epsilon, self.count_exponent)
        return torch.as_tensor(reward, device=self.device), None

    @torch.no_grad()
    def _values(self, ids: np.ndarray) -> np.ndarray:
        """Per-message value before the count division, for the distinct messages `ids`."""
        if self.variant == "retrieval":
            return np.nan_to_num(np.asarray(self.table.labels, dtype=np.float64)[ids], nan=0.0)
        if not self.trained:
            return np.zeros(len(ids))
        rows = torch.as_tensor(self.table.matrix(ids), device=self.device)
        out = self.net(rows).reshape(-1)
        if self.variant == "classification":
            return (out > 0).double().cpu().numpy()  # logit > 0 ⇔ p(helpful) > 0.5
        return ((out.double() - self.mean) / self.std).cpu().numpy()

    # ---- online training -------------------------------------------------------------------------
    def losses(self, batch: Batch, aux: Any) -> dict[str, torch.Tensor]:
        if self.variant == "retrieval":
            return {}
        if self.variant == "classification":
            labels = np.asarray(self.table.labels)
            labelled = np.flatnonzero(~np.isnan(labels))
            if len(labelled) < self.min_labels:
                return {}
            pick = self.rng.choice(labelled, size=min(self.train_batch_size, len(labelled)), replace=False)
            logits = self.net(torch.as_tensor(self.table.matrix(pick), device=self.device)).reshape(-1)
            target = torch.as_tensor(labels[pick], dtype=torch.float32, device=self.device)
            return {"oni_classifier": F.binary_cross_entropy_with_logits(logits, target)}
        if len(self.pairs) < self.min_labels:
            return {}
        pick = self.rng.choice(len(self.pairs), size=min(self.train_batch_size, len(self.pairs)), replace=False)
        chosen = np.asarray(self.pairs, dtype=np.int64)[pick]
        target = torch.as_tensor(np.select([chosen[:, 2] == 0, chosen[:, 2] == 1], [1.0, 0.0], 0.5),
                                 dtype=torch.float32, device=self.device)
        r_a = self.net(torch.as_tensor(self.table.matrix(chosen[:, 0]), device=self.device))
        r_b = self.net(torch.as_tensor(self.table.matrix(chosen[:, 1]), device=self.device))
        return {"oni_reward_model": preference_loss(r_a, r_b, target)}

    @torch.no_grad()
    def _refresh_statistics(self) -> None:
        """Ranking: mean/std of the reward over every message seen, and ε over the same set."""
        rows = torch.as_tensor(self.table.matrix(np.arange(len(self.table))), device=self.device)
        rewards = torch.cat([self.net(rows[s:s + 4096]) for s in range(0, len(rows), 4096)]).double().cpu().numpy()
        self.mean = float(rewards.mean())
        self.std = float(rewards.std()) or 1.0
        if self.threshold_quantile is not None:
            self.epsilon = float(np.quantile((rewards - self.mean) / self.std, self.threshold_quantile))

    def update(self, batch: Batch) -> dict[str, float]:
        start = time.perf_counter()
        metrics = super().update(batch)
        if metrics.get("loss/oni_classifier") is not None or metrics.get("loss/oni_reward_model") is not None:
            self.trained = True
            self.updates += 1
            if self.variant == "ranking" and (self.updates == 1 or self.updates % self.stats_interval == 0):
                self._refresh_statistics()
        labelled = (int(np.sum(~np.isnan(self.table.labels))) if self.variant != "ranking" else len(self.pairs))
        metrics.update({
            "bonus/oni_messages": float(len(self.table)),
            "bonus/oni_labelled": float(labelled),
            "bonus/oni_backlog": float(self.annotator.backlog),
            "bonus/oni_labels_per_s": self.annotator.labels_per_s(),
            "bonus/oni_failed": float(self.annotator.failed),
            "bonus/oni_update_ms": 1000.0 * (time.perf_counter() - start),
        })
        return metrics

    def close(self) -> None:
        self.annotator.close()

    # ---- checkpoints ------------------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {
            **super().get_extra_state(),
            "message_keys": list(self.table.ids),
            "message_rows": torch.as_tensor(self.table.matrix(np.arange(len(self.table)))),
            "message_gains": list(self.table.gains),
            "message_labels": list(self.table.labels),
            "pairs": [list(p) for p in self.pairs],
            "trained": self.trained,
            "updates": self.updates,
            "normalisation": [self.mean, self.std, self.epsilon],
        }

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.table = MessageTable()
        rows = state["message_rows"].numpy()
        for key, row, gain, label in zip(state["message_keys"], rows, state["message_gains"], state["message_labels"]):
            self.table.labels[self.table.add(int(key), row, float(gain))] = float(label)
        self.pairs = [tuple(p) for p in state["pairs"]]
        self.trained, self.updates = bool(state["trained"]), int(state["updates"])
        self.mean, self.std, self.epsilon = state["normalisation"]
        # What was in flight when the checkpoint was written is asked again.
        self.pending_pairs = {}
        if self.variant != "ranking":
            self._send([i for i, label in enumerate(self.table.labels) if np.isnan(label)])
