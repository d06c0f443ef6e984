"""``predict(analysis, budget)``: the compute-optimal allocation and loss at any budget, read
back from an analysis.json body (what ``Result.predict``, ``ff-plan refine_from`` and the forecast
check use). It is the table's own computation (:meth:`TableModel.rows`), so a budget on the table's
rows and the same budget asked for here give the same numbers, intervals included."""

from __future__ import annotations

from typing import Mapping

from flops_fit.analysis.table import AUTO_ORDER as FALLBACK_ORDER  # the table's own order
from flops_fit.analysis.table import TableModel
from flops_fit.errors import FlopsFitError
from flops_fit.law import ChinchillaLaw


def predict(analysis: Mapping, budget: float, approach: str | None = None) -> dict:
    """The table's row at ``budget`` FLOPs: ``{budget, params, tokens, tokens_per_param, loss}`` and, when
    the analysis was bootstrapped, ``params_ci``, ``tokens_ci``, ``loss_ci`` and the intervals widened by
    the competitive approaches and the backtest's forecast error (``params_ci_with_model``, ...).
    ``approach``: one approach's own row instead of the table's (``isoflop``, ``isoflop_vp``, ...).
    Raises :class:`FlopsFitError` when the analysis has no successful fit."""
    budget = float(budget)
    tm = analysis.get("table_model")
    if tm:
        model = TableModel.from_json(tm)
        row = model.rows([budget], approach)[0]
        row["source"] = approach or model.source
        return row
    if approach is not None:
        raise FlopsFitError("this analysis.json predates per-approach forecasts: re-run ff-analyze on its run_dir")
    return _predict_without_model(analysis, budget)


def forecast(analysis: Mapping, budget: float) -> dict:
    """Every forecast at ``budget``: the table's row and each approach's own row (with intervals), what a
    forecast check pre-registers before it trains anything."""
    tm = analysis.get("table_model")
    if not tm:
        raise FlopsFitError("this analysis.json has no table model to forecast from (no approach fitted, or it "
                            "predates flops-fit's forecasts): re-run ff-analyze on its run_dir")
    model = TableModel.from_json(tm)
    return {"budget": float(budget), "table": {**model.rows([budget])[0], "source": model.source,
                                               "loss_source": model.loss_source},
            "approaches": {a["approach"]: model.rows([budget], a["approach"])[0] for a in model.approaches}}


def _predict_without_model(analysis: Mapping, budget: float) -> dict:
    """An analysis.json written before ``table_model`` existed: the power law of its table's approach and
    the loss of its surface (else frontier), without intervals."""
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
