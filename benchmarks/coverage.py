"""How often do the bootstrap intervals of a (N_opt ~ C^a) contain the true value?

Mock IsoFLOP sweeps from L = E + A/N^alpha + B/D^beta (Hoffmann et al.'s published values by
default), with seeded multiplicative noise on every run's final loss and loss curve, analysed by
``run_analysis``; for each approach, the fraction of seeds whose ``ci`` interval for a contains
beta / (alpha + beta). The target is >= 85% for a 95% interval.

    PYTHONPATH=src python benchmarks/coverage.py [--seeds 40] [--bootstrap 200] [--noise 0.005]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from flops_fit.analysis import run_analysis

APPROACHES = ("envelope", "isoflop", "parametric")


def mock_sweep(seed, *, E, A, B, alpha, beta, noise, budgets, points, span, tokens_per_param, history):
    """Run records with a grid of sizes per budget centred on the tokens-per-param prior."""
    rng = np.random.default_rng(seed)
    runs = []
    for C in budgets:
        centre = np.sqrt(C / (6.0 * tokens_per_param))
        for j, N in enumerate(np.geomspace(centre / span, centre * span, points)):
            N = float(round(N))
            D = C / (6.0 * N)
            t = D * np.arange(1, history + 1) / history
            clean = E + A / N**alpha + B / t**beta
            loss = clean * np.exp(noise * rng.standard_normal(history))
            runs.append({
                "id": f"c{C:.1e}_n{j}", "status": "completed", "budget": C, "params": N, "tokens": D,
                "flops": 6.0 * N * D, "loss": float(loss[-1]),
                "history": [{"tokens": float(a), "flops": float(6.0 * N * a), "loss": float(b)}
                            for a, b in zip(t, loss)],
            })
    return runs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--ci", type=float, default=0.95)
    ap.add_argument("--noise", type=float, default=0.005, help="relative noise of each loss (0.005 = 0.5%%)")
    ap.add_argument("--budgets", type=float, nargs="+", default=[1e17, 3e17, 1e18, 3e18, 1e19])
    ap.add_argument("--points", type=int, default=7, help="sizes per budget")
    ap.add_argument("--span", type=float, default=4.0, help="grid from N/span to N*span around the prior")
    ap.add_argument("--tokens-per-param", type=float, default=20.0)
    ap.add_argument("--history", type=int, default=20, help="loss-curve points per run")
    ap.add_argument("--truth", type=float, nargs=5, default=[1.69, 406.4, 410.7, 0.34, 0.28],
                    metavar=("E", "A", "B", "ALPHA", "BETA"))
    args = ap.parse_args(argv)
    E, A, B, alpha, beta = args.truth
    a_true = beta / (alpha + beta)
    hits = {k: [] for k in APPROACHES}
    est = {k: [] for k in APPROACHES}
    width = {k: [] for k in APPROACHES}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        runs = mock_sweep(seed, E=E, A=A, B=B, alpha=alpha, beta=beta, noise=args.noise, budgets=args.budgets,
                          points=args.points, span=args.span, tokens_per_param=args.tokens_per_param,
                          history=args.history)
        out = run_analysis(runs, n_bootstrap=args.bootstrap, seed=1000 + seed, ci=args.ci, table_max_budget=1e20)
        row = []
        for k in APPROACHES:
            f = out["fits"][k]
            if f["status"] != "ok" or not f.get("a_ci"):
                hits[k].append(False)
                row.append(f"{k}: skipped")
                continue
            lo, hi = f["a_ci"]
            hits[k].append(lo <= a_true <= hi)
            est[k].append(f["a"])
            width[k].append(hi - lo)
            row.append(f"{k} {f['a']:.3f} [{lo:.3f}, {hi:.3f}]{'' if lo <= a_true <= hi else ' MISS'}")
        print(f"seed {seed:2d}: " + "; ".join(row), flush=True)
    el = time.perf_counter() - t0
    print()
    print(f"true a = {a_true:.4f}; {args.seeds} seeds, noise {args.noise:.2%}, {args.bootstrap} bootstrap "
          f"resamples, {args.ci:.0%} intervals; {el:.0f} s ({el / max(args.seeds, 1):.1f} s per analysis)")
    print(f"{'approach':<12}{'coverage':>10}{'mean a':>10}{'bias':>9}{'sd(a)':>9}{'mean width':>12}")
    for k in APPROACHES:
        cov = np.mean(hits[k]) if hits[k] else float("nan")
        e = np.asarray(est[k])
        w = np.asarray(width[k])
        print(f"{k:<12}{cov:>10.1%}{e.mean():>10.4f}{e.mean() - a_true:>+9.4f}{e.std(ddof=1):>9.4f}{w.mean():>12.4f}")


if __name__ == "__main__":
    main()
