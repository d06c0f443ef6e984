"""The data-constrained scaling law of Muennighoff et al. 2023 ("Scaling Data-Constrained Language
Models", arXiv 2305.16264) as one value object, its fit, and the answers it gives.

With U unique tokens seen D >= U times in all, and a Chinchilla surface L(N, D) = E + A/N^alpha + B/D^beta,
repeated data and excess parameters are worth less than new ones:

    R_D = D / U - 1                                 repetitions of the unique data
    D'  = U + U R_D* (1 - exp(-R_D / R_D*))         effective data
    U_N = min(N, N_opt(U))                          N_opt(U): the compute-optimal size whose optimal data is U
    R_N = N / U_N - 1                               "repeated" parameters
    N'  = U_N + U_N R_N* (1 - exp(-R_N / R_N*))     effective parameters
    L(N, D, U) = E + A / N'^alpha + B / D'^beta

R_D* is the number of repetitions after which repeated data has lost 1 - 1/e of its value; a token
seen for the fifth time is still worth exp(-4/R_D*) of a new one. Muennighoff et al. fitted
R_D* = 15.39 and R_N* = 5.31 on 182 C4 runs with (E, A, B, alpha, beta) held fixed; :func:`fit_data_constrained`
refits them the same way (summed Huber, delta 1e-3, on log loss) with bootstrap intervals.

Every formula lives in :class:`DataConstrainedLaw`; fitting code is pure functions over arrays (numpy,
scipy), with no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flops_fit.analysis.common import argmin_log
from flops_fit.errors import FlopsFitError
from flops_fit.law import REPEAT_FREE_EPOCHS, SIX_ND, ChinchillaLaw

# Muennighoff et al. 2023, datablations README "Parametric Fit" (log parametrisation a, b, e, alpha, beta,
# rd_star, rn_star = 6.255414, 7.3049974, 0.6254804, 0.3526596, 0.3526596, 15.387756, 5.309743): C4.
PUBLISHED_SURFACE = ChinchillaLaw(E=float(np.exp(0.6254804)), A=float(np.exp(6.255414)), B=float(np.exp(7.3049974)),
                                  alpha=0.3526596, beta=0.3526596)
PUBLISHED_R_D_STAR = 15.387756
PUBLISHED_R_N_STAR = 5.309743
# a run planned for one epoch trains whole batches, a little more than U tokens (25.6K for 25K at 1024 a step)
SINGLE_EPOCH_SLACK = 1.05


@dataclass
class DataConstrainedLaw:
    """L(N, D, U) of Muennighoff et al.: a Chinchilla surface plus the decay constants R_D*, R_N*.

    Defaults: the published C4 fit. Every method broadcasts over its arguments."""

    surface: ChinchillaLaw = field(default_factory=lambda: ChinchillaLaw(**PUBLISHED_SURFACE.to_json()))
    R_D_star: float = PUBLISHED_R_D_STAR
    R_N_star: float = PUBLISHED_R_N_STAR

    # ------------------------------------------------------------------ effective data and parameters

    def repetitions(self, D, U):
        """R_D = D / U - 1, floored at 0 (D <= U repeats nothing)."""
        return np.maximum(np.asarray(D, dtype=float) / np.asarray(U, dtype=float) - 1.0, 0.0)

    def effective_data(self, D, U):
        """D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)), with U_D = min(U, D)."""
        D = np.asarray(D, dtype=float)
        UD = np.minimum(np.asarray(U, dtype=float), D)
        return _decayed(UD, self.repetitions(D, UD), self.R_D_star)

    def unique_params(self, N, U):
        """U_N = min(N, N_opt(U)): the parameters that U unique tokens can use in full."""
        return np.minimum(np.asarray(N, dtype=float), self.surface.n_opt_for_tokens(U))

    def effective_params(self, N, U):
        """N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)), with R_N = N / U_N - 1."""
        N = np.asarray(N, dtype=float)
        UN = self.unique_params(N, U)
        return _decayed(UN, np.maximum(N / UN - 1.0, 0.0), self.R_N_star)

    def loss(self, N, D, U):
        """L(N, D, U) = E + A / N'^alpha + B / D'^beta; with U >= D it is the surface's L(N, D)."""
        s = self.surface
        return s.E + s.A / self.effective_params(N, U) ** s.alpha + s.B / self.effective_data(D, U) ** s.beta

    def repeat_value(self, epochs):
        """What the last token seen at ``epochs`` epochs is worth against a new one: exp(-R_D / R_D*)."""
        return np.exp(-np.maximum(np.asarray(epochs, dtype=float) - 1.0, 0.0) / self.R_D_star)

    # ------------------------------------------------------------------ the optimum for a budget and U

    def optimum(self, C, U, flops_per_token_coeff: float = SIX_ND) -> "DataConstrainedOptimum":
        """The N, D = C / (k N) that minimise L(N, D, U) at C FLOPs, with epochs D / U and the loss;
        beside it the unlimited-data (Chinchilla) optimum at the same C."""
        C, U, k = float(C), float(U), float(flops_per_token_coeff)
        if not (C > 0 and U > 0):
            raise FlopsFitError(f"the data-constrained optimum needs a positive budget and unique_tokens (got C={C:g}, U={U:g})")
        s = self.surface
        n0, d0 = float(s.n_opt(C, k)), float(s.d_opt(C, k))
        x = argmin_log(lambda lx: self.loss(np.exp(lx), C / (k * np.exp(lx)), U), np.log(n0))
        N = float(np.exp(x))
        D = C / (k * N)
        return DataConstrainedOptimum(budget=C, unique_tokens=U, params=N, tokens=D, epochs=D / U,
                                      loss=float(self.loss(N, D, U)), params_unlimited=n0, tokens_unlimited=d0,
                                      loss_unlimited=float(s.loss(n0, d0)))

    def compute_for_loss(self, loss, U, flops_per_token_coeff: float = SIX_ND, *, hi: float = 1e40) -> float:
        """The least budget whose data-constrained optimum with U unique tokens reaches ``loss`` (inf if none)."""
        from scipy.optimize import brentq

        k = float(flops_per_token_coeff)
        f = lambda lc: self.optimum(np.exp(lc), U, k).loss - loss  # noqa: E731  (decreasing in C)
        lo_c, hi_c = 0.0, float(np.log(hi))
        if f(hi_c) > 0:
            return float("inf")
        if f(lo_c) <= 0:
            return 1.0
        return float(np.exp(brentq(f, lo_c, hi_c, xtol=1e-7)))

    def doubling_saves(self, C, U, flops_per_token_coeff: float = SIX_ND) -> float:
        """The fraction of C that twice the unique data would save for the same loss: 1 - C2 / C, where the
        optimum with 2U unique tokens reaches the loss of C with U at C2 FLOPs."""
        target = self.optimum(C, U, flops_per_token_coeff).loss
        C2 = self.compute_for_loss(target, 2.0 * float(U), flops_per_token_coeff, hi=float(C))
        return float(max(0.0, 1.0 - C2 / float(C))) if np.isfinite(C2) else 0.0

    def to_json(self) -> dict:
        return {"R_D_star": float(self.R_D_star), "R_N_star": float(self.R_N_star), **self.surface.to_json()}


