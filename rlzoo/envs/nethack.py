"""NetHack (NLE tasks) and MiniHack environments: observation buffers, seeding, episode stats
(`envs/nethack_stats.py`)."""
from __future__ import annotations

import contextlib
import functools
import json
import warnings
from pathlib import Path
from typing import Any

import gymnasium
import nle  # noqa: F401  (registers the NetHack* ids)
import numpy as np
from gymnasium.envs.registration import load_env_creator
from nle import nethack
from nle.env.base import NLE
from nle.env.tasks import NetHackChallenge

from rlzoo.envs import nethack_prompt_fixes
from rlzoo.envs.birth_date import birth_date, birth_date_address, set_birth_date
from rlzoo.envs.fast_reset import FastReset
from rlzoo.envs.minigrid_compat import fix_minigrid_kwargs
from rlzoo.envs.minigrid_levels import CompiledLevelBesideArchive
from rlzoo.envs.nethack_stats import GameStats, end_cause, end_one_hot, last_death_reason
from rlzoo.envs.shared_code import share_nethack_code
from rlzoo.envs.tty_render import tty_to_rgb
from rlzoo.envs.ttyrec_recorder import TtyrecRecorder
from rlzoo.envs.vec_env import EnvSpec, ListVecEnv, Obs, seed_stream

DUNGEON_SHAPE = (21, 79)
CROP_SIZE = 9
NUM_BLSTATS = 27
MESSAGE_LEN = 256
TTY_SHAPE = (24, 80)
# Only what we deliver is requested from the env: every extra key costs copies inside NLE's step.
# blstats is always requested: the episode stats read the score, depth, turns, ... from it.
_ENV_OBS_KEYS = ("glyphs", "blstats", "message")
_TTY_OBS_KEYS = ("tty_chars", "tty_colors", "tty_cursor")
_RENDER_OBS_KEYS = ("tty_chars", "tty_colors")

NETHACK_OBS_SPACE = {
    "glyphs": (DUNGEON_SHAPE, np.dtype(np.int16)),
    "crop": ((CROP_SIZE, CROP_SIZE), np.dtype(np.int16)),
    "blstats": ((NUM_BLSTATS,), np.dtype(np.int32)),
    "message": ((MESSAGE_LEN,), np.dtype(np.uint8)),
}
# The terminal as NLE draws it (and as nle.dataset converts ttyrecs): characters, colours (+16 in
# reverse video) and the cursor's (row, column).
TTY_OBS_SPACE = {
    "tty_chars": (TTY_SHAPE, np.dtype(np.uint8)),
    "tty_colors": (TTY_SHAPE, np.dtype(np.int8)),
    "tty_cursor": ((2,), np.dtype(np.uint8)),
}
# env.observation -> the observations delivered.
OBSERVATION_SETS = {
    "symbolic": NETHACK_OBS_SPACE,
    "tty": TTY_OBS_SPACE,
    "both": {**NETHACK_OBS_SPACE, **TTY_OBS_SPACE},
}


def import_minihack() -> None:
    """Register the MiniHack-* ids (a slow import, so only when a MiniHack task is used)."""
    with warnings.catch_warnings():
        # minihack 1.0.2 imports pkg_resources, which warns in every process; nothing to act on.
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import minihack  # noqa: F401


class _OnlyTheArraysRead(NLE):
    """Placed between a MiniHack task and NLE in the method resolution order so that NLE computes
    only the arrays rlzoo delivers plus those the task itself reads. MiniHack otherwise asks NLE for
    all sixteen (150 KB a step, most of it screen_descriptions) and copies them twice per step; with
    many environments per process that traffic evicts the game from the CPU cache (one process, 32
    envs: 173 -> 90 us per step on MiniHack-Room-5x5)."""

    delivered_keys: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["observation_keys"] = self.delivered_keys + _arrays_the_task_reads(self)
        super().__init__(*args, **kwargs)
        if "screen_descriptions" not in self._observation_keys:
            # MiniHack looks up this index in its constructor even for tasks that never read it;
            # an index past the arrays NLE returns fails loudly if anything ever does read it.
            self._observation_keys.append("screen_descriptions")


