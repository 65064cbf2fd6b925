"""The LLM prompts of Motif (a pair of captions) and ONI (one message), in our own words.

Motif's pair prompt: a judge persona, then the model recalls NetHack and its goal, reads the goal
variant, analyses each description, compares them, and ends with a declaration `labels.py` parses.
ONI ranking asks the same pair prompt. ONI retrieval and classification ask about one message: the
model recalls NetHack, analyses the message and labels it with one of two arbitrary tokens, where
"helpful" means bringing the agent closer to solving the game (not being informative), and only
extremely helpful messages get the positive token. Four labelled examples follow the goal.
"""
import json

from .labels import HELPFUL_TOKEN, UNHELPFUL_TOKEN

SYSTEM_PROMPT = (
    "You are an expert, honest judge of play in the game NetHack, assessing how much progress an "
    "agent makes. Answer as helpfully as you can while staying truthful; if you do not know "
    "something, say so rather than inventing it."
)

# Goal variants of the paper: score (the default), none ("zero knowledge": no goal hint), combat,
# gold and stairs. Each narrow goal also says what never to favour, as the reference's do.
GOALS: dict[str, str] = {
    "score": (
        "Favour the agent that raises its in-game score, for example by defeating monsters, "
        "picking up gold or descending the dungeon's stairs."
    ),
    "none": "",
    "combat": (
        "Favour the agent that fights, for example by defeating monsters. Never favour an agent "
        "that picks up any gold or that goes deeper into the dungeon."
    ),
    "gold": (
        "Favour the agent that gathers the most gold. Never favour an agent that raises its score "
        "in other ways, such as fighting or defeating monsters, or that goes deeper into the dungeon."
    ),
    "stairs": (
        "Favour the agent that goes as deep into the dungeon as it can. Never favour an agent that "
        "chases the score in other ways, such as fighting, or that picks up any gold."
    ),
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
    "Context: I am playing NetHack and will show you one message the game displayed.\n\n"
    "Task: first, summarise what you know about NetHack and what its goal is. Then analyse what the "
    "message means, using your knowledge of the game. Finally, label whether the situation the "
    "message reports is helpful or unhelpful for making progress towards the goal.\n"
    "Helpful does not mean that the message tells the player something useful for the next "
    "decision; it means that the situation brings the agent closer to solving the game.\n"
    "{goal}"
    f"Label a message {HELPFUL_TOKEN} only if it is extremely helpful. Label every other message, "
    f"whether unhelpful, neutral or only mildly helpful, {UNHELPFUL_TOKEN}.\n\n"
    "{examples}"
    "The message to label: {message}\n\n"
    "Answer strictly in this format, with nothing before or after it:\n"
    "<knowledge> what you know about NetHack </knowledge>\n"
    "<analysis> one sentence analysing the message </analysis>\n"
    f"<label> {HELPFUL_TOKEN} or {UNHELPFUL_TOKEN} </label>"
)

# Few-shot examples of the kinds the ONI reference shows (a kill with a level gained, a sound that
# gives away a gold vault, a small gold pickup, a neutral door notice), labelled for each goal. The
# reference has them for score, combat and gold only; for stairs the vault sound is replaced by
# standing on the way down, and `none` (no goal hint) gets no examples, since the labels would be one.
_KILL = ('"You kill the jackal!  Welcome to experience level 3." The agent defeated a monster and '
         "gained a level, so it is stronger now.")
_VAULT = ('"You hear the footsteps of a guard on patrol." The level holds a vault, a closed room '
          "full of gold.")
_GOLD = '"$ - 7 gold pieces." The agent picked up a few gold coins.'
_DOOR = '"This door is locked." This only describes the surroundings.'
_STAIRS = '"There is a staircase down here." The agent stands on the way to the next level.'
_ON_GOAL = f" This is extremely helpful: {HELPFUL_TOKEN}."
_OFF_GOAL = f" This does not serve the goal: {UNHELPFUL_TOKEN}."
_NEUTRAL = f" This is neutral: {UNHELPFUL_TOKEN}."
EXAMPLES: dict[str, tuple[str, ...]] = {
    "score": (_KILL + _ON_GOAL, _VAULT + _ON_GOAL, _GOLD + _ON_GOAL, _DOOR + _NEUTRAL),
    "none": (),
    "combat": (_KILL + _ON_GOAL, _VAULT + _OFF_GOAL, _GOLD + _OFF_GOAL, _DOOR + _NEUTRAL),
    "gold": (_KILL + _OFF_GOAL, _VAULT + _ON_GOAL, _GOLD + _ON_GOAL, _DOOR + _NEUTRAL),
    "stairs": (_KILL + _OFF_GOAL, _STAIRS + _ON_GOAL, _GOLD + _OFF_GOAL, _DOOR + _NEUTRAL),
}


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
    """ONI's user message asking whether one message is extremely helpful for the goal."""
    goal_line = GOALS[check_goal(goal)]
    examples = "".join(f"Example {i}: {text}\n" for i, text in enumerate(EXAMPLES[goal], 1))
    return _MESSAGE_TEMPLATE.format(
        goal=f"{goal_line}\n" if goal_line else "",
        examples=f"{examples}\n" if examples else "",
        message=json.dumps({"message": message}),
    )
