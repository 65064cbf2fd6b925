"""rlzoo: IMPALA with pluggable exploration bonuses for NetHack, MiniHack and Procgen, on Ray."""
from pathlib import Path

# The Hydra configs: every default lives in one YAML file there.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
