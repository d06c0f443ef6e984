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
    fits = analysis.get("fits", {})
    unit = analysis.get("data_unit", "tokens")
    level = int(round(100 * interval_level(analysis)))
    out = [f"<!doctype html><html><head><meta charset=utf-8><title>flops-fit report</title><style>{_CSS}</style></head><body>"]
    out.append("<h1>flops-fit: compute-optimal scaling report</h1>")
    src = analysis.get("input") or "this run directory"
    out.append(f"<p>{analysis.get('n_runs', len(analysis.get('points', [])))} runs from {html.escape(str(src))}; "
               f"parameters counted as <b>{html.escape(str(analysis.get('params_kind', 'total')))}</b>; "
               f"intervals are {level}% bootstrap percentiles. Generated {html.escape(str(analysis.get('created', '')))}.</p>")

    out.append("<h2>Compute-optimal table</h2>")
    out.append(f"<p>Source: <b>{html.escape(str(analysis.get('table_source', '')))}</b>. Rows beyond the largest "
               "trained budget are extrapolations.</p>")
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
    for ag in analysis.get("agreement") or []:
        bad = ag.get("agree") is False or ag.get("material")
        out.append(f"<p class={'warn' if bad else 'ok'}>{html.escape(agreement_text(ag))}</p>")
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
    lvc = fits.get("loss_vs_compute", {})
    if lvc.get("status") == "ok":
        out.append(f"<p>Loss on the compute-optimal frontier: L*(C) = {lvc['E']:.4g} + {lvc['A']:.4g} · C^-{lvc['gamma']:.4g}</p>")

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

    out.append("<h2>Figures</h2>")
    for fig in figures:
        fig = Path(fig)
        data = base64.b64encode(fig.read_bytes()).decode()
        mime = "image/svg+xml" if fig.suffix == ".svg" else f"image/{fig.suffix.lstrip('.')}"
        out.append(f"<p><b>{html.escape(fig.stem.replace('_', ' '))}</b><br><img alt='{html.escape(fig.stem)}' "
                   f"src='data:{mime};base64,{data}'></p>")
    out.append("</body></html>")
    return "\n".join(out)


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