def _decayed(base, reps, star):
    """base + base R* (1 - exp(-R / R*)): the effective amount of something repeated R times."""
    star = np.asarray(star, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return base + base * star * -np.expm1(-reps / star)


@dataclass
class DataConstrainedOptimum:
    """The answer at one budget for U unique tokens, and what the limit costs."""

    budget: float
    unique_tokens: float
    params: float
    tokens: float
    epochs: float
    loss: float
    params_unlimited: float
    tokens_unlimited: float
    loss_unlimited: float
    doubling_saves: float | None = None  # fraction of the budget that 2U would save for the same loss

    @property
    def loss_cost(self) -> float:
        """How much higher the loss is than with unlimited data at the same budget."""
        return self.loss - self.loss_unlimited

    def to_json(self) -> dict:
        return {"budget": self.budget, "unique_tokens": self.unique_tokens, "params": self.params,
                "tokens": self.tokens, "epochs": self.epochs, "loss": self.loss,
                "params_unlimited": self.params_unlimited, "tokens_unlimited": self.tokens_unlimited,
                "loss_unlimited": self.loss_unlimited, "loss_cost": self.loss_cost,
                "doubling_saves": self.doubling_saves}


# ---------------------------------------------------------------------------------------------- the fit


def dc_objective(stars, N, D, U, loss, surface: ChinchillaLaw, delta: float = 1e-3):
    """Summed Huber(delta) of log predicted - log observed loss, for stars = (R_D*, R_N*) (arrays broadcast)."""
    from flops_fit.analysis.varpro import _rho_psi  # the fits' one Huber loss

    law = DataConstrainedLaw(surface, np.asarray(stars[0])[..., None], np.asarray(stars[1])[..., None])
    r = np.log(law.loss(N, D, U)) - np.log(loss)
    return _rho_psi(r, delta)[0].sum(axis=-1)


@dataclass
class DataConstrainedFit:
    """R_D*, R_N* fitted on runs that repeat data, over a fixed surface; see :func:`fit_data_constrained`."""

    status: str
    reason: str | None
    R_D_star: float | None
    R_N_star: float | None
    surface: ChinchillaLaw
    R_D_star_ci: list | None = None
    R_N_star_ci: list | None = None
    fixed: tuple = ()
    objective: float | None = None
    r2: float | None = None
    n_runs: int = 0
    n_repeated: int = 0
    n_excess_params: int = 0
    huber_delta: float = 1e-3
    n_bootstrap: int = 0
    surface_source: str = "given"  # the runs the fixed surface was fitted on
    # constants fitted far beyond the repetitions the runs reach (R* > 10 x the largest R): the runs show no
    # measurable decay, so the value is only a lower bound and its interval says little
    lower_bound_only: tuple = ()
    # constants driven to the fit's lower bound (R* -> 0: a repeat worth nothing): the repeated runs are worse
    # than the surface predicts for reasons the law cannot separate from repetition (the surface's own error at
    # their sizes, say); ff-analyze then reads the table with the published constants
    at_lower_bound: tuple = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def law(self) -> DataConstrainedLaw | None:
        return DataConstrainedLaw(self.surface, self.R_D_star, self.R_N_star) if self.ok else None

    def to_json(self) -> dict:
        return {"status": self.status, "reason": self.reason, "R_D_star": self.R_D_star, "R_N_star": self.R_N_star,
                "R_D_star_ci": self.R_D_star_ci, "R_N_star_ci": self.R_N_star_ci, "fixed": list(self.fixed),
                "objective": self.objective, "r2": self.r2, "n_runs": self.n_runs, "n_repeated": self.n_repeated,
                "n_excess_params": self.n_excess_params, "huber_delta": self.huber_delta,
                "n_bootstrap": self.n_bootstrap, "surface": self.surface.to_json(),
                "surface_source": self.surface_source, "lower_bound_only": list(self.lower_bound_only),
                "at_lower_bound": list(self.at_lower_bound)}


def fit_data_constrained(params, tokens, unique_tokens, loss, surface: ChinchillaLaw, *, huber_delta: float = 1e-3,
                         n_bootstrap: int = 0, seed: int = 0, ci: float = 0.95) -> DataConstrainedFit:
    """Fit R_D* and R_N* with the surface (E, A, B, alpha, beta) held fixed, as Muennighoff et al. did.

    R_D* is fitted only if some run repeats data (D > U), R_N* only if some run has more parameters than
    its unique data can use (N > N_opt(U)); an unidentified constant is held at the published value and
    listed in ``fixed``. Intervals: percentile bootstrap over runs (``n_bootstrap`` resamples)."""
    N, D, U, L = (np.asarray(v, dtype=float).ravel() for v in (params, tokens, unique_tokens, loss))
    ok = np.isfinite(N) & np.isfinite(D) & np.isfinite(U) & np.isfinite(L) & (N > 0) & (D > 0) & (U > 0) & (L > 0)
    N, D, U, L = N[ok], D[ok], U[ok], L[ok]
    base = DataConstrainedLaw(surface)
    repeated = D > U * SINGLE_EPOCH_SLACK  # a one-epoch run's last partial batch is not a repeat
    excess = N > base.unique_params(N, U) * (1 + 1e-9)
    out = dict(surface=surface, n_runs=int(N.size), n_repeated=int(repeated.sum()),
               n_excess_params=int(excess.sum()), huber_delta=huber_delta)
    if not repeated.any():
        return DataConstrainedFit("skipped", "no run repeats data (every run's tokens <= its unique_tokens)",
                                  None, None, **out)
    free = [True, bool(excess.any())]
    fixed = () if free[1] else ("R_N_star",)
    x, obj = _fit_stars(N, D, U, L, surface, huber_delta, free)
    law = DataConstrainedLaw(surface, x[0], x[1])
    pred = law.loss(N, D, U)
    r2 = float(1.0 - np.sum((L - pred) ** 2) / np.sum((L - L.mean()) ** 2)) if N.size > 1 else None
    cis = [None, None]
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        reps = []
        for _ in range(int(n_bootstrap)):
            idx = rng.integers(0, N.size, N.size)
            if not repeated[idx].any():
                continue
            xb, _ = _fit_stars(N[idx], D[idx], U[idx], L[idx], surface, huber_delta,
                               [True, free[1] and bool(excess[idx].any())], starts=[x])
            reps.append(xb)
        if reps:
            reps = np.asarray(reps)
            q = [(1 - ci) / 2 * 100, (1 + ci) / 2 * 100]
            cis = [list(map(float, np.percentile(reps[:, j], q))) if free[j] else None for j in range(2)]
    most_d = float(np.max(base.repetitions(D, U)))
    most_n = float(np.max(N / base.unique_params(N, U) - 1.0))
    loose = tuple(name for name, v, most, f in (("R_D_star", x[0], most_d, free[0]), ("R_N_star", x[1], most_n, free[1]))
                  if f and v > 10.0 * max(most, 1e-12))
    return DataConstrainedFit("ok", None, float(x[0]), float(x[1]), R_D_star_ci=cis[0], R_N_star_ci=cis[1],
                              fixed=fixed, objective=float(obj), r2=r2, n_bootstrap=int(n_bootstrap),
                              lower_bound_only=loose, at_lower_bound=tuple(
                                  name for name, v, f in (("R_D_star", x[0], free[0]), ("R_N_star", x[1], free[1]))
                                  if f and v <= 1.01 * _STAR_BOUNDS[0]), **out)


# Muennighoff et al.'s starts: R_D*, R_N* each from linspace(0, 20, 4) less the degenerate 0, optimised in the
# constants themselves (not their logs). The Huber objective has more than one basin along a ridge where a larger
# R_D* trades against a smaller R_N*: on the published 182 runs these starts reach (15.37, 5.32), while starts far
# outside them find (95, 1.7) with a 0.13% smaller objective. The bootstrap interval shows that ridge.
_STAR_STARTS = (20.0 / 3.0, 40.0 / 3.0, 20.0)
_STAR_BOUNDS = (1e-2, 1e4)


def _fit_stars(N, D, U, L, surface, delta, free, starts=None):
    """Minimise the summed Huber over the free constants from a grid of starts (L-BFGS-B), keep the best."""
    from scipy.optimize import minimize

    free = np.asarray(free, dtype=bool)
    fixed_val = np.array([PUBLISHED_R_D_STAR, PUBLISHED_R_N_STAR])

    def full(z):
        v = fixed_val.copy()
        v[free] = z
        return v

    f = lambda z: float(np.squeeze(dc_objective(full(z), N, D, U, L, surface, delta)))  # noqa: E731
    nfree = int(free.sum())
    if starts is None:
        starts_z = [np.array(p) for p in np.array(np.meshgrid(*[_STAR_STARTS] * nfree)).reshape(nfree, -1).T]
    else:
        starts_z = [np.asarray(s, dtype=float)[free] for s in starts]
    best = None
    for z0 in starts_z:
        res = minimize(f, z0, method="L-BFGS-B", bounds=[_STAR_BOUNDS] * nfree,
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 500})
        if best is None or res.fun < best.fun:
            best = res
    return full(best.x), best.fun


