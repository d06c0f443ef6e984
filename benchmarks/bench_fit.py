"""Timing of the Approach-3 fit on the Chinchilla data: variable projection (the default engine)
beside the 4500-start batched L-BFGS and a plain scipy loop.

    PYTHONPATH=src python benchmarks/bench_fit.py [--data ../shared/data/chinchilla_svg_extracted.csv]
                                                  [--bootstrap 1000] [--scipy-starts N | --no-scipy]

Prints, for each objective, the wall and CPU time of the variable-projection fit (exhaustive
(alpha, beta) grid + polish) and of ``--bootstrap`` refits, against the targets (fit < 1 s,
1000 refits < 10 s); then the wall time of (1) the 4500-start L-BFGS fit, (2) its ``--bootstrap``
refits, (3) scipy's L-BFGS-B from every one of the 4500 starts (``--scipy-starts`` limits the
loop to an evenly spaced subset and extrapolates), and the parameters each finds.

``--vp-scipy`` also times the variable-projection fit and its refits with the polish done by
scipy's L-BFGS-B, one (replicate, start) at a time, in place of the batched L-BFGS of
:mod:`flops_fit.analysis.lbfgs` (same profiled objective, same exact gradient, same starts): the
measurement behind that module's docstring.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from flops_fit.analysis import bootstrap_parametric, default_grid, fit_parametric

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chinchilla_svg_extracted.csv"


def load(path):
    rows = list(csv.DictReader(open(path, newline="")))
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    L = np.array([float(r["loss"]) for r in rows])
    keep = np.argsort(L)[:-5]  # drop the 5 highest-loss rows, as Epoch did
    N, C, L = N[keep], C[keep], L[keep]
    return N, C / (6 * N), L


def scipy_objective(theta, logN, logD, logL, delta):
    """The same summed Huber objective, one start at a time (the plain way)."""
    a, b, e, alpha, beta = theta
    t = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])
    m = t.max(axis=0)
    ex = np.exp(t - m)
    s = ex.sum(axis=0)
    r = logL - (m + np.log(s))
    ab = np.abs(r)
    f = np.where(ab <= delta, 0.5 * r * r, delta * (ab - 0.5 * delta)).sum()
    psi = np.clip(r, -delta, delta)
    p = ex / s
    g = -np.array([(psi * p[0]).sum(), (psi * p[1]).sum(), (psi * p[2]).sum(),
                   -(psi * p[0] * logN).sum(), -(psi * p[1] * logD).sum()])
    return f, g


def polish_scipy(prob, starts, rows, *, bounds=(1e-3, 5.0), max_iter: int = 200, inner_iters: int = 60):
    """varpro.polish with scipy's L-BFGS-B, one problem at a time: box bounds on (alpha, beta) in
    place of the batched minimiser's sigmoid map; the same profiled objective and gradient."""
    from flops_fit.analysis.varpro import VPResult

    starts = np.asarray(starts, dtype=float)
    rows = np.asarray(rows)
    P = starts.shape[0]
    X = np.empty((P, 2))
    ok = np.zeros(P, dtype=bool)
    for i in range(P):
        w = prob.W[rows[i]][None, :]
        warm = [None]

        def fun(x):
            f, theta, G = prob.profile(x[:1], x[1:], w, iters=inner_iters, with_grad=True, theta0=warm[0])
            if np.isfinite(f[0]):
                warm[0] = theta
                return float(f[0]), G[0]
            return 1e300, np.zeros(2)

        f0 = fun(starts[i])[0]
        r = minimize(fun, np.clip(starts[i], *bounds), jac=True, method="L-BFGS-B", bounds=[bounds, bounds],
                     options={"maxiter": max_iter, "ftol": 1e-14, "gtol": 1e-11 * max(abs(f0), 1e-30)})
        X[i], ok[i] = r.x, r.success
    f, theta = prob.profile(X[:, 0], X[:, 1], prob.W[rows], iters=inner_iters)
    return VPResult(alpha=X[:, 0], beta=X[:, 1], theta=theta, f=f, converged=ok)


