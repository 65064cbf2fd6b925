"""`rlzoo-train`: compose the Hydra config and train.

    rlzoo-train                                   # the default experiment (MiniHack-Room-5x5-v0)
    rlzoo-train experiment=procgen_coinrun seed=2
    rlzoo-train -m bonus=none,e3b seed=1,2,3      # a sweep
"""
from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from rlzoo.config import CONFIG_DIR, ConfigError, exit_with_config_error
from rlzoo.runtime.checkpoint import CheckpointError
from rlzoo.runtime.learner import NonFiniteLossError
from rlzoo.runtime.ray_runtime import RayConnectionError
from rlzoo.runtime.trainer import train


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> dict[str, Any]:
    """Returns the run's summary: a Slurm sweep's launcher reads it to tell finished runs from stopped ones."""
    logging.getLogger("nle").setLevel(logging.WARNING)  # NLE logs every environment it creates
    try:
        return train(cfg)
    except ConfigError as err:
        exit_with_config_error(err)
    except (CheckpointError, RayConnectionError, NonFiniteLossError, MemoryError) as err:
        print(f"rlzoo-train: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
