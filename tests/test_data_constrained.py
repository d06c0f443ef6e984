"""The data-constrained law (Muennighoff et al. 2023): its formulas, its published numbers, its fit."""

import csv
from pathlib import Path

import numpy as np
import pytest

from flops_fit.analysis.data_constrained import (PUBLISHED_R_D_STAR, PUBLISHED_R_N_STAR, PUBLISHED_SURFACE,
                                                 DataConstrainedLaw, dc_objective, fit_data_constrained, table_rows)
from flops_fit.law import ChinchillaLaw

DATA = Path("/work/shared/data/datablations/runs_fit182.csv")
for _p in (Path(__file__).resolve().parents[2] / "shared/data/datablations/runs_fit182.csv", DATA):
    if _p.is_file():
        DATA = _p
        break


def _runs182():
    if not DATA.is_file():
        pytest.skip(f"{DATA} not here (the datablations runs live in the shared data folder)")
    rows = list(csv.DictReader(DATA.open()))
    assert len(rows) == 182
    return tuple(np.array([float(r[k]) for r in rows]) for k in ("params", "tokens", "unique_tokens", "loss"))


def test_readme_worked_examples_figure_1_right():
    """datablations README: the two models of Figure 1 (right), and which one is better."""
    law = DataConstrainedLaw()
    a = law.loss(6.34e9, 242e9, 25e9)
    b = law.loss(8.67e9, 178e9, 25e9)
    assert a == pytest.approx(2.2256440889984477, rel=1e-9)
    assert b == pytest.approx(2.2269634075087867, rel=1e-9)
    assert a < b


def test_readme_optimal_allocation_1e22_flops_25b_unique():
    """datablations README grid search: 237.3B tokens, 9.49 epochs, 7.02B params at 1e22 FLOPs, 25B unique."""
    opt = DataConstrainedLaw().optimum(1e22, 25e9)
    assert opt.tokens == pytest.approx(237336955477.55075, rel=0.01)
    assert opt.epochs == pytest.approx(9.49347821910203, rel=0.01)
    assert opt.params == pytest.approx(7022364735.879969, rel=0.01)
    # smaller and longer-trained than the unlimited-data optimum, at a higher loss
    assert opt.params < opt.params_unlimited and opt.tokens > opt.tokens_unlimited
    assert opt.loss_cost > 0
    # the continuous optimum is no worse than the README's grid point
    law = DataConstrainedLaw()
    assert opt.loss <= law.loss(7022364735.879969, 237336955477.55075, 25e9) + 1e-12


def test_published_objective_and_r2_on_the_182_runs():
    N, D, U, L = _runs182()
    obj = float(np.squeeze(dc_objective((PUBLISHED_R_D_STAR, PUBLISHED_R_N_STAR), N, D, U, L, PUBLISHED_SURFACE)))
    assert obj == pytest.approx(0.0158259, rel=1e-4)
    pred = DataConstrainedLaw().loss(N, D, U)
    assert 1 - np.sum((L - pred) ** 2) / np.sum((L - L.mean()) ** 2) == pytest.approx(0.7722, abs=1e-4)


def test_fit_reproduces_published_R_stars_within_3_percent():
    N, D, U, L = _runs182()
    fit = fit_data_constrained(N, D, U, L, PUBLISHED_SURFACE, n_bootstrap=20, seed=1)
    assert fit.ok and fit.fixed == ()
    assert fit.R_D_star == pytest.approx(15.39, rel=0.03)
    assert fit.R_N_star == pytest.approx(5.31, rel=0.03)
    assert fit.objective <= 0.0158260
    lo, hi = fit.R_D_star_ci
    assert lo < fit.R_D_star < hi
    js = fit.to_json()
    assert js["R_D_star"] == fit.R_D_star and js["n_repeated"] == 153


def _synthetic(rd, rn, noise=0.0, seed=0):
    """Runs drawn from a known law: sizes x unique data x epochs 1..40."""
    surf = ChinchillaLaw(E=1.9, A=400.0, B=1500.0, alpha=0.34, beta=0.30)
    law = DataConstrainedLaw(surf, rd, rn)
    N, U, epochs = (g.ravel() for g in np.meshgrid([2e7, 1e8, 5e8, 2e9], [1e8, 1e9], [1, 2, 4, 8, 16, 40]))
    D = U * epochs
    L = law.loss(N, D, U) * np.exp(noise * np.random.default_rng(seed).standard_normal(N.size))
    return surf, N, D, U, L


