"""bonus=oni: asynchronous annotation (never blocking), the three variants, ranking's pair store and
running normalisation, the training cadence, failed requests, checkpoints."""
import socket
import time
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlzoo.bonuses.common.base import create_bonus
from rlzoo.bonuses.oni import sample_pairs, stored_samples
from rlzoo.motif.captions import encode_message
from rlzoo.motif.dataset import BL_SCORE
from rlzoo.motif.labels import Label
from rlzoo.motif.loopback_judge import LoopbackJudge
from rlzoo.motif.oni_annotator import AnnotatorSpec, OnlineAnnotator
from unrolls import make_unroll

SPEC = SimpleNamespace(family="nethack", num_actions=23)
KILL, WALL, GOLD, STONE = "You kill the newt!", "It's a wall.", "$ - 4 gold pieces.", "It's solid stone."


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The networks here are tiny: on a shared machine, two threads per op only wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config(**kw):
    return {"name": "oni", "coef": 0.1, "extrinsic_coef": 0.1, "separate_value_head": False, "int_discount": 0.99,
            "extrinsic_scale": 1.0, "extrinsic_clip": None, "clip_total": True, "reference_batch": 8, "grad_norm_clip": 0.0,
            "int_episodic": True, "normalize": "none", "model": "retrieval", "threshold_z": None,
            "ranking_reward": "normalised", "store_every": 1, "pairs_per_update": 10, "ranking_grad_clip": 10.0,
            "count_exponent": 3.0, "optimizer": "adam", "lr": 3e-3, "train_batch_size": 16,
            "steps_per_label_batch": 2, "max_labels": 25000, "annotator": "score_gain", "annotator_mode": "thread",
            "annotation_batch_size": 100, "max_attempts": 3, "goal": "score", "llm": None, **kw}


def llm(server, model, **kw):
    return {"base_url": server.base_url, "model": model, "api_key_env": None, "max_concurrency": 4, **kw}


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


def texts_batch(columns, index):
    """An unroll whose column b shows the messages `columns[b]` (obs[0..T]); unroll `index` of envs 0..B-1."""
    steps, cols = len(columns[0]) - 1, len(columns)
    messages = torch.from_numpy(np.stack([[encode_message(t) for t in col] for col in columns], axis=1))
    first = torch.zeros(steps + 1, cols, dtype=torch.bool)
    first[0] = index == 0
    return make_unroll({"message": messages, "blstats": torch.zeros(steps + 1, cols, 27, dtype=torch.int32)}, first,
                       torch.zeros(steps, cols, dtype=torch.bool), torch.arange(cols), torch.full((cols,), index))


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


def labels_by_text(bonus):
    return {bonus.table.text(i): label for i, label in enumerate(bonus.table.labels)}


@pytest.mark.unit
def test_retrieval_through_llm_never_blocks_and_sends_each_message_once():
    with LoopbackJudge(slow_s=0.5) as server:
        bonus = create_bonus(config(annotator="llm", llm=llm(server, "judge-slow")), SPEC, None, num_envs=1, device="cpu")
        feeder = Feeder()
        start = time.monotonic()
        r, metrics = step(bonus, feeder)
        assert time.monotonic() - start < 0.4  # the judge takes 0.5 s per request; the learner did not wait
        assert torch.all(r == 0) and metrics["bonus/oni_backlog"] == 4  # 4 distinct messages in flight
        run_until(bonus, feeder, lambda r, m: m["bonus/oni_labelled"] == 4)
        r, _ = step(bonus, feeder)
        # Later unrolls repeat the same four messages in one long episode: N_ep grows by one each unroll.
        n = feeder.index
        assert r[:, 0].tolist() == pytest.approx([1 / n**3, 0.0, 1 / n**3, 0.0])
        prompts = [req["body"]["messages"][1]["content"] for req in server.requests]
        assert len(prompts) == len(set(prompts)) == 4  # deduplicated, in flight included
        bonus.close()


