"""Random-action environment throughput: rlzoo's VecEnv (B=1, B=16, ...) against the bare envs,
and what a NetHack reset costs with and without env.fast_reset.

Part "throughput" prints env steps per second (summed over the B environments) for
MiniHack-Room-5x5-v0, NetHackScore-v0 and Procgen coinrun. "bare" is B gymnasium.make envs stepped in
turn (NetHack, MiniHack) or procgen's gym3 env with num=B, so the ratio is the cost of the wrapper
alone. MiniHack-MultiRoom-N2 with 6-step episodes (a solved task's length) measures the level change
on reset (envs/minigrid_levels.py): once on new layouts, then again on the same ones.

Part "resets" plays short episodes (cut at 4 steps on Room-5x5 and NetHackScore, 6 on MultiRoom-N2,
about what a solved task takes) with env.fast_reset off and on, alternating, for --rounds rounds:
the mean time of a reset against the mean time of a step that does not end an episode (the reset
cost in steps), what the step that ends an episode costs besides the reset (NLE quits the game
there), and VecEnv steps/s with B=1 and with the largest --envs value. It ends with each figure's
range over the rounds.

    python scripts/bench_envs.py [--parts throughput resets] [--seconds 3] [--envs 1 16 64] [--rounds 3]

With many environments in one process each step gets dearer: the NLE instances compete for the CPU
cache with their game states and, in stock NLE, with one copy of the game's code each (rlzoo's VecEnv
shares it, envs/shared_code.py). B=64 is what a default rlzoo actor steps. Actions are drawn afresh
for every step: a short action sequence replayed over and over lets NetHack settle into cheap loops.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from rlzoo.envs import env_spec, make_vec_env, validate_env_cfg
from rlzoo.envs.nethack import NetHackEnv
from rlzoo.envs.vec_env import allocate_obs, seed_stream

# A solved MultiRoom-N2 takes about 6 steps, so its training is dominated by resets, each on a new
# layout that MiniHack compiles into a NetHack level.
MULTIROOM, SOLVED_LENGTH = "MultiRoom-N2, 6-step eps", 6


def _timed(step, seconds: float) -> float:
    """Call step() (which returns how many env steps it took) for ~seconds; return steps/s."""
    step()  # warm-up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        steps += step()
    return steps / (time.perf_counter() - start)


def bare_gymnasium(name: str, num: int, seconds: float, default_keys: bool = False,
                   max_episode_steps: int | None = None) -> float:
    """`num` gymnasium.make envs stepped in turn, asked for the keys VecEnv reads (or, with
    default_keys, the env's defaults)."""
    import gymnasium
    import minihack  # noqa: F401
    import nle  # noqa: F401

    kwargs = {} if default_keys else {"observation_keys": ("glyphs", "blstats", "message")}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    envs = [gymnasium.make(name, **kwargs) for _ in range(num)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    rounds = max(1, 256 // num)
    rng = np.random.default_rng(0)

    def step() -> int:
        for row in rng.integers(envs[0].action_space.n, size=(rounds, num)).tolist():
            for env, action in zip(envs, row):
                _, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    env.reset()
        return rounds * num

    return _timed(step, seconds)


def bare_procgen(num: int, seconds: float) -> float:
    from procgen import ProcgenGym3Env

    env = ProcgenGym3Env(num=num, env_name="coinrun", num_levels=200, distribution_mode="easy",
                         num_threads=0, rand_seed=0)  # fmt: skip
    rng = np.random.default_rng(0)

    def step() -> int:
        for a in rng.integers(15, size=(64, num)).astype(np.int32):
            env.act(a)
            env.observe()
        return 64 * num

    return _timed(step, seconds)


def rlzoo_vec(cfg: dict, num_envs: int, seconds: float) -> float:
    venv = make_vec_env(cfg, num_envs=num_envs, seed=0)
    venv.reset()
    rounds = max(1, 256 // num_envs)
    rng = np.random.default_rng(0)

    def step() -> int:
        for a in rng.integers(venv.spec.num_actions, size=(rounds, num_envs)):
            venv.step(a)
        return rounds * num_envs

    rate = _timed(step, seconds)
    venv.close()
    return rate


# Short episodes: (task, the step at which episodes are cut).
SHORT_EPISODES = (("MiniHack-Room-5x5-v0", 4), ("NetHackScore-v0", 4), ("MiniHack-MultiRoom-N2-v0", 6))


def reset_cost(cfg: dict, seconds: float) -> tuple[float, float, float]:
    """One environment, random actions: mean seconds of (a reset, a step that does not end an
    episode, the rest of a step that ends one: NLE quits the game there, through its end screens)."""
    cfg = validate_env_cfg(cfg)
    env = NetHackEnv(cfg, seed_stream(0, 0), render=False)
    out = allocate_obs(env_spec(cfg), 1)
    resets: list[float] = []
    reset_env = env._reset_env

    def timed_reset_env() -> dict:
        start = time.perf_counter()
        obs = reset_env()
        resets.append(time.perf_counter() - start)
        return obs

    env._reset_env = timed_reset_env  # the reset that step() runs when an episode ends
    env.reset(out, 0)
    rng = np.random.default_rng(0)
    num_actions = env.env.action_space.n
    steps: list[float] = []
    ends: list[float] = []
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            action = int(rng.integers(num_actions))
            start = time.perf_counter()
            _, done, _ = env.step(action, out, 0)
            elapsed = time.perf_counter() - start
            if done:
                ends.append(elapsed - resets[-1])
            else:
                steps.append(elapsed)
    finally:
        env.close()
    return float(np.mean(resets)), float(np.mean(steps)), float(np.mean(ends))


def _span(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return format(low, fmt) if len(values) == 1 else f"{format(low, fmt)}-{format(high, fmt)}"


def resets_part(args: argparse.Namespace) -> None:
    batch_sizes = sorted({1, max(args.envs)})
    results: dict[tuple[str, bool], dict[str, list[float]]] = {}
    # MultiRoom's compiled levels are kept per process: play the layouts every measurement meets
    # first, with the faster setting for longer, so that no measurement compiles levels.
    multiroom = {"name": "MiniHack-MultiRoom-N2-v0", "max_episode_steps": 6}
    reset_cost(multiroom, 2 * args.seconds)
    for b in batch_sizes:
        rlzoo_vec(multiroom, b, 2 * args.seconds)
    for round_index in range(args.rounds):
        for name, cut in SHORT_EPISODES:
            for fast in (False, True):
                cfg = {"name": name, "max_episode_steps": cut, "fast_reset": fast}
                figures = results.setdefault((name, fast), {})
                reset_s, step_s, end_s = reset_cost(cfg, args.seconds)
                figures.setdefault("reset_us", []).append(reset_s * 1e6)
                figures.setdefault("step_us", []).append(step_s * 1e6)
                figures.setdefault("end_us", []).append(end_s * 1e6)
                figures.setdefault("reset_steps", []).append(reset_s / step_s)
                rates = []
                for b in batch_sizes:
                    rates.append(rlzoo_vec(cfg, b, args.seconds))
                    figures.setdefault(f"B={b}", []).append(rates[-1])
                print(f"round {round_index + 1}/{args.rounds} {name:26s} cut {cut} fast_reset={fast!s:5} "
                      f"reset {reset_s * 1e6:6.0f} us = {reset_s / step_s:5.1f} steps of {step_s * 1e6:5.1f} us, "
                      f"last step {end_s * 1e6:5.0f} us; "
                      + ", ".join(f"B={b} {r:7,.0f} steps/s" for b, r in zip(batch_sizes, rates)), flush=True)
    print(f"\nsummary over {args.rounds} round(s), min-max: reset cost (in steps of the same env), "
          "reset time, steps/s of short episodes")
    for name, cut in SHORT_EPISODES:
        for fast in (False, True):
            f = results[(name, fast)]
            print(f"  {name:26s} cut {cut} fast_reset={fast!s:5} reset {_span(f['reset_steps'], '.1f')} steps "
                  f"({_span(f['reset_us'], '.0f')} us; a step {_span(f['step_us'], '.0f')} us, the last "
                  f"{_span(f['end_us'], '.0f')} us); "
                  + ", ".join(f"B={b} {_span(f[f'B={b}'], ',.0f')} steps/s" for b in batch_sizes))


def throughput_part(args: argparse.Namespace) -> None:
    rows = []
    targets = [
        ("MiniHack-Room-5x5-v0", {"family": "minihack", "name": "MiniHack-Room-5x5-v0"},
         lambda b: bare_gymnasium("MiniHack-Room-5x5-v0", b, args.seconds)),
        ("NetHackScore-v0", {"family": "nethack", "name": "NetHackScore-v0"},
         lambda b: bare_gymnasium("NetHackScore-v0", b, args.seconds)),
        ("coinrun", {"family": "procgen", "name": "coinrun"}, lambda b: bare_procgen(b, args.seconds)),
        (MULTIROOM, {"family": "minihack", "name": "MiniHack-MultiRoom-N2-v0", "max_episode_steps": SOLVED_LENGTH},
         lambda b: bare_gymnasium("MiniHack-MultiRoom-N2-v0", b, args.seconds, max_episode_steps=SOLVED_LENGTH)),
    ]
    for env, cfg, bare in targets:
        measures = []
        if cfg["family"] != "procgen" and env != MULTIROOM:
            measures.append(("bare B=1, default keys", lambda: bare_gymnasium(env, 1, args.seconds, default_keys=True)))
        for b in args.envs:
            measures += [(f"bare B={b}", lambda b=b: bare(b)),
                         (f"VecEnv B={b}", lambda b=b: rlzoo_vec(cfg, b, args.seconds))]
            if env == MULTIROOM:  # the same seed draws the same layouts: now compiled already
                measures.append((f"VecEnv B={b}, again", lambda b=b: rlzoo_vec(cfg, b, args.seconds)))
        for label, measure in measures:
            rows.append((env, label, measure()))
            print(f"{env:24s} {label:22s} {rows[-1][2]:10,.0f} steps/s", flush=True)

    print("\nsummary: VecEnv throughput relative to the bare env(s) with the same B")
    by_key = {(env, label): rate for env, label, rate in rows}
    for env in ("MiniHack-Room-5x5-v0", "NetHackScore-v0", "coinrun", MULTIROOM):
        for b in args.envs:
            ratio = by_key[(env, f"VecEnv B={b}")] / by_key[(env, f"bare B={b}")]
            print(f"  {env:24s} B={b:<3d} {ratio:6.1%}")
            if env == MULTIROOM:
                ratio = by_key[(env, f"VecEnv B={b}, again")] / by_key[(env, f"bare B={b}")]
                print(f"  {env:24s} B={b:<3d} {ratio:6.1%}  layouts seen before")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=["throughput", "resets"], default=["throughput", "resets"])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per row")
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 16], help="values of B to measure")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the resets part, for ranges")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if "throughput" in args.parts:
        throughput_part(args)
    if "resets" in args.parts:
        resets_part(args)


if __name__ == "__main__":
    main()
