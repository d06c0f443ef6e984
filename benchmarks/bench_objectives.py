"""Which approach-3 objective? Error and bias of a on noisy synthetic sweeps, per noise model.

Truths: Hoffmann et al.'s surface (alpha/beta 1.21) and alpha/beta = 3; 5 budgets (1e17..1e21)
x 7 sizes over +-4x, centred. Noise: multiplicative log-normal 1% ("mult"), additive Gaussian
0.03 ("add"), heteroscedastic (0.5% at the largest model of a budget, 2% at the smallest). For
each objective, the RMSE and the mean of the relative error of a over the seeds.

    PYTHONPATH=src python benchmarks/bench_objectives.py [--seeds 30]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import sweep, truth_for_ratio  # noqa: E402

from flops_fit.analysis.varpro import OBJECTIVES, fit_surface  # noqa: E402
from flops_fit.law import ChinchillaLaw  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=30)
    args = ap.parse_args(argv)
    truths = {"1.21": ChinchillaLaw(1.69, 406.4, 410.7, 0.34, 0.28), "3": truth_for_ratio(3.0)}
    print(f"{args.seeds} seeds; RMSE (bias) of a, in % of the true a")
    print(f"{'alpha/beta':>10} {'noise':>12}" + "".join(f"{o:>18}" for o in OBJECTIVES))
    for tname, truth in truths.items():
        for kind, noise in (("mult", 0.01), ("add", 0.03), ("hetero", 0.005)):
            errs = {o: [] for o in OBJECTIVES}
            for seed in range(args.seeds):
                runs = sweep(truth, points=7, half_width=4, noise=noise, noise_kind=kind, seed=seed)
                N, D, L = (np.array([r[k] for r in runs]) for k in ("params", "tokens", "loss"))
                for o in OBJECTIVES:
                    errs[o].append(fit_surface(N, D, L, objective=o)["a"] / truth.a - 1)
            cells = "".join(f"{100 * np.sqrt(np.mean(np.square(e))):>10.2f} ({100 * np.mean(e):+.2f})"
                            for e in errs.values())
            print(f"{tname:>10} {kind + ' ' + str(noise):>12}{cells}", flush=True)


if __name__ == "__main__":
    main()
