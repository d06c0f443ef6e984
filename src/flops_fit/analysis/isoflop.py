"""Approach 2: IsoFLOP profiles, and the shared helpers for budgets, FLOPs per token and power laws.

For each compute budget C, the runs' loss is fitted with a robust (Huber IRLS) parabola in
x = log10 N; its vertex gives N_opt(C) and D_opt(C) = C / fpt(N_opt). Power laws
N_opt = k_N C^a and D_opt = k_D C^b are then fitted in log space on the budgets whose
minimum is interior (inside the sampled sizes, parabola convex).

Everything is vectorised over bootstrap replicates: a replicate is an (n,) vector of
resample counts used as weights.
"""

from __future__ import annotations

import numpy as np

HUBER_K = 1.345  # Huber tuning constant, in units of the residual scale


# ---------------------------------------------------------------------------------------------
# budgets and FLOPs per token


def group_budgets(values, rtol: float = 0.01):
    """Group FLOP values that agree within ``rtol`` (relative) into budgets.

    Returns ``(labels, budgets)``: ``labels[i]`` indexes ``budgets`` (each group's most common
    value, else its median), sorted ascending.
    """
    v = np.asarray(values, dtype=float)
    order = np.argsort(v)
    labels = np.empty(v.size, dtype=np.int64)
    budgets = []
    start = None
    members: list[int] = []
    for i in order:
        if start is None or v[i] > start * (1.0 + rtol):
            if members:
                budgets.append(_representative(v[members]))
            start = v[i]
            members = []
        members.append(i)
        labels[i] = len(budgets)
    if members:
        budgets.append(_representative(v[members]))
    return labels, np.asarray(budgets)


def _representative(values):
    """The budget of a group: its most common value (the planned budget), else the median."""
    vals, counts = np.unique(values, return_counts=True)
    if counts.max() > 1:
        return float(vals[np.argmax(counts)])
    return float(np.sort(values)[(values.size - 1) // 2])


class FlopsPerToken:
    """fpt(N): training FLOPs per token as a function of the parameter count.

    Exactly ``6 N`` when every run's flops equal 6 x params x tokens (the ``6nd`` convention);
    otherwise piecewise-linear interpolation of the runs' flops/tokens against N in log-log,
    extended beyond the sampled sizes with the slope of a log-log least-squares line.
    """

    def __init__(self, params, flops, tokens):
        N = np.asarray(params, dtype=float)
        fpt = np.asarray(flops, dtype=float) / np.asarray(tokens, dtype=float)
        ratio = fpt / (6.0 * N)
        self.exact_6n = bool(N.size == 0 or np.all(np.abs(ratio - 1.0) <= 1e-6))
        if self.exact_6n:
            self.kind = "6N"
            return
        self.kind = "interpolated"
        lx = np.log(N)
        ly = np.log(fpt)
        ux = np.unique(lx)
        uy = np.array([ly[lx == u].mean() for u in ux])
        self._x, self._y = ux, uy
        if ux.size >= 2:
            self._slope = float(np.polyfit(ux, uy, 1)[0])
        else:
            self._slope = 1.0  # a single size: assume fpt proportional to N

    def __call__(self, N):
        N = np.asarray(N, dtype=float)
        if self.exact_6n:
            return 6.0 * N
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log(N)
        y = np.interp(x, self._x, self._y)
        y = np.where(x < self._x[0], self._y[0] + self._slope * (x - self._x[0]), y)
        y = np.where(x > self._x[-1], self._y[-1] + self._slope * (x - self._x[-1]), y)
        return np.exp(y)


# ---------------------------------------------------------------------------------------------
# power laws


def fit_power_law(C, Y, mask=None):
    """Least squares of log10 Y = log10 k + p log10 C, batched over leading axes.

    ``C`` (G,), ``Y`` (..., G), ``mask`` (..., G) selects points. Returns ``(k, p)`` with NaN
    where fewer than two distinct points are selected.
    """
    x = np.log10(np.asarray(C, dtype=float))
    Y = np.asarray(Y, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log10(Y)
    m = np.isfinite(y) if mask is None else (np.asarray(mask, dtype=bool) & np.isfinite(y))
    w = m.astype(float)
    y = np.where(m, y, 0.0)
    n = w.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        xm = (w * x).sum(-1) / n
        ym = (w * y).sum(-1) / n
        dx = x - xm[..., None]
        sxx = (w * dx * dx).sum(-1)
        sxy = (w * dx * (y - ym[..., None])).sum(-1)
        p = sxy / sxx
        k = 10.0 ** (ym - p * xm)
    bad = (n < 2) | ~(sxx > 1e-12)
    p = np.where(bad, np.nan, p)
    k = np.where(bad, np.nan, k)
    return k, p


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
