"""The certification rule on hand-picked contributions and bounds (gateway.fidelity).

Numbers chosen so each case turns on one condition of the rule; the sampler
that produces real bounds is tested in test_certified_explanations.py."""

from __future__ import annotations

import numpy as np

from verdict.gateway.fidelity import FixedPairBounds, certified_reasons, principal_set, top_set

#                 0      1     2     3     4      5      6    7
PHI = np.array([0.09, -0.20, 0.05, 0.04, 0.030, -0.010, 0.0, 0.002])


def test_the_lists_rank_like_the_reasons_do():
    assert list(principal_set(PHI)) == [0, 2, 3, 4]  # positives, largest first
    assert list(top_set(PHI, 4)) == [1, 0, 2, 3]  # |contribution|, largest first
    assert list(top_set(np.array([0.0, 0.1, -0.1]), 4)) == [1, 2]  # ties in schema order; exact zeros are no reason


def test_clear_gaps_certify_and_an_overlap_at_either_boundary_does_not():
    assert certified_reasons(PHI, np.full(8, 0.004), top=4)
    assert not certified_reasons(PHI, np.full(8, 0.006), top=4)  # 4th (0.03) and 5th positive (0.002) may swap
    tight = np.full(8, 0.001)
    tight[3] = tight[4] = 0.0052  # top list: 4th |0.04| vs 5th |0.03| may swap, the principal list cannot
    assert not certified_reasons(PHI, tight, top=4)
    assert certified_reasons(PHI, tight, top=5)


def test_membership_is_certified_not_the_order_within_the_list():
    bounds = np.full(8, 0.0015)
    bounds[2] = bounds[3] = 0.02  # 0.05, 0.04 and 0.03 may change places; all stay among the five
    bounds[4] = 0.0
    assert certified_reasons(PHI, bounds, top=5)
    assert not certified_reasons(PHI, bounds, top=4)  # here 0.04 and 0.03 straddle the 4th place


def test_with_fewer_than_four_positives_no_other_may_possibly_be_positive():
    phi = np.array([0.05, 0.03, -0.001, -0.2])
    assert certified_reasons(phi, np.array([0.001, 0.001, 0.0005, 0.001]), top=2)
    assert not certified_reasons(phi, np.array([0.001, 0.001, 0.002, 0.001]), top=2)  # -0.001 might be > 0


def test_a_listed_reason_whose_sign_is_uncertain_is_not_certified():
    phi = np.array([0.004, -0.2, 0.1, 0.0])
    assert not certified_reasons(phi, np.array([0.005, 0.0, 0.0, 0.0]), top=3)  # "increased risk" or not?
    assert certified_reasons(phi, np.array([0.003, 0.0, 0.0, 0.0]), top=3)


def test_fewer_top_reasons_than_asked_need_every_other_to_be_exactly_zero():
    phi = np.array([0.1, 0.0, -0.05])
    assert certified_reasons(phi, np.zeros(3), top=4)
    assert not certified_reasons(phi, np.array([0.0, 1e-9, 0.0]), top=4)  # the zero is an estimate, not exact


def test_a_tight_bound_on_a_difference_certifies_what_separate_bounds_cannot():
    """Two contributions estimated from the same walks err together: their difference is known better."""
    phi = np.array([0.05, 0.04, 0.03, 0.021, 0.019, -0.1])
    bounds = np.full(6, 0.002)  # 0.021 - 0.002 < 0.019 + 0.002: separately, the 4th and 5th may swap
    assert not certified_reasons(phi, bounds, top=5)
    pairs = FixedPairBounds(difference=np.full((6, 6), 0.001), total=np.full((6, 6), 0.004))
    assert certified_reasons(phi, bounds, top=5, pairs=pairs)  # 0.021 - 0.019 = 0.002 > 0.001
    pairs = FixedPairBounds(difference=np.full((6, 6), 0.0025), total=np.full((6, 6), 0.004))
    assert not certified_reasons(phi, bounds, top=5, pairs=pairs)
