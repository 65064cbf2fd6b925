"""The statistics every benchmark and report shares: IQM and its stratified-bootstrap interval."""
import numpy as np
import pytest

from rlzoo.reports.statistics import iqm, iqm_interval

pytestmark = pytest.mark.unit


def test_interquartile_mean_trims_a_quarter_from_each_end():
    assert iqm(np.array([[100.0, 0.0, 3.0, 1.0, 4.0, 2.0]])) == 2.5
    assert iqm(np.array([[0.0], [1.0], [1.0], [8.0]])) == 1.0


def test_bootstrap_interval_is_a_point_when_every_seed_agrees():
    scores = np.stack([np.full(3, 0.5), np.full(3, 1.0)], axis=1)  # [seeds, tasks]
    assert iqm_interval(scores) == (0.75, 0.75, 0.75)


def test_bootstrap_interval_resamples_seeds_within_each_task():
    scores = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0], [3.0, 13.0]])
    point, low, high = iqm_interval(scores, reps=500, seed=1)
    assert low < point < high
    assert iqm_interval(scores, reps=500, seed=1) == (point, low, high)  # reproducible for a seed
