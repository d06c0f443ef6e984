"""The fitting functions of flops_fit.analysis, against published results and ground truth."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from flops_fit.analysis import (
    FlopsPerTokenFromRuns,
    bootstrap_parametric,
    default_grid,
    exponents,
    fit_envelope,
    fit_isoflop,
    fit_loss_vs_compute,
    fit_parabolas,
    fit_parametric,
    fit_power_law,
    group_budgets,
    optimal_allocation,
    predict_loss,
    resample_counts,
)
from flops_fit.analysis.frontier import fit_loss_vs_compute_batched
from flops_fit.analysis.lbfgs import minimize_batched
from flops_fit.analysis.parametric import make_objective

CHINCHILLA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chinchilla_svg_extracted.csv"

# Hoffmann et al. (2022) published parameters: the mock sweeps' ground truth
TRUTH = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
A_TRUE = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])


def _loss(N, D, t=TRUTH):
    return t["E"] + t["A"] / N ** t["alpha"] + t["B"] / D ** t["beta"]


def _sweep(seed, *, noise=0.005, budgets=(1e17, 3e17, 1e18, 3e18, 1e19), points=7, span=4.0, shift=1.0):
    """An IsoFLOP sweep (grid centred on 20 tokens/param) with multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    N, D, L, lab = [], [], [], []
    for g, C in enumerate(budgets):
        centre = np.sqrt(C / 120.0) * shift
        n = np.geomspace(centre / span, centre * span, points)
        d = C / (6 * n)
        N += list(n)
        D += list(d)
        L += list(_loss(n, d) * np.exp(noise * rng.standard_normal(points)))
        lab += [g] * points
    return np.array(N), np.array(D), np.array(L), np.array(lab), np.array(budgets, dtype=float)


def _load_chinchilla():
    if not CHINCHILLA.is_file():
        pytest.skip(f"reference data not found at {CHINCHILLA} (the shared/data folder next to the checkout); "
                    f"the Chinchilla reproduction test needs it")
    rows = list(csv.DictReader(CHINCHILLA.open()))
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    L = np.array([float(r["loss"]) for r in rows])
    keep = np.argsort(L)[:-5]  # drop the 5 highest-loss rows
    N, C, L = N[keep], C[keep], L[keep]
    return N, C / (6 * N), L


# --------------------------------------------------------------------------------------------
# Approach 3 on the Chinchilla data


@pytest.fixture(scope="module")
def chinchilla_fit():
    N, D, L = _load_chinchilla()
    return (N, D, L), fit_parametric(N, D, L)


@pytest.mark.slow
def test_chinchilla_reproduces_epoch_fit(chinchilla_fit):
    _, f = chinchilla_fit
    assert f["n_starts"] == 4500
    assert f["converged"]
    for key, ref in (("E", 1.8172), ("alpha", 0.3473), ("beta", 0.3672)):
        assert f[key] == pytest.approx(ref, rel=0.005), key
    for key, ref in (("A", 477.78), ("B", 2142.93)):
        assert f[key] == pytest.approx(ref, rel=0.03), key
    assert f["a"] == pytest.approx(0.5139, abs=0.002)
    a, b = exponents(f["alpha"], f["beta"])
    assert a + b == pytest.approx(1.0)
    assert a == pytest.approx(f["a"])


@pytest.mark.slow
def test_chinchilla_bootstrap_standard_error(chinchilla_fit):
    (N, D, L), f = chinchilla_fit
    bs = bootstrap_parametric(N, D, L, fit=f, n_boot=500, seed=1)
    se_alpha = np.std(bs["alpha"], ddof=1)
    assert se_alpha == pytest.approx(0.0154, rel=0.25)
    # Epoch: 95% interval for alpha (0.317, 0.373), for E (1.769, 1.871)
    lo, hi = np.percentile(bs["alpha"], [2.5, 97.5])
    assert 0.30 < lo < 0.335 and 0.36 < hi < 0.39
    assert np.mean(bs["converged"]) > 0.95


# --------------------------------------------------------------------------------------------
# the optimiser and the objective


