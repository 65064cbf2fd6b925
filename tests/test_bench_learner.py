"""scripts/bench_learner.py on the smallest batch: every update it times is a valid learner update,
also with an episodic bonus (which needs each environment's unrolls in order)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_learner  # noqa: E402


@pytest.mark.unit
def test_bench_learner_times_an_episodic_bonus(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_learner.py", "--batches", "2", "--repeats", "2", "--precision", "fp32",
                                      "bonus=e3b", "runtime.unroll_length=4"])
    bench_learner.main()
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("crop ")]
    assert len(rows) == 1 and rows[0][1] == "2" and float(rows[0][2]) > 0
