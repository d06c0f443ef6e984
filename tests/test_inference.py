"""The inference-aware optimum (Sardana et al. 2023): least k N D + 2 N T FLOPs for a target loss."""

import numpy as np
import pytest

from flops_fit.analysis.inference import inference_optimum
from flops_fit.errors import FlopsFitError
from flops_fit.law import ChinchillaLaw

# Hoffmann et al. 2022, approach 3: the coefficients Sardana et al. use
HOFFMANN = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def test_without_inference_it_is_the_chinchilla_optimum():
    law = HOFFMANN
    C = 5.76e23  # Chinchilla's budget
    N0, D0 = law.n_opt(C), law.d_opt(C)
    o = inference_optimum(law, float(law.loss(N0, D0)), 0.0)
    assert o.params == pytest.approx(N0, rel=1e-4) and o.tokens == pytest.approx(D0, rel=1e-4)
    assert o.chinchilla_params == pytest.approx(N0, rel=1e-9)
    assert o.flops_saved == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("T", [1e11, 2e12, 1e13])
def test_optimum_satisfies_the_lagrange_condition(T):
    """d/dN and d/dD of k N D + 2 N T are parallel to those of L at the optimum:
    (k D + 2 T) beta B / D^(beta+1) = k alpha A / N^alpha, and L(N, D) is the target."""
    law, k = HOFFMANN, 6.0
    target = float(law.loss(7e9, 1.4e11))
    o = inference_optimum(law, target, T)
    N, D = o.params, o.tokens
    assert float(law.loss(N, D)) == pytest.approx(target, rel=1e-10)
    lhs = (k * D + 2 * T) * law.beta * law.B / D ** (law.beta + 1)
    rhs = k * law.alpha * law.A / N ** law.alpha
    assert lhs == pytest.approx(rhs, rel=1e-4)


def test_more_inference_means_smaller_longer_trained_and_cheaper_than_chinchilla():
    target = float(HOFFMANN.loss(13e9, 2.6e11))
    prev = None
    for T in (1e10, 1e11, 1e12, 1e13):
        o = inference_optimum(HOFFMANN, target, T)
        assert o.params < o.chinchilla_params and o.tokens > o.chinchilla_tokens
        assert 0 < o.flops_saved < 1
        if prev is not None:
            assert o.params < prev.params and o.flops_saved > prev.flops_saved
        prev = o
    js = prev.to_json()
    assert js["total_flops"] == pytest.approx(js["train_flops"] + js["inference_flops"])


def test_no_other_model_on_the_iso_loss_curve_is_cheaper():
    target, T = 2.1, 2e12
    o = inference_optimum(HOFFMANN, target, T)
    Ns = np.geomspace(o.params / 3, o.params * 3, 301)
    Ds = HOFFMANN.tokens_for_loss(Ns, target)
    costs = 6 * Ns * Ds + 2 * Ns * T
    assert o.total_flops <= costs[np.isfinite(costs)].min() * (1 + 1e-9)


def test_unreachable_loss_is_a_user_error():
    with pytest.raises(FlopsFitError, match="irreducible"):
        inference_optimum(HOFFMANN, 1.5, 1e12)
    with pytest.raises(FlopsFitError, match="inference_tokens"):
        inference_optimum(HOFFMANN, 2.1, -1)


def test_optimum_for_loss_matches_the_budget_optimum():
    C = np.array([1e20, 1e23])
    N, D = HOFFMANN.optimum_for_loss(HOFFMANN.loss(HOFFMANN.n_opt(C), HOFFMANN.d_opt(C)))
    assert np.allclose(N, HOFFMANN.n_opt(C), rtol=1e-9) and np.allclose(D, HOFFMANN.d_opt(C), rtol=1e-9)


def test_sardana_figure_1_a_7b_model_instead_of_a_chinchilla_13b_saves_1_7e22_flops():
    """Sardana et al. 2023, Figure 1: instead of the Chinchilla-optimal 13B model, with 2T tokens of inference,
    train a 7B model on more data and save 1.7e22 FLOPs (17%). Chinchilla's coefficients with alpha 0.336,
    beta 0.283 (docs/data-constrained.md says why these exponents)."""
    from scipy.optimize import brentq

    law = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.336, beta=0.283)
    C = np.exp(brentq(lambda lc: np.log(float(law.n_opt(np.exp(lc))) / 13e9), np.log(1e18), np.log(1e26)))
    D13 = float(law.d_opt(C))
    o = inference_optimum(law, float(law.loss(13e9, D13)), 2e12)
    assert o.chinchilla_params == pytest.approx(13e9, rel=1e-6)
    assert o.params == pytest.approx(7e9, rel=0.02)
    assert o.chinchilla_total_flops - o.total_flops == pytest.approx(1.7e22, rel=0.02)
    assert o.flops_saved == pytest.approx(0.17, abs=0.01)
