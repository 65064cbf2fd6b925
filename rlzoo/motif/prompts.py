"""Motif's prompt structure: a judge persona, a goal variant, two captions, a fixed answer format.

The wording is ours; the structure follows the paper: the model recalls NetHack and its goal, reads
the goal variant, analyses each description, compares them, and ends with a declaration the parser
in `labels.py` understands. ONI's per-message prompt (retrieval / classification) reuses the persona.
"""
import json

SYSTEM_PROMPT = (
    "You are an expert, honest judge of play in the game NetHack, assessing how much progress an "
    "agent makes. Answer as helpfully as you can while staying truthful; if you do not know "
    "something, say so rather than inventing it."
)

# Goal variants of the paper: score (the default), none ("zero knowledge": no goal hint), combat,
# gold and stairs.
GOALS: dict[str, str] = {
    "score": (
        "Favour the agent that raises its in-game score, for example by defeating monsters, "
        "picking up gold or descending the dungeon's stairs."
    ),
    "none": "",
    "combat": "Favour the agent that fights, for example by defeating monsters.",
    "gold": "Favour the agent that gathers the most gold.",
    "stairs": "Favour the agent that goes down the stairs to deeper dungeon levels.",
}

_PAIR_TEMPLATE = (
    "Below are two short descriptions of NetHack gameplay, made of the messages the game showed. "
    "Start by summarising what you know about NetHack and what its goal is. {goal}"
    "Next, analyse what each description means, using only what it says (a description may be "
    "empty) and your knowledge of the game. Compare the two from first principles. Finally, state "
    "which description most likely shows progress towards the goal by ending with exactly one of "
    '("best_description": 1), ("best_description": 2) or ("best_description": None).\n'
    "{first}\n{second}"
)

RETRY_PROMPT = (
    "Which description is better? Answer only with "
    '("best_description": 1), ("best_description": 2) or ("best_description": None).'
)

_MESSAGE_TEMPLATE = (
    "Below is one message the game NetHack showed to an agent. Start by summarising what you know "
    "about NetHack and what its goal is. {goal}"
    "Next, explain what the message means for the agent. Finally, state whether seeing this "
    'message indicates progress towards the goal by ending with exactly ("helpful": 1) or '
    '("helpful": 0).\n{message}'
)

HELPFUL_RETRY_PROMPT = 'Is the message helpful? Answer only with ("helpful": 1) or ("helpful": 0).'


def check_goal(goal: str, key: str = "goal") -> str:
    if goal not in GOALS:
        raise ValueError(f"{key}={goal!r} is not a Motif goal variant; allowed: {sorted(GOALS)}")
    return goal


def _goal_sentence(goal: str) -> str:
    text = GOALS[check_goal(goal)]
    return f"{text} " if text else ""


def pair_prompt(first: str, second: str, goal: str = "score") -> str:
    """User message comparing two captions; JSON-quoting keeps quotes in captions unambiguous."""
    return _PAIR_TEMPLATE.format(
        goal=_goal_sentence(goal),
        first=json.dumps({"description_1": first}),
        second=json.dumps({"description_2": second}),
    )


def message_prompt(message: str, goal: str = "score") -> str:
    """ONI's user message asking whether one message shows progress."""
    return _MESSAGE_TEMPLATE.format(goal=_goal_sentence(goal), message=json.dumps({"message": message}))
