"""Approach 2b: IsoFLOP curves with the Chinchilla shape, fitted by variable projection.

At fixed compute C = 6ND the Chinchilla surface is, along the IsoFLOP curve,

    L_C(N) = e_C + a_C N^-alpha + b_C N^beta       (a_C = A, b_C = B (6/C)^beta, e_C = E)

so each budget's curve is fitted with that shape instead of a parabola: the exponents are
shared by every budget, the coefficients e_C, a_C, b_C >= 0 are each budget's own (so warmup,
schedules or other budget-dependent effects only move one curve), and for fixed exponents the
problem is linear (:mod:`flops_fit.analysis.varpro`). The minimum of each curve is closed-form,
N*_C = (alpha a_C / (beta b_C))^(1/(alpha+beta)); power laws N_opt = k_N C^a, D_opt = k_D C^b go
through the minima, as in approach 2.

Exact on every noise-free Chinchilla surface (the shape is right, whatever the grid width,
centring or alpha/beta asymmetry: the three biases of the parabola), and, unlike one global
surface, not misled when the budgets do not share one (E, A, B).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flops_fit.analysis.common import PowerLawAllocation, bootstrap_spread, fit_power_law, jfloat, percentile_interval
from flops_fit.analysis.diagnostics import Diagnostics, bootstrap_failures
from flops_fit.analysis.varpro import fit_budget_curves
from flops_fit.units import fmt_flops, fmt_params

EXTRAPOLATION = 4.0  # a budget's minimum counts if within this factor beyond its sampled sizes


@dataclass
class IsoflopVPFit(PowerLawAllocation):
    """Approach 2b's result: shared exponents, one curve per budget, power laws through the minima."""

    status: str
    reason: str | None = None
    alpha: float | None = None
    beta: float | None = None
    budgets: list | None = None
    n_budgets: int = 0
    n_used: int = 0
    a: float | None = None
    b: float | None = None
    k_N: float | None = None
    k_D: float | None = None
    a_ci: list | None = None
    b_ci: list | None = None
    k_N_ci: list | None = None
    k_D_ci: list | None = None
    objective: float | None = None
    converged: bool = False
    full: dict | None = field(default=None, repr=False)
    replicates: dict | None = field(default=None, repr=False)

    def curve(self, entry: dict, N):
        """The loss on one budget's fitted curve (an entry of ``budgets``) at sizes ``N``: e + a N^-alpha + b N^beta."""
        e, a, b = entry["coef"]
        return e + a * np.asarray(N, dtype=float) ** -self.alpha + b * np.asarray(N, dtype=float) ** self.beta

    def to_json(self) -> dict:
        if self.budgets is None:
            return {"status": self.status, "reason": self.reason}
        out = {"status": self.status, "alpha": self.alpha, "beta": self.beta, "budgets": self.budgets,
               "n_budgets": self.n_budgets, "n_used": self.n_used, "objective": self.objective,
               "converged": self.converged}
        if self.ok:
            out.update(a=self.a, b=self.b, k_N=self.k_N, k_D=self.k_D, a_ci=self.a_ci, b_ci=self.b_ci,
                       k_N_ci=self.k_N_ci, k_D_ci=self.k_D_ci)
            if self.replicates is not None:
                out["bootstrap"] = bootstrap_spread(self.replicates["a"], self.replicates["b"])
        else:
            out.update(reason=self.reason, a=None, b=None, a_ci=None, b_ci=None)
        return out


def _usable(Nopt, lo, hi):
    with np.errstate(invalid="ignore"):
        return np.isfinite(Nopt) & (Nopt >= lo / EXTRAPOLATION) & (Nopt <= hi * EXTRAPOLATION)


def _distinct_sizes(W, x, group, G):
    """(R, G) number of distinct sizes with positive weight per budget and replicate."""
    out = np.zeros((W.shape[0], G), dtype=int)
    for g in range(G):
        sel = np.flatnonzero(group == g)
        xs = np.round(x[sel], 9)
        for u in np.unique(xs):
            out[:, g] += (W[:, sel[xs == u]].sum(axis=1) > 0)
    return out


