"""Weights & Biases logging: run identity from the config, resumable, offline when unreachable."""
from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

ID_FILE = "wandb_id.txt"


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

    def log(self, row: dict[str, Any], step: int) -> None:
        self.run.log(row, step=step)

    def finish(self, summary: dict[str, Any]) -> None:
        self.run.summary.update(summary)
        self.run.finish()
