"""The Procgen benchmark's bookkeeping: normalised returns, the summary rows, kept evaluations, and
the method presets it runs."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_procgen  # noqa: E402


def test_returns_are_normalised_by_the_easy_mode_ranges():
    # coinrun and maze: (R − 5) / 5; bigfish: (R − 1) / 39.
    np.testing.assert_allclose(bench_procgen.normalized("coinrun", np.array([5.0, 7.5, 10.0])), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(bench_procgen.normalized("bigfish", np.array([40.0])), [1.0])


def test_summary_has_means_gaps_iqm_and_marked_references():
    runs = [["appo", "coinrun", s, 100, train, test, train - test]
            for s, (train, test) in enumerate([(9.0, 7.0), (8.0, 6.0), (10.0, 9.0)], start=1)]
    scores = {"appo": {split: bench_procgen.normalized("coinrun", np.array([[r[i]] for r in runs]))
                       for split, i in (("train", 4), ("test", 5))}}
    rows = bench_procgen.summary_rows(runs, scores, ["coinrun"], ["appo"], 100)
    mine = rows[0]
    assert mine[:6] == ["appo", "coinrun", 100, 9.0, pytest.approx(22 / 3), pytest.approx(9.0 - 22 / 3)]
    assert mine[6] == "7.00 6.00 9.00"
    # IQM of three scores: a 25% trim of 3 removes none (⌊0.75⌋ = 0), so it is their mean, (.4 + .2 + .8) / 3.
    assert rows[1][1].startswith("all") and rows[1][4].startswith("0.467 [")
    references = [r for r in rows if r[-1] != "rlzoo"]
    assert references and all(r[1] == "coinrun" for r in references)
    assert {r[-1].split()[0] for r in references} == {"verified", "unverified"}
    two_million = next(r for r in references if r[2] == 2_000_000)
    assert (two_million[3], two_million[4], two_million[5]) == (8.23, 7.67, pytest.approx(0.56))


def test_a_kept_evaluation_is_not_played_again(tmp_path, monkeypatch):
    (tmp_path / "procgen_eval.json").write_text(json.dumps({"episodes": 20, "train": 8.0, "test": 6.0}))
    monkeypatch.setattr(bench_procgen, "load_policy", lambda run_dir: pytest.fail("played again"))
    assert bench_procgen.evaluate(tmp_path, episodes=20)["test"] == 6.0


def test_every_method_composes_and_drac_is_on_only_for_ucb_drac():
    from rlzoo.config import load_config, validate

    for method, overrides in bench_procgen.METHODS.items():
        cfg = load_config([*overrides, "env.name=maze"])
        validate(cfg)
        assert cfg.env.family == "procgen" and cfg.env.num_levels == 200 and cfg.env.distribution_mode == "easy"
        assert (cfg.algo.drac.augmentation == "ucb") == (method == "appo_ucb_drac")
        assert cfg.algo.name == ("impala" if method == "impala" else "appo")
