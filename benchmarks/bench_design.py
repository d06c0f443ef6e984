"""Does the sequential design (``ff-plan next_from=``) reach an interval for fewer FLOPs than a fixed grid?

For each known surface and seed, three designs, every run's loss drawn from the truth with the mock
trainer's noise (L (1 + noise z)) and every analysis ``run_analysis`` with the bootstrap:

- sequential: a seed grid (3 budgets x 5 sizes, span 4, centred on the 20-tokens-per-parameter prior), then
  batches chosen by flops_fit.analysis.design (the candidates of :func:`candidate_layouts`, laid out on
  continuous sizes; each batch's allowance = the FLOPs spent so far) until the table's N_opt(C*) interval is
  at most half the seed grid's width, the design stops, or 64x the seed grid's FLOPs are spent;
- fixed, same FLOPs: today's default plan (7 sizes, span 4, the same prior) on budgets a factor 4 apart from
  the seed grid's smallest up to a largest one set so that it costs what the sequential design spent;
- fixed, same width: the same grid grown (its largest budget doubled from 4x the smallest, then interpolated
  in log FLOPs) until its interval is as narrow as the sequential design's; reported as the FLOPs it needs.

Surfaces: Chinchilla-like (alpha 0.34, beta 0.28), asymmetric (alpha 0.25, beta 0.45), noisy (4x the noise), an
off-centre prior (grids centred 4x below the true optimum). Width: hi / lo - 1 of the interval the user sees at
C* (the table's params_ci_with_model, else params_ci; what the design targets); error: |N_opt / truth - 1|;
coverage: that interval holds the truth ("boot cov": the bootstrap's params_ci alone does).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_design.py [--seeds 20] [--workers 2] [--bootstrap 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from flops_fit.analysis import predict, run_analysis  # noqa: E402
from flops_fit.analysis.design import (Candidate, Design, SeenWidth, Simulator, candidate_layouts,  # noqa: E402
                                       choose_batch, existing_groups, residual_sigma, seen_width, surface_draws)
from flops_fit.law import ChinchillaLaw  # noqa: E402
from flops_fit.settings import AnalyzeSettings  # noqa: E402

HOFFMANN = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def prior_n(C):
    return np.sqrt(np.asarray(C, dtype=float) / 120.0)  # C = 6 N D, D = 20 N


def asymmetric(alpha=0.25, beta=0.45, B=410.7, at=1e18):
    """alpha != beta (N_opt ~ C^0.64), its optimum at ``at`` FLOPs on the prior's (A solved for it)."""
    a = beta / (alpha + beta)
    G = float(prior_n(at)) / (at / 6.0) ** a
    return ChinchillaLaw(E=1.69, A=G ** (alpha + beta) * beta * B / alpha, B=B, alpha=alpha, beta=beta)


SURFACES = {  # name: (truth, noise, prior offset: grid centre / prior's N)
    "chinchilla": (HOFFMANN, 0.005, 1.0),
    "asymmetric": (asymmetric(), 0.005, 1.0),
    "noisy": (HOFFMANN, 0.02, 1.0),
    "off_centre": (HOFFMANN, 0.005, 0.25),
}
SEED_BUDGETS = (1e17, 4e17, 1.6e18)
TARGET = 1e20  # C*
# ff-analyze's own default: a 95% percentile interval's tails need it (at 50 replicates each tail is read off
# 1-2 of them, and the sequential design's intervals covered 80-90% on the Chinchilla-like surface)
BOOTSTRAP = AnalyzeSettings.bootstrap
MAX_FACTOR = 64.0  # the sequential design's FLOP cap, x the seed grid's


class Study:
    """Runs drawn from one truth with one noise stream."""

    def __init__(self, truth, noise, seed, bootstrap=BOOTSTRAP):
        self.truth, self.noise, self.rng, self.runs = truth, noise, np.random.default_rng(seed), []
        self.bootstrap = int(bootstrap)

    def add(self, C, N):
        for n in np.atleast_1d(N):
            d = C / (6 * n)
            loss = float(self.truth.loss(n, d)) * (1 + self.noise * self.rng.standard_normal())
            self.runs.append({"id": f"r{len(self.runs)}", "status": "completed", "budget": float(C), "params": float(n),
                              "tokens": float(d), "flops": float(C), "loss": loss})

    @property
    def flops(self):
        return sum(r["flops"] for r in self.runs)

    def analyze(self, seed):
        a = run_analysis(self.runs, n_bootstrap=self.bootstrap, seed=seed, table_budgets=[TARGET], table_max_budget=TARGET)
        row = predict(a, TARGET)
        return a, row, seen_width(row)