# ---------------------------------------------------------------------------------------------- the table


def row_coeff(row) -> float:
    """k in C = k N D at a table row (budget / (params x tokens)): the sweep's FLOPs convention there; 6 without."""
    C, N, D = row.get("budget"), row.get("params"), row.get("tokens")
    return float(C) / (float(N) * float(D)) if C and N and D else SIX_ND


def row_answer(law: DataConstrainedLaw | None, row, unique_tokens: float) -> dict:
    """For one table row ({budget, params, tokens, ...}): ``epochs``, the passes over U its D_opt needs, and,
    where they pass 1, ``data_constrained``: the optimum for U at the row's budget (N, D, epochs, loss), its loss
    cost and the budget share 2U would save (None within one epoch, or without a law)."""
    C, D, U = row.get("budget"), row.get("tokens"), float(unique_tokens)
    if not U > 0:
        raise FlopsFitError(f"unique_tokens={unique_tokens} must be a positive number of unique tokens (or samples)")
    out = {"epochs": float(D) / U if D else None, "data_constrained": None}
    if out["epochs"] and out["epochs"] > 1.0 and law is not None and C:
        k = row_coeff(row)
        opt = law.optimum(C, U, k)
        opt.doubling_saves = law.doubling_saves(C, U, k)
        out["data_constrained"] = opt.to_json()
    return out


