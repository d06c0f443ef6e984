"""flops_fit.law.ChinchillaLaw: the one home of the Chinchilla formulas."""

import numpy as np
import pytest

from flops_fit.errors import FlopsFitError
from flops_fit.law import ChinchillaLaw
from flops_fit.training.mock import GroundTruth

HOFFMANN = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def test_exponents_and_prefactor():
    law = HOFFMANN
    assert law.a == pytest.approx(0.28 / 0.62) and law.b == pytest.approx(0.34 / 0.62)
    assert law.a + law.b == pytest.approx(1.0)
    assert law.G == pytest.approx((0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62))


def test_closed_form_allocation_is_the_isoflop_minimum():
    law = HOFFMANN
    for C in (1e18, 1e21, 1e24):
        n, d = law.n_opt(C), law.d_opt(C)
        assert 6 * n * d == pytest.approx(C, rel=1e-12)
        grid = n * np.geomspace(0.5, 2, 2001)
        best = grid[np.argmin(law.loss(grid, C / (6 * grid)))]
        assert best == pytest.approx(n, rel=2e-3)
        assert law.k_N() * C ** law.a == pytest.approx(n, rel=1e-12)
        assert law.k_D() * C ** law.b == pytest.approx(d, rel=1e-12)
    # the numerical allocation with fpt = 6N agrees with the closed form
    Cs = np.array([1e18, 1e22])
    n_num, d_num = law.allocation(Cs, lambda n: 6.0 * n)
    np.testing.assert_allclose(n_num, law.n_opt(Cs), rtol=1e-6)
    # another FLOPs-per-token coefficient
    assert law.n_opt(1e20, 8.0) * law.d_opt(1e20, 8.0) * 8.0 == pytest.approx(1e20)


def test_array_fields_broadcast():
    law = ChinchillaLaw(E=np.array([1.7, 1.8])[:, None], A=400.0, B=400.0, alpha=np.array([0.3, 0.35])[:, None],
                        beta=0.3)
    N, D = law.allocation(np.array([1e18, 1e20, 1e22])[None, :])
    assert N.shape == (2, 3)
    assert law.loss(N, D).shape == (2, 3)
    assert np.ravel(law.a)[0] == pytest.approx(0.5)


def test_validate_names_the_field():
    with pytest.raises(FlopsFitError, match=r"fits.parametric.alpha=-1"):
        ChinchillaLaw(alpha=-1).validate("fits.parametric")
    with pytest.raises(FlopsFitError, match=r"trainer.ground_truth.E"):
        ChinchillaLaw(E=-0.1).validate()
    assert ChinchillaLaw().validate() is not None


def test_mock_ground_truth_is_the_law_with_epochs_defaults():
    assert GroundTruth is ChinchillaLaw
    g = GroundTruth()
    assert (g.E, g.A, g.B, g.alpha, g.beta) == (1.8169, 482.01, 2085.43, 0.3478, 0.3659)
    assert ChinchillaLaw.from_mapping({"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28,
                                       "extra": 1}) == HOFFMANN
    assert HOFFMANN.to_json() == {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
