"""The backtest's truth: what a budget's own runs say its minimum is (backtest.observed_optima)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from flops_fit.analysis.backtest import observed_optima
from flops_fit.analysis.common import local_minimum
from flops_fit.analysis.diagnostics import Diagnostics
from flops_fit.analysis.isoflop import isoflop_approach
from flops_fit.analysis.isoflop_vp import isoflop_vp_approach
from flops_fit.analysis.sweep import load_sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthetic import sweep as chinchilla_sweep, truth_for_ratio  # noqa: E402

BUDGETS = (1e17, 1e18, 1e19, 1e20)


def _observed(runs):
    d = Diagnostics()
    sw = load_sweep(runs, "total", None, d)
    iso = isoflop_approach(sw, None, 0.95, d)
    vp = isoflop_vp_approach(sw, iso, None, 0.95, d)
    obs = observed_optima(sw, iso, vp)
    return sw, vp, {float(sw.budgets[g]): v for g, v in obs.items()}


def _skewed_runs():
    """IsoFLOP curves that are exact parabolas in ln N within 4x of their minimum N* = 0.1 C^0.5, and
    rise steeply (cubically) beyond 4x on the large side only: not of the Chinchilla shape."""
    runs = []
    for C in BUDGETS:
        n_star = 0.1 * C ** 0.5
        for x in np.linspace(-2.5, 2.5, 15):  # ln(N / N*): 1.9 decades, as Marin's sweeps
            N = n_star * np.exp(x)
            L = 3.0 - 0.1 * np.log10(C) + 0.05 * x ** 2 + 0.2 * max(0.0, x - np.log(4.0)) ** 3
            runs.append({"id": f"r{len(runs)}", "status": "completed", "params": float(N),
                         "tokens": C / (6 * N), "flops": C, "budget": C, "loss": float(L), "history": []})
    return runs


def test_local_minimum_is_exact_on_a_parabola_and_refuses_far_runs():
    N = np.exp(np.linspace(-1, 1, 5)) * 1e6
    L = 2.0 + 0.3 * np.log(N / 1.3e6) ** 2
    n_opt, l_opt, near, rss = local_minimum(N, L)
    assert n_opt == pytest.approx(1.3e6, rel=1e-9) and l_opt == pytest.approx(2.0, abs=1e-9)
    assert near.sum() == 4 and rss == pytest.approx(0.0, abs=1e-18)  # the smallest size is over 4x from the best
    # sizes 16x apart: only the best run lies within 4x of itself, so nothing is measured near the minimum
    assert local_minimum(np.array([1e5, 1.6e6, 2.56e7]), np.array([3.0, 2.5, 2.9])) is None


def test_a_curve_not_of_the_chinchilla_shape_is_measured_by_its_runs_near_the_minimum():
    sw, vp, obs = _observed(_skewed_runs())
    for C in BUDGETS:
        assert obs[C][0] == pytest.approx(0.1 * C ** 0.5, rel=1e-6)
    # approach 2b's shared-exponent curves put these minima elsewhere: the backtest no longer scores against them
    vp_opt = {b["budget"]: b["params_opt"] for b in vp.budgets}
    assert max(abs(vp_opt[C] / (0.1 * C ** 0.5) - 1) for C in BUDGETS) > 0.02


@pytest.mark.parametrize("ratio, hw", [(9.0, 4), (9.0, 16), (1.0, 2)])
def test_on_a_chinchilla_surface_the_truth_is_exact(ratio, hw):
    """2b's curve is exact there: it fits the runs near the minimum better than any parabola, and where the
    window holds every run (half-width 4x, 2x) a parabola would be approach 2's own, biased estimate."""
    truth = truth_for_ratio(ratio)
    _, _, obs = _observed(chinchilla_sweep(truth, points=9, half_width=hw, centre="centred"))
    assert obs
    for C, (n, _) in obs.items():
        assert n == pytest.approx(truth.n_opt(C), rel=1e-6)


def test_a_default_the_backtest_could_not_score_stays_and_the_scored_ones_are_competitive():
    from flops_fit.analysis.backtest import _competitive, _pick

    order, available = ("loss_vs_compute", "parametric"), ("loss_vs_compute", "parametric")
    scores = {"loss_vs_compute": None, "parametric": 0.06}
    assert _pick(scores, order, available, default="loss_vs_compute", eps=0.01) == "loss_vs_compute"
    assert _competitive("loss_vs_compute", scores, order, available, 0.002) == ["loss_vs_compute", "parametric"]
    # scored, the default leaves only for a clearly better candidate, and the competitive ones are the close ones
    scores = {"loss_vs_compute": 0.10, "parametric": 0.01}
    assert _pick(scores, order, available, default="loss_vs_compute", eps=0.01) == "parametric"
    assert _competitive("parametric", scores, order, available, 0.002) == ["parametric"]
    # a default that did not fit the whole sweep is not kept
    assert _pick({"parametric": 0.06}, order, ("parametric",), default="loss_vs_compute") == "parametric"
