"""Reading an analysis dict back: new grid centres for re-planning, and the printed summary."""

from __future__ import annotations

import math

from typing import Mapping

from flops_fit.units import fmt_flops, fmt_float, fmt_interval, fmt_params, fmt_percent, fmt_tokens, human

DEFAULT_LEVEL = 0.95


def interval_level(analysis: Mapping) -> float:
    """The level of the analysis's intervals (``bootstrap.ci``; 0.95 when absent)."""
    return float((analysis.get("bootstrap") or {}).get("ci", DEFAULT_LEVEL))


def _ok(fit):
    return bool(fit) and fit.get("status") == "ok"


def _power(fit, c):
    if not _ok(fit) or fit.get("k_N") is None or fit.get("a") is None:
        return None
    return float(fit["k_N"]) * float(c) ** float(fit["a"])


def refine_centres(analysis: dict) -> dict[float, float]:
    """Map each budget to the best current estimate of N_opt, to centre a re-planned grid.

    Budgets whose Chinchilla-shaped curve (approach 2b) has a usable minimum use it: it does not
    depend on where the old grid sat, so re-centring on it removes the grid-offset bias of
    approach 2. Other sweep budgets with an interior IsoFLOP minimum use that minimum. Budgets whose minimum is at
    the edge use the IsoFLOP power law (or, failing that, the table's approach); with neither,
    the fitted vertex is used but kept within 4x of the sampled sizes, so the new grid moves
    towards the optimum without jumping past it. Table budgets (planned or projected) that
    are not sweep budgets take the table's value.
    """
    fits = analysis.get("fits", {})
    iso = fits.get("isoflop", {}) or {}
    out: dict[float, float] = {}
    for b in (fits.get("isoflop_vp") or {}).get("budgets") or []:
        if b.get("used") and b.get("params_opt"):
            out[float(b["budget"])] = float(b["params_opt"])
    for b in iso.get("budgets") or []:
        c = float(b["budget"])
        if any(abs(c - k) <= 0.01 * k for k in out):
            continue
        if b.get("interior") and b.get("params_opt"):
            out[c] = float(b["params_opt"])
            continue
        est = _power(iso, c)
        if est is None:
            est = _table_value(analysis, c)
        if est is None:
            lo, hi = float(b["params_min"]), float(b["params_max"])
            v = b.get("params_opt")
            coef = b.get("coef") or [None]
            if v and coef[0] is not None and coef[0] > 0:
                est = min(max(float(v), lo / 4.0), hi * 4.0)
            else:
                est = None
        if est is not None and math.isfinite(est) and est > 0:
            out[c] = float(est)
    for row in analysis.get("table") or []:
        c = float(row["budget"])
        if any(abs(c - k) <= 0.01 * k for k in out):
            continue
        if row.get("params"):
            out[c] = float(row["params"])
    return dict(sorted(out.items()))


def _table_value(analysis, c):
    for row in analysis.get("table") or []:
        if abs(float(row["budget"]) - c) <= 0.01 * c and row.get("params"):
            return float(row["params"])
    return None


def _num(x, digits=3):
    return fmt_float(x, digits, "f", missing="-")


def _iv(ci, digits=3, fmt=None):
    """' [lo, hi]' (with its leading space), or '' without an interval."""
    text = fmt_interval(ci, fmt, digits)
    return f" {text}" if text else ""


def _wide(row, key):
    """A row's interval as the table prints it: with model uncertainty where it has one, else the bootstrap's."""
    return row.get(f"{key}_ci_with_model") or row.get(f"{key}_ci")


def backtest_lines(analysis: Mapping) -> list[str]:
    """How each approach forecast the sweep's own larger budgets, and what the table follows."""
    bt = analysis.get("backtest") or {}
    if bt.get("status") != "ok":
        return [f"  backtest: skipped ({bt.get('reason')})"] if bt.get("reason") else []
    n = len(bt.get("pairs") or [])
    scores = ", ".join(f"{k} {fmt_percent(v, 0, signed=False)}" for k, v in (bt.get("params_score") or {}).items()
                       if v is not None)
    loss = ", ".join(f"{k} {fmt_percent(v, 2, signed=False)}" for k, v in (bt.get("loss_score") or {}).items()
                     if v is not None)
    return [f"  backtest ({n} forecasts of larger budgets, RMS error): N_opt {scores}; loss {loss}",
            f"  the table follows {bt.get('chosen')} (allocation) and {bt.get('loss_chosen')} (loss)"]


