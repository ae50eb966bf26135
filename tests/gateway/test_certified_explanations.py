"""Certified explanations: reason lists that match exact Shapley values, or say they may not.

Real models (a small 8-attribute CreditModel with a weighted 12-row background,
whose exact values the brute-force oracle computes, and the German credit
reference model), real runtime, no stand-ins.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from tests.gateway import test_explanation
from tests.gateway.shapley_oracle import interventional_shapley
from tests.gateway.test_explanation import SMALL_COUNTS, applicants, bits, explainer_with
from verdict.gateway.certified_sampling import pair_schedule
from verdict.gateway.explanation import Explainer, ExplainerConfigError, rows_needed, worst_case_rows
from verdict.gateway.fidelity import principal_set, top_set
from verdict.gateway.manifest import CertificationSettings

small = test_explanation.small  # the 8-attribute model and its exact-mode registry (a module-scoped fixture)


def certified_explainer(small, first_pairs: int = 2, **certification) -> Explainer:
    model, registry, background_rows, _, _ = small
    settings = CertificationSettings(
        **{"z": 4.0, "target_error": 1.0, "max_pairs": 16, "exact_rows": 0, **certification}
    )
    probe = msgspec.structs.replace(
        model.manifest.explainer,
        algorithm="certified",
        permutations=first_pairs,
        certification=settings,
        background_rows=len(background_rows),
    )
    return explainer_with(
        model,
        registry,
        background_rows,
        SMALL_COUNTS,
        algorithm="certified",
        permutations=first_pairs,
        certification=settings,
        max_evaluations=worst_case_rows(probe, len(model.manifest.inputs)),
    )


def exact_values(small, x: np.ndarray) -> np.ndarray:
    model, _, _, background, weights = small
    return np.array([interventional_shapley(model.evaluate_for_explanation, row, background, weights)[1] for row in x])


def as_arrays(results, names) -> tuple[np.ndarray, np.ndarray]:
    phi = np.array([[r.contributions[n] for n in names] for r in results])
    bounds = np.array([[r.fidelity.error_bounds[n] for n in names] for r in results])
    return phi, bounds


def same_reasons(a: np.ndarray, b: np.ndarray, top: int) -> bool:
    return set(principal_set(a)) == set(principal_set(b)) and set(top_set(a, top)) == set(top_set(b, top))


def test_pair_schedule_doubles_up_to_the_budget():
    assert pair_schedule(2, 16) == [2, 2, 4, 8]
    assert pair_schedule(2, 12) == [2, 2, 4, 4]
    assert pair_schedule(4, 4) == [4]


def test_every_certified_reason_list_is_the_exact_one(small):
    explainer = certified_explainer(small, max_pairs=64)
    _, x, scores, seeds = applicants(small[0], 200, 120)
    results = explainer.explain(x, scores, seeds)  # raises if any is not additive
    phi, bounds = as_arrays(results, explainer.names)
    exact = exact_values(small, x)
    top = explainer.manifest.explainer.top_reasons
    certified = [r.fidelity.certified for r in results]
    assert sum(certified) >= len(x) // 3, sum(certified)  # the certificate is not vacuous
    for i in np.flatnonzero(certified):
        assert same_reasons(phi[i], exact[i], top), i  # no silent disagreement
    assert np.mean(np.abs(phi - exact) <= bounds + 1e-12) >= 0.97  # the bounds are honest (4 standard errors)
    for r in results:
        f = r.fidelity
        assert f.z == 4.0 and f.evaluations == r.evaluations and 2 <= f.pairs <= 64
    spent = {r.fidelity.pairs for r in results}
    assert len(spent) > 1  # hard requests got more pairs than easy ones


def test_what_sampling_cannot_certify_is_enumerated_exactly_when_affordable(small):
    explainer = certified_explainer(small, max_pairs=2, exact_rows=10**6)
    _, x, scores, seeds = applicants(small[0], 400, 60)
    results = explainer.explain(x, scores, seeds)
    phi, bounds = as_arrays(results, explainer.names)
    exact = exact_values(small, x)
    assert all(r.fidelity.certified for r in results)
    enumerated = np.flatnonzero((bounds == 0).all(axis=1))
    assert 0 < len(enumerated) < len(x)
    assert np.max(np.abs(phi[enumerated] - exact[enumerated])) <= 1e-9
    sampled_only = certified_explainer(small, max_pairs=2, exact_rows=0).explain(x, scores, seeds)
    for i in enumerated:
        assert not sampled_only[i].fidelity.certified
        assert results[i].evaluations > sampled_only[i].evaluations  # the enumeration is counted


def fidelity_bits(result) -> tuple:
    f = result.fidelity
    return bits(result), f.certified, f.pairs, f.evaluations, np.array(list(f.error_bounds.values())).tobytes()


def test_certified_explanations_do_not_depend_on_the_batch_or_its_rounds(german_model, registry):
    explainer = Explainer(german_model, registry.background(german_model.manifest))
    assert explainer.manifest.explainer.algorithm == "certified"  # the reference models' default
    _, x, scores, seeds = applicants(german_model, 0, 40)
    together = explainer.explain(x, scores, seeds)
    assert len({r.fidelity.pairs for r in together}) > 1  # requests left after different rounds
    order = np.random.default_rng(5).permutation(len(x))
    shuffled = explainer.explain(x[order], scores[order], [seeds[i] for i in order])
    for position, i in enumerate(order):
        assert fidelity_bits(shuffled[position]) == fidelity_bits(together[i])
    hardest = max(range(len(x)), key=lambda i: together[i].fidelity.pairs)
    alone = explainer.explain(x[hardest : hardest + 1], scores[hardest : hardest + 1], seeds[hardest : hardest + 1])
    assert fidelity_bits(alone[0]) == fidelity_bits(together[hardest])


@pytest.mark.parametrize("algorithm", ["exact", "permutation"])
def test_other_algorithms_say_what_they_know(small, algorithm):
    model, registry, background_rows, _, _ = small
    d = len(model.manifest.inputs)
    pairs = 0 if algorithm == "exact" else 1
    explainer = explainer_with(
        model,
        registry,
        background_rows,
        SMALL_COUNTS,
        algorithm=algorithm,
        permutations=pairs,
        certification=None,
        max_evaluations=rows_needed(algorithm, d, len(background_rows), pairs),
    )
    _, x, scores, seeds = applicants(model, 0, 4)
    for r in explainer.explain(x, scores, seeds):
        f = r.fidelity
        if algorithm == "exact":
            assert f.certified and set(f.error_bounds.values()) == {0.0} and f.pairs == 0 and f.z is None
        else:
            assert not f.certified and f.error_bounds == {} and f.pairs == 1 and f.z is None
        assert f.evaluations == r.evaluations


def test_a_fixed_number_of_pairs_is_one_round_of_explain_bit_for_bit(small):
    """Explainer.sampled (what the benchmark predicts certificates from) is the sampler's first round."""
    one_round = certified_explainer(small, first_pairs=4, max_pairs=4)
    _, x, _, seeds = applicants(small[0], 12, 7)
    phi, fidelity = one_round.estimate(x, seeds)
    sampled = one_round.sampled(x, seeds, 4)
    assert [f.pairs for f in fidelity] == [4] * len(x)
    assert np.stack([s.contributions for s in sampled]).tobytes() == phi.tobytes()
    recorded = np.array([[f.error_bounds[n] for n in one_round.names] for f in fidelity])
    assert np.stack([s.bounds for s in sampled]).tobytes() == recorded.tobytes()
    with pytest.raises(ExplainerConfigError, match="only a certified explainer"):
        test_explanation.explainer_with(*small[:2], small[2], SMALL_COUNTS).sampled(x, seeds, 4)
