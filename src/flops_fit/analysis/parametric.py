"""Approach 3: the parametric loss L(N, D) = E + A / N^alpha + B / D^beta.

Fitted the way Hoffmann et al. (2022) did and Besiroglu et al. (2024) replicated: in log space,

    log L = LSE(a - alpha log N, b - beta log D, e),   A = exp(a), B = exp(b), E = exp(e),

minimising the Huber loss (delta = 1e-3) of log L minus the prediction, summed over points,
with L-BFGS from every point of a 4500-start grid and keeping the best objective. All starts
(and, for the bootstrap, all replicates, each with its own resample-count weight vector)
advance together in one batched L-BFGS (:mod:`flops_fit.analysis.lbfgs`).

Parameter vectors are ordered ``theta = (a, b, e, alpha, beta)``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from flops_fit.analysis.common import bootstrap_spread, fit_power_law, jfloat, percentile_interval, resample_counts
from flops_fit.analysis.diagnostics import Diagnostics
from flops_fit.analysis.lbfgs import STATUS_TEXT, minimize_batched
from flops_fit.law import FIELDS, ChinchillaLaw

PARAM_ORDER = ("a", "b", "e", "alpha", "beta")

# Stopping tests for the L-BFGS runs. The summed Huber objective is ~1e-3 on typical data, so
# scipy's default objective test (change <= 2.2e-9 * max(|f|, 1)) is effectively absolute and
# stops bootstrap refits near their start point; the test here is relative to f itself.
TOL = {"ftol": 1e-10, "gtol": 1e-9, "f_floor": 1e-12}


def default_grid() -> np.ndarray:
    """The 4500-start grid: alpha, beta in {0, .5, .., 2}, e in {-1, -.5, .., 1}, a, b in {0, 5, .., 25}."""
    ab = np.arange(0.0, 2.01, 0.5)
    es = np.arange(-1.0, 1.01, 0.5)
    ls = np.arange(0.0, 25.01, 5.0)
    rows = [(a, b, e, al, be) for al, be, e, a, b in itertools.product(ab, ab, es, ls, ls)]
    return np.asarray(rows, dtype=float)


def predict_log_loss(theta, logN, logD):
    """log L for parameter rows ``theta`` (..., 5) at points (n,): returns (..., n)."""
    theta = np.asarray(theta, dtype=float)
    a, b, e, al, be = (theta[..., i, None] for i in range(5))
    t1 = a - al * logN
    t2 = b - be * logD
    t3 = np.broadcast_to(e, t1.shape)
    return np.logaddexp(np.logaddexp(t1, t2), t3)


def predict_loss(params, N, D):
    """L(N, D) from a :class:`ChinchillaLaw` or a mapping with E, A, B, alpha, beta (scalars or
    arrays that broadcast)."""
    return _law(params).loss(N, D)


def _law(params) -> ChinchillaLaw:
    return params if isinstance(params, ChinchillaLaw) else ChinchillaLaw.from_mapping(params)


def make_objective(logN, logD, logL, W, delta, problem_rows):
    """Summed weighted Huber objective and its analytic gradient, batched.

    ``W`` is (R, n) weights (one row per replicate); ``problem_rows[i]`` says which row of W
    problem ``i`` uses. Returns ``fun(X, idx) -> (f, G)`` for :func:`minimize_batched`.

    The rows are processed in cache-sized chunks with in-place arithmetic. The log-sum-exp is
    stabilised by a per-row shift computed from the end points of log N and log D (each term
    is linear in them), so no (rows x points) maximum is needed.
    """
    logN = np.ascontiguousarray(logN, dtype=float)
    logD = np.ascontiguousarray(logD, dtype=float)
    logL = np.ascontiguousarray(logL, dtype=float)
    W = np.atleast_2d(np.asarray(W, dtype=float))
    n = logN.size
    ones_N = np.stack([np.ones_like(logN), logN], axis=1)  # (n, 2)
    ones_D = np.stack([np.ones_like(logD), logD], axis=1)
    nmin, nmax = logN.min(), logN.max()
    dmin, dmax = logD.min(), logD.max()
    single = W.shape[0] == 1
    w0 = W[0]
    unit = single and bool(np.all(w0 == 1.0))
    problem_rows = np.asarray(problem_rows)
    chunk = max(1, 120_000 // max(n, 1))
    half = 0.5

    def fun(X, idx):
        k = X.shape[0]
        f = np.empty(k)
        G = np.empty((k, 5))
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            for i in range(0, k, chunk):
                j = slice(i, i + chunk)
                x = X[j]
                a, b, e, al, be = x[:, 0], x[:, 1], x[:, 2], x[:, 3], x[:, 4]
                m1 = a - np.minimum(al * nmin, al * nmax)
                m2 = b - np.minimum(be * dmin, be * dmax)
                m = np.maximum(np.maximum(m1, m2), e)
                t1 = np.multiply.outer(-al, logN)
                t1 += (a - m)[:, None]
                np.exp(t1, out=t1)
                t2 = np.multiply.outer(-be, logD)
                t2 += (b - m)[:, None]
                np.exp(t2, out=t2)
                e3 = np.exp(e - m)
                s = t1 + t2
                s += e3[:, None]
                r = np.log(s)
                np.subtract(logL, r, out=r)
                r -= m[:, None]  # residual log L - prediction
                h = np.abs(r)
                c = np.minimum(h, delta)
                c *= half
                h -= c
                c += c
                h *= c  # Huber: 0.5 r^2 inside delta, delta (|r| - delta/2) outside
                np.clip(r, -delta, delta, out=r)  # Huber derivative
                if unit:
                    f[j] = h.sum(axis=1)
                elif single:
                    f[j] = h @ w0
                    r *= w0
                else:
                    w = W[problem_rows[idx[j]]]
                    f[j] = np.einsum("ij,ij->i", h, w)
                    r *= w
                r /= s
                G[j, 2] = -e3 * r.sum(axis=1)
                t1 *= r
                t2 *= r
                g1 = t1 @ ones_N
                g2 = t2 @ ones_D
                G[j, 0] = -g1[:, 0]
                G[j, 3] = g1[:, 1]
                G[j, 1] = -g2[:, 0]
                G[j, 4] = g2[:, 1]
        return f, G

    return fun


def theta_to_params(theta) -> dict:
    theta = np.asarray(theta, dtype=float)
    a, b, e, al, be = (theta[..., i] for i in range(5))
    with np.errstate(over="ignore"):
        out = {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": al, "beta": be}
    law = ChinchillaLaw(**out)
    out["a"], out["b"] = law.a, law.b
    return out


def exponents(alpha, beta):
    """Closed-form allocation exponents under C = 6ND: a = beta/(alpha+beta), b = alpha/(alpha+beta)."""
    law = ChinchillaLaw(np.nan, np.nan, np.nan, np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float))
    return law.a, law.b


def _fit_core(logN, logD, logL, W, starts, delta, max_iter, tol=None):
    """Run every start of every replicate; return per-replicate best theta/objective/status."""
    W = np.atleast_2d(W)
    R = W.shape[0]
    starts = np.asarray(starts, dtype=float)
    if starts.ndim == 2:  # the same starts for every replicate
        K = starts.shape[0]
        X0 = np.broadcast_to(starts, (R, K, 5)).reshape(R * K, 5)
    else:
        K = starts.shape[1]
        X0 = starts.reshape(R * K, 5)
    rows = np.repeat(np.arange(R), K)
    fun = make_objective(logN, logD, logL, W, delta, rows)
    res = minimize_batched(fun, X0, max_iter=max_iter, **(tol or {}))
    f = np.where(np.isfinite(res.f), res.f, np.inf).reshape(R, K)
    best = np.argmin(f, axis=1)
    ar = np.arange(R)
    theta = res.x.reshape(R, K, 5)[ar, best]
    obj = f[ar, best]
    status = res.status.reshape(R, K)[ar, best]
    conv = res.converged.reshape(R, K)[ar, best]
    return theta, obj, status, conv, res, f


def fit_parametric(N, D, L, weights=None, delta: float = 1e-3, starts=None, max_iter: int = 1000,
                   tol: dict | None = None) -> dict:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta by the Chinchilla recipe (Huber on log L, L-BFGS grid).

    ``weights``: None, an (n,) vector, or an (R, n) matrix of per-replicate weights (bootstrap
    resample counts), in which case every returned parameter is an (R,) array.
    ``starts``: (K, 5) rows of ``(a, b, e, alpha, beta)`` (default: the 4500-point grid) or
    (R, K, 5) per replicate.

    Returns a dict with E, A, B, alpha, beta, a, b, objective, converged, status, n_starts,
    theta, plus (single fit only) ``optima``: distinct local optima, best first, useful as
    starts for refits.
    """
    N = np.asarray(N, dtype=float).ravel()
    D = np.asarray(D, dtype=float).ravel()
    L = np.asarray(L, dtype=float).ravel()
    if not (N.shape == D.shape == L.shape):
        raise ValueError("N, D, L must have the same length")
    if np.any(~(N > 0)) or np.any(~(D > 0)) or np.any(~(L > 0)):
        raise ValueError("N, D and L must be positive and finite")
    n = N.size
    if weights is None:
        W = np.ones((1, n))
        batched = False
    else:
        W = np.asarray(weights, dtype=float)
        batched = W.ndim == 2
        W = np.atleast_2d(W)
        if W.shape[1] != n:
            raise ValueError("weights must have one column per point")
    if starts is None:
        starts = default_grid()
    starts = np.asarray(starts, dtype=float)
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    theta, obj, status, conv, res, fmat = _fit_core(logN, logD, logL, W, starts, delta, max_iter,
                                                    TOL if tol is None else tol)
    p = theta_to_params(theta)
    out = {k: (v if batched else float(v[0])) for k, v in p.items()}
    out["theta"] = theta if batched else theta[0]
    out["objective"] = obj if batched else float(obj[0])
    out["converged"] = conv if batched else bool(conv[0])
    out["status"] = status if batched else STATUS_TEXT[int(status[0])]
    out["n_starts"] = int(starts.shape[-2])
    out["n_starts_converged"] = (
        res.converged.reshape(W.shape[0], -1).sum(axis=1) if batched else int(res.converged.sum())
    )
    if not batched:
        out["optima"] = _distinct_optima(res.x, fmat[0])
    return out


