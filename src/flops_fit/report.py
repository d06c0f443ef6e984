"""A self-contained report.html: the table with intervals, the approaches side by side,
the diagnostics and every figure (embedded, so the file can be mailed on its own)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Mapping, Sequence

from flops_fit.analysis.summary import interval_level
from flops_fit.artifacts import atomic_write_text
from flops_fit.units import fmt_float, fmt_interval, fmt_percent, human, sci

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.warn{color:#a40}.ok{color:#070}.muted{color:#777}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f4f4f4;padding:0 .2em}
"""


def _ci(ci, fmt) -> str:
    text = fmt_interval(ci, fmt)
    return f" <span class=muted>{text}</span>" if text else ""


def _num(x, digits=3) -> str:
    return fmt_float(x, digits)


def render_report(analysis: Mapping, figures: Sequence[Path]) -> str:
    """The self-contained report.html: the verdict first, then the table, the approaches, the
    diagnostics, the data, the extrapolation check and the figures (each section a function below)."""
    fits = analysis.get("fits", {})
    unit = analysis.get("data_unit", "tokens")
    level = int(round(100 * interval_level(analysis)))
    out = [f"<!doctype html><html><head><meta charset=utf-8><title>flops-fit report</title><style>{_CSS}</style></head><body>"]
    out.append("<h1>flops-fit: compute-optimal scaling report</h1>")
    src = analysis.get("input") or "this run directory"
    out.append(f"<p>{analysis.get('n_runs', len(analysis.get('points', [])))} runs from {html.escape(str(src))}; "
               f"parameters counted as <b>{html.escape(str(analysis.get('params_kind', 'total')))}</b>; "
               f"intervals are {level}% bootstrap percentiles. Generated {html.escape(str(analysis.get('created', '')))}.</p>")

    out += _verdict_html(analysis, unit, level)
    out += _forecast_check_html(analysis, unit)
    out += _design_html(analysis)
    if analysis.get("table"):
        out += _table_html(analysis, unit)
        out += _approaches_html(analysis, fits)
        out += _backtest_html(analysis)
        out += _agreement_html(analysis)
        lvc = fits.get("loss_vs_compute", {})
        if lvc.get("status") == "ok":
            out.append(f"<p>Loss on the compute-optimal frontier: L*(C) = {lvc['E']:.4g} + {lvc['A']:.4g} · C^-{lvc['gamma']:.4g}</p>")
        out += _diagnostics_html(analysis)
        out += _data_html(analysis)
        out += _holdout_html(analysis)
    out += _figures_html(figures)
    out.append("</body></html>")
    return "\n".join(out)


def _design_html(analysis: Mapping) -> list[str]:
    """A sequential design (ff-plan next_from=): what its last batch bought against what it was expected to."""
    d = analysis.get("design")
    if not d or d.get("width") is None:
        return []
    from flops_fit.analysis.design import fmt_width

    lo, hi = d.get("params_ci_with_model") or d.get("params_ci") or (None, None)  # the interval whose width it is
    target, before, expected = d.get("target_width"), d.get("width_before"), d.get("expected_width")
    out = ["<h2>Sequential design</h2>",
           f"<p>Batch {d['batch']} took the width of the N_opt interval at {sci(d['target_budget'])} FLOPs "
           + (f"from {fmt_width(before)} " if before is not None else "")
           + f"to <b>{fmt_width(d['width'])}</b>"
           + (f"; it was expected to reach {fmt_width(expected)}" if expected is not None else "")
           + (f", and the target is {fmt_width(target)}" if target is not None else "")
           + (f". N_opt there: {human(d['params'])} [{human(lo)}, {human(hi)}]" if lo and hi and d.get("params") else "")
           + ". The history of every batch is in plan.json's <code>design</code> (docs/design.md).</p>"]
    for fc in d.get("forecast_checks") or []:  # a new budget the design bought: its registered forecast, scored
        if fc.get("realised"):
            out += _forecast_check_html({"forecast_check": fc}, analysis.get("data_unit") or "tokens")
        else:
            out.append(f"<p>Batch {fc['batch']}'s forecast check at {sci(fc['budget'])} FLOPs: "
                       f"{html.escape(str(fc.get('summary')))}.</p>")
    return out


