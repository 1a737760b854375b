"""The paired bootstrap: pairing by example, averaging over seeds, a hand-worked interval."""

from __future__ import annotations

import pytest

from dllmrl.errors import DataError
from dllmrl.evaluation.stats import paired_bootstrap, paired_by_id


def test_identical_runs_have_a_zero_width_interval_because_pairs_cancel():
    # Unpaired resampling of the two columns would give a wide interval around 0; paired, every draw is 0.
    scores = [1, 0, 1, 1, 0, 0, 1, 0]
    ci = paired_bootstrap(scores, [scores], n=2000, seed=1)
    assert (ci.diff, ci.low, ci.high) == (0.0, 0.0, 0.0)


def test_seeds_are_averaged_within_each_resample():
    # Per example the two seeds average to 0.5 above the base: every resample's difference is 0.5.
    ci = paired_bootstrap([0, 0, 0, 0], [[1, 0, 1, 0], [0, 1, 0, 1]], n=2000, seed=0)
    assert (ci.diff, ci.low, ci.high) == (0.5, 0.5, 0.5)
    assert (ci.n_examples, ci.n_seeds) == (4, 2)


def test_two_examples_hand_worked():
    # Differences (1, 0): a resample of 2 has mean 0 (p 1/4), 0.5 (p 1/2) or 1 (p 1/4), so the 2.5 %
    # and 97.5 % points are 0 and 1; the point estimate is 0.5.
    ci = paired_bootstrap([0, 1], [[1, 1]], n=4000, seed=3)
    assert ci.diff == 0.5 and ci.low == 0.0 and ci.high == 1.0


def test_paired_by_id_aligns_and_refuses_other_examples():
    base, runs = paired_by_id({"b": 0.0, "a": 1.0}, [{"a": 0.0, "b": 1.0}])
    assert base == [1.0, 0.0] and runs == [[0.0, 1.0]]
    with pytest.raises(DataError, match="different examples"):
        paired_by_id({"a": 1.0}, [{"b": 1.0}])
    with pytest.raises(DataError, match="E > 0"):
        paired_bootstrap([], [[]])
