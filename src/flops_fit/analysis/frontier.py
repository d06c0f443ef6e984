"""The saturating loss of the compute-optimal frontier: L*(C) = E + A C^-gamma.

Fitted by least squares on log L over points of the frontier (the IsoFLOP minima, or the
envelope), with E in [0, min L) and several starts for E. Internally A is expressed relative
to the geometric-mean budget C0 (A = A0 C0^gamma) so the problem is well scaled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from flops_fit.analysis.common import percentile_interval

MIN_FRONTIER_POINTS = 4


def predict_frontier(fit: dict, C):
    C = np.asarray(C, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        return fit["E"] + fit["A0"] * (C / fit["C0"]) ** (-fit["gamma"])


def fit_loss_vs_compute(C, L, *, C0: float | None = None) -> dict:
    """Fit L*(C) = E + A C^-gamma to (C, L) points. Returns E, A, gamma, A0, C0, cost, success."""
    C = np.asarray(C, dtype=float)
    L = np.asarray(L, dtype=float)
    ok = np.isfinite(C) & np.isfinite(L) & (C > 0) & (L > 0)
    C, L = C[ok], L[ok]
    nan = {"E": np.nan, "A": np.nan, "gamma": np.nan, "A0": np.nan, "C0": np.nan, "cost": np.nan,
           "success": False}
    if C.size < 3 or np.unique(C).size < 3:
        return nan
    if C0 is None:
        C0 = float(np.exp(np.mean(np.log(C))))
    lc = np.log(C / C0)
    lL = np.log(L)
    Lmin = float(L.min())

    def resid(p):
        E, lA0, g = p
        with np.errstate(over="ignore", invalid="ignore"):
            pred = E + np.exp(lA0 - g * lc)
        return np.log(np.maximum(pred, 1e-300)) - lL

    def jac(p):
        E, lA0, g = p
        t = np.exp(lA0 - g * lc)
        pred = E + t
        return np.stack([1.0 / pred, t / pred, -lc * t / pred], axis=1)

    best = None
    for frac in (0.0, 0.3, 0.6, 0.85, 0.95):
        E0 = frac * Lmin
        A00 = max(float(np.exp(np.mean(np.log(L)))) - E0, 1e-6 * Lmin)
        # slope of log(L - E0) against log C as the gamma start
        with np.errstate(invalid="ignore", divide="ignore"):
            g0 = -np.polyfit(lc, np.log(np.maximum(L - E0, 1e-12)), 1)[0]
        g0 = float(np.clip(g0 if np.isfinite(g0) else 0.1, 1e-3, 1.5))
        try:
            r = least_squares(resid, [E0, np.log(A00), g0], jac=jac,
                              bounds=([0.0, -np.inf, 0.0], [Lmin * (1 - 1e-9), np.inf, 5.0]),
                              method="trf", x_scale=[max(Lmin, 1e-6), 1.0, 0.1], max_nfev=400)
        except ValueError:
            continue
        if best is None or r.cost < best.cost:
            best = r
    if best is None:
        return nan
    E, lA0, g = best.x
    return {"E": float(E), "A": float(np.exp(lA0) * C0 ** g), "gamma": float(g), "A0": float(np.exp(lA0)),
            "C0": float(C0), "cost": float(best.cost), "success": bool(best.success)}


def fit_loss_vs_compute_batched(C, L, mask, start: dict, *, n_iter: int = 100) -> dict:
    """Many refits at once (bootstrap replicates): Levenberg-Marquardt from ``start``.

    ``C`` (J,) FLOPs, ``L`` (R, J) frontier losses, ``mask`` (R, J) the points each replicate
    uses; ``start`` a :func:`fit_loss_vs_compute` result (its C0 is kept). Returns (R,) arrays
    E, A, gamma, A0 (NaN where a replicate has fewer than 3 distinct points).
    """
    C = np.asarray(C, dtype=float)
    L = np.asarray(L, dtype=float)
    M = np.asarray(mask, dtype=bool) & np.isfinite(L) & (L > 0)
    R = L.shape[0]
    C0 = float(start["C0"])
    lc = np.log(C / C0)[None, :]
    lL = np.log(np.where(M, L, 1.0))
    w = M.astype(float)
    Lmin = np.where(M, L, np.inf).min(axis=1)
    Emax = np.where(np.isfinite(Lmin), Lmin * (1 - 1e-9), 0.0)
    p = np.tile([min(start["E"], 0.999 * np.min(Lmin[np.isfinite(Lmin)], initial=np.inf)),
                 np.log(start["A0"]), start["gamma"]], (R, 1)).astype(float)
    p[:, 0] = np.clip(p[:, 0], 0.0, Emax)

    def resid_jac(p):
        E, lA0, g = p[:, 0:1], p[:, 1:2], p[:, 2:3]
        t = np.exp(lA0 - g * lc)
        pred = E + t
        r = (np.log(pred) - lL) * w
        J = np.stack([w / pred, w * t / pred, -w * lc * t / pred], axis=-1)
        return r, J

    lam = np.full(R, 1e-3)
    r, J = resid_jac(p)
    cost = 0.5 * (r * r).sum(axis=1)
    eye = np.eye(3)
    for _ in range(n_iter):
        JtJ = np.einsum("rjk,rjl->rkl", J, J)
        Jtr = np.einsum("rjk,rj->rk", J, r)
        Aug = JtJ + lam[:, None, None] * (eye * np.maximum(np.diagonal(JtJ, axis1=1, axis2=2), 1e-12)[:, None, :])
        try:
            step = -np.linalg.solve(Aug, Jtr[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(Aug, Jtr)])
        q = p + step
        q[:, 0] = np.clip(q[:, 0], 0.0, Emax)
        q[:, 2] = np.clip(q[:, 2], 0.0, 5.0)
        with np.errstate(over="ignore", invalid="ignore"):
            r2, J2 = resid_jac(q)
            c2 = 0.5 * (r2 * r2).sum(axis=1)
        better = np.isfinite(c2) & (c2 < cost)
        p = np.where(better[:, None], q, p)
        r = np.where(better[:, None], r2, r)
        J = np.where(better[:, None, None], J2, J)
        rel = np.where(better, (cost - c2) / np.maximum(cost, 1e-300), 0.0)
        cost = np.where(better, c2, cost)
        lam = np.where(better, lam * 0.3, lam * 10.0)
        if np.all((~better & (lam > 1e8)) | (better & (rel < 1e-12))):
            break
    ndist = np.array([np.unique(C[m]).size for m in M])
    bad = ndist < 3
    E = np.where(bad, np.nan, p[:, 0])
    A0 = np.where(bad, np.nan, np.exp(p[:, 1]))
    g = np.where(bad, np.nan, p[:, 2])
    return {"E": E, "A0": A0, "gamma": g, "A": A0 * C0 ** g, "C0": C0}


# ---------------------------------------------------------------------------------------------
# the frontier of a sweep


@dataclass
class FrontierFit:
    """L*(C) = E + A C^-gamma through the compute-optimal points of approach 2 (else 1)."""

    status: str
    reason: str | None = None
    E: float | None = None
    A: float | None = None
    gamma: float | None = None
    C0: float | None = None
    A0: float | None = None
    source: str | None = None
    points: list = field(default_factory=list)
    intervals: dict = field(default_factory=dict)  # E, A, gamma -> [lo, hi]
    replicates: dict | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def predict(self, C):
        return predict_frontier({"E": self.E, "A0": self.A0, "C0": self.C0, "gamma": self.gamma}, C)

    def predict_replicates(self, C):
        r = self.replicates
        if r is None:
            return None
        with np.errstate(all="ignore"):
            return r["E"][:, None] + r["A0"][:, None] * (C[None, :] / r["C0"]) ** (-r["gamma"][:, None])

    def to_json(self) -> dict:
        if not self.ok:
            return {"status": self.status, "reason": self.reason}
        out = {"status": "ok", "E": self.E, "A": self.A, "gamma": self.gamma, "C0": self.C0, "A0": self.A0,
               "source": self.source, "n_points": len(self.points), "points": self.points}
        if self.replicates is not None:
            out.update({f"{k}_ci": self.intervals.get(k) for k in ("E", "A", "gamma")})
        return out


def frontier_approach(iso, env, ci: float, bootstrap: bool) -> FrontierFit:
    """The loss frontier from the interior IsoFLOP minima (4+), else the envelope points (4+) when the curves were
    measured on the whole held-out split (on part of it, the lowest of many noisy curves is biased low)."""
    src = src_C = src_L = None
    if iso.ok:
        m = iso.full["interior"][0]
        if m.sum() >= MIN_FRONTIER_POINTS:
            bud = np.array([b["budget"] for b in iso.budgets])
            src, src_C, src_L = "isoflop", bud[m], iso.full["loss_opt"][0][m]
    if src_C is None and env.ok and env.curves_on_subset:
        return FrontierFit("skipped", "fewer than 4 IsoFLOP budgets have an interior minimum, and the loss curves "
                                      "were measured on part of the held-out split (trainer.eval_budget): the lowest "
                                      "of them runs below what the final losses reach, so the loss comes from the "
                                      "parametric surface")
    if src_C is None and env.ok:
        src = "envelope"
        src_C = np.array([p["flops"] for p in env.points])
        src_L = np.array([p["loss"] for p in env.points])
        if src_C.size < MIN_FRONTIER_POINTS:
            src_C = None
    if src_C is None:
        return FrontierFit("skipped", f"needs {MIN_FRONTIER_POINTS}+ compute-optimal points (IsoFLOP budgets with an "
                                      f"interior minimum, or envelope points)")
    lf = fit_loss_vs_compute(src_C, src_L)
    if not np.isfinite(lf["E"]):
        return FrontierFit("skipped", "the fit of L*(C) = E + A C^-gamma failed")
    fit = FrontierFit("ok", E=lf["E"], A=lf["A"], gamma=lf["gamma"], C0=lf["C0"], A0=lf["A0"], source=src,
                      points=[{"flops": float(c), "loss": float(v)} for c, v in zip(src_C, src_L)])
    if bootstrap:
        if src == "isoflop" and iso.replicates is not None:
            rep = iso.replicates
            bud = np.asarray([b["budget"] for b in iso.budgets])
            Lr, Mr = rep["loss_opt"], rep["interior"]
        elif src == "envelope" and env.replicates is not None:
            rep = env.replicates
            bud, Lr, Mr = rep["flops"], rep["loss"], rep["valid"]
        else:
            return fit
        reps = fit_loss_vs_compute_batched(bud, Lr, Mr & (Mr.sum(axis=1) >= MIN_FRONTIER_POINTS)[:, None], lf)
        fit.intervals = {k: percentile_interval(reps[k], ci) for k in ("E", "A", "gamma")}
        fit.replicates = reps
    return fit
