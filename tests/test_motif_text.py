"""Captions, prompt filling for every goal variant, and label parsing on canned replies."""
import json

import numpy as np
import pytest

from rlzoo.motif.captions import build_caption, caption_from_array, decode_message, encode_message
from rlzoo.motif.labels import Label, parse_helpful, parse_preference
from rlzoo.motif.prompts import GOALS, pair_prompt

pytestmark = pytest.mark.unit


def test_caption_groups_repeats_and_drops_empty():
    messages = ["", "It's a wall.", "It's a wall.", "", "It's a wall.", "You kill the newt!", "  ", "It's a wall."]
    # The empty message between two walls does not break the run: empties are dropped first.
    assert build_caption(messages) == "It's a wall. (x3) You kill the newt! It's a wall."
    assert build_caption(["", " "]) == ""
    assert build_caption(["a", "b", "a"]) == "a b a"


def test_caption_from_message_bytes_respects_length():
    rows = np.stack([encode_message("Hello"), encode_message("Hello"), encode_message("Bye")])
    assert decode_message(rows[2]) == "Bye"
    assert caption_from_array(rows) == "Hello (x2) Bye"
    assert caption_from_array(rows, length=2) == "Hello (x2)"


@pytest.mark.parametrize("goal", sorted(GOALS))
def test_pair_prompt_holds_goal_and_both_captions(goal):
    prompt = pair_prompt('You see "here" a dagger.', "It's a wall. (x2)", goal)
    assert json.dumps({"description_1": 'You see "here" a dagger.'}) in prompt
    assert json.dumps({"description_2": "It's a wall. (x2)"}) in prompt
    assert prompt.index("description_1") < prompt.index("description_2")
    for other, text in GOALS.items():
        if text:
            assert (text in prompt) == (other == goal)
    assert '("best_description": None)' in prompt


def test_prompt_rejects_unknown_goal():
    with pytest.raises(ValueError, match="goal='speed'.*allowed"):
        pair_prompt("a", "b", "speed")


@pytest.mark.parametrize(
    "reply, label",
    [
        ('Analysis... ("best_description": 1)', Label.FIRST),
        ('("best_description": 2)', Label.SECOND),
        ('("best_description": None)', Label.TIE),
        ("{'best_description': null}", Label.TIE),
        ('"best_description" : "2"', Label.SECOND),
        ("Best_Description: 1", Label.FIRST),
        # The format is quoted first, the answer comes last: the last declaration wins.
        ('Answer with ("best_description": 1) or 2. Final: ("best_description": 2)', Label.SECOND),
        ("I prefer the first one.", Label.UNKNOWN),
        ('("best_description": 3)', Label.UNKNOWN),
        ('("best_description": 12)', Label.UNKNOWN),
        ("", Label.UNKNOWN),
        (None, Label.UNKNOWN),
    ],
)
def test_parse_preference(reply, label):
    assert parse_preference(reply) is label


@pytest.mark.parametrize(
    "reply, value",
    [('("helpful": 1)', 1), ('"helpful": 0', 0), ("helpful: yes", 1), ('("helpful": false)', 0),
     ("It depends.", None), ('("helpful": 2)', None)],
)
def test_parse_helpful(reply, value):
    assert parse_helpful(reply) == value

