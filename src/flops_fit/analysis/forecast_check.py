"""The forecast check: a sweep's forecast at a budget beyond it, pre-registered, then scored against an
IsoFLOP trained there.

``preregister(analysis, budget)`` is what ``ff-plan forecast_from=...`` writes into the new plan before
anything trains: the table's row and every approach's own row at ``budget`` (intervals included,
:func:`flops_fit.analysis.predict.forecast`), timestamped.

``score(check, runs)`` is what ``ff-analyze`` makes of the check's runs: the realised optimum of the
IsoFLOP at that budget, with its own uncertainty, against each forecast. The realised optimum is the
minimum of a Chinchilla-shaped curve through the runs,

    L(N) = e + a N^-alpha + b N^beta      (alpha, beta: the source sweep's surface's or approach 2b's)

which is linear in (e, a, b) and exact on a Chinchilla surface. Of the two shapes, the one that fits the
check's runs best is used (each has the same three free coefficients; on a real Llama check the surface's
poorly identified alpha = 1.19 put the minimum at 139K parameters where 2b's shape, which fits the runs
better, puts it at 184K and the parabola at 172K). Without either, or with fewer than 4 sizes, it is a
parabola in log N. Its interval comes from a residual bootstrap of that fit (residuals rescaled for the fitted
parameters). A run set whose minimum is not inside the sampled sizes is reported as such: the
forecast then cannot be scored, only bounded.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Mapping

import numpy as np

from flops_fit.analysis.common import jfloat, log_parabolas, percentile_interval
from flops_fit.errors import FlopsFitError

N_BOOT = 1000


def preregister(analysis: Mapping, budget: float, *, factor: float | None = None, source: str | None = None) -> dict:
    """The forecast block of a forecast check's plan.json."""
    from flops_fit.analysis.predict import forecast

    f = forecast(analysis, budget)
    return {"budget": float(budget), "factor": factor, "source_run_dir": source,
            "source_analysis_created": analysis.get("created"),
            "registered": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ci": float((analysis.get("bootstrap") or {}).get("ci", 0.95)),
            "exponents": _exponents(analysis), "data_unit": analysis.get("data_unit") or "tokens",
            "params_kind": analysis.get("params_kind", "total"),
            "table": f["table"], "approaches": f["approaches"]}


def _exponents(analysis: Mapping) -> list[dict]:
    """The curve shapes for the check's own minimum: the surface's exponents (approach 3, identified by every
    run of the sweep) and approach 2b's (shared by its per-budget curves), each where it fitted;
    :func:`realised_optimum` takes the one that fits the check's runs best."""
    fits = analysis.get("fits") or {}
    out = []
    for name in ("parametric", "isoflop_vp"):
        f = fits.get(name) or {}
        if f.get("status") == "ok" and f.get("alpha") and f.get("beta") and 0 < f["alpha"] < 5 and 0 < f["beta"] < 5:
            out.append({"alpha": float(f["alpha"]), "beta": float(f["beta"]), "from": name})
    return out


def _chinchilla_curves(N, Y, alpha, beta):
    """Least squares of L = e + a N^-alpha + b N^beta through each column of ``Y`` ((n,) or (n, R)):
    (coefficients (3,) or (3, R), fitted values like ``Y``, N_opt, L_opt); the minimum is
    varpro.budget_minima's closed form (NaN where a or b is not positive: no minimum)."""
    from flops_fit.analysis.varpro import budget_minima

    X = np.stack([np.ones_like(N), N ** -alpha, N ** beta], axis=-1)
    coef = np.linalg.pinv(X) @ Y
    n_opt, l_opt = budget_minima(alpha, beta, coef.T, 0.0)
    return coef, X @ coef, n_opt, l_opt