def compare_vp_polish(N, D, L, delta, n_boot):
    """The default engine's fit and ``n_boot`` refits, polished by the batched L-BFGS and by scipy."""
    from flops_fit.analysis import varpro
    from flops_fit.analysis.common import resample_counts
    from flops_fit.analysis.parametric import _bootstrap, _fit

    print(f"variable projection, the polish: batched L-BFGS (flops_fit.analysis.lbfgs) vs scipy L-BFGS-B loop")
    counts = resample_counts(N.size, n_boot, 0)
    batched = varpro.polish
    # the objectives on L: their refits are polished too (the log objectives' refits are the 5-D batched L-BFGS)
    for objective in ("sse", "huber"):
        res = {}
        for name, fn in (("batched", batched), ("scipy", polish_scipy)):
            varpro.polish = fn
            try:
                w = time.perf_counter()
                pf = _fit(N, D, L, None, objective, "vp", delta)
                t_fit = time.perf_counter() - w
                w = time.perf_counter()
                bs = _bootstrap(N, D, L, pf, counts, objective, "vp", delta, False)
                t_bs = time.perf_counter() - w
            finally:
                varpro.polish = batched
            res[name] = (pf, bs, t_fit, t_bs)
            print(f"  {objective:<8} {name:<8} fit {t_fit:.2f} s, {n_boot} refits {t_bs:.2f} s; "
                  f"alpha {pf['alpha']:.5f} beta {pf['beta']:.5f} objective {pf['objective']:.10g}; "
                  f"refits' alpha SE {np.std(bs['alpha'], ddof=1):.5f}")
        (pa, ba, fa, ta), (ps, bsc, fs, ts) = res["batched"], res["scipy"]
        if "objective" in ba and "objective" in bsc:
            d = np.asarray(bsc["objective"]) - np.asarray(ba["objective"])
            rel = d / np.maximum(np.abs(np.asarray(ba["objective"])), 1e-300)
            print(f"  {objective:<8} refits: scipy's objective minus batched's, relative: median {np.median(rel):.2e}, "
                  f"max {np.max(rel):.2e}, min {np.min(rel):.2e}; speed-up of the batched polish: fit "
                  f"{fs / fa:.1f}x, refits {ts / ta:.1f}x")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--scipy-starts", type=int, default=4500, help="starts for the scipy loop (all by default)")
    ap.add_argument("--no-scipy", action="store_true")
    ap.add_argument("--vp-scipy", action="store_true", help="also time the VP polish with scipy's L-BFGS-B")
    ap.add_argument("--delta", type=float, default=1e-3)
    args = ap.parse_args(argv)
    if not Path(args.data).is_file():
        raise SystemExit(f"{args.data} not found (the Chinchilla CSV from ../shared/data); pass --data")
    N, D, L = load(args.data)
    print(f"{N.size} points from {args.data}")

    def show(name, p):
        print(f"  {name:<10} E={p['E']:.4f} A={p['A']:.2f} B={p['B']:.2f} alpha={p['alpha']:.4f} "
              f"beta={p['beta']:.4f} a={p['beta'] / (p['alpha'] + p['beta']):.4f} objective={p['objective']:.8f}")

    from flops_fit.analysis.common import resample_counts
    from flops_fit.analysis.parametric import _bootstrap, _fit

    print("variable projection (engine=vp):")
    for objective in ("sse_log", "huber_log", "sse"):
        w, c = time.perf_counter(), time.process_time()
        pf = _fit(N, D, L, None, objective, "vp", args.delta)
        t_w, t_c = time.perf_counter() - w, time.process_time() - c
        line = (f"  {objective:<9} fit {t_w:.2f} s wall / {t_c:.2f} s CPU ({pf['n_starts']} grid cells)"
                f"{' OK' if t_w < 1 else ' OVER 1 s'}")
        if args.bootstrap:
            counts = resample_counts(N.size, args.bootstrap, 0)
            w, c = time.perf_counter(), time.process_time()
            bs = _bootstrap(N, D, L, pf, counts, objective, "vp", args.delta, False)
            b_w, b_c = time.perf_counter() - w, time.process_time() - c
            line += (f"; {args.bootstrap} refits {b_w:.2f} s wall / {b_c:.2f} s CPU"
                     f"{' OK' if b_w * 1000 / args.bootstrap < 10 else ' OVER 10 s per 1000'}"
                     f"; alpha SE {np.std(bs['alpha'], ddof=1):.4f}")
        print(line)
        show("  vp", pf)

    if args.vp_scipy:
        compare_vp_polish(N, D, L, args.delta, args.bootstrap)

    t = time.perf_counter()
    fit = fit_parametric(N, D, L, delta=args.delta)
    t_fit = time.perf_counter() - t
    print(f"batched L-BFGS (engine=lbfgs, huber_log), 4500 starts: {t_fit:.2f} s "
          f"({fit['n_starts_converged']} starts converged)")
    show("batched", fit)

    if args.bootstrap:
        t = time.perf_counter()
        bs = bootstrap_parametric(N, D, L, fit=fit, n_boot=args.bootstrap, seed=0, delta=args.delta)
        t_bs = time.perf_counter() - t
        print(f"bootstrap, {args.bootstrap} refits (each from the best fit + 4 other optima): {t_bs:.2f} s; "
              f"{np.mean(bs['converged']):.1%} converged")
        for k in ("E", "A", "B", "alpha", "beta", "a"):
            lo, hi = np.percentile(bs[k], [2.5, 97.5])
            print(f"  {k:<6} SE {np.std(bs[k], ddof=1):.4g}  95% interval [{lo:.4g}, {hi:.4g}]")

    if not args.no_scipy:
        grid = default_grid()
        k = max(1, min(args.scipy_starts, grid.shape[0]))
        sel = np.linspace(0, grid.shape[0] - 1, k).round().astype(int)
        logN, logD, logL = np.log(N), np.log(D), np.log(L)
        best = None
        t = time.perf_counter()
        for x0 in grid[sel]:
            r = minimize(scipy_objective, x0, args=(logN, logD, logL, args.delta), jac=True, method="L-BFGS-B")
            if best is None or r.fun < best.fun:
                best = r
        t_sp = time.perf_counter() - t
        full = t_sp * grid.shape[0] / k
        note = "" if k == grid.shape[0] else f" ({k} starts; {full:.0f} s extrapolated to 4500)"
        print(f"scipy L-BFGS-B loop: {t_sp:.1f} s{note}; speed-up of the batched fit: {full / t_fit:.0f}x")
        a, b, e, al, be = best.x
        show("scipy", {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": al, "beta": be, "objective": best.fun})


if __name__ == "__main__":
    main()