def table_rows(law: DataConstrainedLaw, rows, unique_tokens: float) -> list[dict]:
    """:func:`row_answer` for every row of a table, each with its budget."""
    return [{"budget": float(r["budget"]), **row_answer(law, r, unique_tokens)} for r in rows if r.get("budget")]


# ---------------------------------------------------------------------------------------------- ff-analyze


def run_unique_units(run) -> float | None:
    """A run record's unique data: ``unique_units`` (ff-train's records) or ``unique_tokens`` (external files)."""
    for key in ("unique_units", "unique_tokens"):
        v = run.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v)
    return None


@dataclass
class DataAnswer:
    """What ff-analyze adds for the data the user has and the model they will serve: the data-constrained fit
    (``fits.data_constrained``), the unique data the table is read for, and extra keys for each table row."""

    fit: DataConstrainedFit | None
    unique_tokens: float | None
    unique_source: str | None  # option | plan | runs
    law_source: str | None  # fitted | published: where the table's R_D*, R_N* come from
    inference_tokens: float | None
    rows: list  # per table row: {epochs, data_constrained, inference} (None where not asked or not known)
    R_D_star: float | None = None
    R_N_star: float | None = None

    def fit_json(self) -> dict:
        return self.fit.to_json() if self.fit is not None else {
            "status": "skipped", "reason": "no run records its unique data (unique_units / a unique_tokens column)"}

    def to_json(self) -> dict:
        return {"unique_tokens": self.unique_tokens, "source": self.unique_source, "law_source": self.law_source,
                "R_D_star": self.R_D_star, "R_N_star": self.R_N_star, "inference_tokens": self.inference_tokens}

    def extend_table(self, table: list) -> None:
        """Add each row's extra keys to analysis.json's table rows (same order as the rows they came from)."""
        for row, extra in zip(table, self.rows):
            row.update({k: v for k, v in extra.items() if v is not None or k == "data_constrained"})