def summary_lines(analysis: dict) -> list[str]:
    """A human-readable summary: the approaches side by side, the table, the diagnostics."""
    if analysis.get("forecast_check"):
        from flops_fit.analysis.forecast_check import check_lines

        return check_lines(analysis)
    fits = analysis.get("fits", {})
    unit = analysis.get("data_unit") or "tokens"
    bs = analysis.get("bootstrap") or {}
    level = interval_level(analysis)
    lines = []
    nexc = len(analysis.get("excluded_runs") or [])
    lines.append(
        f"flops-fit analysis: {analysis.get('n_used', analysis.get('n_runs'))} runs used"
        + (f", {nexc} excluded" if nexc else "")
        + f"; params={analysis.get('params_kind')}; "
        + (f"{bs.get('n')} bootstrap resamples, {level:.0%} intervals" if bs.get("n") else "no bootstrap")
    )
    from flops_fit.analysis.verdict import verdict_lines

    lines += verdict_lines(analysis)
    lines.append("")
    lines.append(f"{'approach':<22}{'a  (N_opt ~ C^a)':<28}{'b  (D_opt ~ C^b)':<28}")
    names = [("envelope", "1 envelope"), ("isoflop", "2 IsoFLOP"), ("isoflop_vp", "2b IsoFLOP curves"),
             ("parametric", "3 parametric")]
    for key, label in names:
        f = fits.get(key) or {}
        if _ok(f):
            a = f"{_num(f.get('a'))}{_iv(f.get('a_ci'))}"
            b = f"{_num(f.get('b'))}{_iv(f.get('b_ci'))}"
            lines.append(f"{label:<22}{a:<28}{b:<28}")
        else:
            lines.append(f"{label:<22}skipped: {f.get('reason') or 'not run'}")
    p = fits.get("parametric") or {}
    if _ok(p):
        lines.append(
            f"  parametric L(N, D) = {p['E']:.4g} + {p['A']:.4g} / N^{p['alpha']:.4f} + {p['B']:.4g} / D^{p['beta']:.4f}"
            f"  (alpha{_iv(p.get('alpha_ci'), 4)}, beta{_iv(p.get('beta_ci'), 4)}, E{_iv(p.get('E_ci'), 4)})"
        )
        if not p.get("converged", True):
            lines.append("  (the parametric fit did not converge)")
    lv = fits.get("loss_vs_compute") or {}
    if _ok(lv):
        lines.append(f"  loss frontier L*(C) = {lv['E']:.4g} + {lv['A']:.4g} C^-{lv['gamma']:.4f}"
                     f"  (gamma{_iv(lv.get('gamma_ci'), 4)}; from {lv.get('source')})")
    from flops_fit.analysis.agreement import explanation_lines, format_spread, material_spread

    for ag in analysis.get("agreement") or []:
        if ag.get("agree") is False:
            lines.append(f"  ! {ag['approaches'][0]} and {ag['approaches'][1]} disagree on a "
                         f"({ag['a'][0]:.3f} vs {ag['a'][1]:.3f}; paired bootstrap)")
    spread = material_spread(analysis.get("agreement") or [])
    if spread is not None:
        lines.append(f"  ! {format_spread(spread)}")
    ms = analysis.get("model_selection")
    if ms:
        lines.append(f"  model test: {ms.get('reason')}")
    lines += backtest_lines(analysis)
    if any(ag.get("agree") is False or ag.get("material") for ag in analysis.get("agreement") or []):
        for text in explanation_lines(analysis.get("explanation")):
            lines.append(f"  why: {text}")
    table = analysis.get("table") or []
    if table:
        lines.append("")
        lines.append(f"compute-optimal table (allocation: {analysis.get('table_source')}, "
                     f"loss: {analysis.get('table_loss_source') or 'n/a'}; {level:.0%} intervals with model "
                     f"uncertainty and, beyond the sweep, the backtest's forecast error)")
        cells = []
        for row in table:
            ps = fmt_params(row["params"]) if row.get("params") else "-"
            ts = fmt_tokens(row["tokens"], unit) if row.get("tokens") else "-"
            cells.append(("*" if row.get("planned") else " ", fmt_flops(row["budget"]),
                          ps + _iv(_wide(row, "params"), fmt=human), ts + _iv(_wide(row, "tokens"), fmt=human),
                          f"{row['tokens_per_param']:.1f} {unit}/param" if row.get("tokens_per_param") else "",
                          f"loss {row['loss']:.3f}{_iv(_wide(row, 'loss'))}" if row.get("loss") is not None else ""))
        widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]  # columns aligned whatever the units
        for c in cells:
            lines.append(" " + c[0] + "   ".join(v.ljust(w) for v, w in zip(c[1:], widths[1:])).rstrip())
        if any(r.get("planned") for r in table):
            lines.append("  (* = a budget of the sweep)")
    from flops_fit.analysis.data_constrained import data_lines

    lines += data_lines(analysis)  # unique data, repetition, inference (docs/data-constrained.md)
    hold = analysis.get("holdout")
    if hold and hold.get("status") == "ok":
        lines.append("")
        lines.append(f"holdout: refit without the {hold['k']} largest budget(s)")
        for r in hold["rows"]:
            bits = [fmt_flops(r["budget"])]
            if r.get("isoflop_params_error") is not None:
                bits.append(f"IsoFLOP N_opt error {fmt_percent(r['isoflop_params_error'])}")
            if r.get("parametric_params_error") is not None:
                bits.append(f"parametric N_opt error {fmt_percent(r['parametric_params_error'])}")
            if r.get("parametric_loss_error") is not None:
                bits.append(f"loss error {fmt_percent(r['parametric_loss_error'], 2)}")
            lines.append("  " + ", ".join(bits))
    diags = analysis.get("diagnostics") or []
    if diags:
        lines.append("")
        lines.append("diagnostics:")
        for d in diags:
            lines.append(f"  [{d['level']}] {d['code']}: {d['message']}")
    return lines


