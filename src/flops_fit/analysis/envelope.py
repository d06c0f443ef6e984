"""Approach 1: the envelope of the training curves.

Every run's loss curve (``history``: tokens, flops, loss) is interpolated (log-log) onto a
log-spaced grid of FLOP counts. At each FLOP count the lowest loss across model sizes is the
envelope; the size that reaches it is N_opt(C). Because model sizes are discrete, the size is
refined by a three-point parabola in log10 N through the winning size and its two neighbours
(so the estimate is not a staircase); FLOP counts where the winner is the smallest or largest
size covering that count are dropped (the true optimum may lie outside the sampled sizes).
Power laws N_opt = k_N C^a and D_opt = k_D C^b are fitted on the remaining points.

Vectorised over bootstrap replicates given as (R, n_runs) resample counts: a run is in a
replicate when its count is positive.

The envelope's losses are put on the final losses' footing. A history point may be measured on the first
batches of the held-out split only (``trainer.eval_budget``, the record's ``history_batches``) while the
final loss is the whole split's: one set for every run, so the allocation does not depend on it, but its
loss can sit well apart (an MLP's 2 batches: 0.045 below the whole split). The shift is the median, over
the runs whose last history point is their final one, of final loss minus that point (``loss_offset``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flops_fit.analysis.common import PowerLawAllocation, bootstrap_spread, fit_power_law, jfloat, percentile_interval
from flops_fit.analysis.diagnostics import Diagnostics, bootstrap_failures


def curve_matrix(curves, grid):
    """(n_runs, J) log-loss of each run interpolated at the FLOP counts ``grid`` (inf outside)."""
    lg = np.log(grid)
    out = np.full((len(curves), grid.size), np.inf)
    for i, c in enumerate(curves):
        f = np.asarray(c["flops"], dtype=float)
        l = np.asarray(c["loss"], dtype=float)
        ok = (f > 0) & (l > 0) & np.isfinite(f) & np.isfinite(l)
        f, l = f[ok], l[ok]
        if f.size < 2:
            continue
        order = np.argsort(f)
        lf, ll = np.log(f[order]), np.log(l[order])
        inside = (lg >= lf[0]) & (lg <= lf[-1])
        out[i, inside] = np.interp(lg[inside], lf, ll)
    return out


def flop_grid(curves, points_per_decade: int = 10):
    fl = np.concatenate([np.asarray(c["flops"], dtype=float) for c in curves]) if curves else np.array([])
    fl = fl[np.isfinite(fl) & (fl > 0)]
    if fl.size < 2 or fl.max() <= fl.min():
        return np.array([])
    lo, hi = np.log10(fl.min()), np.log10(fl.max())
    n = max(int(np.ceil((hi - lo) * points_per_decade)) + 1, 2)
    return np.logspace(lo, hi, n)


def fit_envelope(curves, fpt, W=None, *, points_per_decade: int = 10) -> dict:
    """Approach 1 for the curves (one dict per run: params, flops, loss arrays).

    Returns the grid ``flops`` (J,), and (R, J) arrays ``params`` (refined N_opt), ``params_run``
    (the winning sampled size), ``tokens``, ``loss``, ``valid``; (R,) ``a``, ``b``, ``k_N``,
    ``k_D``, ``n_points``.
    """
    n = len(curves)
    if W is None:
        W = np.ones((1, n))
    W = np.atleast_2d(np.asarray(W, dtype=float))
    R = W.shape[0]
    grid = flop_grid(curves, points_per_decade)
    J = grid.size
    sizes = np.unique([float(c["params"]) for c in curves]) if n else np.array([])
    S = sizes.size
    empty = {
        "flops": grid, "params": np.full((R, J), np.nan), "params_run": np.full((R, J), np.nan),
        "tokens": np.full((R, J), np.nan), "loss": np.full((R, J), np.nan),
        "valid": np.zeros((R, J), dtype=bool), "a": np.full(R, np.nan), "b": np.full(R, np.nan),
        "k_N": np.full(R, np.nan), "k_D": np.full(R, np.nan), "n_points": np.zeros(R, dtype=int),
    }
    if J == 0 or S < 3:
        return empty
    LL = curve_matrix(curves, grid)  # (n, J)
    size_of = np.searchsorted(sizes, [float(c["params"]) for c in curves])
    # per replicate and size: the lowest curve among that size's runs in the replicate
    per_size = np.full((R, S, J), np.inf)
    for s in range(S):
        members = np.flatnonzero(size_of == s)
        if members.size == 0:
            continue
        m = np.where(W[:, members, None] > 0, LL[None, members, :], np.inf)  # (R, k, J)
        per_size[:, s, :] = m.min(axis=1)
    covered = np.isfinite(per_size)
    win = np.argmin(per_size, axis=1)  # (R, J)
    any_cov = covered.any(axis=1)
    # nearest covered sizes below and above the winner (sizes of other budgets may not reach C)
    sidx = np.arange(S)[None, :, None]
    below = np.maximum.accumulate(np.where(covered, sidx, -1), axis=1)  # last covered index <= s
    above = np.minimum.accumulate(np.where(covered, sidx, S)[:, ::-1], axis=1)[:, ::-1]  # first >= s
    rr = np.arange(R)[:, None]
    jj = np.arange(J)[None, :]
    lo_idx = np.where(win > 0, below[rr, np.maximum(win - 1, 0), jj], -1)
    hi_idx = np.where(win < S - 1, above[rr, np.minimum(win + 1, S - 1), jj], S)
    valid = any_cov & (lo_idx >= 0) & (hi_idx < S)
    lo_idx = np.clip(lo_idx, 0, S - 1)
    hi_idx = np.clip(hi_idx, 0, S - 1)
    y0 = per_size[rr, lo_idx, jj]
    y1 = per_size[rr, win, jj]
    y2 = per_size[rr, hi_idx, jj]
    valid &= np.isfinite(y0) & np.isfinite(y1) & np.isfinite(y2)
    lx = np.log10(sizes)
    x0, x1, x2 = lx[lo_idx], lx[win], lx[hi_idx]
    # vertex of the parabola through three points (log-loss vs log10 N)
    with np.errstate(divide="ignore", invalid="ignore"):
        d01 = (y1 - y0) / (x1 - x0)
        d12 = (y2 - y1) / (x2 - x1)
        c2 = (d12 - d01) / (x2 - x0)
        xv = 0.5 * (x0 + x1) - d01 / (2.0 * c2)
        xv = np.where(c2 > 0, np.clip(xv, x0, x2), x1)
        # value of the interpolating parabola (Newton form) at its vertex
        yv = np.where(c2 > 0, y0 + d01 * (xv - x0) + c2 * (xv - x0) * (xv - x1), y1)
    N = np.where(valid, 10.0 ** xv, np.nan)
    N_run = np.where(valid, sizes[win], np.nan)
    with np.errstate(invalid="ignore"):
        D = np.where(valid, grid[None, :] / fpt(np.where(valid, N, 1.0)), np.nan)
    Lmin = np.where(valid, np.exp(np.minimum(yv, y1)), np.nan)
    k_N, a = fit_power_law(grid, N, valid)
    k_D, b = fit_power_law(grid, D, valid)
    return {
        "flops": grid, "params": N, "params_run": N_run, "tokens": D, "loss": Lmin, "valid": valid,
        "a": a, "b": b, "k_N": k_N, "k_D": k_D, "n_points": valid.sum(axis=1),
    }


# ---------------------------------------------------------------------------------------------
# approach 1 on a sweep


@dataclass
class EnvelopeFit(PowerLawAllocation):
    """Approach 1's result: N_opt = k_N C^a, D_opt = k_D C^b from the envelope points."""

    status: str
    reason: str | None = None
    a: float | None = None
    b: float | None = None
    k_N: float | None = None
    k_D: float | None = None
    n_points: int = 0
    points: list = field(default_factory=list)  # [{flops, params, tokens, loss, params_run}]
    loss_offset: float = 0.0  # added to the curves' losses: the final losses' footing (see the module doc)
    curves_on_subset: bool = False  # some curve was measured on part of the held-out split (history_batches)
    a_ci: list | None = None
    b_ci: list | None = None
    replicates: dict | None = field(default=None, repr=False)  # fit_envelope over the bootstrap

    def to_json(self) -> dict:
        if not self.ok:
            return {"status": self.status, "reason": self.reason}
        out = {"status": "ok", "a": self.a, "b": self.b, "k_N": self.k_N, "k_D": self.k_D,
               "n_points": self.n_points, "points": self.points, "loss_offset": self.loss_offset,
               "a_ci": self.a_ci, "b_ci": self.b_ci}
        if self.replicates is not None:
            out["bootstrap"] = bootstrap_spread(self.replicates["a"], self.replicates["b"])
        return out