def grid(study, budgets, points, span, offset):
    for C in budgets:
        study.add(C, offset * prior_n(C) * span ** np.linspace(-1, 1, points))


def candidates(analysis, runs, design):
    out = []
    budgets = sorted({r["budget"] for r in runs})
    for kind, C, points, span in candidate_layouts(budgets, 5, 4.0, design):
        centre = predict(analysis, C)["params"]
        N = centre * span ** np.linspace(-1, 1, points)
        if kind == "size":
            have = np.array([r["params"] for r in runs if r["budget"] == C])
            for n in N:
                if have.size == 0 or np.min(np.abs(np.log(have / n))) > 0.03:
                    out.append(Candidate("size", C, np.array([n]), np.array([C / (6 * n)]), float(C)))
        else:
            out.append(Candidate("budget", C, N, C / (6 * N), float(C) * points))
    return out


def sequential(truth, noise, offset, seed, bootstrap=BOOTSTRAP):
    study = Study(truth, noise, seed, bootstrap)
    grid(study, SEED_BUDGETS, 5, 4.0, offset)
    seed_flops = study.flops
    a, row, w = study.analyze(seed)
    target = 0.5 * w
    design = Design()
    batches, stop = 0, None
    while w > target and study.flops < MAX_FACTOR * seed_flops:
        runs = study.runs
        sim = Simulator(surface_draws(a["table_model"]), residual_sigma(
            [r["budget"] for r in runs], [r["params"] for r in runs], [r["loss"] for r in runs]),
            TARGET, sims=design.sims, seed=seed * 100 + batches)
        existing = existing_groups(sim, [r["budget"] for r in runs], [r["params"] for r in runs],
                                   [r["tokens"] for r in runs])
        allowance = min(study.flops, MAX_FACTOR * seed_flops - study.flops)
        batch = choose_batch(sim, existing, candidates(a, runs, design), width_now=w, allowance=allowance,
                             target_width=target, min_gain=design.min_gain, seen=SeenWidth(a["table_model"], TARGET))
        if batch.stop:
            stop = batch.stop
            break
        for c in batch.chosen:
            study.add(c.budget, c.params)
        batches += 1
        a, row, w = study.analyze(seed)
    return study.flops, row, w, batches, stop


def fixed_budgets(top):
    """Today's default plan grown to ``top``: budgets a factor 4 apart, down to the seed grid's smallest."""
    out = [top]
    while out[-1] / 4 >= SEED_BUDGETS[0] * 0.999:
        out.append(out[-1] / 4)
    return sorted(out)


def fixed(truth, noise, offset, seed, top, bootstrap=BOOTSTRAP):
    study = Study(truth, noise, 10_000 + seed, bootstrap)
    grid(study, fixed_budgets(top), 7, 4.0, offset)
    _, row, w = study.analyze(seed)
    return study.flops, row, w


def top_for(flops):
    """The largest budget of the fixed grid that costs ``flops`` (7 runs a budget)."""
    lo, hi = SEED_BUDGETS[0] * 4, max(flops, SEED_BUDGETS[0] * 8)
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if 7 * sum(fixed_budgets(mid)) < flops else (lo, mid)
    return float(np.sqrt(lo * hi))


