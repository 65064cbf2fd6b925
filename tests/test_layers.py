"""Imports follow the layers: what a run loads is what it uses, and no library module imports a CLI."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI_MODULES = {"rlzoo.train", "rlzoo.evaluate", "rlzoo.reports.cli", "rlzoo.motif.cli", "rlzoo.motif.__main__"}

# An actor and a learner without a bonus, then the modules they loaded (in a fresh interpreter).
PROBE = """
import sys
from rlzoo.config import load_config
from rlzoo.envs import env_spec
from rlzoo.runtime.learner import Learner
from rlzoo.runtime.rollout import RolloutWorker
from rlzoo.runtime.sources import RolloutActor
import torch
cfg = load_config(["runtime=serial", "runtime.envs_per_actor=2", "runtime.batch_size=2", "runtime.unroll_length=4",
                   "bonus=none"])
spec = env_spec(cfg.env)
worker = RolloutWorker(cfg, 0, spec)
Learner(cfg, spec, 2, torch.device("cpu")).update(worker.rollout().unroll, 0)
print("\\n".join(sorted(sys.modules)))
"""


@pytest.mark.integration
def test_actors_and_a_run_without_bonus_load_no_bonus_llm_or_cli_code():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    loaded = set(proc.stdout.split())
    unwanted = {m for m in loaded if m.startswith(("rlzoo.motif", "rlzoo.bonuses.motif", "rlzoo.bonuses.oni",
                                                    "rlzoo.bonuses.e3b", "rlzoo.bonuses.rnd"))}
    assert not unwanted, unwanted
    assert not loaded & CLI_MODULES
    assert "rlzoo.runtime.learner" in loaded  # the probe did run


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.unit
def test_no_library_module_imports_a_command_line_module():
    offenders = {}
    for path in (ROOT / "rlzoo").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module in CLI_MODULES:
            continue
        if bad := _imports(path) & CLI_MODULES:
            offenders[module] = sorted(bad)
    assert not offenders, offenders


@pytest.mark.unit
def test_models_envs_and_algos_import_nothing_from_the_layers_above():
    above = ("rlzoo.runtime", "rlzoo.bonuses", "rlzoo.motif", "rlzoo.reports")
    offenders = {}
    for package in ("envs", "models", "algos"):
        for path in (ROOT / "rlzoo" / package).rglob("*.py"):
            if bad := {name for name in _imports(path) if name.startswith(above)}:
                offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, offenders
