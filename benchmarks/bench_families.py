"""Bias on noise-free synthetic truths, one bias source at a time: every approach and the table.

Families: alpha/beta in {1, 1.21 (Chinchilla), 3, 9} x grid half-widths {2, 4, 8, 16}x x grids
centred / 3x above the optimum / drifting to 3x below, 9 runs per budget over 1e17..1e21; plus
few runs per budget (4) and a truth outside the Chinchilla family (an under-training penalty).
For each: the relative error of a and of N_opt at 1e24 FLOPs.

    PYTHONPATH=src python benchmarks/bench_families.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import sweep, true_a, true_n_opt, truth_for_ratio  # noqa: E402

from flops_fit.analysis import run_analysis  # noqa: E402

APPROACHES = ("isoflop", "isoflop_vp", "parametric")


def case(ratio, hw, centre, points=9, penalty=0.0):
    truth = truth_for_ratio(ratio)
    out = run_analysis(sweep(truth, points=points, half_width=hw, centre=centre, penalty=penalty), n_bootstrap=0,
                       table_budgets=[1e24])
    a0, n0 = true_a(truth, penalty), true_n_opt(truth, penalty)
    res = {}
    for k in APPROACHES:
        f = out["fits"][k]
        res[k] = ((f["a"] / a0 - 1, f["k_N"] * 1e24 ** f["a"] / n0 - 1) if f.get("status") == "ok"
                  else (np.nan, np.nan))
    row = next(r for r in out["table"] if abs(r["budget"] - 1e24) < 1e18)
    res["table"] = (out["fits"][out["table_source"]]["a"] / a0 - 1, row["params"] / n0 - 1)
    return res, out["table_source"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="ratios 1 and 3, half-widths 2 and 16 only")
    args = ap.parse_args(argv)
    ratios = (1.0, 3.0) if args.quick else (1.0, 1.21, 3.0, 9.0)
    widths = (2, 16) if args.quick else (2, 4, 8, 16)
    cases = [(r, w, c, 9, 0.0) for r in ratios for w in widths for c in ("centred", "offset", "drift")]
    cases += [(3.0, 4, "drift", 4, 0.0), (9.0, 8, "centred", 4, 0.0), (1.21, 4, "centred", 9, 0.5)]
    head = "".join(f"{k + ' a':>14}{k + ' N24':>16}" for k in (*APPROACHES, "table"))
    print(f"{'alpha/beta':>10}{'half-w':>7}{'centre':>9}{'runs':>5}{'pen':>5}{head}  source")
    worst = {k: [0.0, 0.0] for k in (*APPROACHES, "table")}
    for ratio, hw, centre, points, pen in cases:
        res, src = case(ratio, hw, centre, points, pen)
        cells = "".join(f"{res[k][0]:>+14.2e}{res[k][1]:>+16.2e}" for k in (*APPROACHES, "table"))
        print(f"{ratio:>10.2f}{hw:>7}{centre:>9}{points:>5}{pen:>5}{cells}  {src}", flush=True)
        if not pen:
            for k in worst:
                for i in (0, 1):
                    if np.isfinite(res[k][i]):
                        worst[k][i] = max(worst[k][i], abs(res[k][i]))
    print("\nworst |relative error| over the Chinchilla-family cases:")
    for k, (wa, wn) in worst.items():
        print(f"  {k:<11} a {wa:.2e}   N_opt(1e24) {wn:.2e}")


if __name__ == "__main__":
    main()