def one(args):
    name, seed, bootstrap = args
    truth, noise, offset = SURFACES[name]
    n0 = float(truth.n_opt(TARGET))
    t0 = time.perf_counter()
    f_seq, row_seq, w_seq, batches, stop = sequential(truth, noise, offset, seed, bootstrap)
    f_same, row_same, w_same = fixed(truth, noise, offset, seed, top_for(f_seq), bootstrap)
    # the fixed grid's FLOPs for the sequential design's width: double its largest budget until it gets there
    top, prev = SEED_BUDGETS[0] * 4, None
    need = float("nan")
    while 7 * sum(fixed_budgets(top)) <= 64 * f_seq:
        f, _, w = fixed(truth, noise, offset, seed, top, bootstrap)
        if w <= w_seq:
            if prev is None:
                need = f
            else:  # interpolate log FLOPs against log width between the last two
                (f0, w0), (f1, w1) = prev, (f, w)
                t = (np.log(w0) - np.log(w_seq)) / (np.log(w0) - np.log(w1)) if w0 > w1 else 1.0
                need = float(np.exp(np.log(f0) + t * (np.log(f1) - np.log(f0))))
            break
        prev, top = (f, w), top * 2
    def hit(row, key="params_ci_with_model"):
        iv = row.get(key) or row.get("params_ci")
        return bool(iv and iv[0] <= n0 <= iv[1])

    return {"surface": name, "seed": seed, "flops_seq": f_seq, "width_seq": w_seq, "err_seq": abs(row_seq["params"] / n0 - 1),
            "cov_seq": hit(row_seq), "boot_cov_seq": hit(row_seq, "params_ci"), "batches": batches, "stop": stop,
            "width_same": w_same,
            "err_same": abs(row_same["params"] / n0 - 1), "cov_same": hit(row_same), "flops_need": need,
            "seconds": time.perf_counter() - t0}


def _stop_kind(stop: str) -> str:
    return next((k for k in ("model choice alone", "min_gain", "allowance") if k in stop), "other")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--surfaces", nargs="+", default=list(SURFACES))
    ap.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help="replicates per analysis (ff-analyze's default)")
    ap.add_argument("--first-seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    jobs = [(s, k, args.bootstrap) for s in args.surfaces for k in range(args.first_seed, args.first_seed + args.seeds)]
    with Pool(args.workers) as pool:
        res = pool.map(one, jobs, chunksize=1)
    print(f"{args.seeds} seeds per surface, bootstrap {args.bootstrap}, C* = {TARGET:.0e} FLOPs, target: half the seed "
          f"grid's width; width = hi / lo - 1 of the 95% params_ci_with_model (else params_ci)")
    print(f"{'surface':<12}{'seq FLOPs':>11}{'width':>8}{'err':>7}{'cov':>6}{'boot cov':>9}{'batches':>8}"
          f"{'| fixed same FLOPs: width':>26}{'err':>7}{'cov':>6}{'| fixed FLOPs for same width':>29}{'ratio':>7}")
    ratios = []
    for name in args.surfaces:
        r = [x for x in res if x["surface"] == name]
        med = lambda k: float(np.nanmedian([x[k] for x in r]))  # noqa: E731
        ratio = [x["flops_seq"] / x["flops_need"] for x in r]
        ratios += ratio
        print(f"{name:<12}{med('flops_seq'):>11.2e}{med('width_seq'):>8.1%}{med('err_seq'):>7.1%}"
              f"{np.mean([x['cov_seq'] for x in r]):>6.0%}{np.mean([x['boot_cov_seq'] for x in r]):>9.0%}"
              f"{med('batches'):>8.0f}{med('width_same'):>26.1%}"
              f"{med('err_same'):>7.1%}{np.mean([x['cov_same'] for x in r]):>6.0%}{med('flops_need'):>29.2e}"
              f"{float(np.nanmedian(ratio)):>7.0%}")
        stops = [x["stop"] for x in r if x["stop"]]
        for kind in sorted({_stop_kind(x) for x in stops}):
            same = [x for x in stops if _stop_kind(x) == kind]
            print(f"  {len(same)} of {len(r)} stopped before the target: {same[0]}")
        unreached = sum(np.isnan(x["flops_need"]) for x in r)
        if unreached:
            print(f"  {unreached} of {len(r)}: the fixed grid did not reach the width within 64x the FLOPs")
    print(f"({time.perf_counter() - t0:.0f} s, {args.workers} workers)")
    W = float(np.median([x["width_seq"] for x in res]))
    cov = float(np.mean([x["cov_seq"] for x in res]))
    print(f"design: sequential reaches width {W:.1%} with {float(np.nanmedian(ratios)):.0%} of the fixed grid's FLOPs "
          f"(median over surfaces and seeds); coverage {cov:.0%}")


if __name__ == "__main__":
    main()
