"""bonus=oni: asynchronous annotation (never blocking), deduplication, the three variants, checkpoints."""
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlzoo.bonuses.common.base import create_bonus
from rlzoo.motif.captions import encode_message
from rlzoo.motif.dataset import BL_SCORE
from rlzoo.motif.loopback_judge import LoopbackJudge
from unrolls import make_unroll

SPEC = SimpleNamespace(family="nethack", num_actions=23)
KILL, WALL, GOLD, STONE = "You kill the newt!", "It's a wall.", "$ - 4 gold pieces.", "It's solid stone."


def config(**kw):
    return {"name": "oni", "coef": 0.1, "extrinsic_coef": 0.1, "separate_value_head": False, "int_discount": 0.99,
            "extrinsic_scale": 1.0, "extrinsic_clip": None, "clip_total": True, "reference_batch": 8,
            "int_episodic": True, "normalize": "none", "model": "retrieval", "threshold_quantile": None,
            "count_exponent": 3.0, "optimizer": "adam", "lr": 3e-3, "min_labels": 2, "train_batch_size": 16,
            "stats_interval": 5, "annotator": "score_gain", "annotator_mode": "thread",
            "annotation_batch_size": 100, "goal": "score", "llm": None, **kw}


class Feeder:
    """Successive unrolls of one environment: kill (score +4), wall, gold (+4), stone."""

    def __init__(self):
        self.index = 0
        self.score = 0

    def next(self):
        texts = [STONE, KILL, WALL, GOLD, STONE]
        scores = [self.score, self.score + 4, self.score + 4, self.score + 8, self.score + 8]
        self.score += 8
        messages = torch.from_numpy(np.stack([encode_message(t) for t in texts])[:, None])
        blstats = torch.zeros(5, 1, 27, dtype=torch.int32)
        blstats[:, 0, BL_SCORE] = torch.tensor(scores)
        first = torch.zeros(5, 1, dtype=torch.bool)
        first[0] = self.index == 0
        b = make_unroll({"message": messages, "blstats": blstats}, first, torch.zeros(4, 1, dtype=torch.bool),
                        torch.tensor([0]), torch.tensor([self.index]))
        self.index += 1
        return b


def step(bonus, feeder):
    b = feeder.next()
    r = bonus.intrinsic_reward(b)
    return r, bonus.update(b)


