"""``run_analysis(runs, ...)``: every approach, the bootstrap, the table and the diagnostics.

Takes run records (the ``runs/<id>.json`` dicts, or :func:`load_external` rows) and returns the
body of ``analysis.json`` (see docs/architecture.md). No file I/O happens here.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np

from flops_fit.analysis.envelope import fit_envelope
from flops_fit.analysis.frontier import fit_loss_vs_compute, fit_loss_vs_compute_batched, predict_frontier
from flops_fit.analysis.isoflop import FlopsPerToken, fit_isoflop, fit_power_law, group_budgets
from flops_fit.analysis.parametric import (
    bootstrap_parametric,
    fit_parametric,
    optimal_allocation,
    predict_loss,
    resample_counts,
)
from flops_fit.errors import FlopsFitError
from flops_fit.units import fmt_flops, fmt_params

SCHEMA_VERSION = 1
BUDGET_RTOL = 0.01  # runs whose FLOPs agree within 1% share a budget
MIN_PARAMETRIC_RUNS = 6
MIN_FRONTIER_POINTS = 4


# ---------------------------------------------------------------------------------------------
# small helpers


def _f(x):
    """A JSON-friendly float (None for NaN/inf/None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _ci(samples, level):
    """Percentile interval [lo, hi] of the finite samples, or None."""
    if samples is None:
        return None
    s = np.asarray(samples, dtype=float).ravel()
    s = s[np.isfinite(s)]
    if s.size < 2:
        return None
    q = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(s, [q, 100.0 - q])
    return [float(lo), float(hi)]


def _ci_cols(S, level):
    """Per-column percentile intervals of an (R, k) sample matrix."""
    if S is None:
        return None
    return [_ci(S[:, j], level) for j in range(S.shape[1])]


def _diag(diags, level, code, message, budget=None):
    d = {"level": level, "code": code}
    if budget is not None:
        d["budget"] = float(budget)
    d["message"] = message
    diags.append(d)


# ---------------------------------------------------------------------------------------------
# input


def _collect(runs, params_kind):
    if params_kind not in ("total", "non_embedding"):
        raise FlopsFitError(f"params={params_kind!r} is not supported; use params=total or params=non_embedding")
    if runs is None or len(runs) == 0:
        raise FlopsFitError("no runs to analyse: run ff-train first (or pass analyze.input=<CSV/JSONL>)")
    key = "params" if params_kind == "total" else "non_embedding_params"
    rows, excluded = [], []
    for i, r in enumerate(runs):
        if not isinstance(r, dict):
            raise FlopsFitError(f"run #{i} is not a record (got {type(r).__name__}); each run must be a dict")
        rid = str(r.get("id", f"run{i}"))
        status = str(r.get("status", "completed"))
        if status != "completed":
            reason = r.get("error") or ("training diverged" if status == "diverged" else f"status {status}")
            excluded.append({"id": rid, "status": status, "reason": str(reason).splitlines()[0][:300]})
            continue
        if params_kind == "non_embedding" and r.get("non_embedding_params") is None:
            raise FlopsFitError(f"run {rid} has no 'non_embedding_params'; analyse with params=total "
                                f"or re-train with a model that reports non-embedding parameters")
        vals = {}
        bad = None
        for k, src in (("N", key), ("tokens", "tokens"), ("loss", "loss")):
            v = r.get(src)
            try:
                v = float(v)
            except (TypeError, ValueError):
                v = float("nan")
            if not (math.isfinite(v) and v > 0):
                bad = f"{src} is {r.get(src)!r}"
            vals[k] = v
        if bad:
            excluded.append({"id": rid, "status": "invalid", "reason": bad})
            continue
        total = r.get("params")
        try:
            total = float(total) if total is not None else vals["N"]
        except (TypeError, ValueError):
            total = vals["N"]
        flops = r.get("flops")
        try:
            flops = float(flops) if flops is not None else 6.0 * total * vals["tokens"]
        except (TypeError, ValueError):
            flops = 6.0 * total * vals["tokens"]
        if not (math.isfinite(flops) and flops > 0):
            flops = 6.0 * total * vals["tokens"]
        budget = r.get("budget")
        try:
            budget = float(budget) if budget is not None else None
        except (TypeError, ValueError):
            budget = None
        hist = r.get("history") or []
        ratio = flops / vals["tokens"]
        ht, hf, hl = [], [], []
        for h in hist:
            if not isinstance(h, dict):
                continue
            try:
                t = float(h.get("tokens"))
                lv = float(h.get("loss"))
            except (TypeError, ValueError):
                continue
            fv = h.get("flops")
            try:
                fv = float(fv) if fv is not None else t * ratio
            except (TypeError, ValueError):
                fv = t * ratio
            if all(math.isfinite(z) and z > 0 for z in (t, lv, fv)):
                ht.append(t)
                hf.append(fv)
                hl.append(lv)
        rows.append({"id": rid, "N": vals["N"], "D": vals["tokens"], "L": vals["loss"], "C": flops,
                     "budget": budget, "hist": (np.array(ht), np.array(hf), np.array(hl)),
                     "data_unit": r.get("data_unit")})
    return rows, excluded


def _table_budgets(sweep_budgets, planned, extra, max_budget, min_flops):
    """Planned budgets + extra + decades up to ``max_budget`` (deduplicated within 1%)."""
    vals = [float(b) for b in list(planned) + list(extra) if b is not None and float(b) > 0]
    base = min(vals) if vals else (min(sweep_budgets) if len(sweep_budgets) else min_flops)
    if base and max_budget and max_budget > 0:
        lo = math.ceil(math.log10(base) - 1e-9)
        hi = math.floor(math.log10(max_budget) + 1e-9)
        vals += [10.0 ** k for k in range(lo, hi + 1)]
    vals.sort()
    out = []
    for v in vals:
        if not out or v > out[-1] * (1 + BUDGET_RTOL):
            out.append(v)
    return out


# ---------------------------------------------------------------------------------------------
# the analysis


def run_analysis(runs, *, plan=None, params_kind="total", n_bootstrap=200, seed=0, ci=0.95, holdout=0,
                 table_budgets=(), table_max_budget=1e24, huber_delta=1e-3, progress=False) -> dict:
    """Fit approaches 1-3 and the loss frontier to ``runs``; return the analysis.json body."""
    if not 0.0 < float(ci) < 1.0:
        raise FlopsFitError(f"ci={ci} must be between 0 and 1 (e.g. ci=0.95)")
    if int(n_bootstrap) < 0:
        raise FlopsFitError(f"bootstrap={n_bootstrap} must be >= 0")
    if int(holdout) < 0:
        raise FlopsFitError(f"holdout={holdout} must be >= 0")
    if not float(huber_delta) > 0:
        raise FlopsFitError(f"huber_delta={huber_delta} must be positive (the Chinchilla value is 1e-3)")
    ci = float(ci)
    B = int(n_bootstrap)
    diags: list[dict] = []
    rows, excluded = _collect(runs, params_kind)
    if excluded:
        by = {}
        for e in excluded:
            by.setdefault(e["status"], []).append(e["id"])
        parts = "; ".join(f"{st}: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}" for st, ids in by.items())
        _diag(diags, "warning", "excluded_runs", f"{len(excluded)} run(s) excluded from every fit ({parts})")
    if not rows:
        raise FlopsFitError(f"no completed runs with a finite loss among {len(runs)} run(s) "
                            f"({len(excluded)} failed/diverged/invalid); fix or re-run them with ff-train retry_failed=true")

    ids = [r["id"] for r in rows]
    N = np.array([r["N"] for r in rows])
    D = np.array([r["D"] for r in rows])
    L = np.array([r["L"] for r in rows])
    C = np.array([r["C"] for r in rows])
    n = N.size
    data_unit = (plan or {}).get("data_unit") or next((r["data_unit"] for r in rows if r["data_unit"]), "tokens")
    fpt = FlopsPerToken(N, C, D)
    fpt_alloc = None if fpt.exact_6n else fpt

    # budgets: the recorded one, else the run's FLOPs; grouped within 1%
    n_inferred = sum(r["budget"] is None for r in rows)
    bvals = np.array([r["budget"] if r["budget"] is not None else r["C"] for r in rows])
    labels, budgets = group_budgets(bvals, BUDGET_RTOL)
    sizes_per = np.array([np.unique(np.round(N[labels == g], 6)).size for g in range(budgets.size)])
    if n_inferred:
        inferred = np.array([r["budget"] is None for r in rows])
        in_groups = int(np.sum(inferred & (sizes_per[labels] >= 3)))
        if in_groups < 0.5 * n_inferred:
            # continuous FLOPs (e.g. runs from a paper's figure): chance near-coincidences are
            # not IsoFLOP profiles, so every inferred run keeps a budget of its own
            idx = np.flatnonzero(inferred)
            labels = labels.copy()
            labels[idx] = budgets.size + np.arange(idx.size)
            budgets = np.concatenate([budgets, C[idx]])
            _diag(diags, "info", "budgets_inferred",
                  f"{n_inferred} run(s) had no budget and their FLOPs do not form IsoFLOP groups (only "
                  f"{in_groups} share a FLOP count within {BUDGET_RTOL:.0%} with runs at 3+ sizes); "
                  f"treating them as unrelated budgets")
        else:
            _diag(diags, "info", "budgets_inferred",
                  f"{n_inferred} run(s) had no budget; budgets were inferred by grouping FLOPs within "
                  f"{BUDGET_RTOL:.0%}")
    G = budgets.size
    sizes_per = np.array([np.unique(np.round(N[labels == g], 6)).size for g in range(G)])
    elig = np.flatnonzero(sizes_per >= 3)

    counts = None
    if B > 0:
        strata = labels if elig.size else None
        counts = resample_counts(n, B, seed, strata=strata)

    fits = {}
    boot = {}  # per-approach replicate arrays for the table

    # ---------------- approach 2: IsoFLOP ----------------
    iso = {"status": "skipped"}
    if elig.size == 0:
        iso["reason"] = ("no IsoFLOP groups: no budget has runs at 3 or more model sizes "
                         "(runs trained elsewhere at unrelated FLOPs only support the parametric fit)")
        _diag(diags, "info", "no_isoflop_groups", "IsoFLOP approach skipped: " + iso["reason"])
    else:
        small = [g for g in np.flatnonzero(sizes_per < 3) if (labels == g).sum() >= 1]
        if small:
            names = ", ".join(f"{fmt_flops(budgets[g])} ({sizes_per[g]})" for g in small[:8])
            _diag(diags, "info", "isoflop_too_few_sizes",
                  f"{len(small)} budget(s) have runs at fewer than 3 sizes and are not used for the "
                  f"IsoFLOP fit: {names}{' ...' if len(small) > 8 else ''}; add sizes to use them",
                  budgets[small[0]] if len(small) == 1 else None)
        sel = np.isin(labels, elig)
        remap = {g: i for i, g in enumerate(elig)}
        lab = np.array([remap[g] for g in labels[sel]])
        bud = budgets[elig]
        full = fit_isoflop(N[sel], L[sel], lab, bud, fpt)
        rep = fit_isoflop(N[sel], L[sel], lab, bud, fpt, W=counts[:, sel]) if B else None
        blist = []
        for i, g in enumerate(elig):
            members = np.flatnonzero(labels == g)
            entry = {
                "budget": float(bud[i]),
                "params_opt": _f(full["params_opt"][0, i]),
                "tokens_opt": _f(full["tokens_opt"][0, i]),
                "loss_opt": _f(full["loss_opt"][0, i]),
                "interior": bool(full["interior"][0, i]),
                "coef": [_f(full["c2"][0, i]), _f(full["c1"][0, i]), _f(full["c0"][0, i])],
                "n_runs": int(members.size),
                "params_min": float(N[members].min()),
                "params_max": float(N[members].max()),
                "params_opt_ci": _ci(rep["params_opt"][:, i], ci) if rep is not None else None,
                "loss_opt_ci": _ci(rep["loss_opt"][:, i], ci) if rep is not None else None,
                "run_ids": [ids[j] for j in members],
            }
            blist.append(entry)
            if not entry["interior"]:
                _edge_diag(diags, entry, N[members], L[members], full["convex"][0, i])
        n_int = int(full["n_interior"][0])
        iso.update(budgets=blist, n_budgets=int(elig.size), n_interior=n_int)
        if n_int < 3:
            _diag(diags, "warning", "isoflop_few_interior",
                  f"only {n_int} budget(s) have an interior IsoFLOP minimum (3 or more are needed for a "
                  f"trustworthy power law); move the grids named above or add budgets")
        if n_int >= 2:
            iso.update(status="ok", a=_f(full["a"][0]), b=_f(full["b"][0]), k_N=_f(full["k_N"][0]),
                       k_D=_f(full["k_D"][0]))
            if rep is not None:
                iso.update(a_ci=_ci(rep["a"], ci), b_ci=_ci(rep["b"], ci),
                           k_N_ci=_ci(rep["k_N"], ci), k_D_ci=_ci(rep["k_D"], ci))
                _boot_failures(diags, "isoflop", rep["a"])
                boot["isoflop"] = rep
            else:
                iso.update(a_ci=None, b_ci=None)
        else:
            iso["reason"] = f"{n_int} budget(s) with an interior minimum; a power law needs at least 2"
            iso.update(a=None, b=None, a_ci=None, b_ci=None)
        iso["_full"] = full
        iso["_elig"] = elig
    fits["isoflop"] = iso

    # ---------------- approach 3: parametric ----------------
    par = {"status": "skipped"}
    if n < MIN_PARAMETRIC_RUNS or np.unique(N).size < 2 or np.unique(D).size < 2:
        par["reason"] = (f"needs at least {MIN_PARAMETRIC_RUNS} runs spanning 2+ sizes and token counts "
                         f"(have {n} runs, {np.unique(N).size} sizes)")
        _diag(diags, "info", "parametric_skipped", "parametric fit skipped: " + par["reason"])
    else:
        pf = fit_parametric(N, D, L, delta=huber_delta)
        par.update(status="ok", E=pf["E"], A=pf["A"], B=pf["B"], alpha=pf["alpha"], beta=pf["beta"],
                   objective=pf["objective"], converged=bool(pf["converged"]), n_starts=pf["n_starts"],
                   n_starts_converged=int(pf["n_starts_converged"]), optimizer=pf["status"],
                   huber_delta=float(huber_delta))
        a_p, b_p, how = _param_exponents(pf, fpt_alloc, budgets if elig.size else C)
        par.update(a=_f(a_p), b=_f(b_p), exponents=how)
        par.update(_param_prefactors(pf, fpt_alloc, budgets if elig.size else C))
        if not pf["converged"]:
            _diag(diags, "warning", "parametric_not_converged",
                  f"the parametric fit's best start did not converge ({pf['status']}); its parameters may be inexact")
        if not (0 < pf["alpha"] < 5 and 0 < pf["beta"] < 5):
            _diag(diags, "warning", "parametric_degenerate",
                  f"parametric exponents alpha={pf['alpha']:.3g}, beta={pf['beta']:.3g} are implausible; "
                  f"the runs may not span enough sizes or token counts")
        if B:
            pb = bootstrap_parametric(N, D, L, fit=pf, counts=counts, delta=huber_delta, progress=progress)
            ap_r, bp_r, _ = _param_exponents(pb, fpt_alloc, budgets if elig.size else C)
            pb["a"], pb["b"] = ap_r, bp_r
            for k in ("E", "A", "B", "alpha", "beta", "a", "b"):
                par[f"{k}_ci"] = _ci(pb[k], ci)
            nc = float(np.mean(pb["converged"]))
            par["bootstrap_converged_fraction"] = nc
            if nc < 0.9:
                _diag(diags, "info", "parametric_bootstrap_not_converged",
                      f"{(1 - nc):.0%} of the parametric bootstrap refits stopped before converging")
            boot["parametric"] = pb
        else:
            for k in ("E", "A", "B", "alpha", "beta", "a", "b"):
                par[f"{k}_ci"] = None
        par["_fit"] = pf
    fits["parametric"] = par

    # ---------------- approach 1: envelope ----------------
    env = {"status": "skipped"}
    cidx = [i for i, r in enumerate(rows) if r["hist"][0].size >= 2]
    curves = [{"params": N[i], "flops": rows[i]["hist"][1], "loss": rows[i]["hist"][2]} for i in cidx]
    if not cidx or np.unique(N[cidx]).size < 3:
        env["reason"] = "needs loss curves (history) from runs at 3 or more model sizes"
        _diag(diags, "info", "envelope_skipped", "envelope approach skipped: " + env["reason"])
    else:
        ef = fit_envelope(curves, fpt)
        npts = int(ef["n_points"][0])
        winners = np.unique(ef["params_run"][0][ef["valid"][0]]).size
        if npts < 3 or winners < 2:
            env["reason"] = (f"only {npts} FLOP count(s), won by {winners} size(s), where the lowest curve is "
                             f"not the smallest or largest model; the sizes do not bracket the optimum along "
                             f"the curves (needs 3+ points won by 2+ sizes)")
            _diag(diags, "info", "envelope_skipped", "envelope approach skipped: " + env["reason"])
        else:
            v = ef["valid"][0]
            pts = [{"flops": float(ef["flops"][j]), "params": float(ef["params"][0, j]),
                    "tokens": float(ef["tokens"][0, j]), "loss": float(ef["loss"][0, j]),
                    "params_run": float(ef["params_run"][0, j])} for j in np.flatnonzero(v)]
            env.update(status="ok", a=_f(ef["a"][0]), b=_f(ef["b"][0]), k_N=_f(ef["k_N"][0]),
                       k_D=_f(ef["k_D"][0]), n_points=npts, points=pts)
            if B:
                er = fit_envelope(curves, fpt, W=counts[:, cidx])
                env.update(a_ci=_ci(er["a"], ci), b_ci=_ci(er["b"], ci))
                _boot_failures(diags, "envelope", er["a"])
                boot["envelope"] = er
            else:
                env.update(a_ci=None, b_ci=None)
    fits["envelope"] = env

    # ---------------- loss vs compute ----------------
    lvc = {"status": "skipped"}
    src_C = src_L = None
    if iso["status"] == "ok":
        full = iso["_full"]
        m = full["interior"][0]
        if m.sum() >= MIN_FRONTIER_POINTS:
            src, src_C, src_L = "isoflop", budgets[iso["_elig"]][m], full["loss_opt"][0][m]
    if src_C is None and env["status"] == "ok":
        src = "envelope"
        src_C = np.array([p["flops"] for p in env["points"]])
        src_L = np.array([p["loss"] for p in env["points"]])
        if src_C.size < MIN_FRONTIER_POINTS:
            src_C = None
    if src_C is None:
        lvc["reason"] = (f"needs {MIN_FRONTIER_POINTS}+ compute-optimal points (IsoFLOP budgets with an "
                         f"interior minimum, or envelope points)")
    else:
        lf = fit_loss_vs_compute(src_C, src_L)
        if not np.isfinite(lf["E"]):
            lvc["reason"] = "the fit of L*(C) = E + A C^-gamma failed"
        else:
            lvc.update(status="ok", E=lf["E"], A=lf["A"], gamma=lf["gamma"], C0=lf["C0"], A0=lf["A0"],
                       source=src, n_points=int(src_C.size),
                       points=[{"flops": float(c), "loss": float(l)} for c, l in zip(src_C, src_L)])
            if B:
                reps = _frontier_boot(src, boot, iso, lf)
                if reps is not None:
                    for k in ("E", "A", "gamma"):
                        lvc[f"{k}_ci"] = _ci(reps[k], ci)
                    boot["loss_vs_compute"] = reps
            lvc["_fit"] = lf
    fits["loss_vs_compute"] = lvc

    # ---------------- the compute-optimal table ----------------
    plan_budgets = [float(b) for b in (plan or {}).get("budgets", [])] if plan else []
    planned = plan_budgets or [float(budgets[g]) for g in elig]
    tb = _table_budgets([float(b) for b in budgets], planned, table_budgets, table_max_budget, float(C.min()))
    table, table_source, loss_source = _table(tb, planned, fits, boot, fpt_alloc, ci)
    if table_source is None:
        _diag(diags, "error", "no_table", "no approach produced a fit, so there is no compute-optimal table")

    # ---------------- agreement ----------------
    agreement = []
    ok_names = [k for k in ("envelope", "isoflop", "parametric") if fits[k]["status"] == "ok"]
    for i in range(len(ok_names)):
        for j in range(i + 1, len(ok_names)):
            p, q = ok_names[i], ok_names[j]
            ap, aq = fits[p].get("a"), fits[q].get("a")
            cp, cq = fits[p].get("a_ci"), fits[q].get("a_ci")
            if ap is None or aq is None:
                continue
            if cp and cq:
                agree = not (cp[1] < cq[0] or cq[1] < cp[0])
            else:
                agree = None
            agreement.append({"approaches": [p, q], "a": [ap, aq], "a_ci": [cp, cq],
                              "difference": aq - ap, "agree": agree})
            if agree is False:
                _diag(diags, "warning", "approaches_disagree",
                      f"{p} a={ap:.3f} {_fmt_ci(cp)} and {q} a={aq:.3f} {_fmt_ci(cq)} disagree beyond "
                      f"their {ci:.0%} intervals; check the diagnostics above and the residual plots")

    # ---------------- residuals ----------------
    residuals = []
    if par["status"] == "ok":
        pred = predict_loss(par, N, D)
        for i in range(n):
            residuals.append({"id": ids[i], "params": float(N[i]), "tokens": float(D[i]), "loss": float(L[i]),
                              "predicted": float(pred[i]), "residual": float(L[i] - pred[i]),
                              "log_residual": float(np.log(L[i] / pred[i]))})

    # ---------------- holdout ----------------
    hold = None
    if int(holdout) > 0:
        hold = _holdout(int(holdout), N, D, L, labels, budgets, elig, fits, fpt, fpt_alloc, huber_delta, diags)

    for k in fits:
        for key in [k2 for k2 in fits[k] if k2.startswith("_")]:
            del fits[k][key]

    for name, rep in boot.items():  # the bootstrap spread of the exponents, for the report
        if name in fits and "a" in rep and "b" in rep:
            a_r, b_r = np.ravel(rep["a"]), np.ravel(rep["b"])
            ok = np.isfinite(a_r) & np.isfinite(b_r)
            fits[name]["bootstrap"] = {"a": [round(float(v), 5) for v in a_r[ok]],
                                       "b": [round(float(v), 5) for v in b_r[ok]]}

    out = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params_kind": params_kind,
        "data_unit": data_unit,
        "n_runs": len(runs),
        "n_used": n,
        "excluded_runs": excluded,
        "flops_per_token": fpt.kind,
        "budgets_inferred": bool(n_inferred),
        "bootstrap": {"n": B, "seed": int(seed), "ci": ci},
        "fits": fits,
        "table": table,
        "table_source": table_source,
        "table_loss_source": loss_source,
        "agreement": agreement,
        "diagnostics": diags,
        "residuals": residuals,
    }
    if hold is not None:
        out["holdout"] = hold
    return out