def _table_html(analysis: Mapping, unit: str) -> list[str]:
    """The compute-optimal table, with its intervals."""
    out = []
    out.append("<h2>Compute-optimal table</h2>")
    out.append(f"<p>Allocation from <b>{html.escape(str(analysis.get('table_source', '')))}</b>, loss from "
               f"<b>{html.escape(str(analysis.get('table_loss_source') or 'n/a'))}</b>. Rows beyond the largest "
               "trained budget are extrapolations; the last column is the interval to plan with: the bootstrap's, "
               "widened to contain the approaches the backtest could not tell apart and, beyond the sweep, the "
               "backtest's forecast error.</p>")
    out.append(f"<table><tr><th>budget (FLOPs)</th><th>N_opt (params)</th><th>D_opt ({unit})</th>"
               f"<th>{unit}/param</th><th>predicted loss</th><th class=l></th><th>N_opt, with model uncertainty</th></tr>")
    for r in analysis.get("table") or []:
        out.append(
            f"<tr><td>{sci(r['budget'])}</td><td>{human(r['params'])}{_ci(r.get('params_ci'), human)}</td>"
            f"<td>{human(r['tokens'])}{_ci(r.get('tokens_ci'), human)}</td><td>{_num(r.get('tokens_per_param'))}</td>"
            f"<td>{_num(r.get('loss'), 4)}{_ci(r.get('loss_ci'), lambda v: fmt_float(v, 4))}</td>"
            f"<td class=l>{'trained' if r.get('planned') else 'extrapolated'}</td>"
            f"<td>{fmt_interval(r.get('params_ci_with_model'), human) or '–'}</td></tr>"
        )
    out.append("</table>")

    return out


def _approaches_html(analysis: Mapping, fits: Mapping) -> list[str]:
    """Every approach's exponents and fit notes, then the model test's choice."""
    out = []
    out.append("<h2>The approaches side by side</h2>")
    out.append("<table><tr><th class=l>approach</th><th>status</th><th>a (N_opt ∝ C^a)</th><th>b (D_opt ∝ C^b)</th><th class=l>notes</th></tr>")
    names = {"envelope": "1: envelope of training curves", "isoflop": "2: IsoFLOP profiles (parabolas)",
             "isoflop_vp": "2b: IsoFLOP curves, Chinchilla shape", "parametric": "3: parametric L(N, D)"}
    for key, label in names.items():
        f = fits.get(key, {})
        ok = f.get("status") == "ok"
        note = html.escape(str(f.get("reason", ""))) if not ok else ""
        if key == "parametric" and ok:
            note = (f"E={_num(f.get('E'), 4)}, A={_num(f.get('A'), 4)}, B={_num(f.get('B'), 4)}, "
                    f"α={_num(f.get('alpha'), 4)}{_ci(f.get('alpha_ci'), None)}, "
                    f"β={_num(f.get('beta'), 4)}{_ci(f.get('beta_ci'), None)}; objective "
                    f"{html.escape(str(f.get('objective_kind', '')))}, engine {html.escape(str(f.get('engine', '')))}")
        if key == "isoflop_vp" and ok:
            note = (f"shared α={_num(f.get('alpha'), 4)}, β={_num(f.get('beta'), 4)}; "
                    f"{f.get('n_used')} of {f.get('n_budgets')} budgets in the power law")
        fmt3 = None  # three decimals
        out.append(
            f"<tr><td class=l>{label}</td><td class={'ok' if ok else 'warn'}>{html.escape(str(f.get('status', 'absent')))}</td>"
            f"<td>{_num(f.get('a'), 3) if ok else '–'}{_ci(f.get('a_ci'), fmt3) if ok else ''}</td>"
            f"<td>{_num(f.get('b'), 3) if ok else '–'}{_ci(f.get('b_ci'), fmt3) if ok else ''}</td><td class=l>{note}</td></tr>"
        )
    out.append("</table>")
    ms = analysis.get("model_selection")
    if ms:
        out.append(f"<p>Model test ({html.escape(str(ms.get('test')))}): {html.escape(str(ms.get('reason')))}.</p>")
    return out