MIN_SINGLE_EPOCH_RUNS = 8  # enough runs that never repeat data to fit the 5-parameter surface on them alone


def single_epoch_surface(N, D, U, L, surface: ChinchillaLaw, *, objective: str = "sse", delta: float = 1e-3):
    """The surface to fit R_D*, R_N* over: refitted on the runs that never repeat data when there are enough
    of them (repeated runs would otherwise bend E, A, B, alpha, beta to absorb what repetition costs, leaving
    nothing for R_D* to measure), else ``surface`` (the sweep's parametric fit). Returns (law, where from)."""
    once = D <= U * SINGLE_EPOCH_SLACK
    if once.sum() < MIN_SINGLE_EPOCH_RUNS or once.all() or np.unique(N[once]).size < 3:
        return surface, "all runs" if once.all() else "all runs (too few single-epoch runs to refit)"
    from flops_fit.analysis.varpro import fit_surface

    res = fit_surface(N[once], D[once], L[once], objective=objective, delta=delta)
    law = ChinchillaLaw(E=float(res["E"]), A=float(res["A"]), B=float(res["B"]), alpha=float(res["alpha"]),
                        beta=float(res["beta"]))
    if law.degenerate() is not None or not all(np.isfinite(v) for v in law.to_json().values()):
        return surface, "all runs (the single-epoch refit was degenerate)"
    return law, f"{int(once.sum())} single-epoch runs"


