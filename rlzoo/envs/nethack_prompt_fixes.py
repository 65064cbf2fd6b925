"""How the Motif and ONI NetHack tasks answer the game's prompts, as options of rlzoo's NetHack envs.

Before the agent sees a state, NLE presses space at every --More-- and declines every yes/no or item
prompt except those whose text holds one of `nle.env.base.SKIP_EXCEPTIONS` ("eat", "attack",
"direction?", "pray"). The 23-key task action set has no inventory letters, so at the "What do you
want to eat?" prompt the agent can only pick an item whose letter happens to be a movement key.
The reference tasks changed this (`env.prompt_fixes`):

- `motif` (Klissarov et al. 2023): at the eat prompt the action that sends `y` (the north-west move)
  eats the first item the prompt offers; any other action cancels the prompt. When a --More-- is
  skipped after "You descend the stairs.", that message stays in the observation (NLE would show
  the empty message of the new level instead).
- `oni` (Zheng et al. 2024): `motif`, plus the same handling of the "What do you want to drink?"
  prompt (no longer declined), the spell menu opened by CAST answered with the first spell, and after
  "You feel more confident in ..." the newly advanceable skill enhanced (#enhance, first entry).

`env.action_set`: `task` keeps the task's keys; `oni_extended` is ONI's 28: the 23 task keys plus
CAST, QUAFF, PRAY, PICKUP and PAY. Differences from the reference code: docs/fidelity.md.
"""
from __future__ import annotations

import functools
import re
from typing import Any

from nle import nethack
from nle.env.base import ASCII_ESC, ASCII_SPACE, NLE, SKIP_EXCEPTIONS
from nle.env.tasks import TASK_ACTIONS

ONI_EXTENDED_ACTIONS = (
    *TASK_ACTIONS,
    nethack.Command.CAST,
    nethack.Command.QUAFF,
    nethack.Command.PRAY,
    nethack.Command.PICKUP,
    nethack.Command.PAY,
)

EAT_PROMPT = b"What do you want to eat"
DRINK_PROMPT = b"What do you want to drink"
DESCEND_MESSAGE = b"You descend the stairs."
CONFIDENCE_MESSAGE = b"You feel more confident in"
YES_KEY = ord("y")          # the north-west move of the task keys
FIRST_ENTRY_KEY = ord("a")  # first spell of the CAST menu, first advanceable skill of #enhance
_FIRST_OFFERED = re.compile(rb"\[([a-zA-Z])")


def first_offered_letter(message: bytes) -> int | None:
    """The first inventory letter an item prompt offers ("... [fghi or ?*]" → f), if any."""
    match = _FIRST_OFFERED.search(message)
    return match.group(1)[0] if match else None


def prompt_answer(key: int, last_message: bytes, item_prompts: tuple[bytes, ...]) -> int:
    """The key to send for an action whose own key is `key`, given the message on screen.

    At one of `item_prompts`, `y` picks the first offered item and anything else cancels (space).
    """
    if any(prompt in last_message for prompt in item_prompts):
        letter = first_offered_letter(last_message)
        return letter if key == YES_KEY and letter is not None else ASCII_SPACE
    return key


class PromptFixes(NLE):
    """Goes above an NLE task class in the method resolution order (`task_class`). Overrides NLE
    1.3.0's `step` and `_perform_known_steps` with the same sequence of calls plus the fixes."""

    item_prompts: tuple[bytes, ...] = ()
    kept_prompts: tuple[bytes, ...] = SKIP_EXCEPTIONS  # prompt words the agent answers itself
    keep_descend_message = False
    cast_first_spell = False
    auto_enhance = False
    _enhance_due = False

    def step(self, action: int) -> tuple[dict, float, bool, bool, dict]:
        if self._steps == 0:
            self._enhance_due = False  # a new episode
        last_observation = tuple(a.copy() for a in self.last_observation)
        key = prompt_answer(int(self.actions[action]), bytes(last_observation[self._message_index]), self.item_prompts)
        observation, done = self.nethack.step(key)
        if self.cast_first_spell and key == nethack.Command.CAST and not done and self._menu_open(observation):
            observation, done = self.nethack.step(FIRST_ENTRY_KEY)
        truncated = self._check_abort(observation)
        is_game_over = observation[self._program_state_index][0] == 1
        if is_game_over or not self._allow_all_modes:
            observation, done = self._perform_known_steps(observation, done, exceptions=True)
            # Enhance only at the command prompt; at a prompt kept for the agent, on a later step.
            if self._enhance_due and not done and not observation[self._internal_index][1]:
                observation, done = self._enhance(observation, done)
        self._steps += 1
        self.last_observation = observation
        end_status = self._get_end_status(observation, done)
        reward = float(self._reward_fn(last_observation, action, observation, end_status))
        if end_status and not done:
            self._quit_game(observation, done)
            done = True
        return self._get_observation(observation), reward, done, truncated, self._get_information(end_status)

    def _menu_open(self, observation: tuple) -> bool:
        """After CAST: the spell menu waits for a key with no message on the top line (with no spell
        known the game says so instead). NLE would press space there, closing the menu unused."""
        return bool(observation[self._internal_index][3]) and not observation[self._message_index].any()

    def _enhance(self, observation: tuple, done: bool) -> tuple[tuple, bool]:
        self._enhance_due = False
        for key in (nethack.Command.ENHANCE, FIRST_ENTRY_KEY):
            if not done:
                observation, done = self.nethack.step(key)
        return self._perform_known_steps(observation, done, exceptions=True)

    def _perform_known_steps(self, observation: tuple, done: bool, exceptions: bool = True) -> tuple[tuple, bool]:
        index = self._message_index
        while not done:
            internal = observation[self._internal_index]
            message = bytes(observation[index])
            if self.auto_enhance and CONFIDENCE_MESSAGE in message:
                self._enhance_due = True
            if internal[3]:  # --More--
                kept = observation[index].copy() if self.keep_descend_message and DESCEND_MESSAGE in message else None
                observation, done = self.nethack.step(ASCII_SPACE)
                if kept is not None:
                    observation = (*observation[:index], kept, *observation[index + 1:])
                continue
            if internal[2]:  # a line of text is asked for: never typed
                observation, done = self.nethack.step(ASCII_ESC)
                continue
            if internal[1]:  # a single key is asked for
                if exceptions and (self._allow_all_yn_questions or any(w in message for w in self.kept_prompts)):
                    break
                observation, done = self.nethack.step(ASCII_ESC)
            break
        return observation, done


_SETTINGS: dict[str, dict[str, Any]] = {
    "motif": {"item_prompts": (EAT_PROMPT,), "keep_descend_message": True},
    "oni": {
        "item_prompts": (EAT_PROMPT, DRINK_PROMPT),
        "kept_prompts": (*SKIP_EXCEPTIONS, b"drink"),
        "keep_descend_message": True,
        "cast_first_spell": True,
        "auto_enhance": True,
    },
}


@functools.cache
def task_class(base: type, prompt_fixes: str) -> type:
    """`base` with the prompt handling `prompt_fixes` ("none" returns `base` itself)."""
    if prompt_fixes == "none":
        return base
    return type(base.__name__, (PromptFixes, base), dict(_SETTINGS[prompt_fixes]))


def task_kwargs(action_set: str) -> dict[str, Any]:
    """Constructor arguments that select `action_set` ("task": none, the task's own keys)."""
    return {"actions": ONI_EXTENDED_ACTIONS} if action_set == "oni_extended" else {}
