"""Every repository path the README and the docs name exists."""
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "SECURITY.md", ROOT / "rlzoo" / "motif" / "README.md",
        ROOT / "rlzoo" / "nld" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A path from the repository root anywhere in the text, or one inside the package in backquotes
# (`runtime/trainer.py`); run-directory files (`config.yaml`) have no folder and are not checked.
FROM_ROOT = re.compile(r"(?<![\w/.])((?:rlzoo|configs|scripts|docs|tests|slurm)/[\w./-]*\w)")
IN_PACKAGE = re.compile(r"`((?:algos|bonuses|envs|logging|models|motif|reports|runtime)/[\w./-]*\w)`")


def named_paths(text: str) -> set[str]:
    return {*FROM_ROOT.findall(text), *IN_PACKAGE.findall(text)}


def test_the_pattern_finds_paths_and_skips_run_files():
    text = "see `runtime/trainer.py`, scripts/chaos.py and `config.yaml`; rlzoo-train resume=runs/x"
    assert named_paths(text) == {"runtime/trainer.py", "scripts/chaos.py"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_path_exists(doc):
    missing = sorted(p for p in named_paths(doc.read_text())
                     if not (ROOT / p).exists() and not (ROOT / "rlzoo" / p).exists())
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"
