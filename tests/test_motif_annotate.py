"""Annotate step: incremental labels, resume after interruption, TIE without asking, heuristics."""
import json

import numpy as np
import pytest

from rlzoo.motif.annotate import annotate, read_labels
from rlzoo.motif.annotators import EpisodeReturnAnnotator, compare, LLMAnnotator, ScoreGainAnnotator
from rlzoo.motif.captions import caption_from_array, encode_message
from rlzoo.motif.dataset import BL_SCORE, PairDataset, Segment
from rlzoo.motif.labels import Label
from rlzoo.motif.llm_client import ChatClient, LLMSettings, LLMUnreachableError
from rlzoo.motif.loopback_judge import LoopbackJudge, progress_score

pytestmark = pytest.mark.unit

TEXTS = ["You kill the newt!", "It's a wall.", "$ - 3 gold pieces.", "", "It's solid stone."]


def seq(texts, gain=0.0, ret=0.0):
    messages = np.stack([encode_message(t) for t in texts])
    blstats = np.zeros((len(texts), 27), np.int32)
    blstats[:, BL_SCORE] = gain
    return Segment(messages, blstats, gain, (1, 1 + len(texts)), ret)


def make_dataset(path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    data = PairDataset.create(path, n, 2, {})
    for _ in range(n):
        a, b = rng.choice(len(TEXTS), 2)
        data.append(seq([TEXTS[a]] * 2, gain=float(a == 0), ret=float(a)), seq([TEXTS[b]], gain=float(b == 0), ret=float(b)))
    data.flush()
    return data


def llm(base_url, model="judge", **kw):
    return LLMAnnotator(ChatClient(LLMSettings(base_url=base_url, model=model, backoff_s=0.01, **kw)), "score")


def test_dataset_round_trip_without_pickle(tmp_path):
    make_dataset(tmp_path, n=5)
    data = PairDataset.open(tmp_path)
    assert data.count == 5 and data.messages.shape == (5, 2, 2, 256)
    assert data.length[0].tolist() == [2, 1]
    assert np.load(tmp_path / "messages.npy", mmap_mode="r", allow_pickle=False).dtype == np.uint8


def test_llm_annotation_labels_every_pair_and_ties_identical_captions(tmp_path):
    data = make_dataset(tmp_path)
    with LoopbackJudge() as server:
        summary = annotate(tmp_path, llm(server.base_url), {"annotator": "llm"}, progress=False)
        asked = len(server.requests)
    labels = read_labels(tmp_path / "labels.jsonl")
    assert summary["failed"] == 0 and len(labels) == data.count
    identical = 0
    for i, label in labels.items():
        first, second = (TEXTS.index(data.arrays["messages"][i, s, 0].tobytes().rstrip(b"\0").decode()) for s in (0, 1))
        # The loopback judge prefers the text with more progress words (kill, gold, ...).
        expected = Label.TIE if first == second else compare(progress_score(TEXTS[first]), progress_score(TEXTS[second]))
        assert label is expected
        identical += caption_from_array(data.messages[i, 0], data.length[i, 0]) == caption_from_array(data.messages[i, 1], data.length[i, 1])
    assert identical > 0 and asked == data.count - identical  # identical captions never reach the LLM


def test_interrupted_annotation_resumes_without_reasking(tmp_path):
    data = make_dataset(tmp_path)
    with LoopbackJudge() as server:
        annotate(tmp_path, llm(server.base_url), {"annotator": "llm"}, limit=15, progress=False)
        # A crash in the middle of writing a line leaves a partial last line.
        with open(tmp_path / "labels.jsonl", "a") as handle:
            handle.write('{"index": 39, "lab')
        before = read_labels(tmp_path / "labels.jsonl")
        server.requests.clear()
        summary = annotate(tmp_path, llm(server.base_url), {"annotator": "llm"}, progress=False)
        asked = {r["body"]["messages"][1]["content"] for r in server.requests}
    lines = (tmp_path / "labels.jsonl").read_text().splitlines()
    indices = [json.loads(line)["index"] for line in lines]
    assert sorted(indices) == list(range(data.count))            # every pair once, nothing lost
    assert len(before) == 15 and summary["new"] == data.count - 15
    assert len(asked) <= data.count - 15


def test_unreachable_server_keeps_what_was_labelled(tmp_path):
    make_dataset(tmp_path)
    with LoopbackJudge() as server:
        annotate(tmp_path, llm(server.base_url), {"annotator": "llm"}, limit=10, progress=False)
        dead_url = server.base_url
    with pytest.raises(LLMUnreachableError):
        annotate(tmp_path, llm(dead_url, max_retries=0), {"annotator": "llm"}, progress=False)
    assert len(read_labels(tmp_path / "labels.jsonl")) >= 10


def test_labels_file_refuses_a_second_annotator(tmp_path):
    make_dataset(tmp_path, n=4)
    annotate(tmp_path, ScoreGainAnnotator(), {"annotator": "score_gain"}, progress=False)
    with pytest.raises(ValueError, match="labelled by"):
        annotate(tmp_path, EpisodeReturnAnnotator(), {"annotator": "episode_return"}, progress=False)


def test_heuristic_annotators(tmp_path):
    data = make_dataset(tmp_path)
    annotate(tmp_path, ScoreGainAnnotator(), {"annotator": "score_gain"}, labels_name="gain", progress=False)
    annotate(tmp_path, EpisodeReturnAnnotator(), {"annotator": "episode_return"}, labels_name="ret", progress=False)
    gain, ret = read_labels(tmp_path / "gain.jsonl"), read_labels(tmp_path / "ret.jsonl")
    for i in range(data.count):
        g, r = data.score_gain[i], data.episode_return[i]
        same = np.array_equal(data.messages[i, 0, 0], data.messages[i, 1, 0])
        expected_gain = Label.TIE if same or g[0] == g[1] else (Label.FIRST if g[0] > g[1] else Label.SECOND)
        expected_ret = Label.TIE if same or r[0] == r[1] else (Label.FIRST if r[0] > r[1] else Label.SECOND)
        assert gain[i] is expected_gain and ret[i] is expected_ret


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden"])
def test_labels_name_must_be_a_plain_file_name(tmp_path, name):
    make_dataset(tmp_path, n=2)
    with pytest.raises(ValueError, match="labels_name"):
        annotate(tmp_path, ScoreGainAnnotator(), {"annotator": "score_gain"}, labels_name=name, progress=False)