def test_objective_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    N = 10 ** rng.uniform(7, 10, 40)
    D = 10 ** rng.uniform(9, 11, 40)
    L = _loss(N, D) * np.exp(0.01 * rng.standard_normal(40))
    W = rng.integers(0, 3, size=(2, 40)).astype(float)
    rows = np.array([0, 1, 1])
    fun = make_objective(np.log(N), np.log(D), np.log(L), W, 0.02, rows)  # wide delta: both Huber branches
    X = np.array([[6.0, 6.0, 0.5, 0.34, 0.28], [5.0, 7.0, 0.4, 0.3, 0.3], [7.0, 5.0, 0.6, 0.4, 0.25]])
    f, G = fun(X, np.arange(3))
    h = 1e-6
    for k in range(5):
        e = np.zeros(5)
        e[k] = h
        fp, _ = fun(X + e, np.arange(3))
        fm, _ = fun(X - e, np.arange(3))
        np.testing.assert_allclose(G[:, k], (fp - fm) / (2 * h), rtol=1e-4, atol=1e-8)
    # the objective is the weighted sum of Huber losses of the log residuals
    from flops_fit.analysis.parametric import predict_log_loss

    r = np.log(L) - predict_log_loss(X[1], np.log(N), np.log(D))
    hub = np.where(np.abs(r) <= 0.02, 0.5 * r * r, 0.02 * (np.abs(r) - 0.01))
    assert f[1] == pytest.approx(np.sum(W[1] * hub), rel=1e-10)


def test_batched_lbfgs_rosenbrock_and_quadratics():
    def fun(X, idx):
        x, y = X[:, 0], X[:, 1]
        scale = 1.0 + idx  # a different problem per row
        f = scale * (100 * (y - x * x) ** 2 + (1 - x) ** 2)
        g = np.stack([scale * (-400 * x * (y - x * x) - 2 * (1 - x)), scale * 200 * (y - x * x)], axis=1)
        return f, g

    x0 = np.array([[-1.2, 1.0], [2.0, 2.0], [0.0, 0.0], [-3.0, 5.0]])
    res = minimize_batched(fun, x0, gtol=1e-9, ftol=0.0, max_iter=2000)
    np.testing.assert_allclose(res.x, 1.0, atol=1e-5)
    assert res.converged.all()
    assert res.n_iter.min() > 5  # each problem ran its own iterations


def test_default_grid_is_the_chinchilla_grid():
    g = default_grid()
    assert g.shape == (4500, 5)
    assert sorted(np.unique(g[:, 3])) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert sorted(np.unique(g[:, 2])) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert sorted(np.unique(g[:, 0])) == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.slow
def test_parametric_recovers_exponents_at_low_noise(seed):
    N, D, L, _, _ = _sweep(seed, noise=0.002)
    f = fit_parametric(N, D, L)
    assert f["alpha"] == pytest.approx(TRUTH["alpha"], abs=0.03)
    assert f["beta"] == pytest.approx(TRUTH["beta"], abs=0.03)
    assert f["a"] == pytest.approx(A_TRUE, abs=0.03)


@pytest.mark.slow
def test_parametric_batched_weights_equal_separate_fits():
    N, D, L, _, _ = _sweep(3, noise=0.003)
    full = fit_parametric(N, D, L)
    W = resample_counts(N.size, 3, seed=5)
    starts = full["optima"][:3]
    batched = fit_parametric(N, D, L, weights=W, starts=starts)
    for r in range(3):
        one = fit_parametric(N, D, L, weights=W[r], starts=starts)
        assert batched["objective"][r] == pytest.approx(one["objective"], rel=1e-9)
        assert batched["alpha"][r] == pytest.approx(one["alpha"], rel=1e-6)


def test_resample_counts_stratified():
    strata = np.repeat([0, 1, 2], [4, 5, 6])
    C = resample_counts(15, 50, seed=0, strata=strata)
    assert C.shape == (50, 15)
    for s, size in ((0, 4), (1, 5), (2, 6)):
        np.testing.assert_array_equal(C[:, strata == s].sum(axis=1), size)
    np.testing.assert_array_equal(C, resample_counts(15, 50, seed=0, strata=strata))


# --------------------------------------------------------------------------------------------
# allocation