@pytest.mark.unit
def test_an_unreadable_verdict_is_not_helpful_and_is_not_asked_again():
    with LoopbackJudge() as server:
        bonus = create_bonus(config(annotator="llm", llm=llm(server, "judge-garbage")), SPEC, None, 1, "cpu")
        feeder = Feeder()
        run_until(bonus, feeder, lambda r, m: m["bonus/oni_labelled"] == 4)
        step(bonus, feeder)
        assert labels_by_text(bonus) == {KILL: 0.0, WALL: 0.0, GOLD: 0.0, STONE: 0.0}
        assert len(server.requests) == 4 and bonus.annotator.failed == 0  # one request each, no retry turn
        bonus.close()


@pytest.mark.unit
def test_failed_requests_are_asked_again_later_then_given_up_never_labelled():
    # The server fails each prompt's first two requests (HTTP 500); the client does not retry itself.
    with LoopbackJudge(flaky_failures=2) as server:
        settings = llm(server, "judge-flaky", max_retries=0)
        bonus = create_bonus(config(annotator="llm", llm=settings, max_attempts=3), SPEC, None, 1, "cpu")
        feeder = Feeder()
        run_until(bonus, feeder, lambda r, m: m["bonus/oni_labelled"] == 4)
        assert labels_by_text(bonus) == {KILL: 1.0, WALL: 0.0, GOLD: 1.0, STONE: 0.0}  # the third ask answered
        assert Counter(Counter(r["body"]["messages"][1]["content"] for r in server.requests).values()) == {3: 4}
        bonus.close()
    with LoopbackJudge(flaky_failures=2) as server:
        bonus = create_bonus(config(annotator="llm", llm=llm(server, "judge-flaky", max_retries=0), max_attempts=2),
                             SPEC, None, 1, "cpu")
        feeder = Feeder()
        r, metrics = run_until(bonus, feeder, lambda r, m: m["bonus/oni_failed"] == 4)
        for _ in range(3):
            r, metrics = step(bonus, feeder)
        assert np.isnan(bonus.table.labels).all() and metrics["bonus/oni_labelled"] == 0  # not "not helpful"
        assert torch.all(r == 0) and metrics["bonus/oni_backlog"] == 0
        assert len(server.requests) == 8  # two asks each, then never again
        bonus.close()


@pytest.mark.unit
def test_a_timeout_is_a_failed_request_not_a_label():
    with LoopbackJudge(slow_s=1.0) as server:
        settings = llm(server, "judge-slow", timeout_s=0.1, max_retries=0)
        bonus = create_bonus(config(annotator="llm", llm=settings, max_attempts=1), SPEC, None, 1, "cpu")
        feeder = Feeder()
        _, metrics = run_until(bonus, feeder, lambda r, m: m["bonus/oni_failed"] == 4)
        assert metrics["bonus/oni_labelled"] == 0 and np.isnan(bonus.table.labels).all()
        assert "no answer within 0.1 s" in bonus.annotator.last_error
        bonus.close()


@pytest.mark.unit
@pytest.mark.parametrize("max_labels, trains", [(5, True), (4, False)])
def test_classification_trains_after_each_label_round_until_the_cap(max_labels, trains):
    bonus = create_bonus(config(model="classification", max_labels=max_labels, steps_per_label_batch=12, lr=1e-2),
                         SPEC, None, 1, "cpu")
    feeder = Feeder()
    run_until(bonus, feeder, lambda r, m: m["bonus/oni_labelled"] == 4)
    for _ in range(5):  # no new message, so no new labels: no more training
        r, metrics = step(bonus, feeder)
    # One round brought the four labels: its 12 steps, unless the four reached the cap.
    assert metrics["bonus/oni_train_steps"] == (12 if trains else 0)
    if trains:
        assert (r[:, 0] > 0).tolist() == [True, False, True, False]
    else:
        assert torch.all(r == 0)  # an untrained classifier gives no reward
    bonus.close()


@pytest.mark.unit
def test_pair_draws_follow_the_stored_frequencies():
    counts = np.array([6, 3, 1, 0])
    pairs = sample_pairs(counts, 100_000, np.random.default_rng(1))
    freq = np.bincount(pairs.reshape(-1), minlength=4) / pairs.size
    np.testing.assert_allclose(freq, counts / counts.sum(), atol=0.005)
    assert np.mean((pairs[:, 0] == 0) & (pairs[:, 1] == 0)) == pytest.approx(0.36, abs=0.005)  # independent draws
    np.testing.assert_array_equal(stored_samples(np.arange(25), 10), [0, 10, 20])


