"""The extrapolation check: refit without the k largest IsoFLOP budgets, then predict them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flops_fit.analysis.common import fit_power_law, jfloat
from flops_fit.analysis.diagnostics import Diagnostics
from flops_fit.analysis.frontier import MIN_FRONTIER_POINTS, fit_loss_vs_compute, predict_frontier
from flops_fit.analysis.isoflop_vp import _usable
from flops_fit.analysis.parametric import MIN_PARAMETRIC_RUNS, _fit
from flops_fit.analysis.varpro import fit_budget_curves
from flops_fit.law import ChinchillaLaw


@dataclass
class Holdout:
    k: int
    status: str
    reason: str | None = None
    held_out_budgets: list = field(default_factory=list)
    fit_budgets: list = field(default_factory=list)
    isoflop_a: float | None = None
    isoflop_vp_a: float | None = None
    parametric_a: float | None = None
    rows: list = field(default_factory=list)

    def to_json(self) -> dict:
        if self.status != "ok":
            return {"k": self.k, "status": self.status, "reason": self.reason}
        return {"k": self.k, "status": "ok", "held_out_budgets": self.held_out_budgets,
                "fit_budgets": self.fit_budgets, "isoflop_a": self.isoflop_a, "isoflop_vp_a": self.isoflop_vp_a,
                "parametric_a": self.parametric_a, "rows": self.rows}


def holdout_check(k: int, sweep, iso, diags: Diagnostics, *, huber_delta: float = 1e-3, objective: str = "sse",
                  engine: str = "vp", isovp=None) -> Holdout:
    """Refit approaches 2, 2b, 3 and the frontier without the ``k`` largest IsoFLOP budgets and
    compare their predictions at those budgets with what the held-out runs show (the budget's
    own optimum, and for the surface every held-out run's loss)."""
    elig = iso.groups if iso.groups is not None else np.array([], dtype=int)
    if iso.budgets is None or len(elig) < k + 2:
        reason = f"holdout={k} needs IsoFLOP budgets: at least {k + 2} (have {len(elig)})"
        diags.add("info", "holdout_skipped", reason)
        return Holdout(k, "skipped", reason)
    N, D, L, labels, budgets = sweep.N, sweep.D, sweep.L, sweep.labels, sweep.budgets
    fpt_alloc = sweep.fpt.for_allocation
    order = np.argsort(budgets[elig])
    held_groups = elig[order[-k:]]
    fit_groups = elig[order[:-k]]
    full = iso.full
    elig_pos = {g: i for i, g in enumerate(elig)}
    # IsoFLOP power law on the kept budgets (their parabolas do not depend on the held-out runs)
    kept_i = np.array([elig_pos[g] for g in fit_groups])
    m = full["interior"][0, kept_i]
    k_N, a = fit_power_law(budgets[fit_groups], full["params_opt"][0, kept_i], m)
    # parametric refit without the held-out runs
    keep_runs = ~np.isin(labels, held_groups)
    pref = None
    if keep_runs.sum() >= MIN_PARAMETRIC_RUNS:
        pref = _fit(N[keep_runs], D[keep_runs], L[keep_runs], None, objective, engine, huber_delta)
    law = ChinchillaLaw.from_mapping(pref) if pref is not None else None
    # approach 2b without the held-out runs
    vp_a = vp_k = None
    if fit_groups.size >= 2:
        sel = np.isin(labels, fit_groups)
        remap = {g: i for i, g in enumerate(fit_groups)}
        lab = np.array([remap[g] for g in labels[sel]])
        r = fit_budget_curves(N[sel], L[sel], lab)
        lo = np.array([N[sel][lab == i].min() for i in range(fit_groups.size)])
        hi = np.array([N[sel][lab == i].max() for i in range(fit_groups.size)])
        ok = _usable(r["params_opt"][0], lo, hi)
        vp_k, vp_a = (float(np.ravel(v)[0]) for v in fit_power_law(budgets[fit_groups], r["params_opt"][0], ok))
    lv = None
    Ck = budgets[fit_groups][m]
    if m.sum() >= MIN_FRONTIER_POINTS:
        lv = fit_loss_vs_compute(Ck, full["loss_opt"][0, kept_i][m])
    rows = []
    for g in held_groups:
        i = elig_pos[g]
        c = float(budgets[g])
        obs_N = full["params_opt"][0, i]
        obs_L = full["loss_opt"][0, i]
        best_run = float(L[labels == g].min())
        row = {"budget": c, "interior": bool(full["interior"][0, i]), "params_observed": jfloat(obs_N),
               "loss_observed": jfloat(obs_L), "best_run_loss": best_run}
        aa, kk = float(np.ravel(a)[0]), float(np.ravel(k_N)[0])
        if np.isfinite(aa):
            pN = kk * c ** aa
            row.update(isoflop_params=pN, isoflop_params_error=jfloat(pN / obs_N - 1.0))
        if vp_a is not None and np.isfinite(vp_a):
            pN = vp_k * c ** vp_a
            row.update(isoflop_vp_params=pN, isoflop_vp_params_error=jfloat(pN / obs_N - 1.0))
            if isovp is not None and isovp.full is not None and isovp.budgets:
                own = next((b["params_opt"] for b in isovp.budgets if abs(b["budget"] - c) <= 1e-6 * c), None)
                row.update(params_observed_curve=own,
                           isoflop_vp_params_error_vs_curve=jfloat(pN / own - 1.0) if own else None)
        if law is not None:
            held = labels == g
            run_err = law.loss(N[held], D[held]) / L[held] - 1.0
            row["parametric_run_loss_rmse"] = jfloat(np.sqrt(np.mean(run_err ** 2)))
            pN, pD = law.allocation(c, fpt_alloc)
            pL = float(law.loss(pN, pD))
            row.update(parametric_params=jfloat(pN), parametric_params_error=jfloat(pN / obs_N - 1.0),
                       parametric_loss=jfloat(pL), parametric_loss_error=jfloat(pL / obs_L - 1.0),
                       parametric_loss_error_vs_best_run=jfloat(pL / best_run - 1.0))
        if lv is not None and np.isfinite(lv["E"]):
            lL = float(predict_frontier(lv, c))
            row.update(loss_vs_compute_loss=lL, loss_vs_compute_loss_error=jfloat(lL / obs_L - 1.0))
        rows.append(row)
    return Holdout(k, "ok", held_out_budgets=[float(budgets[g]) for g in held_groups],
                   fit_budgets=[float(budgets[g]) for g in fit_groups], isoflop_a=jfloat(np.ravel(a)[0]),
                   isoflop_vp_a=jfloat(vp_a),
                   parametric_a=jfloat(pref["a"]) if pref else None, rows=rows)
