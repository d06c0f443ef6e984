"""Variable projection (VP) for L = E + A x + B y with x = N^-alpha, y = D^-beta (or, per IsoFLOP
budget, x = N^-alpha, y = N^beta): for fixed exponents the coefficients are linear, so they are
solved exactly (non-negative least squares) and only a 2-D problem over (alpha, beta) remains.

The 2-D problem is searched exhaustively on a grid, then polished by L-BFGS with the exact
gradient of the profiled objective (envelope theorem: d/d(alpha) min_theta f = df/d(alpha) at
the inner optimum). Everything is batched: many grid cells, many bootstrap replicates.

Objectives (``objective=``), all summed over points with per-point weights w:

    sse        0.5 w (L - p)^2                     least squares on L (the study's VPNLS)
    huber      w H_d(L - p), d = delta x median(L)  Huber on L
    sse_log    0.5 w (log L - log p)^2              least squares on log L
    huber_log  w H_delta(log L - log p)             Chinchilla's objective (delta = 1e-3)

For L-space objectives the inner problem is linear (sse: one NNLS; huber: IRLS, monotone).
For log-space objectives it is not; it is solved by Gauss-Newton with IRLS weights, each step
an NNLS, with step halving. Pure numpy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from flops_fit.analysis.lbfgs import minimize_batched

OBJECTIVES = ("sse", "huber", "sse_log", "huber_log")
LOG_OBJECTIVES = ("sse_log", "huber_log")


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        from flops_fit.errors import FlopsFitError

        raise FlopsFitError(f"objective={objective!r} is not one of {', '.join(OBJECTIVES)}")
    return objective


# ---------------------------------------------------------------------------------------------
# batched non-negative least squares for a handful of variables


def _subsets(k: int) -> np.ndarray:
    return np.array(list(itertools.product([False, True], repeat=k)), dtype=bool)  # (2^k, k)


def nnls_normal(G, h):
    """argmin_{theta >= 0} theta' G theta - 2 h' theta for batches of tiny problems.

    ``G`` (..., k, k) symmetric positive semi-definite, ``h`` (..., k); k <= 4. Exact: every
    active set is tried (the optimum is the best feasible one among the 2^k restricted
    least-squares solutions). Columns are rescaled to unit diagonal first, and a relative
    ridge of 1e-13 keeps collinear sets solvable.
    """
    G = np.asarray(G, dtype=float)
    h = np.asarray(h, dtype=float)
    k = h.shape[-1]
    d = np.sqrt(np.maximum(np.einsum("...ii->...i", G), 1e-300))
    Gs = G / (d[..., :, None] * d[..., None, :])
    hs = h / d
    masks = _subsets(k)  # (S, k)
    S = masks.shape[0]
    mm = (masks[:, :, None] & masks[:, None, :]).astype(float)  # (S, k, k)
    eye = np.eye(k)
    M = Gs[..., None, :, :] * mm + eye * (1.0 - masks[:, None, :]) + 1e-13 * eye * masks[:, None, :]
    rhs = hs[..., None, :] * masks
    with np.errstate(all="ignore"):
        th = np.linalg.solve(M, rhs[..., None])[..., 0]  # (..., S, k)
    th = np.where(masks, th, 0.0)
    feas = np.all(th >= -1e-12, axis=-1) & np.all(np.isfinite(th), axis=-1)
    th = np.maximum(th, 0.0)
    q = np.einsum("...si,...ij,...sj->...s", th, Gs, th) - 2.0 * np.einsum("...si,...i->...s", th, hs)
    q = np.where(feas, q, np.inf)
    best = np.argmin(q, axis=-1)
    out = np.take_along_axis(th, best[..., None, None], axis=-2)[..., 0, :]
    return out / d


def _back_substitute(R, c):
    """Solve R theta = c for batches of 3x3 upper-triangular R (a zero pivot gives 0)."""
    out = np.zeros(c.shape)
    scale = np.max(np.abs(np.einsum("...ii->...i", R)), axis=-1, keepdims=True)
    for i in (2, 1, 0):
        rhs = c[..., i] - np.einsum("...j,...j->...", R[..., i, i + 1:], out[..., i + 1:])
        piv = R[..., i, i]
        ok = np.abs(piv) > 1e-13 * scale[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[..., i] = np.where(ok, rhs / np.where(ok, piv, 1.0), 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# the profiled problem


def _rho_psi(r, delta):
    """Huber loss 0.5 r^2 (|r| <= delta), delta (|r| - delta/2) beyond; and its derivative."""
    a = np.abs(r)
    if np.isinf(delta):
        return 0.5 * r * r, r
    rho = np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))
    return rho, np.clip(r, -delta, delta)


@dataclass
class Problem:
    """Data for a batch of profiled fits: per point log N, log D, L; weights (R, n) per replicate.

    ``kind`` "surface": features N^-alpha, D^-beta and one (E, A, B) for all points.
    ``kind`` "budgets": features N^-alpha, N^beta and one (e, a, b) per budget ``group``.
    """

    lnN: np.ndarray
    lnD: np.ndarray
    L: np.ndarray
    W: np.ndarray  # (R, n)
    objective: str = "sse"
    delta: float = 1e-3
    kind: str = "surface"
    group: np.ndarray | None = None  # (n,) budget index for kind "budgets"

    def __post_init__(self):
        check_objective(self.objective)
        self.lnN = np.asarray(self.lnN, dtype=float)
        self.lnD = np.asarray(self.lnD, dtype=float)
        self.L = np.asarray(self.L, dtype=float)
        self.lnL = np.log(self.L)
        self.W = np.atleast_2d(np.asarray(self.W, dtype=float))
        self.log_space = self.objective in LOG_OBJECTIVES
        self.precise = True  # QR for the inner least squares (grid_search turns it off)
        if self.objective in ("sse", "sse_log"):
            self.d = np.inf
        elif self.objective == "huber":
            self.d = float(self.delta) * float(np.median(self.L))
        else:
            self.d = float(self.delta)
        if self.kind == "budgets":
            g = np.asarray(self.group, dtype=np.int64)
            self.G = int(g.max()) + 1
            self.group = g
            self.members = [np.flatnonzero(g == k) for k in range(self.G)]
        else:
            self.G = 1
            self.group = np.zeros(self.lnN.size, dtype=np.int64)
        # scale features by their value at the mean log size so coefficients are O(loss)
        self.n0 = float(np.mean(self.lnN))
        self.d0 = float(np.mean(self.lnD)) if self.kind == "surface" else self.n0

    # features (K, n) for exponent rows alpha, beta (K,)
    def features(self, alpha, beta):
        x = np.exp(-np.multiply.outer(alpha, self.lnN - self.n0))
        if self.kind == "surface":
            y = np.exp(-np.multiply.outer(beta, self.lnD - self.d0))
        else:
            y = np.exp(np.multiply.outer(beta, self.lnN - self.n0))
        return x, y

    def _per_point(self, c):
        """(K, G) per-budget values -> (K, n) per point."""
        return c[:, :1] if self.G == 1 else c[:, self.group]

    def predict(self, theta, x, y):
        """theta (K, G, 3) -> (K, n) predictions."""
        pp = self._per_point
        return pp(theta[..., 0]) + pp(theta[..., 1]) * x + pp(theta[..., 2]) * y

    def residual(self, p):
        if self.log_space:
            return self.lnL - np.log(np.maximum(p, 1e-300))
        return self.L - p

    def objective_value(self, theta, x, y, w):
        p = self.predict(theta, x, y)
        rho, _ = _rho_psi(self.residual(p), self.d)
        return np.where(np.all(p > 0, axis=1) | ~self.log_space, (w * rho).sum(axis=1), np.inf)

    def _nnls(self, w, z, F):
        """Weighted NNLS per (row, budget): minimise sum w (z - F theta)^2, F (K, n, 3).

        The unconstrained solution comes from a QR factorisation (accurate where the features are
        nearly collinear, e.g. narrow grids); only where it has a negative entry is the exact
        active-set enumeration on the normal equations used."""
        sw = np.sqrt(w)
        A = F * sw[..., None]
        b = z * sw
        K = F.shape[0]
        theta = np.empty((K, self.G, 3))
        members = [slice(None)] if self.G == 1 else self.members
        if not self.precise:  # the grid: normal equations are enough to rank the cells
            FwT = np.swapaxes(A * sw[..., None], 1, 2)
            Gm = np.empty((K, self.G, 3, 3))
            hm = np.empty((K, self.G, 3))
            for g, idx in enumerate(members):
                Gm[:, g] = FwT[:, :, idx] @ F[:, idx, :]
                hm[:, g] = (FwT[:, :, idx] @ z[:, idx, None])[..., 0]
            return nnls_normal(Gm, hm)
        for g, idx in enumerate(members):
            Q, R = np.linalg.qr(A[:, idx, :])
            c = np.einsum("kni,kn->ki", Q, b[:, idx])
            theta[:, g] = _back_substitute(R, c)
        bad = ~np.all(theta >= 0, axis=(1, 2)) | ~np.all(np.isfinite(theta), axis=(1, 2))
        if bad.any():
            k = np.flatnonzero(bad)
            FwT = np.swapaxes(A[k] * sw[k][..., None], 1, 2)  # F' W
            Gm = np.empty((k.size, self.G, 3, 3))
            hm = np.empty((k.size, self.G, 3))
            for g, idx in enumerate(members):
                Gm[:, g] = FwT[:, :, idx] @ F[k][:, idx, :]
                hm[:, g] = (FwT[:, :, idx] @ z[k][:, idx, None])[..., 0]
            theta[k] = nnls_normal(Gm, hm)
        return theta

    def inner(self, x, y, w, *, iters: int = 30, tol: float = 1e-12, theta0=None):
        """The optimal coefficients (K, G, 3) at features x, y (K, n) with weights w (K, n)."""
        F = np.stack([np.ones_like(x), x, y], axis=-1)  # (K, n, 3)
        if theta0 is None or self.objective == "sse":  # sse: the NNLS is the exact answer
            # log objectives start from least squares of the relative error (L - p) / L ~ log L - log p
            w0 = w / self.L ** 2 if self.log_space else w
            theta = self._nnls(w0, self.L[None, :].repeat(x.shape[0], 0), F)
        else:
            theta = theta0
        if self.objective == "sse":
            return theta
        f = self.objective_value(theta, x, y, w)
        for _ in range(iters):
            p = self.predict(theta, x, y)
            r = self.residual(p)
            with np.errstate(divide="ignore", invalid="ignore"):
                irls = np.where(np.abs(r) > self.d, self.d / np.abs(r), 1.0) if np.isfinite(self.d) else 1.0
            om = w * irls
            if self.log_space:
                pp = np.maximum(p, 1e-300)
                J = F / pp[..., None]
                z = r + self.predict(theta, x, y) / pp
                new = self._nnls(om, z, J)
            else:
                new = self._nnls(om, self.L[None, :].repeat(x.shape[0], 0), F)
            # step halving keeps the objective from increasing (GN can overshoot)
            step = np.ones(theta.shape[0])
            cand, fc = new, self.objective_value(new, x, y, w)
            for _ in range(6):
                worse = ~(fc <= f)
                if not worse.any():
                    break
                step = np.where(worse, step * 0.5, step)
                trial = theta + step[:, None, None] * (new - theta)
                ft = self.objective_value(trial, x, y, w)
                cand = np.where(worse[:, None, None], trial, cand)
                fc = np.where(worse, ft, fc)
            ok = fc <= f
            change = np.max(np.abs(cand - theta), axis=(1, 2)) / (np.max(np.abs(theta), axis=(1, 2)) + 1e-300)
            theta = np.where(ok[:, None, None], cand, theta)
            f = np.where(ok, fc, f)
            if np.all(~ok | (change < tol)):
                break
        return theta

    def profile(self, alpha, beta, w, *, iters: int = 30, with_grad: bool = False, theta0=None):
        """Profiled objective (and its gradient in alpha, beta) at exponent rows (K,)."""
        alpha = np.asarray(alpha, dtype=float)
        beta = np.asarray(beta, dtype=float)
        x, y = self.features(alpha, beta)
        theta = self.inner(x, y, w, iters=iters, theta0=theta0)
        p = self.predict(theta, x, y)
        r = self.residual(p)
        rho, psi = _rho_psi(r, self.d)
        f = (w * rho).sum(axis=1)
        bad = ~np.isfinite(f)
        if self.log_space:
            bad |= ~np.all(p > 0, axis=1)
        f = np.where(bad, np.inf, f)
        if not with_grad:
            return f, theta
        lnx = -(self.lnN - self.n0)  # d x / d alpha = lnx * x
        lny = -(self.lnD - self.d0) if self.kind == "surface" else (self.lnN - self.n0)
        dpa = self._per_point(theta[..., 1]) * x * lnx  # dp/dalpha
        dpb = self._per_point(theta[..., 2]) * y * lny  # dp/dbeta
        g = w * psi  # df/dr
        scale = -1.0 / np.maximum(p, 1e-300) if self.log_space else -1.0  # dr/dp
        ga = (g * scale * dpa).sum(axis=1)
        gb = (g * scale * dpb).sum(axis=1)
        G = np.stack([ga, gb], axis=1)
        G = np.where(bad[:, None], 0.0, G)
        return f, theta, G

    def coefficients(self, theta, alpha, beta):
        """Coefficients in natural units from the scaled ones: surface -> (E, A, B);
        budgets -> (e, a, b) per budget with L_C(N) = e + a N^-alpha + b N^beta."""
        theta = np.asarray(theta, dtype=float)
        a_ = np.asarray(alpha, dtype=float)
        b_ = np.asarray(beta, dtype=float)
        while a_.ndim < theta.ndim - 1:  # (R,) exponents against (R, G) coefficients
            a_, b_ = a_[..., None], b_[..., None]
        e = theta[..., 0]
        A = theta[..., 1] * np.exp(a_ * self.n0)
        if self.kind == "surface":
            B = theta[..., 2] * np.exp(b_ * self.d0)
        else:
            B = theta[..., 2] * np.exp(-b_ * self.n0)
        return e, A, B


# ---------------------------------------------------------------------------------------------
# search and polish


@dataclass
class VPResult:
    alpha: np.ndarray  # (R,)
    beta: np.ndarray
    theta: np.ndarray  # (R, G, 3) scaled coefficients
    f: np.ndarray  # (R,) objective
    converged: np.ndarray  # (R,) bool
    n_grid: int = 0


DEFAULT_RANGE = (0.02, 2.0)


def exponent_grid(lo: float = DEFAULT_RANGE[0], hi: float = DEFAULT_RANGE[1], step: float = 0.05) -> np.ndarray:
    return np.arange(lo, hi + 1e-9, step)


def grid_search(prob: Problem, grid_a, grid_b, *, row: int = 0, top: int = 4, iters: int = 3, chunk: int = 800):
    """The profiled objective on the grid (for weight row ``row``); returns the ``top`` best local
    minima of the grid (cells no worse than their 8 neighbours) as (alpha, beta) starts, and the
    objective surface."""
    A, Bg = np.meshgrid(grid_a, grid_b, indexing="ij")
    a, b = A.ravel(), Bg.ravel()
    w = prob.W[row]
    F = np.empty(a.size)
    prob.precise = False
    try:
        for i in range(0, a.size, chunk):
            j = slice(i, i + chunk)
            F[j], _ = prob.profile(a[j], b[j], np.broadcast_to(w, (a[j].size, w.size)), iters=iters)
    finally:
        prob.precise = True
    S = F.reshape(A.shape)
    P = np.pad(S, 1, constant_values=np.inf)
    is_min = np.ones(S.shape, dtype=bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                is_min &= S <= P[1 + di:1 + di + S.shape[0], 1 + dj:1 + dj + S.shape[1]]
    is_min &= np.isfinite(S)
    idx = np.flatnonzero(is_min.ravel())
    idx = idx[np.argsort(F[idx])][:top]
    if idx.size == 0:
        idx = np.array([int(np.nanargmin(np.where(np.isfinite(F), F, np.nan)))])
    return np.stack([a[idx], b[idx]], axis=1), S


def polish(prob: Problem, starts, rows, *, bounds=(1e-3, 5.0), max_iter: int = 200, inner_iters: int = 60) -> VPResult:
    """L-BFGS on (alpha, beta) from ``starts`` (P, 2), problem p using weight row ``rows[p]``;
    exact envelope gradients; the exponents are kept in ``bounds`` by a smooth map."""
    starts = np.asarray(starts, dtype=float)
    rows = np.asarray(rows)
    lo, hi = bounds
    # alpha = lo + (hi - lo) * sigmoid(u): unconstrained L-BFGS, bounded exponents
    s0 = np.clip((starts - lo) / (hi - lo), 1e-9, 1 - 1e-9)
    U0 = np.log(s0 / (1 - s0))
    warm = [None]  # inner coefficients of every problem at its latest evaluation (warm starts)

    def fun(U, idx):
        s = 1.0 / (1.0 + np.exp(-U))
        X = lo + (hi - lo) * s
        w = prob.W[rows[idx]]
        theta0 = None if warm[0] is None else warm[0][idx]
        f, theta, G = prob.profile(X[:, 0], X[:, 1], w, iters=inner_iters, with_grad=True, theta0=theta0)
        if warm[0] is None:
            warm[0] = np.zeros((len(U0),) + theta.shape[1:])
        ok = np.isfinite(f)
        warm[0][idx[ok]] = theta[ok]
        G = G * ((hi - lo) * s * (1 - s))
        f = np.where(ok, f, np.inf)
        return f, G

    f0, _ = fun(U0, np.arange(len(U0)))
    fscale = float(np.max(np.abs(f0[np.isfinite(f0)]), initial=1e-30))
    res = minimize_batched(fun, U0, max_iter=max_iter, gtol=1e-11 * fscale, ftol=1e-14, f_floor=1e-300)
    s = 1.0 / (1.0 + np.exp(-res.x))
    X = lo + (hi - lo) * s
    w = prob.W[rows]
    f, theta = prob.profile(X[:, 0], X[:, 1], w, iters=inner_iters, theta0=warm[0])
    return VPResult(alpha=X[:, 0], beta=X[:, 1], theta=theta, f=f,
                    converged=res.converged | (res.status == 3))


def best_per_row(res: VPResult, rows, R: int) -> VPResult:
    """Keep, for each weight row, the polished start with the lowest objective."""
    rows = np.asarray(rows)
    f = np.where(np.isfinite(res.f), res.f, np.inf)
    pick = np.empty(R, dtype=np.int64)
    for r in range(R):
        cand = np.flatnonzero(rows == r)
        pick[r] = cand[np.argmin(f[cand])]
    return VPResult(alpha=res.alpha[pick], beta=res.beta[pick], theta=res.theta[pick], f=res.f[pick],
                    converged=res.converged[pick], n_grid=res.n_grid)


# ---------------------------------------------------------------------------------------------
# fits


def _rows_and_starts(starts, R):
    starts = np.atleast_2d(np.asarray(starts, dtype=float))
    P = starts.shape[0]
    return np.repeat(np.arange(R), P), np.tile(starts, (R, 1))


def vp_fit(prob: Problem, *, starts=None, grid=None, top: int = 4, max_iter: int = 200) -> tuple[VPResult, np.ndarray]:
    """Fit every weight row of ``prob``: an exhaustive grid search (on row 0) unless ``starts``
    (P, 2) are given, then a polish of every (row, start); returns the best per row and the
    distinct polished optima of row 0 (best first), useful as starts for refits."""
    R = prob.W.shape[0]
    n_grid = 0
    if starts is None:
        g = exponent_grid() if grid is None else np.asarray(grid, dtype=float)
        starts, _ = grid_search(prob, g, g, top=top)
        n_grid = g.size ** 2
    rows, X0 = _rows_and_starts(starts, R)
    res = polish(prob, X0, rows, max_iter=max_iter)
    best = best_per_row(res, rows, R)
    best.n_grid = n_grid
    r0 = np.flatnonzero(rows == 0)
    order = r0[np.argsort(np.where(np.isfinite(res.f[r0]), res.f[r0], np.inf))]
    optima = []
    for i in order:
        x = np.array([res.alpha[i], res.beta[i]])
        if np.isfinite(res.f[i]) and all(np.max(np.abs(x - y)) > 1e-3 for y in optima):
            optima.append(x)
    return best, np.asarray(optima).reshape(-1, 2)


def fit_surface(N, D, L, *, objective: str = "sse", delta: float = 1e-3, weights=None, starts=None,
                grid=None) -> dict:
    """Approach 3 by variable projection: L = E + A/N^alpha + B/D^beta with E, A, B >= 0.

    ``weights``: None, (n,) or (R, n) (bootstrap resample counts: every value is then (R,)).
    Returns E, A, B, alpha, beta, a, b, objective, converged, n_starts (grid cells searched),
    and (single fit) ``optima``: distinct local optima in (alpha, beta), best first."""
    N, D, L = (np.asarray(v, dtype=float).ravel() for v in (N, D, L))
    batched = weights is not None and np.ndim(weights) == 2
    W = np.ones((1, N.size)) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    prob = Problem(np.log(N), np.log(D), L, W, objective=objective, delta=delta)
    best, optima = vp_fit(prob, starts=starts, grid=grid)
    E, A, B = prob.coefficients(best.theta[:, 0, :], best.alpha, best.beta)
    out = {"E": E, "A": A, "B": B, "alpha": best.alpha, "beta": best.beta, "objective": best.f,
           "converged": best.converged}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["a"] = best.beta / (best.alpha + best.beta)
        out["b"] = best.alpha / (best.alpha + best.beta)
    if not batched:
        out = {k: (bool(v[0]) if k == "converged" else float(v[0])) for k, v in out.items()}
        out["optima"] = optima
    out["n_starts"] = int(best.n_grid)
    return out


def budget_minima(alpha, beta, theta, n0):
    """Per-budget minimum of L_C(N) = e + a' e^{-alpha u} + b' e^{beta u}, u = log N - n0:
    returns (N_opt, L_opt), NaN where a' or b' is zero (no interior minimum)."""
    al = np.asarray(alpha, dtype=float)[..., None]
    be = np.asarray(beta, dtype=float)[..., None]
    e, a, b = theta[..., 0], theta[..., 1], theta[..., 2]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        u = np.log(al * a / (be * b)) / (al + be)
        Lopt = e + a * np.exp(-al * u) + b * np.exp(be * u)
        Nopt = np.exp(n0 + u)
    bad = ~((a > 0) & (b > 0) & np.isfinite(u))
    return np.where(bad, np.nan, Nopt), np.where(bad, np.nan, Lopt)


def fit_budget_curves(N, L, group, *, objective: str = "sse", delta: float = 1e-3, weights=None, starts=None,
                      grid=None) -> dict:
    """Every IsoFLOP curve as L_C(N) = e_C + a_C N^-alpha + b_C N^beta with (alpha, beta) shared and
    e_C, a_C, b_C >= 0 per budget; the minimum of each curve in closed form.

    Returns alpha, beta (R,), coefficients e, a, b (R, G) in natural units, params_opt and
    loss_opt (R, G), objective, converged, n_starts, and (single fit) optima."""
    N, L = (np.asarray(v, dtype=float).ravel() for v in (N, L))
    W = np.ones((1, N.size)) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    prob = Problem(np.log(N), np.log(N), L, W, objective=objective, delta=delta, kind="budgets", group=group)
    best, optima = vp_fit(prob, starts=starts, grid=grid)
    e, a, b = prob.coefficients(best.theta, best.alpha, best.beta)
    Nopt, Lopt = budget_minima(best.alpha, best.beta, best.theta, prob.n0)
    return {"alpha": best.alpha, "beta": best.beta, "e": e, "a": a, "b": b, "params_opt": Nopt, "loss_opt": Lopt,
            "objective": best.f, "converged": best.converged, "n_starts": int(best.n_grid), "optima": optima,
            "n0": prob.n0}
