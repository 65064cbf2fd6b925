"""Reward model: Bradley–Terry loss on hand-made pairs, training, saved statistics, safe loading."""
import math

import numpy as np
import pytest
import torch

from rlzoo.motif.annotate import annotate
from rlzoo.motif.annotators import ScoreGainAnnotator
from rlzoo.motif.captions import encode_message
from rlzoo.motif.dataset import PairDataset, Segment
from rlzoo.motif.labels import Label
from rlzoo.motif.reward_model import MotifReward, preference_loss, preference_targets
from rlzoo.motif.train_reward import TrainSettings, split, train_reward_model

pytestmark = pytest.mark.unit


def test_preference_loss_matches_hand_computed_values():
    r1 = torch.tensor([2.0, 0.0, 1.0])
    r2 = torch.tensor([0.0, 0.0, 3.0])
    target = torch.tensor([1.0, 0.5, 0.0])
    # −log σ(2), −(½ log σ(0) + ½ log σ(0)) = log 2, −log σ(3 − 1)
    expected = (math.log(1 + math.exp(-2)) + math.log(2) + math.log(1 + math.exp(-2))) / 3
    assert preference_loss(r1, r2, target).item() == pytest.approx(expected, rel=1e-6)
    # Swapping the pair and the label gives the same loss.
    assert preference_loss(r2, r1, 1 - target).item() == pytest.approx(expected, rel=1e-6)


def test_targets_tie_is_half_unknown_dropped():
    target, usable = preference_targets(np.array([Label.FIRST, Label.SECOND, Label.TIE, Label.UNKNOWN]))
    assert target[:3].tolist() == [1.0, 0.0, 0.5]
    assert usable.tolist() == [True, True, True, False]


def test_split_is_disjoint_and_covers_everything():
    train, val = split(100, 0.2, seed=3)
    assert len(val) == 20 and sorted(np.concatenate([train, val]).tolist()) == list(range(100))


GOOD = ["You kill the newt!", "You kill the jackal!", "$ - 7 gold pieces.", "You kill the grid bug!"]
NEUTRAL = ["It's a wall.", "It's solid stone.", "", "You see here a dagger.", "Unknown command '^M'."]


def build(path, n=200, seed=0):
    rng = np.random.default_rng(seed)
    data = PairDataset.create(path, n, 1, {})
    vocab = GOOD + NEUTRAL
    for _ in range(n):
        sides = []
        for _ in range(2):
            text = vocab[rng.integers(len(vocab))]
            sides.append(Segment(encode_message(text)[None], np.zeros((1, 27), np.int32), float(text in GOOD), (0, 1)))
        data.append(*sides)
    data.flush()


def test_training_learns_hand_made_preferences_and_saves_statistics(tmp_path):
    build(tmp_path)
    annotate(tmp_path, ScoreGainAnnotator(), {"annotator": "score_gain"}, progress=False)
    out = tmp_path / "rm.pt"
    settings = TrainSettings(epochs=5, batch_size=32, lr=3e-3, embed_dim=8, channels=16, hidden=32)
    summary = train_reward_model(tmp_path, out, settings, progress=False)
    assert summary["val_accuracy"] >= 0.95 and summary["val_non_tie_pairs"] > 10

    reward = MotifReward.load(out)  # weights_only=True inside
    z = reward.normalized(np.stack([encode_message(t) for t in GOOD + NEUTRAL]))
    assert z[: len(GOOD)].min() > z[len(GOOD):].max()
    # ε levels: the saved quantiles are monotone and the median is the 0.5 entry.
    assert np.all(np.diff(reward.quantile_values) >= 0)
    assert reward.quantile(0.5) == pytest.approx(float(reward.quantile_values[50]))
    with pytest.raises(ValueError, match="threshold_quantile=0.505"):
        reward.quantile(0.505)

    # Rerunning resumes from the saved epoch state instead of retraining.
    again = train_reward_model(tmp_path, out, settings, progress=False)
    assert again["val_accuracy"] == pytest.approx(summary["val_accuracy"])


def test_checkpoint_with_code_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"arch": {}, "payload": object()}, path)
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        MotifReward.load(path)
