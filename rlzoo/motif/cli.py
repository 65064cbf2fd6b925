"""`rlzoo-motif collect|annotate|train-reward [key=value ...]`: the offline Motif pipeline.

Each command composes its Hydra config (configs/motif/<command>.yaml) with the overrides given,
runs, is resumable (rerun the same command), and ends with a one-line JSON summary.

    python -m rlzoo.motif collect env.name=NetHackScore-v0 collect.num_pairs=20000 out_dir=data/score
    OPENAI_API_KEY=... python -m rlzoo.motif annotate dataset_dir=data/score llm.base_url=http://host:8000/v1 llm.model=m
    python -m rlzoo.motif annotate dataset_dir=data/score annotator=score_gain labels_name=score_gain
    python -m rlzoo.motif train-reward dataset_dir=data/score
"""
from __future__ import annotations

import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from rlzoo.config import load_config

from .annotate import annotate
from .annotators import EpisodeReturnAnnotator, LLMAnnotator, ScoreGainAnnotator
from .collect import CollectSettings, collect
from .llm_client import ChatClient, LLMError, LLMSettings
from .prompts import check_goal
from .train_reward import TrainSettings, train_reward_model

COMMANDS = ("collect", "annotate", "train-reward")
ANNOTATORS = ("llm", "score_gain", "episode_return")


def compose(command: str, overrides: Sequence[str] = ()) -> DictConfig:
    if command not in COMMANDS:
        raise ValueError(f"command {command!r} is not one of {', '.join(COMMANDS)}")
    return load_config(list(overrides), config_name=f"motif/{command.replace('-', '_')}")


def _plain(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def run_collect(cfg: DictConfig) -> dict[str, Any]:
    from rlzoo.envs import env_spec, make_vec_env

    from rlzoo.runtime.evaluation import load_policy, policy_actor, random_actor

    env_cfg = _plain(cfg.env)
    spec = env_spec(env_cfg)
    if spec.family not in ("nethack", "minihack"):
        raise ValueError(f"env.name={env_cfg['name']!r}: Motif needs NetHack messages (nethack or minihack envs)")
    settings = CollectSettings(**_plain(cfg.collect), seed=int(cfg.seed))

    def make_policy(env: Any, seed: int) -> Any:
        if cfg.policy == "random":
            return random_actor(spec.num_actions, env.num_envs, seed)
        return policy_actor(load_policy(Path(str(cfg.policy)))[1], env.num_envs, seed)

    return collect(
        lambda num_envs, seed: make_vec_env(env_cfg, num_envs, seed),
        cfg.out_dir,
        settings,
        make_policy,
        {"env": env_cfg, "policy": str(cfg.policy)},
        progress=bool(cfg.progress),
    )


def run_annotate(cfg: DictConfig) -> dict[str, Any]:
    kind = cfg.annotator
    if kind not in ANNOTATORS:
        raise ValueError(f"annotator={kind!r}; allowed: {', '.join(ANNOTATORS)}")
    goal = check_goal(cfg.goal)
    identity: dict[str, Any] = {"annotator": kind}
    if kind == "llm":
        settings = LLMSettings.from_config(_plain(cfg.llm))
        annotator: Any = LLMAnnotator(ChatClient(settings), goal)
        identity |= {"goal": goal, "model": settings.model}
    elif kind == "score_gain":
        annotator = ScoreGainAnnotator()
    else:
        annotator = EpisodeReturnAnnotator()
    return annotate(cfg.dataset_dir, annotator, identity, labels_name=cfg.labels_name,
                    keep_replies=bool(cfg.keep_replies), limit=cfg.limit, progress=bool(cfg.progress))


def run_train_reward(cfg: DictConfig) -> dict[str, Any]:
    settings = TrainSettings(**_plain(cfg.train))
    summary = train_reward_model(cfg.dataset_dir, cfg.out_path, settings, labels_name=cfg.labels_name,
                                 progress=bool(cfg.progress))
    return {**summary, "out_path": str(cfg.out_path)}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


RUNNERS = {"collect": run_collect, "annotate": run_annotate, "train-reward": run_train_reward}


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    command, overrides = args[0], args[1:]
    # SIGTERM (Slurm preemption, kill) unwinds like Ctrl-C, so every step flushes what it has.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = RUNNERS[command](compose(command, overrides))
    except KeyboardInterrupt:
        print(f"rlzoo-motif {command}: interrupted; everything finished so far is saved, rerun to resume",
              file=sys.stderr)
        sys.exit(130)
    except (ValueError, FileNotFoundError, MissingMandatoryValue, HydraException) as err:
        print(f"rlzoo-motif {command}: {err}", file=sys.stderr)
        sys.exit(2)
    except LLMError as err:
        print(f"rlzoo-motif {command}: {err}; labels written so far are kept, rerun to continue", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"command": command, **summary}))
    if summary.get("failed"):
        print(f"rlzoo-motif {command}: {summary['failed']} pairs failed and stay unlabelled; rerun to retry them",
              file=sys.stderr)
        sys.exit(1)
