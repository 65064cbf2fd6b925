"""Captions, prompt filling for every goal variant, and label parsing on canned replies."""
import json

import numpy as np
import pytest

from rlzoo.motif.captions import build_caption, caption_from_array, decode_message, encode_message
from rlzoo.motif.labels import HELPFUL_TOKEN, UNHELPFUL_TOKEN, Label, parse_message_label, parse_preference
from rlzoo.motif.prompts import EXAMPLES, GOALS, message_prompt, pair_prompt

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


@pytest.mark.parametrize("goal, excluded", [
    ("combat", ("gold", "deeper into the dungeon")),
    ("gold", ("fighting", "defeating monsters", "deeper into the dungeon")),
    ("stairs", ("fighting", "gold")),
])
def test_narrow_goals_say_what_never_to_favour(goal, excluded):
    _, never = GOALS[goal].split("Never favour")
    assert all(word in never for word in excluded)


def test_score_and_none_exclude_nothing():
    assert "Never" not in GOALS["score"] and GOALS["none"] == ""


@pytest.mark.parametrize("goal", sorted(GOALS))
def test_message_prompt_states_the_rules_examples_and_format(goal):
    prompt = message_prompt('You see "here" a dagger.', goal)
    # Helpful means helping to solve the game, not being informative; only extreme help is positive.
    assert "Helpful does not mean that the message tells the player something useful" in prompt
    assert "brings the agent closer to solving the game" in prompt
    assert f"{HELPFUL_TOKEN} only if it is extremely helpful" in prompt
    assert f"whether unhelpful, neutral or only mildly helpful, {UNHELPFUL_TOKEN}" in prompt
    assert GOALS[goal] in prompt and json.dumps({"message": 'You see "here" a dagger.'}) in prompt
    assert prompt.count("Example ") == (0 if goal == "none" else 4)
    for tag in ("knowledge", "analysis", "label"):
        assert f"<{tag}>" in prompt and f"</{tag}>" in prompt
    if EXAMPLES[goal]:
        assert prompt.index("Example 4") < prompt.index("The message to label")


def test_examples_are_labelled_for_each_goal():
    def verdicts(goal):
        return [HELPFUL_TOKEN in text.rsplit(":", 1)[1] for text in EXAMPLES[goal]]
    # kill + level up, a sign of a gold vault, a gold pickup, a neutral door (stairs: the way down).
    assert verdicts("score") == [True, True, True, False]
    assert verdicts("combat") == [True, False, False, False]
    assert verdicts("gold") == [False, True, True, False]
    assert verdicts("stairs") == [False, True, False, False] and "staircase down" in EXAMPLES["stairs"][1]


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
    [
        (f"<knowledge> k </knowledge>\n<analysis> a </analysis>\n<label> {HELPFUL_TOKEN} </label>", 1),
        (f"<label>{UNHELPFUL_TOKEN}</label>", 0),
        (f"<LABEL> {HELPFUL_TOKEN}. </LABEL>", 1),
        # The format echoed first, the answer last: the last tag decides.
        (f"<label> {HELPFUL_TOKEN} or {UNHELPFUL_TOKEN} </label> ... <label> {UNHELPFUL_TOKEN} </label>", 0),
        (f"<label> {HELPFUL_TOKEN}/{UNHELPFUL_TOKEN} </label>", None),  # both: no verdict
        (f"I would say {HELPFUL_TOKEN}.", 1),                           # no tag, one token
        ("<label> helpful </label>", None),
        (f"<label> {HELPFUL_TOKEN}S </label>", None),                    # not the token
        ("", None),
        (None, None),
    ],
)
def test_parse_message_label(reply, value):
    assert parse_message_label(reply) == value