def _fmt_ci(c):
    return f"[{c[0]:.3f}, {c[1]:.3f}]" if c else "[no interval]"


def _edge_diag(diags, entry, Ns, Ls, convex):
    b = entry["budget"]
    lo, hi = entry["params_min"], entry["params_max"]
    opt = entry["params_opt"]
    best_N = Ns[np.argmin(Ls)]
    if convex and opt is not None and opt >= hi:
        where, move = f"at or above the largest sampled size ({fmt_params(hi)})", "larger"
    elif convex and opt is not None and opt <= lo:
        where, move = f"at or below the smallest sampled size ({fmt_params(lo)})", "smaller"
    elif best_N >= hi:
        where, move = f"not bracketed: loss still falls at the largest size ({fmt_params(hi)})", "larger"
    elif best_N <= lo:
        where, move = f"not bracketed: loss still falls at the smallest size ({fmt_params(lo)})", "smaller"
    else:
        where, move = "not bracketed (the loss does not curve upwards across the sizes)", None
    est = f" (fitted vertex {fmt_params(opt)})" if (convex and opt is not None) else ""
    fix = (f"move this budget's grid towards {move} models" if move else
           "widen the grid (more sizes, larger span) for this budget")
    _diag(diags, "warning", "isoflop_edge",
          f"budget {fmt_flops(b)}: the IsoFLOP minimum is {where}{est}; {fix} (e.g. re-plan with refine_from)", b)