@pytest.mark.parametrize("rd,rn", [(8.0, 3.0), (25.0, 10.0)])
def test_fit_recovers_known_constants(rd, rn):
    surf, N, D, U, L = _synthetic(rd, rn)
    fit = fit_data_constrained(N, D, U, L, surf)
    assert fit.R_D_star == pytest.approx(rd, rel=0.01)
    assert fit.R_N_star == pytest.approx(rn, rel=0.01)


def test_fit_without_repeats_is_skipped_and_says_why():
    surf, N, D, U, L = _synthetic(8.0, 3.0)
    once = D <= U
    fit = fit_data_constrained(N[once], D[once], U[once], L[once], surf)
    assert fit.status == "skipped" and "repeats" in fit.reason and fit.R_D_star is None


def test_effective_data_limits():
    law = DataConstrainedLaw()
    assert law.effective_data(5e9, 1e10) == pytest.approx(5e9)  # no repetition: D' = D
    assert law.effective_data(2e10, 1e10) == pytest.approx(1e10 + 1e10 * 15.387756 * (1 - np.exp(-1 / 15.387756)))
    # infinitely repeated: D' -> U (1 + R_D*)
    assert law.effective_data(1e20, 1e10) == pytest.approx(1e10 * (1 + law.R_D_star), rel=1e-6)
    # a 5th epoch token is worth ~ exp(-4/15.4) of a new one
    assert law.repeat_value(5) == pytest.approx(np.exp(-4 / law.R_D_star))
    # with U beyond D and N within U_N the law is the surface
    assert law.loss(1e8, 1e9, 1e12) == pytest.approx(float(law.surface.loss(1e8, 1e9)))


def test_n_opt_for_tokens_inverts_d_opt():
    s = ChinchillaLaw()
    C = np.array([1e18, 1e21, 1e24])
    assert np.allclose(s.n_opt_for_tokens(s.d_opt(C)), s.n_opt(C), rtol=1e-10)


def test_doubling_unique_data_saves_compute_only_when_constrained():
    law = DataConstrainedLaw()
    tight = law.doubling_saves(1e22, 25e9)
    assert 0.05 < tight < 0.9
    assert law.doubling_saves(1e22, 1e13) == pytest.approx(0.0, abs=1e-6)  # data is not the limit
    # the saving is real: the 2U optimum at (1 - saving) C reaches the same loss
    L1 = law.optimum(1e22, 25e9).loss
    assert law.optimum(1e22 * (1 - tight), 50e9).loss == pytest.approx(L1, rel=1e-5)


def test_table_rows_mark_only_rows_past_one_epoch():
    law = DataConstrainedLaw()
    rows = [{"budget": 1e18, "tokens": 2e9}, {"budget": 1e22, "tokens": 1.8e11}]
    out = table_rows(law, rows, 25e9)
    assert out[0]["epochs"] == pytest.approx(0.08) and out[0]["data_constrained"] is None
    c = out[1]["data_constrained"]
    assert out[1]["epochs"] == pytest.approx(7.2)
    assert c["epochs"] > 1 and c["loss_cost"] > 0 and c["doubling_saves"] > 0


def test_runs_that_show_no_decay_give_only_a_lower_bound():
    """Losses from the surface alone (a repeated token worth a new one, up to 40 epochs): R_D* runs off far past
    the repetitions the runs reach, and the fit says it is a lower bound rather than a measurement."""
    surf, N, D, U, _ = _synthetic(8.0, 3.0)
    L = surf.loss(N, D)  # no decay at all
    fit = fit_data_constrained(N, D, U, L, surf)
    assert "R_D_star" in fit.lower_bound_only and fit.R_D_star > 390
    measured = fit_data_constrained(*_synthetic(8.0, 3.0)[1:], surf)
    assert measured.lower_bound_only == ()
