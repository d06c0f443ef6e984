"""Do the intervals mean what they say? Coverage and width per approach and per synthetic family.

For each family (a known truth and a sweep design, see benchmarks/synthetic.py) and each seed, a
noisy sweep is analysed by ``run_analysis`` with the bootstrap; for every approach (and for the
table, whatever source it picked) we record whether the ``ci`` interval of a, and of N_opt at
1e24 FLOPs, contains the truth, and how wide it is. Targets (issue 10): coverage 90-98% for 95%
intervals; median width no more than 1.3x the spread of the estimates across seeds (the central
95% range of the point estimates).

    PYTHONPATH=src python benchmarks/coverage.py [--seeds 50] [--bootstrap 200] [--families hoffmann asym3_drift ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import sweep, true_a, true_n_opt, truth_for_ratio  # noqa: E402

from flops_fit.analysis import run_analysis  # noqa: E402
from flops_fit.law import ChinchillaLaw  # noqa: E402

HOFFMANN = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
FAMILIES = {
    # name: (truth, sweep options)
    "hoffmann": (HOFFMANN, dict(points=7, half_width=4, noise=0.005)),
    "asym3_drift": (truth_for_ratio(3), dict(points=7, half_width=8, centre="drift", noise=0.005)),
    "hetero": (HOFFMANN, dict(points=7, half_width=4, noise=0.003, noise_kind="hetero")),
    "few_runs": (truth_for_ratio(3), dict(points=4, half_width=4, noise=0.003)),
    "penalty": (HOFFMANN, dict(points=9, half_width=4, noise=0.002, penalty=0.5)),
}
APPROACHES = ("isoflop", "isoflop_vp", "parametric", "table", "table+model")


def _n_at(fit, C=1e24):
    return fit["k_N"] * C ** fit["a"]


def run_family(name, seeds, bootstrap, ci, objective):
    truth, opts = FAMILIES[name]
    pen = opts.get("penalty", 0.0)
    a0, n0 = true_a(truth, pen), true_n_opt(truth, pen)
    rec = {k: {"a": [], "a_hit": [], "a_w": [], "n": [], "n_hit": [], "n_w": [], "src": []} for k in APPROACHES}
    for seed in range(seeds):
        runs = sweep(truth, seed=seed, **opts)
        out = run_analysis(runs, n_bootstrap=bootstrap, seed=1000 + seed, ci=ci, table_budgets=[1e24],
                           table_max_budget=1e24, objective=objective)
        row = next(r for r in out["table"] if abs(r["budget"] - 1e24) < 1e18)
        for k in APPROACHES:
            if k.startswith("table"):
                f = out["fits"][out["table_source"]]
                # "table+model": the interval widened by every approach's N_opt (params_ci_with_model)
                n, nci = row["params"], row["params_ci" if k == "table" else "params_ci_with_model"]
                rec[k]["src"].append(out["table_source"])
            else:
                f = out["fits"][k]
                if f.get("status") != "ok":
                    continue
                n, nci = _n_at(f), None
            if f.get("status") != "ok" or not f.get("a_ci"):
                continue
            lo, hi = f["a_ci"]
            rec[k]["a"].append(f["a"])
            rec[k]["a_hit"].append(lo <= a0 <= hi)
            rec[k]["a_w"].append(hi - lo)
            if k.startswith("table") and nci:
                rec[k]["n"].append(n)
                rec[k]["n_hit"].append(nci[0] <= n0 <= nci[1])
                rec[k]["n_w"].append(np.log(nci[1] / nci[0]))
            elif not k.startswith("table"):
                rec[k]["n"].append(n)
    return a0, n0, rec


def spread(x):
    x = np.asarray(x, dtype=float)
    lo, hi = np.percentile(x, [2.5, 97.5])
    return hi - lo


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--ci", type=float, default=0.95)
    ap.add_argument("--objective", default="sse")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    args = ap.parse_args(argv)
    print(f"{args.seeds} seeds per family, {args.bootstrap} bootstrap resamples, {args.ci:.0%} intervals; "
          f"width ratio = median interval width / central 95% spread of the estimates across seeds")
    print(f"{'family':<13}{'approach':<12}{'bias a':>9}{'cov a':>8}{'width/spread a':>16}"
          f"{'err N(1e24)':>13}{'cov N':>8}{'width/spread N':>16}  table source")
    for name in args.families:
        t0 = time.perf_counter()
        a0, n0, rec = run_family(name, args.seeds, args.bootstrap, args.ci, args.objective)
        for k, r in rec.items():
            if not r["a"]:
                print(f"{name:<13}{k:<12}  (no fits)")
                continue
            a = np.asarray(r["a"])
            cov_a = np.mean(r["a_hit"])
            wr_a = np.median(r["a_w"]) / spread(a)
            n = np.asarray(r["n"])
            err_n = np.median(np.abs(n / n0 - 1)) if n.size else float("nan")
            cov_n = np.mean(r["n_hit"]) if r["n_hit"] else float("nan")
            wr_n = (np.median(r["n_w"]) / spread(np.log(n))) if r["n_w"] else float("nan")
            srcs = ", ".join(f"{s} {r['src'].count(s)}" for s in sorted(set(r["src"]))) if r["src"] else ""
            print(f"{name:<13}{k:<12}{a.mean() / a0 - 1:>+9.2%}{cov_a:>8.0%}{wr_a:>16.2f}"
                  f"{err_n:>13.1%}{cov_n:>8.0%}{wr_n:>16.2f}  {srcs}", flush=True)
        print(f"  ({name}: {time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