def _distinct_optima(X, f, k: int = 8) -> np.ndarray:
    order = np.argsort(f)
    kept = []
    for i in order:
        if not np.isfinite(f[i]):
            break
        x = X[i]
        if all(np.max(np.abs(x - y)) > 1e-2 for y in kept):
            kept.append(x)
        if len(kept) >= k:
            break
    return np.asarray(kept)


def bootstrap_parametric(N, D, L, *, fit: dict | None = None, n_boot: int = 1000, seed: int = 0,
                         counts=None, delta: float = 1e-3, n_extra_starts: int = 4,
                         max_iter: int = 1000, progress: bool = False) -> dict:
    """Refit on ``n_boot`` resamples of the points; all replicates advance together.

    Each replicate starts from the full-data best solution plus up to ``n_extra_starts`` other
    distinct local optima of the full fit. Returns arrays of E, A, B, alpha, beta, a, b (one
    per replicate), ``converged``, and the resample ``counts``.
    """
    N = np.asarray(N, dtype=float).ravel()
    if fit is None:
        fit = fit_parametric(N, D, L, delta=delta)
    if counts is None:
        counts = resample_counts(N.size, n_boot, seed)
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    starts = np.asarray(fit.get("optima", np.atleast_2d(fit["theta"])))[: 1 + n_extra_starts]
    bar = _bar(progress, counts.shape[0], "bootstrap (parametric)")
    chunk = max(1, min(counts.shape[0], 2000 // max(1, starts.shape[0])))
    parts = []
    for i in range(0, counts.shape[0], chunk):
        parts.append(fit_parametric(N, D, L, weights=counts[i:i + chunk], delta=delta, starts=starts,
                                    max_iter=max_iter))
        if bar is not None:
            bar.update(min(chunk, counts.shape[0] - i))
    if bar is not None:
        bar.close()
    out = {k: np.concatenate([np.atleast_1d(p[k]) for p in parts]) for k in
           ("E", "A", "B", "alpha", "beta", "a", "b", "objective", "converged")}
    out["theta"] = np.concatenate([p["theta"] for p in parts])
    out["counts"] = counts
    return out


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, leave=False)


# ---------------------------------------------------------------------------------------------
# compute-optimal allocation


def optimal_allocation(params, C, fpt=None, *, bounds=(1e3, 1e16)):
    """N_opt(C), D_opt(C) minimising L(N, D) subject to C = fpt(N) * D (see
    :meth:`ChinchillaLaw.allocation`): closed form when ``fpt`` is None (C = 6ND), else numerical.
    ``params`` (a law or a mapping) may hold scalars or (R,) arrays; ``C`` broadcasts against them
    (pass ``C[None, :]`` with ``(R, 1)`` params for a replicate x budget table).
    """
    return _law(params).allocation(C, fpt, bounds=bounds)


# ---------------------------------------------------------------------------------------------
# approach 3 on a sweep

MIN_PARAMETRIC_RUNS = 6


@dataclass
class ParametricFit:
    """Approach 3's result: the fitted surface, its allocation exponents and intervals."""

    status: str
    reason: str | None = None
    law: ChinchillaLaw | None = None
    objective: float | None = None
    converged: bool = False
    n_starts: int = 0
    n_starts_converged: int = 0
    optimizer: str = ""
    huber_delta: float = 1e-3
    objective_kind: str = "sse"  # which objective was minimised (see varpro.OBJECTIVES)
    engine: str = "vp"
    a: float | None = None
    b: float | None = None
    exponents: str = ""  # how a and b were obtained
    k_N: float | None = None
    k_D: float | None = None
    intervals: dict = field(default_factory=dict)  # {E, A, B, alpha, beta, a, b} -> [lo, hi] | None
    bootstrap_converged_fraction: float | None = None
    fpt_alloc: object = field(default=None, repr=False)  # None under C = 6ND
    raw: dict | None = field(default=None, repr=False)  # fit_parametric's result
    replicates: dict | None = field(default=None, repr=False)  # bootstrap_parametric's result

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def a_ci(self):
        return self.intervals.get("a")

    @property
    def b_ci(self):
        return self.intervals.get("b")

    def allocation(self, C):
        return self.law.allocation(C, self.fpt_alloc)

    def replicate_law(self) -> ChinchillaLaw | None:
        """The bootstrap laws as one law of (R, 1) columns, or None."""
        if self.replicates is None:
            return None
        return ChinchillaLaw.from_mapping(self.replicates, index=(slice(None), None))

    def allocation_replicates(self, C):
        law = self.replicate_law()
        if law is None:
            return None, None
        return law.allocation(C[None, :], self.fpt_alloc)

    def residuals(self, sweep) -> list[dict]:
        pred = self.law.loss(sweep.N, sweep.D)
        N, D, L = sweep.N, sweep.D, sweep.L
        return [{"id": sweep.ids[i], "params": float(N[i]), "tokens": float(D[i]), "loss": float(L[i]),
                 "predicted": float(pred[i]), "residual": float(L[i] - pred[i]),
                 "log_residual": float(np.log(L[i] / pred[i]))} for i in range(sweep.n)]

    def to_json(self) -> dict:
        if not self.ok:
            return {"status": self.status, "reason": self.reason}
        out = {"status": "ok", **self.law.to_json(), "objective": self.objective, "converged": self.converged,
               "n_starts": self.n_starts, "n_starts_converged": self.n_starts_converged,
               "optimizer": self.optimizer, "huber_delta": self.huber_delta, "objective_kind": self.objective_kind,
               "engine": self.engine, "a": self.a, "b": self.b,
               "exponents": self.exponents, "k_N": self.k_N, "k_D": self.k_D}
        for k in (*FIELDS, "a", "b"):
            out[f"{k}_ci"] = self.intervals.get(k)
        if self.bootstrap_converged_fraction is not None:
            out["bootstrap_converged_fraction"] = self.bootstrap_converged_fraction
        if self.replicates is not None:
            out["bootstrap"] = bootstrap_spread(self.replicates["a"], self.replicates["b"])
        return out


ENGINES = ("vp", "lbfgs")


def parametric_approach(sweep, counts, ci: float, diags: Diagnostics, *, huber_delta: float = 1e-3,
                        objective: str = "sse", engine: str = "vp", progress: bool = False) -> ParametricFit:
    """Approach 3 on every run of ``sweep``; ``counts`` (R, n) resample counts or None.

    ``engine`` "vp": variable projection (exhaustive (alpha, beta) grid, exact-gradient polish),
    any ``objective`` of :data:`flops_fit.analysis.varpro.OBJECTIVES`; "lbfgs": the 4500-start
    5-D L-BFGS of Chinchilla's recipe (objectives huber_log and sse_log only)."""
    N, D, L = sweep.N, sweep.D, sweep.L
    n = sweep.n
    if n < MIN_PARAMETRIC_RUNS or np.unique(N).size < 2 or np.unique(D).size < 2:
        reason = (f"needs at least {MIN_PARAMETRIC_RUNS} runs spanning 2+ sizes and token counts "
                  f"(have {n} runs, {np.unique(N).size} sizes)")
        diags.add("info", "parametric_skipped", "parametric fit skipped: " + reason)
        return ParametricFit("skipped", reason)
    fpt_alloc = sweep.fpt.for_allocation
    span = sweep.budgets if sweep.isoflop_groups.size else sweep.C
    pf = _fit(N, D, L, None, objective, engine, huber_delta)
    law = ChinchillaLaw.from_mapping(pf)
    why = law.degenerate()
    if why is not None:  # no allocation to follow: the table falls back to another approach, or says why not
        diags.add("warning", "parametric_degenerate", "parametric fit: " + why)
        return ParametricFit("degenerate", why)
    a_p, b_p, how = allocation_exponents(law, fpt_alloc, span)
    status = pf["status"] if engine == "lbfgs" else ("converged" if pf["converged"] else "not converged")
    fit = ParametricFit("ok", law=law, objective=float(pf["objective"]), converged=bool(pf["converged"]),
                        n_starts=pf["n_starts"], n_starts_converged=int(pf.get("n_starts_converged", 0)),
                        optimizer=status, huber_delta=float(huber_delta), a=jfloat(a_p), b=jfloat(b_p),
                        exponents=how, fpt_alloc=fpt_alloc, raw=pf, objective_kind=objective, engine=engine,
                        **allocation_prefactors(law, fpt_alloc, span))
    if not pf["converged"]:
        diags.add("warning", "parametric_not_converged",
                  f"the parametric fit's best start did not converge ({status}); its parameters may be inexact")
    if not (0 < pf["alpha"] < 5 and 0 < pf["beta"] < 5):
        diags.add("warning", "parametric_degenerate",
                  f"parametric exponents alpha={pf['alpha']:.3g}, beta={pf['beta']:.3g} are implausible; "
                  f"the runs may not span enough sizes or token counts")
    if counts is not None:
        pb = _bootstrap(N, D, L, pf, counts, objective, engine, huber_delta, progress)
        pb["a"], pb["b"], _ = allocation_exponents(ChinchillaLaw.from_mapping(pb), fpt_alloc, span)
        fit.intervals = {k: percentile_interval(pb[k], ci) for k in (*FIELDS, "a", "b")}
        nc = float(np.mean(pb["converged"]))
        fit.bootstrap_converged_fraction = nc
        if nc < 0.9:
            diags.add("info", "parametric_bootstrap_not_converged",
                      f"{(1 - nc):.0%} of the parametric bootstrap refits stopped before converging")
        fit.replicates = pb
    return fit


def _fit(N, D, L, weights, objective, engine, delta):
    from flops_fit.analysis.varpro import check_objective, fit_surface

    check_objective(objective)
    if engine == "vp":
        return fit_surface(N, D, L, objective=objective, delta=delta, weights=weights)
    if engine != "lbfgs":
        from flops_fit.errors import FlopsFitError

        raise FlopsFitError(f"engine={engine!r} is not one of {', '.join(ENGINES)}")
    if objective not in ("huber_log", "sse_log"):
        from flops_fit.errors import FlopsFitError

        raise FlopsFitError(f"engine=lbfgs fits objective=huber_log or sse_log, not {objective!r}; "
                            f"use engine=vp for objectives on L")
    return fit_parametric(N, D, L, weights=weights, delta=delta if objective == "huber_log" else np.inf)


def _bootstrap(N, D, L, pf, counts, objective, engine, delta, progress):
    if engine == "lbfgs":
        return bootstrap_parametric(N, D, L, fit=pf, counts=counts, progress=progress,
                                    delta=delta if objective == "huber_log" else np.inf)
    from flops_fit.analysis.varpro import LOG_OBJECTIVES, fit_surface

    if objective in LOG_OBJECTIVES:
        # refits start at the full-data optimum, so a local 5-D L-BFGS on the same objective (exact
        # gradients, all replicates batched) is all they need: ~1 s per 1000 refits of 240 runs
        start = {"theta": np.array([np.log(pf["A"]), np.log(pf["B"]), np.log(max(pf["E"], 1e-12)), pf["alpha"],
                                    pf["beta"]]), "optima": None}
        start["optima"] = start["theta"][None, :]
        return bootstrap_parametric(N, D, L, fit=start, counts=counts, progress=progress, n_extra_starts=0,
                                    delta=delta if objective == "huber_log" else np.inf)
    out = fit_surface(N, D, L, objective=objective, delta=delta, weights=counts, starts=pf["optima"][:2])
    out["counts"] = counts
    return out


def allocation_exponents(law: ChinchillaLaw, fpt_alloc, budget_span):
    """a, b of a law (scalar or array fields): closed form under C = 6ND, else the log-log slope
    of the numerical allocation over the data's budget range. Returns (a, b, how)."""
    if fpt_alloc is None:
        return np.asarray(law.a), np.asarray(law.b), "closed form beta/(alpha+beta)"
    span = np.asarray(budget_span, dtype=float)
    Cg = np.logspace(np.log10(span.min()), np.log10(span.max()) + 1e-9, 9)
    if Cg[-1] <= Cg[0] * 1.01:
        Cg = np.logspace(np.log10(span.min()) - 1, np.log10(span.min()) + 1, 9)
    cols = ChinchillaLaw(*(np.asarray(getattr(law, k), dtype=float)[..., None] for k in FIELDS))
    Nn, Dn = cols.allocation(Cg, fpt_alloc)
    _, a = fit_power_law(Cg, Nn)
    _, b = fit_power_law(Cg, Dn)
    if np.ndim(law.alpha) == 0:
        a, b = float(np.ravel(a)[0]), float(np.ravel(b)[0])
    return a, b, "slope of the numerical allocation over the sampled budgets"


def allocation_prefactors(law: ChinchillaLaw, fpt_alloc, budget_span) -> dict:
    """k_N, k_D of the allocation written as N_opt = k_N C^a, D_opt = k_D C^b: exact under
    C = 6ND (the law's own prefactors), else fitted over the budget range."""
    if fpt_alloc is None:
        return {"k_N": float(law.k_N()), "k_D": float(law.k_D())}
    span = np.asarray(budget_span, dtype=float)
    Cg = np.logspace(np.log10(span.min()) - 0.5, np.log10(span.max()) + 0.5, 9)
    Nn, Dn = law.allocation(Cg, fpt_alloc)
    k_N, _ = fit_power_law(Cg, np.asarray(Nn, dtype=float))
    k_D, _ = fit_power_law(Cg, np.asarray(Dn, dtype=float))
    return {"k_N": float(np.ravel(k_N)[0]), "k_D": float(np.ravel(k_D)[0])}