def _arrays_the_task_reads(env: NLE) -> tuple[str, ...]:
    """NLE arrays a MiniHack task reads itself (minihack 1.0.2), beyond the ones NLE always adds."""
    from minihack.envs.boxohack import BoxoHack
    from minihack.envs.keyroom import MiniHackKeyDoor
    from minihack.envs.sokoban import Sokoban

    keys: tuple[str, ...] = ()
    if env.reward_manager is not None:  # its events search the screen descriptions
        keys += ("screen_descriptions",)
    if isinstance(env, MiniHackKeyDoor):  # finds the key in the inventory and the door beside it
        keys += ("inv_strs", "inv_letters", "screen_descriptions")
    if isinstance(env, (Sokoban, BoxoHack)):  # count boulders and goals in the character map
        keys += ("chars",)
    return tuple(dict.fromkeys(keys))


@functools.cache
def _lean_minihack_class(task_class: type, delivered_keys: tuple[str, ...]) -> type:
    """The MiniHack task class with _OnlyTheArraysRead under it (one class per task and keys) and, for
    a MiniGrid-based task, the cheaper level change over it."""
    from minihack.envs.minigrid import MiniGridHack

    bases = (task_class, _OnlyTheArraysRead)
    if issubclass(task_class, MiniGridHack):
        bases = (CompiledLevelBesideArchive, *bases)
    return type(task_class.__name__, bases, {"delivered_keys": delivered_keys})


def _nle_observation_keys(cfg: dict[str, Any], render: bool) -> tuple[str, ...]:
    keys = _ENV_OBS_KEYS if cfg["observation"] != "tty" else ("blstats",)
    if cfg["observation"] != "symbolic":
        keys += _TTY_OBS_KEYS
    if render:
        keys += _RENDER_OBS_KEYS
    return tuple(dict.fromkeys(keys))


def _make_env(cfg: dict[str, Any], render: bool, recorder: TtyrecRecorder | None = None) -> NLE:
    if cfg["family"] == "minihack":
        import_minihack()

    kwargs = dict(cfg["env_kwargs"])
    kwargs["observation_keys"] = _nle_observation_keys(cfg, render)
    if recorder is not None:
        kwargs.update(recorder.nle_kwargs())
    kwargs["fix_moon_phase"] = cfg["fix_moon_phase"]
    if cfg["max_episode_steps"] is not None:
        kwargs["max_episode_steps"] = cfg["max_episode_steps"]
    # Construct from the registry entry directly: gymnasium.make would take max_episode_steps for
    # its own TimeLimit wrapper, and its checker wrappers only add per-step cost.
    registered = gymnasium.spec(cfg["name"])
    env_class = load_env_creator(registered.entry_point)
    task_kwargs = {**registered.kwargs, **kwargs}
    if cfg["family"] == "minihack":
        task_kwargs = fix_minigrid_kwargs(task_kwargs)
        env_class = _lean_minihack_class(env_class, kwargs["observation_keys"])
    else:
        env_class = nethack_prompt_fixes.task_class(env_class, cfg["prompt_fixes"])
        task_kwargs.update(nethack_prompt_fixes.task_kwargs(cfg["action_set"]))
    return env_class(**task_kwargs)


@functools.cache
def _spec_for(cfg_json: str) -> EnvSpec:
    cfg = json.loads(cfg_json)
    env = _make_env(cfg, render=False)
    try:
        names = tuple(getattr(a, "name", str(a)) for a in env.actions)
        return EnvSpec(
            family=cfg["family"],
            name=cfg["name"],
            obs_space=dict(OBSERVATION_SETS[cfg["observation"]]),
            num_actions=int(env.action_space.n),
            action_names=names,
            action_keys=tuple(int(a) for a in env.actions),
        )
    finally:
        env.close()


