"""One verdict first: the answer to act on and how far to trust it, before any detail.

The answer is the table's row at the next budget a user would plan, ``FORECAST_FACTOR`` x the sweep's
largest budget (what a forecast check trains), with its interval widened for model uncertainty and
for the backtest's forecast error. How far to trust it comes from checks the analysis already made:

- the backtest (backtest.py): how far the table's approach missed the sweep's own larger budgets;
- the width of the interval at that budget;
- runs too short to measure (``short_runs``), IsoFLOP minima outside their grids (``isoflop_edge``) and a
  loss frontier whose floor E the budgets do not pin (``frontier_unidentified``).

Levels: ``good`` (backtest error under 15% in N_opt and 1% in loss, interval within 2x, no flags),
``fair`` (under 35% and 2%, within 4x), ``poor`` (worse, or a loss model the backtest could not score),
``unchecked`` (too few budgets to backtest).
"""

from __future__ import annotations

import math
from typing import Mapping

from flops_fit.planning import FORECAST_FACTOR  # the next budget: this x the sweep's largest
from flops_fit.units import fmt_flops, fmt_interval, fmt_params, fmt_percent, fmt_tokens, human

GOOD = {"params": 0.15, "loss": 0.01, "width": 2.0}
FAIR = {"params": 0.35, "loss": 0.02, "width": 4.0}
FLAGS = ("short_runs", "isoflop_edge", "frontier_unidentified")


def _width(iv) -> float | None:
    if not iv or not iv[0] or iv[0] <= 0:
        return None
    return float(iv[1]) / float(iv[0])


def verdict(analysis: Mapping) -> dict | None:
    """The ``verdict`` block of analysis.json (None without a table)."""
    from flops_fit.analysis.predict import predict

    tm = analysis.get("table_model")
    if not tm or not tm.get("sweep_max"):
        return None
    budget = FORECAST_FACTOR * float(tm["sweep_max"])
    row = predict(analysis, budget)
    bt = analysis.get("backtest") or {}
    fe = tm.get("forecast_error") or {}
    err = {"params": fe.get("raw_params", fe.get("params")), "loss": fe.get("loss")}  # what the forecasts missed by
    width = _width(row.get("params_ci_with_model"))
    flags = sorted({d["code"] for d in analysis.get("diagnostics") or [] if d.get("code") in FLAGS})
    reasons = []
    loss_unchecked = (bt.get("status") == "ok" and tm.get("loss_source") is not None
                      and (bt.get("loss_score") or {}).get(tm["loss_source"]) is None)
    if bt.get("status") == "ok":
        e_n, e_l = err.get("params"), err.get("loss")
        reasons.append(f"forecasts of the sweep's own larger budgets missed N_opt by {fmt_percent(e_n, 0, signed=False)} "
                       f"(RMS)" + (f" and the loss by {fmt_percent(e_l, 1, signed=False)}" if e_l is not None else ""))
        if loss_unchecked:
            reasons.append(f"the loss model ({tm['loss_source']}) could not be fitted below a cut, so its loss "
                           f"forecast is not backtested; its interval holds the other loss models' forecasts")
    else:
        reasons.append(f"not backtested ({bt.get('reason') or 'no backtest'})")
    if width is not None:
        reasons.append(f"the {int(round(100 * float(tm.get('ci', 0.95))))}% interval spans {width:.1f}x")
    sr = analysis.get("short_runs") or {}
    for f in flags:
        if f == "short_runs" and sr.get("runs"):
            moved = (f"; without them N_opt moves {fmt_percent(sr['params_shift'], 0)}"
                     if sr.get("params_shift") is not None else "")
            reasons.append(f"{len(sr['runs'])} run(s) trained under {sr['min_steps']} optimizer steps, too short to "
                           f"measure{moved}")
        elif f == "isoflop_edge":
            reasons.append("some IsoFLOP minima lie at the edge of their grids (see diagnostics)")
        elif f == "frontier_unidentified":
            reasons.append("too few budgets to pin the loss frontier's floor: the loss forecast may run low")

    def within(t):
        return (bt.get("status") == "ok" and err.get("params") is not None and err["params"] <= t["params"]
                and not loss_unchecked and (err.get("loss") is None or err["loss"] <= t["loss"])
                and width is not None and width <= t["width"])

    if bt.get("status") != "ok":
        level = "unchecked"
    elif within(GOOD) and not flags:
        level = "good"
    elif within(FAIR):
        level = "fair"
    else:
        level = "poor"
    return {"budget": budget, "factor": FORECAST_FACTOR, "params": row["params"], "tokens": row["tokens"],
            "loss": row.get("loss"), "params_interval": row.get("params_ci_with_model"),
            "tokens_interval": row.get("tokens_ci_with_model"), "loss_interval": row.get("loss_ci_with_model"),
            "source": tm.get("source"), "loss_source": tm.get("loss_source"), "trust": level, "reasons": reasons}


def verdict_lines(analysis: Mapping) -> list[str]:
    """The verdict as the first lines a user reads (empty without one)."""
    v = analysis.get("verdict")
    if not v:
        return []
    unit = analysis.get("data_unit") or "tokens"
    piv = fmt_interval(v.get("params_interval"), human)
    loss = v.get("loss")
    lines = [f"verdict: at {fmt_flops(v['budget'])} ({v['factor']:g}x the largest budget), train "
             f"{fmt_params(v['params'])}{' ' + piv if piv else ''} on {fmt_tokens(v['tokens'], unit)}"
             + (f"; expected loss {loss:.3f}{' ' + fmt_interval(v.get('loss_interval'), None, 3) if v.get('loss_interval') else ''}"
                if loss is not None and math.isfinite(loss) else ""),
             f"  trust: {v['trust']}: " + "; ".join(v["reasons"])
             + f" (allocation from {v['source']}, loss from {v.get('loss_source') or 'n/a'})"]
    return lines