def data_answer(runs, table_rows, surface: ChinchillaLaw | None, *, plan=None, params_kind: str = "total",
                unique_tokens: float | None = None, inference_tokens: float | None = None, n_bootstrap: int = 0,
                seed: int = 0, ci: float = 0.95, huber_delta: float = 1e-3, objective: str = "sse") -> DataAnswer | None:
    """The data-constrained fit over ``surface`` (the parametric fit) from the runs that record their unique
    data, and for each table row: the epochs its D_opt implies for U, the data-constrained optimum where they
    pass 1, and (``inference_tokens``) the inference-aware optimum for the row's loss. None when there is
    nothing to say (no U anywhere, no inference_tokens)."""
    if unique_tokens is not None and not float(unique_tokens) > 0:
        raise FlopsFitError(f"unique_tokens={unique_tokens} must be a positive number of unique tokens (or samples)")
    if inference_tokens is not None and not float(inference_tokens) >= 0:
        raise FlopsFitError(f"inference_tokens={inference_tokens} must be >= 0 (tokens the model will serve)")
    sweep_surface = surface
    used = [r for r in runs if isinstance(r, dict) and r.get("status", "completed") == "completed"
            and isinstance(r.get("loss"), (int, float)) and np.isfinite(r["loss"]) and r["loss"] > 0]
    with_u = [r for r in used if run_unique_units(r) is not None]
    fit = None
    if with_u and surface is not None:
        pkey = "non_embedding_params" if params_kind == "non_embedding" else "params"
        N, D, Uu, L = (np.array(v, dtype=float) for v in zip(*[(r.get(pkey) or r["params"], r["tokens"],
                                                                 run_unique_units(r), r["loss"]) for r in with_u]))
        surface, surface_source = single_epoch_surface(N, D, Uu, L, surface, objective=objective, delta=huber_delta)
        fit = fit_data_constrained(N, D, Uu, L, surface, huber_delta=huber_delta, n_bootstrap=n_bootstrap,
                                   seed=seed, ci=ci)
        fit.surface_source = surface_source
    elif with_u:
        fit = DataConstrainedFit("skipped", "no parametric surface to fit the data-constrained law on", None, None,
                                 ChinchillaLaw(), n_runs=len(with_u))
    U, source = None, None
    if unique_tokens is not None:
        U, source = float(unique_tokens), "option"
    elif plan and plan.get("unique_units"):
        U, source = float(plan["unique_units"]), "plan"
    elif with_u and len({run_unique_units(r) for r in with_u}) == 1:
        U, source = run_unique_units(with_u[0]), "runs"
    if U is None and fit is None and inference_tokens is None:
        return None
    law, law_source = None, None
    if surface is not None:
        if fit is not None and fit.ok and not fit.at_lower_bound:
            law, law_source = fit.law, "fitted"
        else:  # the published constants over the sweep's own surface (the one its table and predict agree with)
            law, law_source = DataConstrainedLaw(sweep_surface), "published"
    rows = []
    for r in table_rows:
        extra = {"epochs": None, "data_constrained": None, "inference": None}
        if U is not None:
            extra.update(row_answer(law, r, U))
        if inference_tokens is not None and sweep_surface is not None and r.get("loss") is not None:
            try:
                extra["inference"] = row_inference(sweep_surface, r, inference_tokens)
            except FlopsFitError:
                extra["inference"] = None  # the row's loss is below what the surface can reach
        rows.append(extra)
    return DataAnswer(fit=fit, unique_tokens=U, unique_source=source, law_source=law_source,
                      inference_tokens=None if inference_tokens is None else float(inference_tokens), rows=rows,
                      R_D_star=None if law is None else float(law.R_D_star),
                      R_N_star=None if law is None else float(law.R_N_star))