def nethack_spec(cfg: dict[str, Any]) -> EnvSpec:
    """Spec of a validated NetHack/MiniHack config (builds one env once to count actions)."""
    return _spec_for(json.dumps(cfg, sort_keys=True))


class AgentCrop:
    """CROP_SIZE x CROP_SIZE window of the glyph map centred on (x, y); cells off the map read
    MAX_GLYPH ("nothing"). MiniHack's own glyphs_crop pads with glyph 0, a monster, so we crop here."""

    def __init__(self) -> None:
        half = CROP_SIZE // 2
        rows, cols = DUNGEON_SHAPE
        self._padded = np.full((rows + 2 * half, cols + 2 * half), nethack.MAX_GLYPH, np.int16)
        self._interior = self._padded[half : half + rows, half : half + cols]

    def __call__(self, glyphs: np.ndarray, x: int, y: int) -> np.ndarray:
        """A view into an internal buffer, valid until the next call."""
        self._interior[...] = glyphs
        # The padded map is shifted by CROP_SIZE // 2, so rows y .. y+8 are centred on map row y.
        return self._padded[y : y + CROP_SIZE, x : x + CROP_SIZE]


class NetHackEnv:
    """One NLE/MiniHack env writing its observations into row i of shared batch buffers."""

    def __init__(self, cfg: dict[str, Any], rng: np.random.Generator, render: bool, env_id: int = 0) -> None:
        self.recorder = TtyrecRecorder.for_env(cfg, env_id)
        self.env = _make_env(cfg, render, self.recorder)
        self.symbolic = cfg["observation"] != "tty"
        self.tty = cfg["observation"] != "symbolic"
        self.rng = rng
        self.render_enabled = render
        self.track_score = cfg["family"] == "nethack"
        # NetHackChallenge forbids seeding by design: its episodes cannot be reproduced.
        self.seedable = not isinstance(self.env, NetHackChallenge)
        if not self.seedable:
            warnings.warn(f"{cfg['name']} does not allow seeding; its episodes are not reproducible")
        # MiniGrid-based MiniHack tasks draw their layouts from the MiniGrid env's own generator.
        minigrid_env = getattr(self.env, "minigrid_env", None)
        if minigrid_env is not None:
            minigrid_env.reset(seed=int(rng.integers(2**31)))
        self.success_status = getattr(self.env.StepStatus, "TASK_SUCCESSFUL", None)
        self.share_code = cfg["share_nethack_code"]
        self.fast_reset = FastReset(self.env.nethack.dlpath) if cfg["fast_reset"] else None
        self.birth_date_address: int | None = None
        self.fix_dates = cfg["fix_moon_phase"]  # NLE fixes the moon phase etc., we the birth date
        self.crop = AgentCrop()
        self.tty_obs: dict[str, np.ndarray] | None = None
        self.game_stats = GameStats() if self.track_score else None
        # NetHack appends a line to this file when a game ends (NLE keeps it in the game's temporary
        # directory, or beside the ttyrecs when they are recorded).
        self.xlogfile = (self.recorder.xlogfile() if self.recorder is not None
                         else Path(self.env.nethack._vardir) / "xlogfile")
        self._new_episode_stats()

    def _new_episode_stats(self) -> None:
        self.episode_return = 0.0
        self.episode_length = 0
        if self.game_stats is not None:
            self.game_stats.reset()

    def _reset_env(self) -> dict[str, np.ndarray]:
        core = None
        if self.seedable:
            core, disp = (int(s) for s in self.rng.integers(2**63 - 1, size=2))
            # NLE's own seed(), not the subclass's: MiniHack's MiniGrid tasks override it with a
            # call that gymnasium-era MiniGrid envs no longer have (their generator is seeded above).
            NLE.seed(self.env, core, disp, reseed=False)
        with self.fast_reset.resetting() if self.fast_reset else contextlib.nullcontext():
            obs, _ = self.env.reset()
        if self.recorder is not None:
            self.recorder.episode_started()
        reloaded = self.fast_reset is None or self.fast_reset.reloaded
        if self.share_code and reloaded:  # the reset loaded a fresh private copy of the game's code
            share_nethack_code(self.env.nethack.dlpath)
        if core is not None and self.fix_dates:
            if reloaded or self.birth_date_address is None:  # a fast reset keeps the library where it was
                self.birth_date_address = birth_date_address(self.env.nethack.dlpath)
            set_birth_date(self.birth_date_address, birth_date(core))
        self._new_episode_stats()
        return obs

    def _write(self, obs: dict[str, np.ndarray], out: Obs, i: int) -> None:
        if self.symbolic:
            glyphs, blstats = obs["glyphs"], obs["blstats"]
            out["glyphs"][i] = glyphs
            x, y = int(blstats[nethack.NLE_BL_X]), int(blstats[nethack.NLE_BL_Y])
            out["crop"][i] = self.crop(glyphs, x, y)
            out["blstats"][i] = blstats
            out["message"][i] = obs["message"]
        if self.tty:
            for key in _TTY_OBS_KEYS:
                out[key][i] = obs[key]
        if self.render_enabled:
            self.tty_obs = obs  # NLE updates these arrays in place; render() reads the latest

    def reset(self, out: Obs, i: int) -> None:
        self._write(self._reset_env(), out, i)

    def step(self, action: int, out: Obs, i: int) -> tuple[float, bool, dict[str, Any] | None]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.episode_return += reward
        self.episode_length += 1
        if self.game_stats is not None:
            self.game_stats.observe(obs["blstats"])
        done = terminated or truncated
        episode = None
        if done:
            episode = {"return": self.episode_return, "length": self.episode_length}
            if self.success_status is not None:
                episode["success"] = float(info["end_status"] == self.success_status)
            if self.game_stats is not None:
                episode.update(self.game_stats.summary())
            episode.update(self._end_of_episode(info["end_status"]))
            obs = self._reset_env()
        self._write(obs, out, i)
        return reward, done, episode

    def _end_of_episode(self, end_status: Any) -> dict[str, Any]:
        """`end/<cause>` fractions and, when the game itself ended, NetHack's death reason."""
        status = self.env.StepStatus(end_status).name
        game_over = status not in ("ABORTED", "TASK_SUCCESSFUL")
        how_done = nethack.game_end_types(self.env.nethack.how_done()).name if game_over else None
        return {**end_one_hot(end_cause(status, how_done)),
                "death": last_death_reason(self.xlogfile) if game_over else ""}

    def render(self) -> np.ndarray:
        if self.tty_obs is None:
            raise RuntimeError("render() needs an env built with render=True and reset first")
        return tty_to_rgb(self.tty_obs["tty_chars"], self.tty_obs["tty_colors"])

    def close(self) -> None:
        self.env.close()
        if self.recorder is not None:
            self.recorder.close()


def make_nethack_vec_env(
    cfg: dict[str, Any], num_envs: int, seed: int, env_id_offset: int, render: bool = False,
    evaluation: bool = False,
) -> ListVecEnv:
    """List-of-envs VecEnv for a validated NetHack/MiniHack config; an environment that fails is
    rebuilt on its own with a fresh seed stream (it would otherwise replay the episode that failed)."""
    spec = nethack_spec(cfg)
    builds = [0] * num_envs

    def build(i: int) -> NetHackEnv:
        stream = seed_stream(seed + 1_000_003 * builds[i], env_id_offset + i, evaluation)
        builds[i] += 1
        return NetHackEnv(cfg, stream, render, env_id_offset + i)

    return ListVecEnv([build(i) for i in range(num_envs)], spec, rebuild=build)