def realised_optimum(N, L, exponents=None, *, ci: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The IsoFLOP's own minimum (N, L) with ``ci`` intervals from a residual bootstrap. ``exponents``: a curve
    shape ``{"alpha", "beta"}`` or a list of them (the best fit of the runs is used); none, or fewer than 4
    sizes: a parabola in log N."""
    N = np.asarray(N, dtype=float)
    L = np.asarray(L, dtype=float)
    sizes = np.unique(np.round(N, 6)).size
    if sizes < 3:
        raise FlopsFitError(f"the forecast check has {sizes} model size(s) with a completed run; its optimum needs 3 "
                            f"or more (train the rest of its plan with ff-train)")
    parabola = log_parabolas(N, L)
    shapes = [exponents] if isinstance(exponents, Mapping) else list(exponents or [])
    if shapes and sizes >= 4:
        # each shape has the same 3 free coefficients: the one whose curve fits these runs best measures their minimum
        sse = [float(np.sum((L - _chinchilla_curves(N, L, float(e["alpha"]), float(e["beta"]))[1]) ** 2))
               for e in shapes]
        shape = shapes[int(np.argmin(sse))]
        al, be = float(shape["alpha"]), float(shape["beta"])
        coef, pred, n_opt, l_opt = _chinchilla_curves(N, L, al, be)
        curve = {"kind": "chinchilla", "coef": [float(c) for c in coef], "alpha": al, "beta": be,
                 "from": shape.get("from")}
        method = (f"Chinchilla-shaped curve (alpha={al:.3f}, beta={be:.3f} from the source's "
                  f"{shape.get('from', 'fit')}" + (f", the best fit of its {len(shapes)} shapes" if len(shapes) > 1
                                                   else "") + ")")

        def refit(Y):
            return _chinchilla_curves(N, Y, al, be)[2:]
    else:
        pc, pred, n_opt, l_opt = parabola
        curve = {"kind": "parabola", "coef": [float(c) for c in pc]}  # in ln N, highest power first
        method = "parabola in log N"

        def refit(Y):
            return log_parabolas(N, Y)[2:]
    n_opt, l_opt = float(np.ravel(n_opt)[0]), float(np.ravel(l_opt)[0])
    interior = bool(np.isfinite(n_opt) and N.min() < n_opt < N.max())
    best = int(np.argmin(L))
    if N.size > 3:  # 3 fitted coefficients either way: residuals to resample only beyond 3 runs
        resid = (L - pred) * math.sqrt(N.size / (N.size - 3))
        rng = np.random.default_rng(seed)
        Y = pred[:, None] + resid[rng.integers(0, resid.size, size=(resid.size, n_boot))]
        draw_n, draw_l = refit(Y)
        params_ci, loss_ci = percentile_interval(draw_n, ci), percentile_interval(draw_l, ci)
    else:  # 3 runs fit the curve exactly and leave nothing to measure its uncertainty by
        params_ci = loss_ci = None
    return {"method": method, "curve": curve, "params": jfloat(n_opt), "loss": jfloat(l_opt), "interior": interior,
            "params_ci": params_ci, "loss_ci": loss_ci,
            "parabola_params": jfloat(parabola[2]), "parabola_loss": jfloat(parabola[3]),
            "best_run_params": float(N[best]), "best_run_loss": float(L[best]),
            "params_min": float(N.min()), "params_max": float(N.max()), "n_runs": int(N.size),
            "rmse": float(np.sqrt(np.mean((L - pred) ** 2)))}


def _inside(v, iv):
    return None if (v is None or not iv) else bool(iv[0] <= v <= iv[1])


def _judge(name: str, row: Mapping, real: Mapping, interval_key: str) -> dict:
    N, Lf = row.get("params"), row.get("loss")
    Nr, Lr = real.get("params"), real.get("loss")
    iv = row.get(interval_key) or row.get("params_ci")
    liv = row.get(interval_key.replace("params", "loss")) or row.get("loss_ci")
    return {"forecast": name, "params": N, "params_interval": iv, "loss": Lf, "loss_interval": liv,
            "params_ratio": jfloat(N / Nr) if (N and Nr) else None,
            "params_inside": _inside(Nr, iv) if real.get("interior") else None,
            "loss_error": jfloat(Lf / Lr - 1.0) if (Lf and Lr) else None,
            "loss_error_vs_best_run": jfloat(Lf / real["best_run_loss"] - 1.0) if Lf else None,
            "loss_inside": _inside(Lr, liv)}


def score(check: Mapping, runs, *, seed: int = 0) -> dict:
    """The ``forecast_check`` block of the check's analysis.json: the realised optimum and each forecast
    judged against it (its ratio, whether it lies in the forecast's interval, the loss error)."""
    budget = float(check["budget"])
    key = "non_embedding_params" if check.get("params_kind") == "non_embedding" else "params"
    done = [r for r in runs if r.get("status") == "completed" and r.get(key) and r.get("loss") is not None
            and math.isfinite(float(r["loss"]))]
    if not done:
        raise FlopsFitError("the forecast check has no completed runs yet: train its plan with ff-train first")
    N = np.array([float(r[key]) for r in done])
    L = np.array([float(r["loss"]) for r in done])
    real = realised_optimum(N, L, check.get("exponents"), ci=float(check.get("ci", 0.95)), seed=seed)
    rows = [_judge("table", check["table"], real, "params_ci_with_model")]
    rows += [_judge(name, row, real, "params_ci") for name, row in (check.get("approaches") or {}).items()]
    t = rows[0]
    if not real["interior"]:
        where = (f"at {real['params']:.3g} params, outside its sizes" if real.get("params") else
                 "not found: its losses do not curve upwards across its sizes")
        text = (f"the check's IsoFLOP minimum is {where} ({real['params_min']:.3g}-{real['params_max']:.3g} params; "
                f"best run {real['best_run_params']:.3g}): the forecast cannot be scored; re-plan it wider (grid.span) "
                f"or with more sizes (grid.points), and check the runs' noise (seeds)")
    else:
        text = (f"realised optimum {real['params']:.3g} params; the table forecast {t['params']:.3g} "
                f"({t['params_ratio']:.2f}x, {'inside' if t['params_inside'] else 'OUTSIDE'} its interval), loss "
                f"{t['loss']:.4g} vs {real['loss']:.4g} ({t['loss_error']:+.2%})")
    return {"budget": budget, "factor": check.get("factor"), "registered": check.get("registered"),
            "source_run_dir": check.get("source_run_dir"), "realised": real, "forecasts": rows,
            "n_runs": len(done), "summary": text}


def analyze_check(check: Mapping, runs, *, plan=None, seed: int = 0) -> dict:
    """The analysis.json body of a forecast check's run_dir: what ``run_analysis`` makes of its one budget (its
    IsoFLOP parabola, diagnostics; no table) and the ``forecast_check`` block (:func:`score`)."""
    from flops_fit.analysis.run import run_analysis

    body = run_analysis(runs, plan=plan, params_kind=check.get("params_kind", "total"), n_bootstrap=0, seed=seed)
    body["diagnostics"] = [d for d in body["diagnostics"] if d.get("code") != "no_table"]
    body["forecast_check"] = score(check, runs, seed=seed)
    return body


def check_lines(analysis: Mapping) -> list[str]:
    """What ff-analyze prints for a forecast check: the realised optimum, then every forecast against it."""
    from flops_fit.units import fmt_flops, fmt_float, fmt_interval, fmt_percent, human

    fc = analysis["forecast_check"]
    real = fc["realised"]

    def n(v):
        return human(v) if v else "-"

    yn = {True: "yes", False: "NO", None: "-"}
    lines = [f"forecast check at {fmt_flops(fc['budget'])} ({fc.get('factor') or '?'}x {fc.get('source_run_dir')}), "
             f"forecasts registered {fc.get('registered')}, {fc['n_runs']} runs trained since",
             f"verdict: {fc['summary']}",
             f"  realised optimum ({real['method']}): {n(real['params'])} params "
             f"{fmt_interval(real.get('params_ci'), human)}, loss {fmt_float(real['loss'], 4, 'f', missing='-')} "
             f"{fmt_interval(real.get('loss_ci'), None, 4)}; parabola vertex {n(real['parabola_params'])}; "
             f"best run {human(real['best_run_params'])} at {real['best_run_loss']:.4f}", "",
             f"  {'forecast':<12}{'N_opt [interval]':<30}{'x realised':>11}{'inside':>8}   {'loss [interval]':<28}"
             f"{'error':>8}{'inside':>8}"]
    for f in fc["forecasts"]:
        nf = f"{n(f['params'])} {fmt_interval(f.get('params_interval'), human)}"
        loss = f"{f['loss']:.4f} {fmt_interval(f.get('loss_interval'), None, 4)}" if f.get("loss") is not None else "-"
        ratio = f"{f['params_ratio']:.2f}x" if f.get("params_ratio") else "-"
        lines.append(f"  {f['forecast']:<12}{nf:<30}{ratio:>11}{yn[f.get('params_inside')]:>8}   {loss:<28}"
                     f"{fmt_percent(f.get('loss_error'), 2):>8}{yn[f.get('loss_inside')]:>8}")
    return lines