def isoflop_vp_approach(sweep, iso, counts, ci: float, diags: Diagnostics) -> IsoflopVPFit:
    """Approach 2b on the budgets approach 2 uses (runs at 3+ sizes); ``counts`` (R, n) or None."""
    groups = sweep.isoflop_groups
    if groups.size < 2:
        return IsoflopVPFit("skipped", "needs 2 or more budgets with runs at 3 or more model sizes")
    N, L, labels, budgets = sweep.N, sweep.L, sweep.labels, sweep.budgets
    sel = np.isin(labels, groups)
    if sel.sum() <= 3 * groups.size + 2:
        return IsoflopVPFit("skipped", f"needs more runs ({int(sel.sum())}) than parameters (3 per budget + 2 shared "
                                       f"= {3 * groups.size + 2}): with 3 runs per budget every curve fits exactly "
                                       f"and the exponents are not identified; add sizes")
    remap = {g: i for i, g in enumerate(groups)}
    lab = np.array([remap[g] for g in labels[sel]])
    bud = budgets[groups]
    Ns, Ls = N[sel], L[sel]
    full = fit_budget_curves(Ns, Ls, lab)
    G = bud.size
    lo = np.array([Ns[lab == i].min() for i in range(G)])
    hi = np.array([Ns[lab == i].max() for i in range(G)])
    Nopt, Lopt = full["params_opt"][0], full["loss_opt"][0]
    use = _usable(Nopt, lo, hi)
    pred = full["e"][0][lab] + full["a"][0][lab] * Ns ** -full["alpha"][0] + full["b"][0][lab] * Ns ** full["beta"][0]
    rep = None
    if counts is not None:
        W = counts[:, sel]
        r = fit_budget_curves(Ns, Ls, lab, weights=W, starts=full["optima"][:2])
        ok = _usable(r["params_opt"], lo, hi) & (_distinct_sizes(W, np.log(Ns), lab, G) >= 3)
        k_N, a = fit_power_law(bud, r["params_opt"], ok)
        with np.errstate(invalid="ignore", divide="ignore"):
            D = bud[None, :] / sweep.fpt(np.where(ok, r["params_opt"], 1.0))
        k_D, b = fit_power_law(bud, D, ok)
        rep = {"a": a, "b": b, "k_N": k_N, "k_D": k_D, "params_opt": np.where(ok, r["params_opt"], np.nan),
               "loss_opt": np.where(ok, r["loss_opt"], np.nan), "alpha": r["alpha"], "beta": r["beta"]}
    blist = []
    for i, g in enumerate(groups):
        m = lab == i
        resid = Ls[m] - pred[m]
        entry = {
            "budget": float(bud[i]),
            "params_opt": jfloat(Nopt[i]),
            "tokens_opt": jfloat(bud[i] / sweep.fpt(Nopt[i])) if np.isfinite(Nopt[i]) else None,
            "loss_opt": jfloat(Lopt[i]),
            "interior": bool(np.isfinite(Nopt[i]) and lo[i] < Nopt[i] < hi[i]),
            "used": bool(use[i]),
            "coef": [jfloat(full["e"][0][i]), jfloat(full["a"][0][i]), jfloat(full["b"][0][i])],
            "n_runs": int(m.sum()),
            "params_min": float(lo[i]),
            "params_max": float(hi[i]),
            "rmse": float(np.sqrt(np.mean(resid ** 2))),
            "params_opt_ci": percentile_interval(rep["params_opt"][:, i], ci) if rep is not None else None,
        }
        blist.append(entry)
        if np.isfinite(Nopt[i]) and not use[i]:
            diags.add("warning", "isoflop_vp_far_minimum",
                      f"budget {fmt_flops(bud[i])}: the Chinchilla-shaped curve puts the minimum at "
                      f"{fmt_params(Nopt[i])}, more than {EXTRAPOLATION:.0f}x outside the sampled sizes "
                      f"({fmt_params(lo[i])}-{fmt_params(hi[i])}); not used for the power law", bud[i])
    fit = IsoflopVPFit("skipped", alpha=jfloat(full["alpha"][0]), beta=jfloat(full["beta"][0]), budgets=blist,
                       n_budgets=int(G), n_used=int(use.sum()), objective=jfloat(full["objective"][0]),
                       converged=bool(full["converged"][0]), full=full)
    if use.sum() < 2:
        fit.reason = f"{int(use.sum())} budget(s) with a usable minimum; a power law needs at least 2"
        return fit
    k_N, a = fit_power_law(bud, Nopt, use)
    D = np.where(use, bud / sweep.fpt(np.where(use, Nopt, 1.0)), np.nan)
    k_D, b = fit_power_law(bud, D, use)
    fit.status = "ok"
    fit.a, fit.b, fit.k_N, fit.k_D = jfloat(a), jfloat(b), jfloat(k_N), jfloat(k_D)
    if rep is not None:
        fit.a_ci, fit.b_ci = percentile_interval(rep["a"], ci), percentile_interval(rep["b"], ci)
        fit.k_N_ci, fit.k_D_ci = percentile_interval(rep["k_N"], ci), percentile_interval(rep["k_D"], ci)
        bootstrap_failures(diags, "isoflop_vp", rep["a"])
        fit.replicates = rep
    return fit