def test_optimal_allocation_closed_form_matches_numeric():
    Cs = np.array([1e18, 1e20, 1e22])
    N1, D1 = optimal_allocation(TRUTH, Cs)
    N2, D2 = optimal_allocation(TRUTH, Cs, fpt=lambda n: 6.0 * n)
    np.testing.assert_allclose(N1, N2, rtol=1e-6)
    np.testing.assert_allclose(6 * N1 * D1, Cs, rtol=1e-12)
    # N_opt is the minimum of L(N, C/6N): neighbours are worse
    for c, n in zip(Cs, N1):
        l0 = _loss(n, c / (6 * n))
        assert l0 < _loss(n * 1.05, c / (6 * n * 1.05)) and l0 < _loss(n / 1.05, c / (6 * n / 1.05))
    # the exponent of the closed form is beta/(alpha+beta)
    assert np.log(N1[2] / N1[0]) / np.log(Cs[2] / Cs[0]) == pytest.approx(A_TRUE, rel=1e-9)


def test_optimal_allocation_with_other_flops_per_token_and_arrays():
    fpt = lambda n: 6.0 * n + 4e4 * np.sqrt(n)  # attention-like overhead  # noqa: E731
    N, D = optimal_allocation(TRUTH, 1e20, fpt=fpt)
    assert fpt(N) * D == pytest.approx(1e20, rel=1e-9)
    for k in (1.02, 1 / 1.02):
        assert _loss(N, D) < _loss(N * k, 1e20 / fpt(N * k))
    reps = {k: np.array([v, v * 1.01])[:, None] for k, v in TRUTH.items()}
    Nr, Dr = optimal_allocation(reps, np.array([1e18, 1e20])[None, :])
    assert Nr.shape == (2, 2)


# --------------------------------------------------------------------------------------------
# Approach 2


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_isoflop_exponent_within_tolerance(seed):
    N, D, L, lab, budgets = _sweep(seed, noise=0.005)
    fpt = FlopsPerTokenFromRuns(N, 6 * N * D, D)
    r = fit_isoflop(N, L, lab, budgets, fpt)
    assert r["interior"].all()
    assert r["a"][0] == pytest.approx(A_TRUE, abs=0.03)
    assert r["a"][0] + r["b"][0] == pytest.approx(1.0, abs=1e-9)  # exactly, under C = 6ND


def test_parabola_vertex_exact_and_robust_to_an_outlier():
    x = np.linspace(7, 9, 9)
    y = 3.0 + 0.5 * (x - 8.2) ** 2
    group = np.zeros(9, dtype=int)
    p = fit_parabolas(x, y, group, 1)
    assert p["x_opt"][0, 0] == pytest.approx(8.2, abs=1e-9)
    np.testing.assert_allclose([p["c2"][0, 0], p["c1"][0, 0], p["c0"][0, 0]], [0.5, -8.2, 3 + 0.5 * 8.2**2], rtol=1e-9)
    y2 = y + 0.001 * np.sin(np.arange(9))
    y2[7] += 0.3  # one bad run
    robust = fit_parabolas(x, y2, group, 1)["x_opt"][0, 0]
    plain = fit_parabolas(x, y2, group, 1, robust=False)["x_opt"][0, 0]
    assert abs(robust - 8.2) < 0.02 and abs(plain - 8.2) > 0.05


def test_parabola_edge_and_too_few_sizes():
    x = np.array([7.0, 7.5, 8.0, 8.5, 7.0, 7.5])
    y = np.array([4.0, 3.5, 3.2, 3.1, 4.0, 3.0])
    group = np.array([0, 0, 0, 0, 1, 1])
    p = fit_parabolas(x, y, group, 2)
    assert not p["interior"][0, 0]  # minimum beyond the largest size
    assert p["x_opt"][0, 0] > 8.5
    assert not p["ok"][0, 1]  # two sizes cannot make a parabola
    # replicate weights that drop sizes: a replicate with < 3 sizes is not ok
    W = np.array([[1, 1, 1, 1, 1, 1], [2, 0, 0, 2, 1, 1.0]])
    q = fit_parabolas(x, y, group, 2, W)
    assert q["ok"][0, 0] and not q["ok"][1, 0]


