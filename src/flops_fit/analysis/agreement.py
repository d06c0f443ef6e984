"""Do the approaches agree on the exponent a, and when they do not, why?

"Agree" is a stated test: every approach is refitted on the same bootstrap resamples, so the
replicate differences a_q - a_p form a paired bootstrap distribution; two approaches agree when
its central ``ci`` interval contains 0 (no significant difference at level 1 - ci). Without a
bootstrap there is no test (``agree`` is None).

When approaches disagree, :func:`explain` puts numbers on the usual causes:

- the parabola of approach 2: approach 2 replayed, without noise, on the per-budget curves of
  approach 2b at the sampled sizes; the shift it shows is the bias from grid width, grid offset
  and alpha/beta asymmetry alone;
- the grid of each budget: its half-width (sqrt(max/min) of the sizes) and the offset of its
  centre from the fitted optimum;
- the asymmetry alpha/beta of the per-budget curves;
- how well each model fits each budget's runs (RMSE of the parabola, the per-budget curve, and
  the global surface), and the F-test of one surface against the per-budget curves.
"""

from __future__ import annotations

import numpy as np

from flops_fit.analysis.common import jfloat, percentile_interval
from flops_fit.analysis.diagnostics import Diagnostics
from flops_fit.analysis.isoflop import fit_isoflop
from flops_fit.units import fmt_flops, fmt_interval, fmt_params

APPROACHES = ("envelope", "isoflop", "isoflop_vp", "parametric")
NO_CI = "[no interval]"
TEST = "paired bootstrap: the approaches agree when the {level:.0%} interval of the difference in a contains 0"
MATERIAL = 1.2  # N_opt at the largest table budget differing by more than this factor matters to a user


def _replicate_a(fit):
    rep = getattr(fit, "replicates", None)
    if rep is None or "a" not in rep:
        return None
    return np.ravel(np.asarray(rep["a"], dtype=float))


def compare_approaches(fits: dict, ci: float, diags: Diagnostics, budget: float | None = None) -> list[dict]:
    """``[{approaches, a, a_ci, difference, difference_ci, agree, test, budget, params, ratio, material}]``
    for each pair of successful approaches: the test on a, and how far apart their N_opt is at
    ``budget`` (material when more than 1.2x). A warning for each pair that disagrees, and one for
    all the pairs that differ materially without disagreeing."""
    out = []
    ok_names = [k for k in APPROACHES if k in fits and fits[k].ok]
    for i in range(len(ok_names)):
        for j in range(i + 1, len(ok_names)):
            p, q = ok_names[i], ok_names[j]
            ap, aq = fits[p].a, fits[q].a
            if ap is None or aq is None:
                continue
            cp, cq = fits[p].a_ci, fits[q].a_ci
            rp, rq = _replicate_a(fits[p]), _replicate_a(fits[q])
            dci, agree = None, None
            if rp is not None and rq is not None and rp.size == rq.size:
                dci = percentile_interval(rq - rp, ci)
                if dci is not None:
                    agree = bool(dci[0] <= 0.0 <= dci[1])
            entry = {"approaches": [p, q], "a": [ap, aq], "a_ci": [cp, cq], "difference": aq - ap,
                     "difference_ci": dci, "agree": agree, "test": TEST.format(level=ci)}
            material = None
            if budget:
                Np = float(np.ravel(fits[p].allocation(np.asarray([budget], dtype=float))[0])[0])
                Nq = float(np.ravel(fits[q].allocation(np.asarray([budget], dtype=float))[0])[0])
                ratio = Nq / Np if (Np > 0 and Nq > 0 and np.isfinite(Np) and np.isfinite(Nq)) else None
                material = bool(ratio is not None and max(ratio, 1 / ratio) > MATERIAL)
                entry.update(budget=float(budget), params=[jfloat(Np), jfloat(Nq)], ratio=jfloat(ratio),
                             material=material)
            out.append(entry)
            if agree is False:
                diags.add("warning", "approaches_disagree",
                          f"{p} a={ap:.3f} {fmt_interval(cp, missing=NO_CI)} and {q} a={aq:.3f} "
                          f"{fmt_interval(cq, missing=NO_CI)} differ by {aq - ap:+.3f} "
                          f"({ci:.0%} paired-bootstrap interval {fmt_interval(dci)}, which excludes 0); "
                          f"see 'explanation' for the likely cause")
    _warn_material(out, diags)
    return out


def material_spread(pairs: list[dict]) -> dict | None:
    """The pairs (``compare_approaches`` entries) whose N_opt differ materially although their exponents
    do not significantly disagree (those that do are reported pair by pair), as one statement:
    ``{budget, params: [(approach, N_opt or None), ...] smallest first, spread, agree}``; None if none."""
    pairs = [e for e in pairs if e.get("material") and e.get("agree") is not False]
    if not pairs:
        return None
    params: dict[str, float | None] = {}
    for e in pairs:
        params.update(zip(e["approaches"], e["params"]))
    finite = sorted(((k, v) for k, v in params.items() if v), key=lambda kv: kv[1])
    spread = finite[-1][1] / finite[0][1] if len(finite) > 1 else None
    return {"budget": pairs[0]["budget"], "params": finite + [(k, None) for k, v in params.items() if not v],
            "spread": spread, "agree": all(e["agree"] for e in pairs)}


def format_spread(spread: dict) -> str:
    """``N_opt at C depends on the approach: parametric 1.2M params, ... (8.61x from smallest to largest)``"""
    where = ", ".join(f"{k} {fmt_params(v)}" if v else f"{k} not finite" for k, v in spread["params"])
    ratio = f" ({spread['spread']:.2f}x from smallest to largest)" if spread["spread"] else ""
    return f"N_opt at {fmt_flops(spread['budget'])} depends on the approach: {where}{ratio}"


