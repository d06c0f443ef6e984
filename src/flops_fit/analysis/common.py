"""Small shared pieces of the analysis: JSON-safe floats, percentile intervals, power laws,
bootstrap resample counts, a 1-D minimiser over log N, batched parabolas in log N. Numpy (scipy only inside argmin_log)."""

from __future__ import annotations

import math

import numpy as np


def jfloat(x):
    """A JSON-friendly float (None for NaN/inf/None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def percentile_interval(samples, level):
    """Percentile interval [lo, hi] of the finite samples, or None (fewer than 2 finite)."""
    if samples is None:
        return None
    s = np.asarray(samples, dtype=float).ravel()
    s = s[np.isfinite(s)]
    if s.size < 2:
        return None
    q = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(s, [q, 100.0 - q])
    return [float(lo), float(hi)]


def column_intervals(S, level):
    """Per-column percentile intervals of an (R, k) sample matrix (None when S is None)."""
    if S is None:
        return None
    return [percentile_interval(S[:, j], level) for j in range(S.shape[1])]


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


def resample_counts(n: int, n_boot: int, seed: int = 0, strata=None) -> np.ndarray:
    """(n_boot, n) bootstrap resample counts, optionally stratified (resampling within groups)."""
    rng = np.random.default_rng(seed)
    C = np.zeros((n_boot, n))
    if strata is None:
        idx = rng.integers(0, n, size=(n_boot, n))
        np.add.at(C, (np.repeat(np.arange(n_boot), n), idx.ravel()), 1.0)
        return C
    strata = np.asarray(strata)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        pick = members[rng.integers(0, members.size, size=(n_boot, members.size))]
        np.add.at(C, (np.repeat(np.arange(n_boot), members.size), pick.ravel()), 1.0)
    return C


def bootstrap_spread(a, b) -> dict:
    """The ``bootstrap: {a: [...], b: [...]}`` block of a fit: finite replicate exponents, rounded."""
    a_r, b_r = np.ravel(a), np.ravel(b)
    ok = np.isfinite(a_r) & np.isfinite(b_r)
    return {"a": [round(float(v), 5) for v in a_r[ok]], "b": [round(float(v), 5) for v in b_r[ok]]}


class PowerLawAllocation:
    """What the results of approaches 1, 2 and 2b share: N_opt = k_N C^a and D_opt = k_D C^b, on the
    data (``k_N``, ``a``, ...) and per bootstrap replicate (``replicates``). Subclasses are dataclasses
    with those fields and ``status``."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def allocation(self, C):
        """N_opt(C), D_opt(C) from the power laws."""
        return self.k_N * C ** self.a, self.k_D * C ** self.b

    def allocation_replicates(self, C):
        """(R, len(C)) N_opt, D_opt per bootstrap replicate, or (None, None)."""
        r = self.replicates
        if r is None:
            return None, None
        with np.errstate(over="ignore", invalid="ignore"):
            return (r["k_N"][:, None] * C[None, :] ** r["a"][:, None],
                    r["k_D"][:, None] * C[None, :] ** r["b"][:, None])


def argmin_log(f, x0, half_width: float = np.log(1e4), n: int = 801) -> float:
    """The minimiser of a scalar function of log N near x0: a dense grid, then Brent in the best cell."""
    from scipy.optimize import minimize_scalar

    grid = np.linspace(x0 - half_width, x0 + half_width, n)
    vals = np.asarray(f(grid), dtype=float)
    i = int(np.nanargmin(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, n - 1)]
    res = minimize_scalar(lambda x: float(f(np.asarray(x))), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-10})
    return float(res.x) if res.fun <= vals[i] else float(grid[i])


def log_parabolas(N, Y):
    """A parabola in ln N through each column of ``Y`` ((n,) or (n, R)): (coefficients, highest power first,
    fitted values like ``Y``, N at the vertex, L there; NaN where it is not convex). One least-squares solve for
    every column: a forecast check's bootstrap refits, a sequential design's simulated studies."""
    x = np.log(N)
    c = np.polyfit(x, Y, 2)
    X = np.stack([x ** 2, x, np.ones_like(x)], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        xv = -c[1] / (2 * c[0])
        convex = c[0] > 0
        n_opt = np.where(convex, np.exp(xv), np.nan)
        l_opt = np.where(convex, c[0] * xv ** 2 + c[1] * xv + c[2], np.nan)
    return c, X @ c, n_opt, l_opt


LOCAL_WINDOW = 4.0  # a budget's own minimum is measured on the runs within this factor of its best run's size


def local_minimum(N, L, window: float = LOCAL_WINDOW):
    """A budget's own minimum, measured near it and with no candidate's curve shape: the vertex of a parabola
    in ln N through the runs within a factor ``window`` of the best run's size. Returns ``(N at the vertex, the
    parabola's value there, the window as a mask of the runs, the parabola's residual sum of squares there)``, or
    None when fewer than 3 sizes lie in the window, the parabola is not convex, or its vertex lies outside the
    sizes it was fitted on. Near its minimum every smooth IsoFLOP curve is a parabola in ln N, so the vertex's
    bias (grid width, offset, asymmetry) shrinks with the window."""
    N = np.asarray(N, dtype=float)
    L = np.asarray(L, dtype=float)
    near = np.abs(np.log(N / N[int(np.argmin(L))])) <= np.log(window)
    if np.unique(N[near]).size < 3:
        return None
    _, fitted, n_opt, l_opt = log_parabolas(N[near], L[near])
    n_opt = float(n_opt)
    if not (np.isfinite(n_opt) and N[near].min() < n_opt < N[near].max()):
        return None
    return n_opt, float(l_opt), near, float(np.sum((L[near] - fitted) ** 2))
