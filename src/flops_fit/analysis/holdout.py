"""The extrapolation check: refit without the k largest IsoFLOP budgets, then predict them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flops_fit.analysis.common import fit_power_law, jfloat
from flops_fit.analysis.diagnostics import Diagnostics
from flops_fit.analysis.frontier import MIN_FRONTIER_POINTS, fit_loss_vs_compute, predict_frontier
from flops_fit.analysis.parametric import MIN_PARAMETRIC_RUNS, fit_parametric
from flops_fit.law import ChinchillaLaw


@dataclass
class Holdout:
    k: int
    status: str
    reason: str | None = None
    held_out_budgets: list = field(default_factory=list)
    fit_budgets: list = field(default_factory=list)
    isoflop_a: float | None = None
    parametric_a: float | None = None
    rows: list = field(default_factory=list)

    def to_json(self) -> dict:
        if self.status != "ok":
            return {"k": self.k, "status": self.status, "reason": self.reason}
        return {"k": self.k, "status": "ok", "held_out_budgets": self.held_out_budgets,
                "fit_budgets": self.fit_budgets, "isoflop_a": self.isoflop_a, "parametric_a": self.parametric_a,
                "rows": self.rows}


def holdout_check(k: int, sweep, iso, diags: Diagnostics, *, huber_delta: float = 1e-3) -> Holdout:
    """Refit approaches 2, 3 and the frontier without the ``k`` largest IsoFLOP budgets and
    compare their predictions at those budgets with what the held-out runs show."""
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
        pref = fit_parametric(N[keep_runs], D[keep_runs], L[keep_runs], delta=huber_delta)
    law = ChinchillaLaw.from_mapping(pref) if pref is not None else None
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
        if law is not None:
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
                   parametric_a=jfloat(pref["a"]) if pref else None, rows=rows)