def _boot_failures(diags, name, a_samples):
    a_samples = np.asarray(a_samples)
    frac = float(np.mean(~np.isfinite(a_samples))) if a_samples.size else 0.0
    if frac > 0.1:
        _diag(diags, "info", "bootstrap_failures",
              f"{frac:.0%} of the {name} bootstrap replicates could not be fitted (too few usable points)")


def _param_exponents(pf, fpt_alloc, budget_span):
    """a, b for parametric parameters (scalars or arrays): closed form under C = 6ND, else the
    log-log slope of the numerical allocation over the data's budget range."""
    if fpt_alloc is None:
        s = np.asarray(pf["alpha"]) + np.asarray(pf["beta"])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(pf["beta"]) / s, np.asarray(pf["alpha"]) / s, "closed form beta/(alpha+beta)"
    span = np.asarray(budget_span, dtype=float)
    Cg = np.logspace(np.log10(span.min()), np.log10(span.max()) + 1e-9, 9)
    if Cg[-1] <= Cg[0] * 1.01:
        Cg = np.logspace(np.log10(span.min()) - 1, np.log10(span.min()) + 1, 9)
    p = {k: np.asarray(pf[k], dtype=float)[..., None] for k in ("E", "A", "B", "alpha", "beta")}
    Nn, Dn = optimal_allocation(p, Cg, fpt_alloc)
    _, a = fit_power_law(Cg, Nn)
    _, b = fit_power_law(Cg, Dn)
    if np.ndim(pf["alpha"]) == 0:
        a, b = float(np.ravel(a)[0]), float(np.ravel(b)[0])
    return a, b, "slope of the numerical allocation over the sampled budgets"