def history_offset(sweep, idx) -> float:
    """Final loss minus the last history point, median over the runs ``idx`` whose last point is at their final
    FLOPs (within 1%): what puts their curves' losses on the final losses' footing. 0 with fewer than 3."""
    d = [float(sweep.L[i] - sweep.curves[i][2][-1]) for i in idx
         if sweep.curves[i][1][-1] >= 0.99 * sweep.C[i] and np.isfinite(sweep.curves[i][2][-1])]
    return float(np.median(d)) if len(d) >= 3 else 0.0


def envelope_approach(sweep, counts, ci: float, diags: Diagnostics) -> EnvelopeFit:
    """Approach 1 on the runs of ``sweep`` that have loss curves; ``counts`` (R, n) resample counts or None."""
    N = sweep.N
    cidx = [i for i, h in enumerate(sweep.curves) if h[0].size >= 2]
    curves = [{"params": N[i], "flops": sweep.curves[i][1], "loss": sweep.curves[i][2]} for i in cidx]
    if not cidx or np.unique(N[cidx]).size < 3:
        reason = "needs loss curves (history) from runs at 3 or more model sizes"
        diags.add("info", "envelope_skipped", "envelope approach skipped: " + reason)
        return EnvelopeFit("skipped", reason)
    ef = fit_envelope(curves, sweep.fpt)
    npts = int(ef["n_points"][0])
    winners = np.unique(ef["params_run"][0][ef["valid"][0]]).size
    if npts < 3 or winners < 2:
        reason = (f"only {npts} FLOP count(s), won by {winners} size(s), where the lowest curve is "
                  f"not the smallest or largest model; the sizes do not bracket the optimum along "
                  f"the curves (needs 3+ points won by 2+ sizes)")
        diags.add("info", "envelope_skipped", "envelope approach skipped: " + reason)
        return EnvelopeFit("skipped", reason)
    v = ef["valid"][0]
    shift = history_offset(sweep, cidx)
    pts = [{"flops": float(ef["flops"][j]), "params": float(ef["params"][0, j]),
            "tokens": float(ef["tokens"][0, j]), "loss": float(ef["loss"][0, j] + shift),
            "params_run": float(ef["params_run"][0, j])} for j in np.flatnonzero(v)]
    fit = EnvelopeFit("ok", a=jfloat(ef["a"][0]), b=jfloat(ef["b"][0]), k_N=jfloat(ef["k_N"][0]),
                      k_D=jfloat(ef["k_D"][0]), n_points=npts, points=pts, loss_offset=shift,
                      curves_on_subset=any(sweep.history_batches[i] is not None for i in cidx)
                      if sweep.history_batches else False)
    if counts is not None:
        er = fit_envelope(curves, sweep.fpt, W=counts[:, cidx])
        er["loss"] = er["loss"] + shift
        fit.a_ci, fit.b_ci = percentile_interval(er["a"], ci), percentile_interval(er["b"], ci)
        bootstrap_failures(diags, "envelope", er["a"])
        fit.replicates = er
    return fit