@pytest.mark.unit
def test_ranking_stores_every_kth_transition_and_keeps_asking_pairs():
    # 4 columns x 5 steps: WALL 14 times, KILL 3, GOLD 2, STONE 1 (obs[1:], time-major).
    columns = [[STONE, WALL, WALL, WALL, WALL, KILL], [STONE, WALL, WALL, WALL, WALL, KILL],
               [STONE, WALL, WALL, WALL, GOLD, KILL], [STONE, WALL, WALL, GOLD, WALL, STONE]]
    bonus = create_bonus(config(model="ranking", store_every=1), SPEC, None, 4, "cpu")
    bonus.intrinsic_reward(batch := texts_batch(columns, 0))
    bonus.update(batch)
    stored = {bonus.table.text(i): int(n) for i, n in enumerate(bonus.store_counts)}
    assert stored == {WALL: 14, KILL: 3, GOLD: 2, STONE: 1}
    every3 = create_bonus(config(model="ranking", store_every=3), SPEC, None, 4, "cpu")
    every3.intrinsic_reward(texts_batch(columns, 0))
    flat = np.array(columns)[:, 1:].T.reshape(-1)  # time-major, as the batch is flattened
    assert {every3.table.text(i): int(n) for i, n in enumerate(every3.store_counts) if n} == Counter(flat[::3])
    every3.close()
    for index in range(1, 12):  # nothing new to see, yet pairs keep being asked and labelled
        bonus.intrinsic_reward(batch := texts_batch(columns, index))
        metrics = bonus.update(batch)
        time.sleep(0.01)
    assert bonus.annotator.submitted == 12 * 10 and metrics["bonus/oni_labelled"] > 50
    assert metrics["bonus/oni_train_steps"] > 2 * 5  # steps after each round of pairs
    bonus.close()


@pytest.mark.unit
def test_ranking_asks_no_more_pairs_while_the_backlog_holds_two_rounds():
    with LoopbackJudge(slow_s=0.5) as server:
        settings = llm(server, "judge-slow", max_concurrency=1)
        bonus = create_bonus(config(model="ranking", annotator="llm", llm=settings, annotation_batch_size=5),
                             SPEC, None, 1, "cpu")
        feeder = Feeder()
        for _ in range(5):
            step(bonus, feeder)
        assert bonus.annotator.submitted == 10  # 10 pairs reached 2 × 5 in the backlog: no more asked
        bonus.close()


@pytest.mark.unit
@pytest.mark.parametrize("ranking_reward", ["normalised", "reference_raw"])
def test_ranking_reward_is_normalised_by_running_stats_of_agent_batches(ranking_reward):
    # No training (a cap of one pair) and no count division: the reward is the network's z.
    bonus = create_bonus(config(model="ranking", max_labels=1, count_exponent=0.0, ranking_reward=ranking_reward),
                         SPEC, None, 2, "cpu")
    bonus.trained = True
    torch.nn.init.normal_(bonus.net.head[-1].weight, std=10.0)  # spread the untrained rewards out
    batches = [[[STONE, WALL, WALL, KILL], [STONE, WALL, GOLD, WALL]],
               [[KILL, KILL, KILL, STONE], [WALL, STONE, STONE, STONE]]]
    seen, rewards = [], []
    for index, columns in enumerate(batches):
        rewards.append(bonus.intrinsic_reward(batch := texts_batch(columns, index)).numpy())
        bonus.update(batch)
        seen.append(np.array(columns)[:, 1:].T)  # [T, B] messages of obs[1:]
    with torch.no_grad():
        bonus.net.eval()
        raw = {t: float(bonus.net(torch.from_numpy(encode_message(t))[None])) for t in (KILL, WALL, GOLD, STONE)}
    every = np.array([raw[t] for t in np.concatenate(seen).reshape(-1)])  # each transition counts once
    if ranking_reward == "reference_raw":
        expected = np.vectorize(raw.get)(seen[1])
    else:
        assert float(bonus.reward_stats.mean) == pytest.approx(every.mean(), rel=1e-5)
        assert float(bonus.reward_stats.var) == pytest.approx(every.var(), rel=1e-4)
        expected = (np.vectorize(raw.get)(seen[1]) - every.mean()) / every.std()
    np.testing.assert_allclose(rewards[1], expected, rtol=1e-4, atol=1e-5)
    bonus.close()