__all__ = ["interval_level", "refine_centres", "summary_lines"]


def no_table_message(why: str) -> str:
    """What to say when no approach fitted, so there is no compute-optimal table (``why``: where the
    reasons are)."""
    return (f"no compute-optimal table: no approach could fit these runs ({why}); approaches 2 and 2b need 2 or "
            "more budgets with runs at 3 or more model sizes each, approach 3 at least 6 runs over several sizes "
            "and token counts: plan grid.points=5 or more and train them")


def markdown_table(analysis: Mapping, budgets=None) -> str:
    """The compute-optimal table in Markdown: budget, N_opt, D_opt, data per parameter, loss, with intervals.

    ``budgets``: the FLOP budgets to show (default: the table's rows up to 100x the largest budget of the
    sweep: further out is an extrapolation to ask for by name). A budget that is not a table row is
    computed the same way (:func:`~flops_fit.analysis.predict`), intervals included.
    """
    from flops_fit.analysis.predict import predict

    unit = analysis.get("data_unit") or "tokens"
    level = interval_level(analysis)
    rows = list(analysis.get("table") or [])
    planned = [float(r["budget"]) for r in rows if r.get("planned")]
    if budgets is None and planned:
        rows = [r for r in rows if float(r["budget"]) <= 100 * max(planned) * (1 + 1e-9)]
    if budgets is not None:
        chosen = []
        for c in (float(b) for b in budgets):
            row = next((r for r in rows if abs(float(r["budget"]) - c) <= 1e-6 * c), None)
            chosen.append(row if row is not None else predict(analysis, c))
        rows = chosen
    ci = f" ({level:.0%} interval, with model uncertainty)"
    out = [f"| budget | N_opt{ci} | D_opt{ci} | {unit}/param | loss{ci} |", "|---|---|---|---|---|"]
    for r in rows:
        n = f"{human(r['params'])}{_iv(_wide(r, 'params'), fmt=human)}" if r.get("params") else "-"
        d = f"{human(r['tokens'])}{_iv(_wide(r, 'tokens'), fmt=human)}" if r.get("tokens") else "-"
        tpp = fmt_float(r.get("tokens_per_param"), 1, "f", missing="-")
        loss = f"{fmt_float(r.get('loss'), 4, 'f', missing='-')}{_iv(_wide(r, 'loss'), 4)}"
        out.append(f"| {fmt_flops(r['budget'])} | {n} | {d} | {tpp} | {loss} |")
    return "\n".join(out)