def _warn_material(pairs: list[dict], diags: Diagnostics) -> None:
    """One ``approaches_differ`` warning for all the pairs of :func:`material_spread`."""
    spread = material_spread(pairs)
    if spread is None:
        return
    noise = "the differences in a are within resampling noise, but " if spread["agree"] else ""
    diags.add("warning", "approaches_differ",
              f"{format_spread(spread)}; {noise}the choice of model moves the answer: see 'explanation' and "
              "the table's params_ci_with_model")


def explain(sweep, fits: dict, selection=None) -> dict | None:
    """Numbers behind a disagreement (see the module docstring); None without approach 2b."""
    vp = fits.get("isoflop_vp")
    if vp is None or vp.full is None or not vp.budgets:
        return None
    full = vp.full
    al, be = float(full["alpha"][0]), float(full["beta"][0])
    groups = sweep.isoflop_groups
    sel = np.isin(sweep.labels, groups)
    remap = {g: i for i, g in enumerate(groups)}
    lab = np.array([remap[g] for g in sweep.labels[sel]])
    N, L = sweep.N[sel], sweep.L[sel]
    bud = sweep.budgets[groups]
    e, a, b = full["e"][0], full["a"][0], full["b"][0]
    curve = e[lab] + a[lab] * N ** -al + b[lab] * N ** be
    # approach 2 replayed on the fitted curves (no noise): the parabola's own bias
    replay = fit_isoflop(N, curve, lab, bud, sweep.fpt, robust=False)
    a_replay = jfloat(replay["a"][0])
    iso = fits.get("isoflop")
    par = fits.get("parametric")
    par_pred = par.law.loss(sweep.N, sweep.D)[sel] if (par is not None and par.ok) else None
    rows = []
    for i, g in enumerate(groups):
        m = lab == i
        x = np.log10(N[m])
        half = float(np.sqrt(N[m].max() / N[m].min()))
        centre = float(np.exp(np.mean(np.log(N[m]))))
        opt = vp.budgets[i]["params_opt"]
        row = {"budget": float(bud[i]), "n_runs": int(m.sum()), "grid_half_width": half,
               "grid_centre": centre, "optimum": opt, "centre_over_optimum": (centre / opt) if opt else None,
               "rmse_curve": vp.budgets[i]["rmse"]}
        if iso is not None and iso.full is not None and iso.groups is not None and g in list(iso.groups):
            k = list(iso.groups).index(g)
            c2, c1, c0 = iso.full["c2"][0, k], iso.full["c1"][0, k], iso.full["c0"][0, k]
            if np.isfinite(c2):
                row["rmse_parabola"] = float(np.sqrt(np.mean((L[m] - (c2 * x * x + c1 * x + c0)) ** 2)))
        if par_pred is not None:
            row["rmse_surface"] = float(np.sqrt(np.mean((L[m] - par_pred[m]) ** 2)))
        rows.append(row)
    out = {"alpha_over_beta": al / be if be > 0 else None, "alpha": al, "beta": be,
           "isoflop_vp_a": vp.a, "parabola_replay_a": a_replay,
           "parabola_bias_a": (a_replay - vp.a) if (a_replay is not None and vp.a is not None) else None,
           "isoflop_a": iso.a if (iso is not None and iso.ok) else None,
           "parametric_a": par.a if (par is not None and par.ok) else None,
           "budgets": rows}
    if selection is not None:
        out["surface_vs_curves"] = {"F": selection.F, "p_value": selection.p_value, "chosen": selection.chosen}
    return out


def explanation_lines(ex: dict | None) -> list[str]:
    """Plain sentences (for the report and the summary) from :func:`explain`'s numbers."""
    if not ex:
        return []
    lines = []
    hw = [r["grid_half_width"] for r in ex["budgets"]]
    off = [r["centre_over_optimum"] for r in ex["budgets"] if r.get("centre_over_optimum")]
    if ex.get("parabola_bias_a") is not None and ex.get("isoflop_a") is not None:
        lines.append(
            f"Approach 2's parabola, replayed without noise on the fitted per-budget curves at the sampled sizes, "
            f"gives a = {ex['parabola_replay_a']:.4f} instead of {ex['isoflop_vp_a']:.4f}: a bias of "
            f"{ex['parabola_bias_a']:+.4f} from the grids alone (half-widths {min(hw):.1f}x-{max(hw):.1f}x, grid "
            f"centres at {min(off):.2f}-{max(off):.2f}x the fitted optimum, alpha/beta = "
            f"{ex['alpha_over_beta']:.2f}); approach 2 found {ex['isoflop_a']:.4f}.")
    sv = ex.get("surface_vs_curves")
    rs = [r.get("rmse_surface") for r in ex["budgets"]]
    rc = [r.get("rmse_curve") for r in ex["budgets"]]
    if sv and sv.get("p_value") is not None and all(v is not None for v in rs):
        verdict = ("do not share one surface" if sv["chosen"] == "isoflop_vp" else "are consistent with one surface")
        lines.append(
            f"One global surface fits each budget's runs with RMSE {min(rs):.3g}-{max(rs):.3g}; a curve per budget "
            f"with {min(rc):.3g}-{max(rc):.3g}. The budgets {verdict} (F-test p = {sv['p_value']:.2g}), so the "
            f"table's default is {'the per-budget curves' if sv['chosen'] == 'isoflop_vp' else 'the global surface'}"
            f" (the backtest may choose another: see its line).")
    return lines


__all__ = ["compare_approaches", "explain", "explanation_lines"]