def _agreement_html(analysis: Mapping) -> list[str]:
    """The pairwise comparisons (folded) and, where approaches differ, why."""
    out = []
    if analysis.get("agreement"):
        out.append("<details><summary>Pairwise comparisons of the approaches</summary>")
        for ag in analysis.get("agreement") or []:
            bad = ag.get("agree") is False or ag.get("material")
            out.append(f"<p class={'warn' if bad else 'ok'}>{html.escape(agreement_text(ag))}</p>")
        out.append("</details>")
    if any(ag.get("agree") is False or ag.get("material") for ag in analysis.get("agreement") or []):
        from flops_fit.analysis.agreement import explanation_lines

        ex = analysis.get("explanation")
        lines = explanation_lines(ex)
        if lines:
            out.append("<p><b>Why they differ:</b></p><ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in lines) + "</ul>")
            out.append("<table><tr><th>budget (FLOPs)</th><th>runs</th><th>grid half-width</th>"
                       "<th>grid centre / fitted optimum</th><th>RMSE parabola</th><th>RMSE per-budget curve</th>"
                       "<th>RMSE global surface</th></tr>")
            for b in ex.get("budgets") or []:
                out.append(f"<tr><td>{sci(b['budget'])}</td><td>{b['n_runs']}</td>"
                           f"<td>±{fmt_float(b.get('grid_half_width'), 3)}x</td>"
                           f"<td>{fmt_float(b.get('centre_over_optimum'), 3)}</td>"
                           f"<td>{fmt_float(b.get('rmse_parabola'), 3)}</td><td>{fmt_float(b.get('rmse_curve'), 3)}</td>"
                           f"<td>{fmt_float(b.get('rmse_surface'), 3)}</td></tr>")
            out.append("</table>")
            out.append("<p>The table's interval with model uncertainty (every approach's N_opt included) is in the "
                       "last column.</p>")
    return out


def _diagnostics_html(analysis: Mapping) -> list[str]:
    """The analysis's warnings and the runs left out of the fits."""
    out = []
    out.append("<h2>Diagnostics</h2>")
    diags = analysis.get("diagnostics") or []
    if not diags:
        out.append("<p class=ok>No warnings.</p>")
    else:
        out.append("<ul>")
        for d in diags:
            out.append(f"<li class={'warn' if d.get('level') == 'warning' else ''}><b>{html.escape(str(d.get('code', '')))}</b>: "
                       f"{html.escape(str(d.get('message', '')))}</li>")
        out.append("</ul>")
    excluded = analysis.get("excluded_runs") or []
    if excluded:
        out.append("<p>Runs left out of the fits:</p><ul>")
        for e in excluded:
            out.append(f"<li><code>{html.escape(str(e.get('id')))}</code>: {html.escape(str(e.get('status')))} "
                       f"{html.escape(str(e.get('reason', '')))}</li>")
        out.append("</ul>")
    return out


def _holdout_html(analysis: Mapping) -> list[str]:
    """holdout=k: the largest budgets refitted without, then predicted."""
    out = []
    ho = analysis.get("holdout")
    if ho:
        out.append("<h2>Extrapolation check</h2>")
        if ho.get("status") != "ok":
            out.append(f"<p class=warn>{html.escape(str(ho.get('reason', ho.get('status'))))}</p>")
        else:
            out.append(f"<p>Refit without the {ho['k']} largest budget(s), then predicted them:</p>")
            out.append("<table><tr><th>held-out budget</th><th>observed N_opt</th><th>IsoFLOP prediction</th>"
                       "<th>parametric prediction</th><th>observed loss</th><th>parametric loss</th></tr>")
            pct = fmt_percent
            for r in ho.get("rows", []):
                out.append(
                    f"<tr><td>{sci(r['budget'])}</td><td>{human(r.get('params_observed') or 0)}</td>"
                    f"<td>{human(r.get('isoflop_params') or 0)} ({pct(r.get('isoflop_params_error'))})</td>"
                    f"<td>{human(r.get('parametric_params') or 0)} ({pct(r.get('parametric_params_error'))})</td>"
                    f"<td>{_num(r.get('loss_observed'), 4)}</td><td>{_num(r.get('parametric_loss'), 4)} "
                    f"({pct(r.get('parametric_loss_error'))})</td></tr>"
                )
            out.append("</table>")

    return out


def _data_html(analysis: Mapping) -> list[str]:
    """The unique data, what repeating it costs and the inference-aware model (docs/data-constrained.md)."""
    from flops_fit.analysis.data_constrained import data_lines

    lines = data_lines(analysis)
    if not lines:
        return []
    return ["<h2>The data you have and the model you will serve</h2>",
            "<p>Epochs are the passes over the unique data that each row's D_opt needs. Past one epoch the "
            "data-constrained optimum (Muennighoff et al. 2023) is the answer for this data; past about four, "
            "repeated data is worth clearly less than new data.</p>",
            "<pre>" + html.escape("\n".join(line for line in lines if line)) + "</pre>"]


def _figures_html(figures) -> list[str]:
    out = ["<h2>Figures</h2>"]
    for fig in figures:
        fig = Path(fig)
        data = base64.b64encode(fig.read_bytes()).decode()
        mime = "image/svg+xml" if fig.suffix == ".svg" else f"image/{fig.suffix.lstrip('.')}"
        out.append(f"<p><b>{html.escape(fig.stem.replace('_', ' '))}</b><br><img alt='{html.escape(fig.stem)}' "
                   f"src='data:{mime};base64,{data}'></p>")
    return out


def _verdict_html(analysis: Mapping, unit: str, level: int) -> list[str]:
    """The answer to act on and how far to trust it, first."""
    v = analysis.get("verdict")
    if not v:
        return []
    cls = {"good": "ok", "fair": "", "poor": "warn", "unchecked": "warn"}.get(v.get("trust"), "")
    loss = v.get("loss")
    lt = (f", expected loss <b>{_num(loss, 4)}</b>{_ci(v.get('loss_interval'), lambda x: fmt_float(x, 4))}"
          if loss is not None else "")
    return ["<h2>Verdict</h2>",
            f"<p style='font-size:1.1em'>At <b>{sci(v['budget'])} FLOPs</b> ({v['factor']:g}x the largest budget "
            f"trained): a model of <b>{human(v['params'])} parameters</b>{_ci(v.get('params_interval'), human)} "
            f"trained on <b>{human(v['tokens'])} {html.escape(unit)}</b>{_ci(v.get('tokens_interval'), human)}{lt} "
            f"({level}% intervals).</p>",
            f"<p class={cls}>Trust: <b>{html.escape(str(v.get('trust')))}</b>: "
            + html.escape("; ".join(v.get("reasons") or [])) + ".</p>",
            "<p class=muted>Check it before you bet on it: <code>ff-plan run_dir=CHECK forecast_from=THIS_RUN_DIR</code> "
            "plans an IsoFLOP at that budget around this forecast; train and analyse it to score the forecast.</p>"]


def _forecast_check_html(analysis: Mapping, unit: str) -> list[str]:
    """A forecast check's runs against the forecasts registered before they trained."""
    fc = analysis.get("forecast_check")
    if not fc:
        return []
    real = fc["realised"]
    out = ["<h2>Forecast check</h2>",
           f"<p>Forecasts for {sci(fc['budget'])} FLOPs ({fc.get('factor') or '?'}x the sweep in "
           f"<code>{html.escape(str(fc.get('source_run_dir')))}</code>), registered "
           f"{html.escape(str(fc.get('registered')))} before these {fc['n_runs']} runs trained. "
           f"{html.escape(fc['summary'])}.</p>",
           f"<p>Realised optimum ({html.escape(real['method'])}): <b>{human(real['params'] or 0)}</b>"
           f"{_ci(real.get('params_ci'), human)} params, loss <b>{_num(real.get('loss'), 4)}</b>"
           f"{_ci(real.get('loss_ci'), lambda x: fmt_float(x, 4))}; parabola vertex {human(real.get('parabola_params') or 0)}; "
           f"best run {human(real['best_run_params'])} at loss {_num(real['best_run_loss'], 4)}.</p>",
           "<table><tr><th class=l>forecast</th><th>N_opt</th><th>/ realised</th><th>realised inside?</th>"
           "<th>loss</th><th>error</th><th>realised loss inside?</th></tr>"]
    for f in fc["forecasts"]:
        yn = {True: "<span class=ok>yes</span>", False: "<span class=warn>no</span>", None: "–"}
        out.append(f"<tr><td class=l>{html.escape(f['forecast'])}</td><td>{human(f['params'] or 0)}"
                   f"{_ci(f.get('params_interval'), human)}</td><td>{_num(f.get('params_ratio'), 3)}x</td>"
                   f"<td>{yn[f.get('params_inside')]}</td><td>{_num(f.get('loss'), 4)}"
                   f"{_ci(f.get('loss_interval'), lambda x: fmt_float(x, 4))}</td><td>{fmt_percent(f.get('loss_error'), 2)}</td>"
                   f"<td>{yn[f.get('loss_inside')]}</td></tr>")
    out.append("</table>")
    return out


def _backtest_html(analysis: Mapping) -> list[str]:
    """How each approach forecast the sweep's own larger budgets: why the table follows the one it does."""
    bt = analysis.get("backtest") or {}
    if bt.get("status") != "ok":
        return [f"<p>Backtest: {html.escape(str(bt.get('reason')))}.</p>"] if bt.get("reason") else []
    out = [f"<p><b>How the table's model was chosen.</b> Each approach was refitted on the budgets up to each of "
           f"the sweep's last cut points and asked to forecast the larger budgets' own minima "
           f"({len(bt.get('pairs') or [])} forecasts). RMS error:</p>",
           "<table><tr><th class=l>model</th><th>N_opt</th><th>loss</th><th class=l></th></tr>"]
    models = [(k, "params_score") for k in ("isoflop_vp", "parametric", "isoflop", "envelope")]
    models += [(k, "loss_score") for k in ("loss_vs_compute", "parametric")]
    for k, kind in models:
        pn = (bt.get("params_score") or {}).get(k) if kind == "params_score" else None
        pl = (bt.get("loss_score") or {}).get(k) if kind == "loss_score" else None
        if pn is None and pl is None:
            continue
        mark = ("allocation" if kind == "params_score" and bt.get("chosen") == k else
                "loss" if kind == "loss_score" and bt.get("loss_chosen") == k else "")
        out.append(f"<tr><td class=l>{k} ({'allocation' if kind == 'params_score' else 'loss'})</td>"
                   f"<td>{fmt_percent(pn, 0, signed=False) if pn is not None else '–'}</td>"
                   f"<td>{fmt_percent(pl, 2, signed=False) if pl is not None else '–'}</td>"
                   f"<td class=l>{'<b>the table: ' + mark + '</b>' if mark else ''}</td></tr>")
    out.append("</table>")
    return out


def agreement_text(ag: Mapping) -> str:
    """One sentence comparing two approaches: the paired-bootstrap test on a, and N_opt apart."""
    names = ag.get("approaches") or ["?", "?"]
    a = ag.get("a") or [None, None]
    agree = ag.get("agree")
    if agree is None:
        verdict = "were not tested (no bootstrap)"
    elif agree:
        verdict = "agree on a (the paired-bootstrap interval of the difference contains 0)"
    else:
        verdict = "DISAGREE on a (the paired-bootstrap interval of the difference excludes 0)"
    vals = ", ".join(f"{n} a={v:.3f}" for n, v in zip(names, a) if v is not None)
    text = f"{' and '.join(names)} {verdict} ({vals})"
    if ag.get("ratio") is not None:
        text += (f"; at {sci(ag['budget'])} FLOPs their N_opt differ {ag['ratio']:.2f}x"
                 + (" (material)" if ag.get("material") else ""))
    return text + "."


def write_report(analysis: Mapping, figures: Sequence[Path], path: Path) -> Path:
    atomic_write_text(Path(path), render_report(analysis, figures))
    return Path(path)
