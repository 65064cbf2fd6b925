"""Every bonus's own hand-computed formula cases (`FORMULA_CASES` in its module), so that a new bonus
carries its formula test in its one file."""
import importlib

import pytest
import torch

from rlzoo.bonuses import bonus_names

pytestmark = pytest.mark.unit

CASES = [(name, i, case) for name in bonus_names()
         for i, case in enumerate(getattr(importlib.import_module(f"rlzoo.bonuses.{name}"), "FORMULA_CASES", []))]


def test_cases_are_found():
    assert {name for name, _, _ in CASES} >= {"noveld", "ride", "global_episodic"}


@pytest.mark.parametrize("name, index, case", CASES, ids=[f"{name}-{i}" for name, i, _ in CASES])
def test_formula_matches_hand_computed_values(name, index, case):
    function, arguments, expected = case
    torch.testing.assert_close(function(**arguments), expected)