# ---------------------------------------------------------------------------------------------- readers


def law_from_analysis(analysis) -> DataConstrainedLaw | None:
    """The data-constrained law analysis.json's table used: the fitted one (``fits.data_constrained``, over the
    surface refitted on the single-epoch runs), else the published R_D*, R_N* over the sweep's parametric surface
    (no fit, or a constant at its floor); None without a surface."""
    fits = analysis.get("fits") or {}
    dc = fits.get("data_constrained") or {}
    if dc.get("status") == "ok" and not dc.get("at_lower_bound"):
        return DataConstrainedLaw(ChinchillaLaw.from_mapping(dc["surface"]), dc["R_D_star"], dc["R_N_star"])
    par = fits.get("parametric") or {}
    if par.get("status") == "ok":  # no fit, or a constant at its floor: the published ones over the sweep's surface
        return DataConstrainedLaw(ChinchillaLaw.from_mapping(par))
    return None


def row_extras(analysis, row, *, unique_tokens: float | None = None, inference_tokens: float | None = None) -> dict:
    """For one table row (say :func:`~flops_fit.analysis.predict`'s, off the table): ``epochs`` for U (default:
    the analysis's unique data) and, past one epoch, ``data_constrained``; with ``inference_tokens``, the
    ``inference`` optimum for the row's loss over the sweep's parametric surface. Same keys as the table's rows."""
    out: dict = {}
    U = unique_tokens if unique_tokens is not None else (analysis.get("unique_data") or {}).get("unique_tokens")
    C, L = row.get("budget"), row.get("loss")
    if U is not None:
        out.update(row_answer(law_from_analysis(analysis), row, U))
    if inference_tokens is not None:
        par = (analysis.get("fits") or {}).get("parametric") or {}
        if par.get("status") != "ok":
            raise FlopsFitError("inference_tokens= needs the parametric surface L(N, D) (approach 3), which this "
                                "analysis did not fit; see its diagnostics")
        if L is None:
            raise FlopsFitError(f"the row at {C:g} FLOPs has no loss to reach; the inference-aware optimum needs one")
        out["inference"] = row_inference(ChinchillaLaw.from_mapping(par), row, inference_tokens)
    return out


def row_inference(surface: ChinchillaLaw, row, inference_tokens: float) -> dict:
    """The inference-aware optimum (Sardana et al. 2023) for a table row's loss over ``surface``, serving
    ``inference_tokens``; raises :class:`FlopsFitError` when the surface cannot reach the row's loss."""
    from flops_fit.analysis.inference import inference_optimum

    return inference_optimum(surface, float(row["loss"]), float(inference_tokens),
                             flops_per_token_coeff=row_coeff(row)).to_json()


