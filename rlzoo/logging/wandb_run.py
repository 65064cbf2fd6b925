"""Weights & Biases logging: run identity from the config, resumable, offline when unreachable."""
from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

ID_FILE = "wandb_id.txt"
EVAL_STEP = "eval/env_steps"  # the x-axis of evaluation charts


class WandbRun:
    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        import wandb

        self._wandb = wandb
        id_path = run_dir / ID_FILE
        run_id = id_path.read_text().strip() if id_path.exists() else secrets.token_hex(4)
        id_path.write_text(run_id)
        lg = cfg.logger
        kwargs = dict(
            project=lg.project, entity=lg.entity, group=lg.group, job_type=lg.job_type,
            tags=list(lg.tags), name=lg.name, id=run_id, resume="allow", dir=str(run_dir),
            config=OmegaConf.to_container(cfg, resolve=True),
        )
        try:
            self.run = wandb.init(**kwargs)
        except Exception as err:  # noqa: BLE001 - any failure to reach W&B must not cost the run
            if os.environ.get("WANDB_MODE") == "offline":
                raise
            warnings.warn(f"W&B could not be reached ({err}); logging offline to {run_dir}/wandb "
                          "(sync later with `wandb sync`)", stacklevel=2)
            self.run = wandb.init(mode="offline", **kwargs)
        # Evaluations arrive after training has moved on: their charts are drawn over the env step
        # they evaluated, not over W&B's step.
        self.run.define_metric(EVAL_STEP)
        self.run.define_metric("eval/*", step_metric=EVAL_STEP)

    def log(self, row: dict[str, Any], step: int) -> None:
        self.run.log(row, step=step)

    def log_eval(self, row: dict[str, Any], step: int, video: Path | None, deaths: dict[str, int]) -> None:
        """An evaluation's metrics (`eval/*`, with `eval/env_steps`), its video and a table of how
        its NetHack games ended, logged at W&B step `step`."""
        logged = {k: v for k, v in row.items() if k.startswith("eval/")}
        if video is not None:
            logged["eval/video"] = self._wandb.Video(str(video), format=video.suffix[1:])
        if deaths:
            logged["eval/deaths"] = self._wandb.Table(columns=["death", "episodes"],
                                                      data=[[k, v] for k, v in deaths.items()])
        self.run.log(logged, step=step)

    def finish(self, summary: dict[str, Any]) -> None:
        self.run.summary.update(summary)
        self.run.finish()
