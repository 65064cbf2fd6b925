"""ONI (Zheng et al. 2024): Motif's idea with the LLM annotating online, while the agent trains.

An asynchronous annotator labels what the learner sends it; the learner never waits for it.
Variants (`bonus.model`):
- retrieval: the LLM labels each new message extremely helpful (1) or not (0); reward = the label,
  0 until labelled;
- classification: those labels train a classifier online; reward = 1[p(helpful) > 0.5], so
  unlabelled messages get a prediction too;
- ranking: pairs of messages drawn continuously from a store of what the agent saw (every
  `store_every`-th transition, duplicates kept, so frequent messages are drawn more often) are
  ranked by the LLM, and the preferences train Motif's reward model online; reward = z · 1[z > ε_z]
  with z the model's reward normalised by its running mean/std over the agent's batches.
Every variant divides by N_ep(message)^β. Classifier and reward model train `steps_per_label_batch`
steps each time a round of labels arrives, until `max_labels` labels (pairs) exist, then stay fixed.
Where this differs from the reference code (it normalised the ranking reward and then used the raw
one, lost its annotator on a server error, ...): docs/fidelity.md.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rlzoo.bonuses.common.base import BatchContext, Bonus, cfg_get, register_bonus
from rlzoo.bonuses.common.counting import EpisodicCounts, state_hashes
from rlzoo.bonuses.common.normalization import RunningMeanStd
from rlzoo.motif.captions import decode_message
from rlzoo.motif.dataset import BL_SCORE
from rlzoo.motif.intrinsic import count_discounted_reward
from rlzoo.motif.oni_annotator import ANNOTATORS, MODES, AnnotatorSpec, OnlineAnnotator
from rlzoo.motif.prompts import check_goal
from rlzoo.motif.reward_model import MessageClassifier, MessageRewardModel, preference_loss, preference_targets
from rlzoo.unroll import Batch

VARIANTS = ("retrieval", "classification", "ranking")
RANKING_REWARDS = ("normalised", "reference_raw")


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


def sample_pairs(store_counts: np.ndarray, num_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """[num_pairs, 2] message ids, each drawn with probability ∝ how often it entered the store.

    The reference draws two entries uniformly from a list holding every stored sample, repeats
    included; drawing ids in proportion to their counts is the same distribution in O(#messages).
    """
    return rng.choice(len(store_counts), size=(num_pairs, 2), p=store_counts / store_counts.sum())


def stored_samples(flat_ids: np.ndarray, every: int) -> np.ndarray:
    """The message ids of every `every`-th transition of a batch ([T·B] ids), as the reference
    subsamples its learner batches."""
    return flat_ids[::every]


def _optional_float(cfg: Any, key: str) -> float | None:
    return None if cfg.get(key) is None else cfg_get(cfg, key, float)


@register_bonus("oni")
class ONIBonus(Bonus):
    requires = "an OpenAI-compatible LLM server (bonus.llm.base_url), unless bonus.annotator=score_gain"
    families, needs = ("nethack", "minihack"), "the in-game message"

    def __init__(self, cfg: Any, spec: Any, model_cfg: Any, num_envs: int, device: Any) -> None:
        super().__init__(cfg, spec, model_cfg, num_envs, device)
        self.variant = cfg_get(cfg, "model", str, VARIANTS)
        self.count_exponent = cfg_get(cfg, "count_exponent", float)
        if self.count_exponent < 0:
            raise ValueError(f"bonus.count_exponent={self.count_exponent} must be >= 0")
        self.threshold_z = _optional_float(cfg, "threshold_z")
        self.ranking_reward = cfg_get(cfg, "ranking_reward", str, RANKING_REWARDS)
        for key in ("store_every", "pairs_per_update", "train_batch_size", "steps_per_label_batch", "max_labels"):
            setattr(self, key, cfg_get(cfg, key, int))
            if getattr(self, key) < 1:
                raise ValueError(f"bonus.{key}={getattr(self, key)} must be >= 1")
        self.grad_clip = _optional_float(cfg, "ranking_grad_clip")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"bonus.ranking_grad_clip={self.grad_clip} must be > 0 or null")
        annotator = cfg_get(cfg, "annotator", str, ANNOTATORS)
        self.annotator_mode = cfg_get(cfg, "annotator_mode", str, MODES)
        llm = cfg.get("llm")
        self.annotator_spec = AnnotatorSpec(
            task="pair" if self.variant == "ranking" else "message",
            annotator=annotator,
            goal=check_goal(cfg_get(cfg, "goal", str), "bonus.goal"),
            batch_size=cfg_get(cfg, "annotation_batch_size", int),
            llm=dict(llm) if llm is not None and annotator == "llm" else None,
            max_attempts=cfg_get(cfg, "max_attempts", int),
        )
        if self.annotator_spec.max_attempts < 1 or self.annotator_spec.batch_size < 1:
            raise ValueError("bonus.max_attempts and bonus.annotation_batch_size must be >= 1")
        self.annotator = OnlineAnnotator(self.annotator_spec, self.annotator_mode)
        self.table = MessageTable()
        self.given_up: set[int] = set()                      # messages whose requests kept failing
        self.store_counts = np.zeros(0, dtype=np.int64)      # ranking: stored samples per message
        self.pairs: list[tuple[int, int, int]] = []          # ranking: (id_a, id_b, Label)
        self.pending_pairs: dict[int, tuple[int, int]] = {}  # pair key → ids, while in flight
        self._next_pair_key = 0
        self.rng = np.random.default_rng(0)
        self.episodic_counts = EpisodicCounts(num_envs)
        self.reward_stats = RunningMeanStd()                 # ranking: the model's reward on agent batches
        self.trained = False
        self.train_steps = 0
        self._steps_due = 0
        if self.variant == "classification":
            self.net: torch.nn.Module = MessageClassifier()
        elif self.variant == "ranking":
            self.net = MessageRewardModel()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [] if self.variant == "retrieval" else list(self.net.parameters())

    def labelled(self) -> int:
        if self.variant == "ranking":
            return len(self.pairs)
        return int(np.sum(~np.isnan(self.table.labels)))

    # ---- annotation traffic ---------------------------------------------------------------------
    def _receive(self) -> None:
        rounds = self.annotator.label_rounds
        for key, value in self.annotator.poll():
            if self.variant == "ranking":
                a, b = self.pending_pairs.pop(key)
                if value is not None:
                    self.pairs.append((a, b, int(value)))
            elif value is None:
                self.given_up.add(key)  # stays unlabelled: reward 0, no training label
            else:
                self.table.labels[key] = float(value)
        new_rounds = self.annotator.label_rounds - rounds
        if self.variant != "retrieval" and new_rounds and self.labelled() < self.max_labels:
            self._steps_due += self.steps_per_label_batch * new_rounds

    def _message_job(self, i: int) -> tuple[int, Any]:
        return i, (self.table.text(i), self.table.gains[i])

    def _pair_job(self, key: int, a: int, b: int) -> tuple[int, Any]:
        return key, ((self.table.text(a), self.table.gains[a]), (self.table.text(b), self.table.gains[b]))

    def _unasked(self) -> list[int]:
        return [i for i, label in enumerate(self.table.labels) if np.isnan(label) and i not in self.given_up]

    def _ask_messages(self, new_ids: list[int]) -> None:
        # A frozen classifier has no use for more labels; retrieval always has.
        if self.variant == "classification" and self.labelled() >= self.max_labels:
            return
        self.annotator.submit([self._message_job(i) for i in new_ids])

    def _ask_pairs(self) -> None:
        """A few pairs per update while the annotator has less than two rounds of work queued."""
        if (len(self.pairs) >= self.max_labels or not self.store_counts.any()
                or self.annotator.backlog >= 2 * self.annotator_spec.batch_size):
            return
        jobs = []
        for a, b in sample_pairs(self.store_counts, self.pairs_per_update, self.rng).tolist():
            key, self._next_pair_key = self._next_pair_key, self._next_pair_key + 1
            self.pending_pairs[key] = (a, b)
            jobs.append(self._pair_job(key, a, b))
        self.annotator.submit(jobs)

    def _ensure_annotator(self) -> None:
        """A dead annotator (crashed process) is restarted with the work it had not returned."""
        if self.annotator.alive():
            return
        self.annotator = OnlineAnnotator(self.annotator_spec, self.annotator_mode)
        if self.variant == "ranking":
            self.annotator.submit([self._pair_job(k, a, b) for k, (a, b) in self.pending_pairs.items()])
        else:
            self._ask_messages(self._unasked())

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
        uniq, first, inverse = np.unique(keys[1:].reshape(-1), return_index=True, return_inverse=True)
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
        if self.variant == "ranking":
            self.store_counts = np.pad(self.store_counts, (0, len(self.table) - len(self.store_counts)))
            np.add.at(self.store_counts, stored_samples(ids[inverse], self.store_every), 1)
            self._ask_pairs()
        else:
            self._ask_messages(new_ids)
        values = self._values(ids, inverse).reshape(steps, cols)
        counts = self.episodic_counts.visit(keys, ctx)
        threshold = self.threshold_z if self.variant == "ranking" and self.ranking_reward == "normalised" else None
        reward = count_discounted_reward(values, counts, threshold, self.count_exponent)
        return torch.as_tensor(reward, device=self.device), None

    @torch.no_grad()
    def _values(self, ids: np.ndarray, inverse: np.ndarray) -> np.ndarray:
        """Per-transition value before the count division; `ids[inverse]` are the transitions' messages."""
        if self.variant == "retrieval":
            return np.nan_to_num(np.asarray(self.table.labels, dtype=np.float64)[ids], nan=0.0)[inverse]
        if not self.trained:  # an untrained network's output is noise: no reward yet
            return np.zeros(len(inverse))
        self.net.eval()
        out = self.net(torch.as_tensor(self.table.matrix(ids), device=self.device)).double()
        if self.variant == "classification":
            return (out > 0).double().cpu().numpy()[inverse]  # logit > 0 ⇔ p(helpful) > 0.5
        per_transition = out[torch.as_tensor(inverse, device=out.device)]
        if self.ranking_reward == "reference_raw":
            return per_transition.cpu().numpy()
        self.reward_stats.update(per_transition)  # frequency-weighted: every transition counts
        std = self.reward_stats.std().clamp_min(1e-8)
        return ((per_transition - self.reward_stats.mean) / std).cpu().numpy()

    # ---- online training -------------------------------------------------------------------------
    def _label_loss(self) -> tuple[str, torch.Tensor]:
        if self.variant == "classification":
            labels = np.asarray(self.table.labels)
            labelled = np.flatnonzero(~np.isnan(labels))
            pick = self.rng.choice(labelled, size=min(self.train_batch_size, len(labelled)), replace=False)
            logits = self.net(torch.as_tensor(self.table.matrix(pick), device=self.device))
            target = torch.as_tensor(labels[pick], dtype=torch.float32, device=self.device)
            return "oni_classifier", F.binary_cross_entropy_with_logits(logits, target)
        pick = self.rng.choice(len(self.pairs), size=min(self.train_batch_size, len(self.pairs)), replace=False)
        chosen = np.asarray(self.pairs, dtype=np.int64)[pick]
        target = torch.as_tensor(preference_targets(chosen[:, 2])[0], device=self.device)
        r_a = self.net(torch.as_tensor(self.table.matrix(chosen[:, 0]), device=self.device))
        r_b = self.net(torch.as_tensor(self.table.matrix(chosen[:, 1]), device=self.device))
        return "oni_reward_model", preference_loss(r_a, r_b, target)

    def train_step(self, batch: Batch, aux: Any) -> dict[str, float]:
        """The steps owed for the label rounds that arrived (none otherwise)."""
        steps, self._steps_due = self._steps_due, 0
        if not steps:
            return {}
        self.net.train()
        losses = []
        for _ in range(steps):
            name, loss = self._label_loss()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.variant == "ranking" and self.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
            self.optimizer.step()
            losses.append(loss.item())
        self.trained = True
        self.train_steps += steps
        return {f"loss/{name}": float(np.mean(losses))}

    def update(self, batch: Batch) -> dict[str, float]:
        start = time.perf_counter()
        metrics = super().update(batch)
        metrics.update({
            "bonus/oni_messages": float(len(self.table)),
            "bonus/oni_labelled": float(self.labelled()),
            "bonus/oni_backlog": float(self.annotator.backlog),
            "bonus/oni_labels_per_s": self.annotator.labels_per_s(),
            "bonus/oni_failed": float(self.annotator.failed),
            "bonus/oni_train_steps": float(self.train_steps),
            "bonus/oni_update_ms": 1000.0 * (time.perf_counter() - start),
        })
        if self.variant == "ranking":
            metrics["bonus/oni_stored"] = float(self.store_counts.sum())
            metrics["bonus/oni_reward_mean"] = float(self.reward_stats.mean)
            metrics["bonus/oni_reward_std"] = float(self.reward_stats.std())
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
            "given_up": sorted(self.given_up),
            "store_counts": torch.as_tensor(self.store_counts),
            "pairs": [list(p) for p in self.pairs],
            "trained": self.trained,
            "train_steps": self.train_steps,
        }

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.table = MessageTable()
        rows = state["message_rows"].numpy()
        for key, row, gain, label in zip(state["message_keys"], rows, state["message_gains"], state["message_labels"]):
            self.table.labels[self.table.add(int(key), row, float(gain))] = float(label)
        self.given_up = set(state["given_up"])
        self.store_counts = state["store_counts"].numpy().astype(np.int64)
        self.pairs = [tuple(p) for p in state["pairs"]]
        self.trained, self.train_steps = bool(state["trained"]), int(state["train_steps"])
        # What was in flight when the checkpoint was written is asked again (pairs: drawn afresh).
        self.pending_pairs = {}
        if self.variant != "ranking":
            self._ask_messages(self._unasked())