def _param_prefactors(pf, fpt_alloc, budget_span) -> dict:
    """k_N, k_D of the parametric allocation written as N_opt = k_N C^a, D_opt = k_D C^b:
    exact under C = 6ND (k_N = G 6^-a, k_D = 6^-b / G), else fitted over the budget range."""
    if fpt_alloc is None:
        al, be = float(pf["alpha"]), float(pf["beta"])
        G = (al * float(pf["A"]) / (be * float(pf["B"]))) ** (1.0 / (al + be))
        return {"k_N": G * 6.0 ** (-be / (al + be)), "k_D": 6.0 ** (-al / (al + be)) / G}
    span = np.asarray(budget_span, dtype=float)
    Cg = np.logspace(np.log10(span.min()) - 0.5, np.log10(span.max()) + 0.5, 9)
    p = {k: float(pf[k]) for k in ("E", "A", "B", "alpha", "beta")}
    Nn, Dn = optimal_allocation(p, Cg, fpt_alloc)
    k_N, _ = fit_power_law(Cg, np.asarray(Nn, dtype=float))
    k_D, _ = fit_power_law(Cg, np.asarray(Dn, dtype=float))
    return {"k_N": float(np.ravel(k_N)[0]), "k_D": float(np.ravel(k_D)[0])}