@pytest.mark.unit
def test_ranking_learns_the_preferences_online():
    bonus = create_bonus(config(model="ranking", lr=1e-2), SPEC, None, num_envs=1, device="cpu")
    feeder = Feeder()
    run_until(bonus, feeder, lambda r, m: bonus.train_steps >= 60, timeout=120)
    with torch.no_grad():
        bonus.net.eval()
        r = {t: float(bonus.net(torch.from_numpy(encode_message(t))[None])) for t in (KILL, WALL, GOLD, STONE)}
    assert min(r[KILL], r[GOLD]) > max(r[WALL], r[STONE])
    bonus.close()


@pytest.mark.unit
def test_ranking_unreadable_verdict_is_a_tie_asked_once():
    with LoopbackJudge() as server:
        bonus = create_bonus(config(model="ranking", annotator="llm", llm=llm(server, "judge-garbage")),
                             SPEC, None, 1, "cpu")
        feeder = Feeder()
        run_until(bonus, feeder, lambda r, m: m["bonus/oni_labelled"] >= 20)
        assert {label for _, _, label in bonus.pairs} == {int(Label.TIE)}
        asked = sum(bonus.table.text(a) != bonus.table.text(b) for a, b, _ in bonus.pairs)  # the others need no LLM
        assert asked > 0 and len(server.requests) >= asked
        assert all(len(r["body"]["messages"]) == 2 for r in server.requests)  # no retry turn
        bonus.close()


@pytest.mark.unit
def test_ranking_state_survives_a_checkpoint():
    bonus = create_bonus(config(model="ranking"), SPEC, None, num_envs=1, device="cpu")
    feeder = Feeder()
    run_until(bonus, feeder, lambda r, m: m["bonus/oni_train_steps"] >= 4)
    step(bonus, feeder)
    state = bonus.state_dict()
    bonus.close()
    restored = create_bonus(config(model="ranking"), SPEC, None, num_envs=1, device="cpu")
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.store_counts, bonus.store_counts)
    assert restored.pairs == bonus.pairs and restored.trained
    assert float(restored.reward_stats.mean) == float(bonus.reward_stats.mean) != 0.0
    restored.close()


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
    with pytest.raises(ValueError, match="bonus.ranking_reward='raw'"):
        create_bonus(config(ranking_reward="raw"), SPEC, None, 1, "cpu")
    with pytest.raises(ValueError, match="bonus.store_every=0"):
        create_bonus(config(store_every=0), SPEC, None, 1, "cpu")
    with pytest.raises(ValueError, match="base_url"):
        create_bonus(config(annotator="llm", llm={"base_url": "localhost", "model": "m"}), SPEC, None, 1, "cpu")


@pytest.mark.unit
def test_annotator_survives_an_unreachable_server_and_keeps_the_work():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = AnnotatorSpec(task="message", annotator="llm", retry_wait_s=0.05, max_attempts=1,
                         llm={"base_url": f"http://127.0.0.1:{port}/v1", "model": "judge", "max_retries": 0,
                              "api_key_env": None})
    annotator = OnlineAnnotator(spec)
    annotator.submit([(0, (KILL, 4.0)), (1, (WALL, 0.0))])
    deadline = time.monotonic() + 10
    errors = 0
    while errors < 3 and time.monotonic() < deadline:  # several rounds, more than max_attempts
        assert annotator.poll() == []
        errors += annotator.last_error is not None
        annotator.last_error = None
        time.sleep(0.06)
    assert errors >= 3
    # An unreachable server is no answer about the message: nothing given up, nothing dropped.
    assert annotator.alive() and annotator.backlog == 2 and annotator.failed == 0
    annotator.close()