def data_lines(analysis) -> list[str]:
    """ff-analyze's lines on the unique data, repetition and inference (empty when the analysis has none)."""
    from flops_fit.units import fmt_flops, fmt_percent, human

    ud = analysis.get("unique_data")
    if not ud:
        return []
    unit = analysis.get("data_unit") or "tokens"
    out = [""]
    U = ud.get("unique_tokens")
    where = {"option": "unique_tokens=", "plan": "the plan", "runs": "the run records"}.get(ud.get("source"), "")
    out.append(f"unique data: {human(U)} {unit} (from {where})" if U else
               f"unique data: unknown (state it with unique_tokens=<{unit}>)")
    dc = (analysis.get("fits") or {}).get("data_constrained") or {}
    if dc.get("status") == "ok":
        def iv(k):
            ci = dc.get(f"{k}_ci")
            return f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""
        out.append(f"  data-constrained law fitted on {dc['n_runs']} runs ({dc['n_repeated']} repeat data; surface from "
                   f"{dc.get('surface_source')}): R_D* = {dc['R_D_star']:.3g}{iv('R_D_star')}, R_N* = "
                   f"{dc['R_N_star']:.3g}{iv('R_N_star')}" + (f"; held at the published value: {', '.join(dc['fixed'])}"
                                                              if dc.get("fixed") else ""))
        for name in dc.get("at_lower_bound") or []:
            out.append(f"  {name.replace('_star', '*')} went to its lower bound: the repeated runs are worse than the "
                       f"surface predicts, which the law cannot tell from its own error at their sizes; the table "
                       f"uses the published constants (grid.repeat_epochs measures repetition at fixed size and tokens)")
        for name in dc.get("lower_bound_only") or []:
            out.append(f"  {name.replace('_star', '*')} is only a lower bound: the runs repeat too little to show its decay")
    elif dc:
        out.append(f"  data-constrained fit: {dc.get('status')}: {dc.get('reason')}")
    if ud.get("law_source") == "published" and U:
        out.append(f"  the table reads the data limit with Muennighoff et al.'s published R_D* = {ud['R_D_star']:.3g}, "
                   f"R_N* = {ud['R_N_star']:.3g}" + (" (no run here measures repetition)" if dc.get("status") != "ok"
                                                     else " (the fit above is not used)"))
    rows = analysis.get("table") or []
    if U and any(r.get("epochs") is not None for r in rows):
        surface = ("the surface refitted on the single-epoch runs" if ud.get("law_source") == "fitted"
                   else "the sweep's parametric surface L(N, D)")
        out.append(f"  the data-constrained optimum is read on {surface}, so its unlimited-data model (in brackets) "
                   f"can differ from the table's row")
        out.append(f"  {'budget':<14}{'D_opt epochs':>13}   data-constrained optimum: params, {unit}, epochs, loss "
                   f"(+ over unlimited data [its params, loss]), 2x data saves")
        for r in rows:
            if r.get("epochs") is None:
                continue
            c = r.get("data_constrained")
            tail = (f"   {human(c['params'])}, {human(c['tokens'])}, {c['epochs']:.1f}, {c['loss']:.4g} "
                    f"({c['loss_cost']:+.3g} [{human(c['params_unlimited'])}, {c['loss_unlimited']:.4g}]), "
                    f"{fmt_percent(c.get('doubling_saves'), 0, signed=False)} of the compute"
                    if c else "   within the data: the table's answer stands")
            out.append(f"  {fmt_flops(r['budget']):<14}{r['epochs']:>13.2f}{tail}")
    T = ud.get("inference_tokens")
    if T is not None and any(r.get("inference") for r in rows):
        out.append(f"inference-aware (Sardana et al. 2023), serving {human(T)} {unit}: the model that reaches each "
                   f"row's loss at least training + inference FLOPs")
        for r in rows:
            i = r.get("inference")
            if i:
                out.append(f"  {fmt_flops(r['budget']):<14}Chinchilla {human(i['chinchilla_params'])} -> "
                           f"{human(i['params'])} params on {human(i['tokens'])} {unit}; lifetime FLOPs "
                           f"{i['total_flops']:.3g} vs {i['chinchilla_total_flops']:.3g} "
                           f"({fmt_percent(i['flops_saved'], 1, signed=False)} saved)")
    return out


__all__ = ["row_answer", "row_coeff", "row_extras", "law_from_analysis", "data_lines", "DataAnswer", "data_answer", "run_unique_units", "DataConstrainedLaw", "DataConstrainedOptimum", "DataConstrainedFit", "fit_data_constrained",
           "table_rows", "PUBLISHED_SURFACE", "PUBLISHED_R_D_STAR", "PUBLISHED_R_N_STAR", "REPEAT_FREE_EPOCHS"]