def _frontier_boot(src, boot, iso, lf):
    if src == "isoflop" and "isoflop" in boot:
        rep = boot["isoflop"]
        bud = np.asarray([b["budget"] for b in iso["budgets"]])
        Lr, Mr = rep["loss_opt"], rep["interior"]
    elif src == "envelope" and "envelope" in boot:
        rep = boot["envelope"]
        bud = rep["flops"]
        Lr, Mr = rep["loss"], rep["valid"]
    else:
        return None
    return fit_loss_vs_compute_batched(bud, Lr, Mr & (Mr.sum(axis=1) >= MIN_FRONTIER_POINTS)[:, None], lf)


def _table(tb, planned, fits, boot, fpt_alloc, ci):
    iso, par, env, lvc = fits["isoflop"], fits["parametric"], fits["envelope"], fits["loss_vs_compute"]
    Cb = np.asarray(tb, dtype=float)
    if iso["status"] == "ok":
        source = "isoflop"
    elif par["status"] == "ok":
        source = "parametric"
    elif env["status"] == "ok":
        source = "envelope"
    else:
        return [], None, None
    reps = boot.get(source)
    if source in ("isoflop", "envelope"):
        f = fits[source]
        Nt = f["k_N"] * Cb ** f["a"]
        Dt = f["k_D"] * Cb ** f["b"]
        if reps is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                Nr = reps["k_N"][:, None] * Cb[None, :] ** reps["a"][:, None]
                Dr = reps["k_D"][:, None] * Cb[None, :] ** reps["b"][:, None]
        else:
            Nr = Dr = None
    else:
        Nt, Dt = optimal_allocation(par, Cb, fpt_alloc)
        if reps is not None:
            p = {k: reps[k][:, None] for k in ("E", "A", "B", "alpha", "beta")}
            Nr, Dr = optimal_allocation(p, Cb[None, :], fpt_alloc)
        else:
            Nr = Dr = None
    if par["status"] == "ok":
        loss_source = "parametric"
        Lt = predict_loss(par, Nt, Dt)
        pr = boot.get("parametric")
        if pr is not None and Nr is not None:
            p = {k: pr[k][:, None] for k in ("E", "A", "B", "alpha", "beta")}
            with np.errstate(all="ignore"):
                Lr = predict_loss(p, Nr, Dr)
        else:
            Lr = None
    elif lvc["status"] == "ok":
        loss_source = "loss_vs_compute"
        Lt = predict_frontier(lvc, Cb)
        lr = boot.get("loss_vs_compute")
        if lr is not None:
            with np.errstate(all="ignore"):
                Lr = lr["E"][:, None] + lr["A0"][:, None] * (Cb[None, :] / lr["C0"]) ** (-lr["gamma"][:, None])
        else:
            Lr = None
    else:
        loss_source = None
        Lt = np.full(Cb.shape, np.nan)
        Lr = None
    pci, tci, lci = _ci_cols(Nr, ci), _ci_cols(Dr, ci), _ci_cols(Lr, ci)
    rows = []
    for j, c in enumerate(Cb):
        rows.append({
            "budget": float(c),
            "params": _f(Nt[j]),
            "tokens": _f(Dt[j]),
            "tokens_per_param": _f(Dt[j] / Nt[j]),
            "loss": _f(Lt[j]),
            "params_ci": pci[j] if pci else None,
            "tokens_ci": tci[j] if tci else None,
            "loss_ci": lci[j] if lci else None,
            "planned": any(abs(c - p) <= BUDGET_RTOL * p for p in planned),
        })
    return rows, source, loss_source


