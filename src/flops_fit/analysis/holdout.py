"""The extrapolation check: refit without the k largest IsoFLOP budgets, then predict them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flops_fit.analysis.backtest import forecasts, past_fits
from flops_fit.analysis.common import jfloat
from flops_fit.analysis.diagnostics import Diagnostics


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
    """Refit approaches 2, 2b, 3 and the frontier without the ``k`` largest IsoFLOP budgets (the backtest's own
    refits, :func:`~flops_fit.analysis.backtest.past_fits`) and compare their predictions at those budgets with
    what the held-out runs show (the budget's own optimum, and for the surface every held-out run's loss)."""
    elig = iso.groups if iso.groups is not None else np.array([], dtype=int)
    if iso.budgets is None or len(elig) < k + 2:
        reason = f"holdout={k} needs IsoFLOP budgets: at least {k + 2} (have {len(elig)})"
        diags.add("info", "holdout_skipped", reason)
        return Holdout(k, "skipped", reason)
    L, labels, budgets, full = sweep.L, sweep.labels, sweep.budgets, iso.full
    order = np.argsort(budgets[elig])
    held_groups, fit_groups = elig[order[-k:]], elig[order[:-k]]
    fits = past_fits(sweep.below(float(budgets[fit_groups].max())), huber_delta=huber_delta, objective=objective,
                     engine=engine)
    fc = forecasts(fits, budgets[held_groups])
    par = fits["parametric"]
    law = par.law if par.ok else None
    curves = {b["budget"]: b["params_opt"] for b in isovp.budgets} if isovp is not None and isovp.budgets else {}
    rows = []
    for j, g in enumerate(held_groups):
        i = int(np.flatnonzero(elig == g)[0])
        c = float(budgets[g])
        obs_N, obs_L = full["params_opt"][0, i], full["loss_opt"][0, i]
        best_run = float(L[labels == g].min())
        row = {"budget": c, "interior": bool(full["interior"][0, i]), "params_observed": jfloat(obs_N),
               "loss_observed": jfloat(obs_L), "best_run_loss": best_run}
        for name in ("isoflop", "isoflop_vp"):
            pN = fc["params"].get(name)
            if pN is not None and np.isfinite(pN[j]):
                row.update({f"{name}_params": float(pN[j]), f"{name}_params_error": jfloat(pN[j] / obs_N - 1.0)})
        if "isoflop_vp_params" in row and curves:
            own = curves.get(c)
            row.update(params_observed_curve=own,
                       isoflop_vp_params_error_vs_curve=jfloat(row["isoflop_vp_params"] / own - 1.0) if own else None)
        if law is not None:
            held = labels == g
            run_err = law.loss(sweep.N[held], sweep.D[held]) / L[held] - 1.0
            row["parametric_run_loss_rmse"] = jfloat(np.sqrt(np.mean(run_err ** 2)))
            pN, pD = law.allocation(c, sweep.fpt.for_allocation)
            pL = float(law.loss(pN, pD))
            row.update(parametric_params=jfloat(pN), parametric_params_error=jfloat(pN / obs_N - 1.0),
                       parametric_loss=jfloat(pL), parametric_loss_error=jfloat(pL / obs_L - 1.0),
                       parametric_loss_error_vs_best_run=jfloat(pL / best_run - 1.0))
        lL = fc["loss"].get("loss_vs_compute")
        if lL is not None and np.isfinite(lL[j]):
            row.update(loss_vs_compute_loss=float(lL[j]), loss_vs_compute_loss_error=jfloat(lL[j] / obs_L - 1.0))
        rows.append(row)
    a_of = {name: (fits[name].a if fits[name].ok else None) for name in ("isoflop", "isoflop_vp", "parametric")}
    return Holdout(k, "ok", held_out_budgets=[float(budgets[g]) for g in held_groups],
                   fit_budgets=[float(budgets[g]) for g in fit_groups], isoflop_a=jfloat(a_of["isoflop"]),
                   isoflop_vp_a=jfloat(a_of["isoflop_vp"]), parametric_a=jfloat(a_of["parametric"]), rows=rows)
