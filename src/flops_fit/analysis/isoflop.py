"""Approach 2: IsoFLOP profiles.

For each compute budget C, the runs' loss is fitted with a robust (Huber IRLS) parabola in
x = log10 N; its vertex gives N_opt(C) and D_opt(C) = C / fpt(N_opt). Power laws
N_opt = k_N C^a and D_opt = k_D C^b are then fitted in log space on the budgets whose
minimum is interior (inside the sampled sizes, parabola convex).

Everything is vectorised over bootstrap replicates: a replicate is an (n,) vector of
resample counts used as weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flops_fit.analysis.common import PowerLawAllocation, bootstrap_spread, fit_power_law, jfloat, percentile_interval
from flops_fit.analysis.diagnostics import Diagnostics, bootstrap_failures, edge_minimum
from flops_fit.units import fmt_flops

HUBER_K = 1.345  # Huber tuning constant, in units of the residual scale


# ---------------------------------------------------------------------------------------------
# parabolas


def fit_parabolas(x, y, group, n_groups: int, W=None, *, robust: bool = True, n_iter: int = 15):
    """Weighted (optionally Huber-IRLS) parabola y ~ c2 x^2 + c1 x + c0 per group and replicate.

    ``x``, ``y``, ``group`` are (n,); ``W`` is (R, n) weights (default: one replicate of ones).
    Returns a dict of (R, G) arrays: c2, c1, c0, x_opt, y_opt, interior, x_min, x_max,
    n_sizes (distinct x with positive weight), ok (a parabola could be fitted).

    The Huber scale of each group is fixed from the unit-weight fit (1.4826 x the median
    absolute residual, floored at 1e-4 of the mean y), so replicates are comparable.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    group = np.asarray(group, dtype=np.int64)
    n = x.size
    G = int(n_groups)
    if W is None:
        W = np.ones((1, n))
    W = np.atleast_2d(np.asarray(W, dtype=float))
    R = W.shape[0]
    onehot = np.zeros((n, G))
    onehot[np.arange(n), group] = 1.0
    # centre and scale x per group for conditioning
    cnt = onehot.sum(0)
    xc = (onehot * x[:, None]).sum(0) / np.maximum(cnt, 1)
    u = x - xc[group]
    powers = np.stack([u ** k for k in range(5)], axis=0)  # (5, n)

    # distinct sizes with positive weight, per replicate and group
    pairs = np.stack([group.astype(float), np.round(x, 9)], axis=1)
    uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
    inv = np.asarray(inv).ravel()
    size_ind = np.zeros((n, uniq.shape[0]))
    size_ind[np.arange(n), inv] = 1.0
    size_group = np.zeros((uniq.shape[0], G))
    size_group[np.arange(uniq.shape[0]), uniq[:, 0].astype(np.int64)] = 1.0
    present = (W @ size_ind) > 0  # (R, U)
    n_sizes = present.astype(float) @ size_group  # (R, G)

    def solve(weights):
        # normal equations per (R, G): M = sum w u^(i+j), v = sum w u^i y
        Sk = np.stack([(weights * powers[k]) @ onehot for k in range(5)], axis=-1)  # (R, G, 5)
        Tk = np.stack([(weights * powers[k] * y) @ onehot for k in range(3)], axis=-1)  # (R, G, 3)
        M = np.stack([Sk[..., i:i + 3] for i in range(3)], axis=-2)  # (R, G, 3, 3) [i][j] = S_{i+j}
        ok = n_sizes >= 3
        M = np.where(ok[..., None, None], M, np.eye(3))
        v = np.where(ok[..., None], Tk, 0.0)
        try:
            beta = np.linalg.solve(M, v[..., None])[..., 0]
        except np.linalg.LinAlgError:
            beta = np.stack([np.linalg.lstsq(Mi, vi, rcond=None)[0] for Mi, vi in
                             zip(M.reshape(-1, 3, 3), v.reshape(-1, 3))]).reshape(R, G, 3)
        return beta, ok  # beta in the centred basis: b0 + b1 u + b2 u^2

    beta, ok = solve(W)
    if robust:
        # fixed scale per group from the unit-weight fit
        base, base_ok = solve(np.ones((1, n)))
        r0 = y - (base[0, group, 0] + base[0, group, 1] * u + base[0, group, 2] * u * u)
        scale = np.empty(G)
        for g in range(G):
            rg = np.abs(r0[group == g])
            scale[g] = 1.4826 * np.median(rg) if rg.size else 1.0
        ymean = np.abs(y).mean() if n else 1.0
        scale = np.maximum(scale, 1e-4 * ymean)
        thr = HUBER_K * scale[group]  # (n,)
        for _ in range(n_iter):
            pred = beta[:, group, 0] + beta[:, group, 1] * u + beta[:, group, 2] * u * u  # (R, n)
            res = np.abs(y - pred)
            hw = np.minimum(1.0, thr / np.maximum(res, 1e-300))
            new, ok = solve(W * hw)
            if np.allclose(new, beta, rtol=1e-10, atol=1e-12):
                beta = new
                break
            beta = new

    b0, b1, b2 = beta[..., 0], beta[..., 1], beta[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u_opt = -b1 / (2.0 * b2)
        y_opt = b0 - b1 * b1 / (4.0 * b2)
    xc_b = xc[None, :]
    c2 = b2
    c1 = b1 - 2.0 * b2 * xc_b
    c0 = b0 - b1 * xc_b + b2 * xc_b * xc_b
    x_opt = u_opt + xc_b
    # sampled range per replicate and group (sizes with positive weight)
    big = np.where(W > 0, x[None, :], np.inf)
    small = np.where(W > 0, x[None, :], -np.inf)
    x_min = np.full((R, G), np.nan)
    x_max = np.full((R, G), np.nan)
    for g in range(G):
        sel = group == g
        if sel.any():
            x_min[:, g] = big[:, sel].min(axis=1)
            x_max[:, g] = small[:, sel].max(axis=1)
    convex = b2 > 0
    interior = ok & convex & (x_opt > x_min) & (x_opt < x_max)
    nan = np.nan
    return {
        "c2": np.where(ok, c2, nan), "c1": np.where(ok, c1, nan), "c0": np.where(ok, c0, nan),
        "x_opt": np.where(ok & convex, x_opt, nan), "y_opt": np.where(ok & convex, y_opt, nan),
        "interior": interior, "convex": ok & convex, "x_min": x_min, "x_max": x_max,
        "n_sizes": n_sizes, "ok": ok,
    }


def fit_isoflop(params, loss, group, budgets, fpt, W=None, *, robust: bool = True) -> dict:
    """Approach 2 over all budgets and replicates.

    ``params``/``loss``/``group`` are per run; ``budgets`` (G,) the budget of each group;
    ``fpt`` a callable N -> FLOPs per token; ``W`` (R, n) replicate weights (None: the data).
    Returns (R, G) arrays ``params_opt``, ``tokens_opt``, ``loss_opt``, ``interior`` and the
    parabola coefficients, plus (R,) ``a``, ``b``, ``k_N``, ``k_D`` from the interior budgets.
    """
    budgets = np.asarray(budgets, dtype=float)
    par = fit_parabolas(np.log10(params), loss, group, budgets.size, W, robust=robust)
    N_opt = 10.0 ** par["x_opt"]
    with np.errstate(invalid="ignore"):
        D_opt = budgets[None, :] / fpt(N_opt)
    k_N, a = fit_power_law(budgets, N_opt, par["interior"])
    k_D, b = fit_power_law(budgets, D_opt, par["interior"])
    out = dict(par)
    out.update(params_opt=N_opt, tokens_opt=D_opt, loss_opt=par["y_opt"], a=a, b=b, k_N=k_N, k_D=k_D,
               n_interior=par["interior"].sum(axis=1))
    return out


# ---------------------------------------------------------------------------------------------
# approach 2 on a sweep


@dataclass
class IsoflopFit(PowerLawAllocation):
    """Approach 2's result: one parabola per budget, power laws through the interior minima."""

    status: str
    reason: str | None = None
    budgets: list | None = None  # [{budget, params_opt, tokens_opt, loss_opt, interior, coef, ...}]
    n_budgets: int = 0
    n_interior: int = 0
    a: float | None = None
    b: float | None = None
    k_N: float | None = None
    k_D: float | None = None
    a_ci: list | None = None
    b_ci: list | None = None
    k_N_ci: list | None = None
    k_D_ci: list | None = None
    groups: np.ndarray | None = field(default=None, repr=False)  # sweep budget index of each profile
    full: dict | None = field(default=None, repr=False)  # fit_isoflop on the data
    replicates: dict | None = field(default=None, repr=False)  # fit_isoflop over the bootstrap

    def to_json(self) -> dict:
        if self.budgets is None:
            return {"status": self.status, "reason": self.reason}
        out = {"status": self.status, "budgets": self.budgets, "n_budgets": self.n_budgets,
               "n_interior": self.n_interior}
        if self.ok:
            out.update(a=self.a, b=self.b, k_N=self.k_N, k_D=self.k_D)
            if self.replicates is not None:
                out.update(a_ci=self.a_ci, b_ci=self.b_ci, k_N_ci=self.k_N_ci, k_D_ci=self.k_D_ci,
                           bootstrap=bootstrap_spread(self.replicates["a"], self.replicates["b"]))
            else:
                out.update(a_ci=None, b_ci=None)
        else:
            out.update(reason=self.reason, a=None, b=None, a_ci=None, b_ci=None)
        return out


def isoflop_approach(sweep, counts, ci: float, diags: Diagnostics) -> IsoflopFit:
    """Approach 2 on the budgets of ``sweep`` with runs at 3+ sizes; ``counts`` (R, n) or None."""
    N, L, labels, budgets = sweep.N, sweep.L, sweep.labels, sweep.budgets
    sizes_per = sweep.sizes_per_budget
    elig = np.flatnonzero(sizes_per >= 3)
    if elig.size == 0:
        reason = ("no IsoFLOP groups: no budget has runs at 3 or more model sizes "
                  "(runs trained elsewhere at unrelated FLOPs only support the parametric fit)")
        diags.add("info", "no_isoflop_groups", "IsoFLOP approach skipped: " + reason)
        return IsoflopFit("skipped", reason)
    small = [g for g in np.flatnonzero(sizes_per < 3) if (labels == g).sum() >= 1]
    if small:
        names = ", ".join(f"{fmt_flops(budgets[g])} ({sizes_per[g]})" for g in small[:8])
        diags.add("info", "isoflop_too_few_sizes",
                  f"{len(small)} budget(s) have runs at fewer than 3 sizes and are not used for the "
                  f"IsoFLOP fit: {names}{' ...' if len(small) > 8 else ''}; add sizes to use them",
                  budgets[small[0]] if len(small) == 1 else None)
    sel = np.isin(labels, elig)
    remap = {g: i for i, g in enumerate(elig)}
    lab = np.array([remap[g] for g in labels[sel]])
    bud = budgets[elig]
    full = fit_isoflop(N[sel], L[sel], lab, bud, sweep.fpt)
    rep = fit_isoflop(N[sel], L[sel], lab, bud, sweep.fpt, W=counts[:, sel]) if counts is not None else None
    blist = []
    for i, g in enumerate(elig):
        members = np.flatnonzero(labels == g)
        entry = {
            "budget": float(bud[i]),
            "params_opt": jfloat(full["params_opt"][0, i]),
            "tokens_opt": jfloat(full["tokens_opt"][0, i]),
            "loss_opt": jfloat(full["loss_opt"][0, i]),
            "interior": bool(full["interior"][0, i]),
            "coef": [jfloat(full["c2"][0, i]), jfloat(full["c1"][0, i]), jfloat(full["c0"][0, i])],
            "n_runs": int(members.size),
            "params_min": float(N[members].min()),
            "params_max": float(N[members].max()),
            "params_opt_ci": percentile_interval(rep["params_opt"][:, i], ci) if rep is not None else None,
            "loss_opt_ci": percentile_interval(rep["loss_opt"][:, i], ci) if rep is not None else None,
            "run_ids": [sweep.ids[j] for j in members],
        }
        blist.append(entry)
        if not entry["interior"]:
            edge_minimum(diags, entry, N[members], L[members], full["convex"][0, i])
    n_int = int(full["n_interior"][0])
    fit = IsoflopFit("skipped", budgets=blist, n_budgets=int(elig.size), n_interior=n_int, groups=elig, full=full)
    if n_int < 3:
        diags.add("warning", "isoflop_few_interior",
                  f"only {n_int} budget(s) have an interior IsoFLOP minimum (3 or more are needed for a "
                  f"trustworthy power law); move the grids named above or add budgets")
    if n_int < 2:
        fit.reason = f"{n_int} budget(s) with an interior minimum; a power law needs at least 2"
        return fit
    fit.status = "ok"
    fit.a, fit.b = jfloat(full["a"][0]), jfloat(full["b"][0])
    fit.k_N, fit.k_D = jfloat(full["k_N"][0]), jfloat(full["k_D"][0])
    if rep is not None:
        fit.a_ci, fit.b_ci = percentile_interval(rep["a"], ci), percentile_interval(rep["b"], ci)
        fit.k_N_ci, fit.k_D_ci = percentile_interval(rep["k_N"], ci), percentile_interval(rep["k_D"], ci)
        bootstrap_failures(diags, "isoflop", rep["a"])
        fit.replicates = rep
    return fit
