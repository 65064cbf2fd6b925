"""env.prompt_fixes / env.action_set: Motif's eat fix and ONI's extended actions on real NLE games."""
import numpy as np
import pytest
from nle import nethack
from nle.env.base import NLE
from nle.env.tasks import TASK_ACTIONS, NetHackScore

from rlzoo.envs import env_spec, make_vec_env, validate_env_cfg
from rlzoo.envs.nethack_prompt_fixes import (
    ONI_EXTENDED_ACTIONS,
    first_offered_letter,
    prompt_answer,
    task_class,
)

pytestmark = pytest.mark.unit

C = nethack.Command
NW, NORTH, DOWN = nethack.CompassDirection.NW, nethack.CompassDirection.N, nethack.MiscDirection.DOWN
KEYS = ("glyphs", "blstats", "message", "inv_letters", "inv_strs")
EAT = b"What do you want to eat? [fghi or ?*] "
DRINK = b"What do you want to drink? [e or ?*] "
SPACE = ord(" ")


@pytest.mark.parametrize("message, letter", [
    (EAT, "f"), (b"What do you want to eat? [a-c or ?*]", "a"), (DRINK, "e"),
    (b"What do you want to eat? [*]", None), (b"", None),
])
def test_first_offered_letter(message, letter):
    assert first_offered_letter(message) == (None if letter is None else ord(letter))


@pytest.mark.parametrize("key, message, prompts, sent", [
    (ord("y"), EAT, (b"What do you want to eat",), ord("f")),                  # yes: the first offered item
    (ord("k"), EAT, (b"What do you want to eat",), SPACE),                     # anything else cancels
    (ord("y"), b"What do you want to eat? [*]", (b"What do you want to eat",), SPACE),  # nothing offered
    (ord("y"), DRINK, (b"What do you want to eat",), ord("y")),                # motif: drink is no item prompt
    (ord("y"), DRINK, (b"What do you want to eat", b"What do you want to drink"), ord("e")),  # oni
    (ord("k"), b"It's a wall.", (b"What do you want to eat",), ord("k")),      # no prompt: the action's own key
])
def test_prompt_answer(key, message, prompts, sent):
    assert prompt_answer(key, message, prompts) == sent


def test_config_selects_the_action_set_and_rejects_bad_combinations():
    score = {"name": "NetHackScore-v0"}
    assert env_spec({**score, "prompt_fixes": "motif"}).num_actions == 23
    spec = env_spec({**score, "prompt_fixes": "oni", "action_set": "oni_extended"})
    assert spec.num_actions == 28 and spec.action_names[23:] == ("CAST", "QUAFF", "PRAY", "PICKUP", "PAY")
    with pytest.raises(ValueError, match="env.prompt_fixes='moti'.*'motif'"):
        validate_env_cfg({**score, "prompt_fixes": "moti"})
    with pytest.raises(ValueError, match="env.action_set='full'"):
        validate_env_cfg({**score, "action_set": "full"})
    with pytest.raises(ValueError, match="oni_extended needs env.prompt_fixes=oni"):
        validate_env_cfg({**score, "prompt_fixes": "motif", "action_set": "oni_extended"})
    with pytest.raises(ValueError, match="NetHackChallenge-v0"):
        validate_env_cfg({"name": "NetHackChallenge-v0", "prompt_fixes": "motif"})
    with pytest.raises(ValueError, match="unknown env key.*prompt_fixes"):
        validate_env_cfg({"name": "MiniHack-Room-5x5-v0", "prompt_fixes": "motif"})


def make(fixes, actions=TASK_ACTIONS, seed=(1, 2), **kwargs):
    env = task_class(NetHackScore, fixes)(actions=actions, observation_keys=KEYS, **kwargs)
    NLE.seed(env, *seed, reseed=False)
    obs, _ = env.reset()
    return env, {k: v.copy() for k, v in obs.items()}  # NLE overwrites its arrays in place


def act(env, key, actions=TASK_ACTIONS):
    obs, *_ = env.step(actions.index(key))
    return {k: v.copy() for k, v in obs.items()}


def text(obs):
    return bytes(obs["message"]).rstrip(b"\0")


def inventory(obs):
    return {chr(letter): bytes(item).rstrip(b"\0").decode() for letter, item in zip(obs["inv_letters"], obs["inv_strs"])
            if letter}