def test_power_law_and_budget_grouping():
    C = np.array([1e18, 1e19, 1e20])
    k, p = fit_power_law(C, 0.1 * C**0.5)
    assert p == pytest.approx(0.5) and k == pytest.approx(0.1)
    k2, p2 = fit_power_law(C, np.array([[1.0, 10.0, 100.0], [1.0, 2.0, 4.0]]), np.array([[1, 1, 1], [1, 0, 0]], bool))
    assert p2[0] == pytest.approx(1.0) and np.isnan(p2[1])
    labels, budgets = group_budgets([1e18, 1.004e18, 0.997e18, 3e18, 3.01e18, 1e19])
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 2])
    assert budgets.size == 3 and budgets[0] == pytest.approx(1e18, rel=0.01)


def test_flops_per_token_exact_and_interpolated():
    N = np.array([1e7, 1e8, 1e9])
    f = FlopsPerTokenFromRuns(N, 6 * N * 1e9, np.full(3, 1e9))
    assert f.exact_6n and f(3e8) == 1.8e9
    fpt_true = 6 * N + 1e5 * N**0.5
    g = FlopsPerTokenFromRuns(N, fpt_true * 2e9, np.full(3, 2e9))
    assert not g.exact_6n
    np.testing.assert_allclose(g(N), fpt_true, rtol=1e-12)
    assert g(1e10) > g(1e9) and g(1e6) < g(1e7)


# --------------------------------------------------------------------------------------------
# Approach 1 and the loss frontier


def _curves(seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    N, D, _, _, _ = _sweep(0, noise=0.0)
    curves = []
    for n, d in zip(N, D):
        t = d * np.arange(1, 21) / 20
        curves.append({"params": n, "flops": 6 * n * t, "loss": _loss(n, t) * np.exp(noise * rng.standard_normal(20))})
    return N, D, curves


def test_envelope_recovers_exponent():
    N, D, curves = _curves()
    fpt = FlopsPerTokenFromRuns(N, 6 * N * D, D)
    e = fit_envelope(curves, fpt)
    assert e["n_points"][0] >= 10
    assert e["a"][0] == pytest.approx(A_TRUE, abs=0.03)
    v = e["valid"][0]
    np.testing.assert_allclose(6 * e["params"][0, v] * e["tokens"][0, v], e["flops"][v], rtol=1e-9)
    # dropping every run of the smallest sizes leaves the low-FLOP end unbracketed
    W = np.ones((1, len(curves)))
    W[0, N < np.quantile(N, 0.3)] = 0
    e2 = fit_envelope(curves, fpt, W)
    assert e2["valid"][0].sum() < v.sum()


def test_loss_vs_compute_recovers_parameters_and_batched_agrees():
    C = np.geomspace(1e17, 1e21, 8)
    L = 1.7 + 300.0 * C**-0.12
    f = fit_loss_vs_compute(C, L)
    assert f["E"] == pytest.approx(1.7, rel=1e-3)
    assert f["gamma"] == pytest.approx(0.12, rel=1e-3)
    assert f["A"] == pytest.approx(300.0, rel=1e-2)
    rng = np.random.default_rng(0)
    Lr = L[None, :] * np.exp(0.002 * rng.standard_normal((4, 8)))
    mask = np.ones((4, 8), dtype=bool)
    mask[3, 2:] = False  # too few points: NaN
    b = fit_loss_vs_compute_batched(C, Lr, mask, f)
    for r in range(3):
        single = fit_loss_vs_compute(C, Lr[r], C0=f["C0"])
        assert b["gamma"][r] == pytest.approx(single["gamma"], rel=2e-3, abs=2e-4)
    assert np.isnan(b["gamma"][3])


def test_predict_loss_broadcasts():
    p = {k: np.array([v, v]) for k, v in TRUTH.items()}
    assert predict_loss(p, 1e9, 2e10).shape == (2,)
    assert predict_loss(TRUTH, 1e9, 2e10) == pytest.approx(_loss(1e9, 2e10))


def test_variable_projection_reproduces_the_chinchilla_fit(chinchilla_fit):
    """The two engines agree where both apply: VP with Chinchilla's objective lands on the
    4500-start L-BFGS optimum."""
    from flops_fit.analysis.varpro import fit_surface

    (N, D, L), f = chinchilla_fit
    vp = fit_surface(N, D, L, objective="huber_log")
    for k in ("E", "A", "B", "alpha", "beta"):
        assert vp[k] == pytest.approx(f[k], rel=1e-4), k
    assert vp["objective"] == pytest.approx(f["objective"], rel=1e-6)