def run_until(bonus, feeder, condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, metrics = step(bonus, feeder)
        if condition(r, metrics):
            return r, metrics
        time.sleep(0.01)
    raise AssertionError(f"condition not met in {timeout} s; last metrics {metrics}")


@pytest.mark.unit
def test_retrieval_through_llm_never_blocks_and_sends_each_message_once():
    with LoopbackJudge(slow_s=0.5) as server:
        llm = {"base_url": server.base_url, "model": "judge-slow", "api_key_env": None, "max_concurrency": 4}
        bonus = create_bonus(config(annotator="llm", llm=llm), SPEC, None, num_envs=1, device="cpu")
        feeder = Feeder()
        start = time.monotonic()
        r, metrics = step(bonus, feeder)
        assert time.monotonic() - start < 0.4  # the judge takes 0.5 s per request; the learner did not wait
        assert torch.all(r == 0) and metrics["bonus/oni_backlog"] == 4  # 4 distinct messages in flight
        r, metrics = run_until(bonus, feeder, lambda r, m: m["bonus/oni_labelled"] == 4)
        r, _ = step(bonus, feeder)
        # Later unrolls repeat the same four messages in one long episode: N_ep grows by one each unroll.
        n = feeder.index
        assert r[:, 0].tolist() == pytest.approx([1 / n**3, 0.0, 1 / n**3, 0.0])
        prompts = [req["body"]["messages"][1]["content"] for req in server.requests]
        assert len(prompts) == len(set(prompts)) == 4  # deduplicated, in flight included
        bonus.close()


@pytest.mark.unit
def test_classification_learns_labels_online():
    bonus = create_bonus(config(model="classification"), SPEC, None, num_envs=1, device="cpu")
    feeder = Feeder()
    r, metrics = run_until(bonus, feeder, lambda r, m: m.get("loss/oni_classifier", 1.0) < 0.05, timeout=60)
    r, _ = step(bonus, feeder)
    assert (r[:, 0] > 0).tolist() == [True, False, True, False]
    bonus.close()


@pytest.mark.unit
def test_ranking_trains_motif_model_online_with_normalised_reward():
    bonus = create_bonus(config(model="ranking", threshold_quantile=0.5), SPEC, None, num_envs=1, device="cpu")
    feeder = Feeder()
    run_until(bonus, feeder, lambda r, m: m.get("loss/oni_reward_model", 1.0) < 0.2 and bonus.updates >= 10, timeout=60)
    z = bonus._values(np.arange(len(bonus.table)))
    texts = [bonus.table.text(i) for i in range(len(bonus.table))]
    assert min(z[texts.index(KILL)], z[texts.index(GOLD)]) > max(z[texts.index(WALL)], z[texts.index(STONE)])
    assert abs(z.mean()) < 1e-6 and bonus.epsilon is not None  # normalised over the messages seen
    bonus.close()


@pytest.mark.integration
def test_process_annotator_and_checkpoint_round_trip():
    bonus = create_bonus(config(annotator_mode="process"), SPEC, None, num_envs=1, device="cpu")
    feeder = Feeder()
    run_until(bonus, feeder, lambda r, m: m["bonus/oni_labelled"] == 4, timeout=60)
    state = bonus.state_dict()
    bonus.close()
    restored = create_bonus(config(), SPEC, None, num_envs=1, device="cpu")
    restored.load_state_dict(state)
    assert sorted(restored.table.text(i) for i, v in enumerate(restored.table.labels) if v == 1.0) == sorted([KILL, GOLD])
    r, metrics = step(restored, feeder)
    assert metrics["bonus/oni_backlog"] == 0  # nothing re-asked
    assert r[:, 0].tolist() == pytest.approx([1 / feeder.index**3, 0.0, 1 / feeder.index**3, 0.0])
    restored.close()


@pytest.mark.unit
def test_oni_config_errors():
    with pytest.raises(ValueError, match="bonus.model='ranker'"):
        create_bonus(config(model="ranker"), SPEC, None, 1, "cpu")
    with pytest.raises(ValueError, match="bonus.annotator_mode='actor'"):
        create_bonus(config(annotator_mode="actor"), SPEC, None, 1, "cpu")
    with pytest.raises(ValueError, match="bonus.goal='speed'"):
        create_bonus(config(goal="speed"), SPEC, None, 1, "cpu")
    with pytest.raises(ValueError, match="base_url"):
        create_bonus(config(annotator="llm", llm={"base_url": "localhost", "model": "m"}), SPEC, None, 1, "cpu")


@pytest.mark.unit
def test_annotator_survives_an_unreachable_server_and_keeps_the_work():
    import socket

    from rlzoo.motif.oni_annotator import AnnotatorSpec, OnlineAnnotator

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = AnnotatorSpec(task="message", annotator="llm", retry_wait_s=0.05,
                         llm={"base_url": f"http://127.0.0.1:{port}/v1", "model": "judge", "max_retries": 0,
                              "api_key_env": None})
    annotator = OnlineAnnotator(spec)
    annotator.submit([(0, (KILL, 4.0)), (1, (WALL, 0.0))])
    deadline = time.monotonic() + 10
    while annotator.last_error is None and time.monotonic() < deadline:
        assert annotator.poll() == []
        time.sleep(0.02)
    assert "cannot reach the LLM server" in annotator.last_error
    assert annotator.alive() and annotator.backlog == 2  # nothing dropped, still retrying
    annotator.close()
