"""``predict(analysis, budget)``: the compute-optimal allocation and loss at any budget, read
back from an analysis.json body (what ``Result.predict`` and ``ff-plan refine_from`` use)."""

from __future__ import annotations

from typing import Mapping

from flops_fit.analysis.table import AUTO_ORDER as FALLBACK_ORDER  # the table's own order
from flops_fit.errors import FlopsFitError
from flops_fit.law import ChinchillaLaw


def predict(analysis: Mapping, budget: float) -> dict:
    """Compute-optimal params/tokens at ``budget`` FLOPs from the fit the table uses (else the
    first successful one), and the loss there (parametric surface, else the loss frontier).

    Returns ``{budget, params, tokens, tokens_per_param, loss}``; raises :class:`FlopsFitError`
    when the analysis has no successful fit."""
    budget = float(budget)
    fits = analysis.get("fits", {})
    fit = fits.get(analysis.get("table_source") or "", {})
    if fit.get("status") != "ok" or fit.get("k_N") is None:
        fit = next((fits[k] for k in FALLBACK_ORDER
                    if fits.get(k, {}).get("status") == "ok" and fits[k].get("k_N") is not None), None)
        if fit is None:
            raise FlopsFitError("the analysis has no successful fit to predict from; see its diagnostics")
    params = fit["k_N"] * budget ** fit["a"]
    tokens = fit["k_D"] * budget ** fit["b"]
    par, lvc = fits.get("parametric", {}), fits.get("loss_vs_compute", {})
    if par.get("status") == "ok":
        loss = float(ChinchillaLaw.from_mapping(par).loss(params, tokens))
    elif lvc.get("status") == "ok":
        loss = lvc["E"] + lvc["A"] * budget ** (-lvc["gamma"])
    else:
        loss = None
    return {"budget": budget, "params": params, "tokens": tokens, "tokens_per_param": tokens / params, "loss": loss}