def _holdout(k, N, D, L, labels, budgets, elig, fits, fpt, fpt_alloc, huber_delta, diags):
    iso = fits["isoflop"]
    if iso.get("budgets") is None or len(elig) < k + 2:
        reason = (f"holdout={k} needs IsoFLOP budgets: at least {k + 2} (have {len(elig)})")
        _diag(diags, "info", "holdout_skipped", reason)
        return {"k": k, "status": "skipped", "reason": reason}
    order = np.argsort(budgets[elig])
    held_groups = elig[order[-k:]]
    fit_groups = elig[order[:-k]]
    full = iso["_full"]
    elig_pos = {g: i for i, g in enumerate(elig)}
    # IsoFLOP power law on the kept budgets (their parabolas do not depend on the held-out runs)
    kept_i = np.array([elig_pos[g] for g in fit_groups])
    m = full["interior"][0, kept_i]
    k_N, a = fit_power_law(budgets[fit_groups], full["params_opt"][0, kept_i], m)
    # parametric refit without the held-out runs
    keep_runs = ~np.isin(labels, held_groups)
    pref = None
    if keep_runs.sum() >= MIN_PARAMETRIC_RUNS:
        pf = fit_parametric(N[keep_runs], D[keep_runs], L[keep_runs], delta=huber_delta)
        pref = pf
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
        row = {"budget": c, "interior": bool(full["interior"][0, i]), "params_observed": _f(obs_N),
               "loss_observed": _f(obs_L), "best_run_loss": best_run}
        aa, kk = float(np.ravel(a)[0]), float(np.ravel(k_N)[0])
        if np.isfinite(aa):
            pN = kk * c ** aa
            row.update(isoflop_params=pN, isoflop_params_error=_f(pN / obs_N - 1.0))
        if pref is not None:
            pN, pD = optimal_allocation(pref, c, fpt_alloc)
            pL = float(predict_loss(pref, pN, pD))
            row.update(parametric_params=_f(pN), parametric_params_error=_f(pN / obs_N - 1.0),
                       parametric_loss=_f(pL), parametric_loss_error=_f(pL / obs_L - 1.0),
                       parametric_loss_error_vs_best_run=_f(pL / best_run - 1.0))
        if lv is not None and np.isfinite(lv["E"]):
            lL = float(predict_frontier(lv, c))
            row.update(loss_vs_compute_loss=lL, loss_vs_compute_loss_error=_f(lL / obs_L - 1.0))
        rows.append(row)
    return {"k": k, "status": "ok", "held_out_budgets": [float(budgets[g]) for g in held_groups],
            "fit_budgets": [float(budgets[g]) for g in fit_groups],
            "isoflop_a": _f(np.ravel(a)[0]), "parametric_a": _f(pref["a"]) if pref else None, "rows": rows}