@pytest.mark.parametrize("fixes", ["motif", "oni"])
def test_north_west_at_the_eat_prompt_eats_the_first_offered_item(fixes):
    env, start = make(fixes)
    prompt = text(act(env, C.EAT))
    assert prompt.startswith(b"What do you want to eat? [")  # NLE keeps this prompt for the agent
    letter = chr(first_offered_letter(prompt))
    obs = act(env, NW)
    assert inventory(obs).get(letter) != inventory(start)[letter]  # one fewer, or none left
    assert obs["blstats"][nethack.NLE_BL_TIME] > start["blstats"][nethack.NLE_BL_TIME]  # eating takes turns
    assert b"What do you want to eat" not in text(obs)
    env.close()


def test_without_the_fix_north_west_does_not_eat_and_another_action_cancels_with_it():
    env, start = make("none")
    act(env, C.EAT)
    obs = act(env, NW)  # sends `y`, not an inventory letter: the prompt stays and nothing is eaten
    assert text(obs).startswith(b"What do you want to eat?") and inventory(obs) == inventory(start)
    env.close()
    env, start = make("motif")
    act(env, C.EAT)
    obs = act(env, NORTH)
    assert text(obs) == b"Never mind." and inventory(obs) == inventory(start)
    env.close()


def test_oni_drinks_the_first_offered_potion_which_nle_alone_declines():
    plain, _ = make("none", ONI_EXTENDED_ACTIONS)
    assert text(act(plain, C.QUAFF, ONI_EXTENDED_ACTIONS)) == b"Never mind."
    plain.close()
    env, start = make("oni", ONI_EXTENDED_ACTIONS)
    prompt = text(act(env, C.QUAFF, ONI_EXTENDED_ACTIONS))
    assert prompt.startswith(b"What do you want to drink? [")
    letter = chr(first_offered_letter(prompt))
    obs = act(env, NW, ONI_EXTENDED_ACTIONS)
    assert inventory(obs).get(letter) != inventory(start)[letter]
    env.close()


def test_oni_cast_answers_the_spell_menu_which_nle_alone_closes_unused():
    seed = (3, 4)  # a monk with 5 Pw, enough for its level-1 spell (protection)
    plain, start = make("none", ONI_EXTENDED_ACTIONS, seed)
    assert start["blstats"][nethack.NLE_BL_ENE] >= 5
    obs = act(plain, C.CAST, ONI_EXTENDED_ACTIONS)
    assert obs["blstats"][nethack.NLE_BL_ENE] == start["blstats"][nethack.NLE_BL_ENE]
    plain.close()
    env, start = make("oni", ONI_EXTENDED_ACTIONS, seed)
    obs = act(env, C.CAST, ONI_EXTENDED_ACTIONS)
    assert obs["blstats"][nethack.NLE_BL_ENE] < start["blstats"][nethack.NLE_BL_ENE]  # the spell was cast
    env.close()


def walk_onto_the_down_stairs(env):
    """Wizard mode: map the level (^F) and teleport (^T) onto the staircase down."""
    for key in (6, 20, ord(">"), ord(".")):
        observation, _ = env.nethack.step(key)
        while observation[env._internal_index][3]:
            observation, _ = env.nethack.step(SPACE)
    env.last_observation = observation
    assert observation[env._internal_index][4]  # on the stairs down


@pytest.mark.parametrize("fixes, message", [("none", b""), ("motif", b"You descend the stairs.")])
def test_the_descend_message_survives_the_skipped_more(fixes, message):
    env, _ = make(fixes, wizard=True)
    walk_onto_the_down_stairs(env)
    obs = act(env, DOWN)
    assert obs["blstats"][nethack.NLE_BL_DEPTH] == 2 and text(obs) == message
    env.close()


def test_without_prompts_the_fixed_env_plays_exactly_like_nle():
    """The same seeds and actions (no eating, no stairs) give the same episode step for step."""
    base = {"name": "NetHackScore-v0", "max_episode_steps": 150}
    actions = [i for i, a in enumerate(TASK_ACTIONS) if a not in (C.EAT, DOWN)]
    runs = []
    for fixes in ("none", "motif"):
        venv = make_vec_env({**base, "prompt_fixes": fixes}, num_envs=2, seed=4)
        rng = np.random.default_rng(0)
        steps = [{k: v.copy() for k, v in venv.reset().items()}]
        for _ in range(200):
            obs, reward, done, _ = venv.step(rng.choice(actions, size=2))
            steps.append({**{k: v.copy() for k, v in obs.items()}, "reward": reward, "done": done})
        venv.close()
        runs.append(steps)
    for plain, fixed in zip(*runs):
        for key in plain:
            np.testing.assert_array_equal(plain[key], fixed[key], err_msg=key)
    assert any(step["done"].any() for step in runs[0][1:])  # episodes ended and restarted in between
