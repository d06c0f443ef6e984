"""Forecast check on real public IsoFLOP sweeps: fit without the largest budget, forecast the
compute-optimal N and loss there, and compare with what that budget's own runs show.

Sweeps: every sweep of tests/data/public_isoflops.csv, the three single-sweep files beside it
(llama3, chinchilla = ml-scalefit's digitisation, marin_comma), and Chinchilla's Figure 4 runs
extracted from its SVG (built at run time from ../shared/data when that folder is present; its
data must not be copied into the repository).

For each sweep:
- "realised" optimum at the held-out budget C: a parabola in log N of that budget's losses
  (approach 2's way): N_real = its vertex (only when inside the sampled sizes), L_real = its
  minimum over the sampled sizes; the best run is shown beside it;
- forecasts at C from ``run_analysis(kept, n_bootstrap=200, seed=0, table_budgets=[C])``: each
  approach's N = k_N C^a (and its loss where it has one: approach 3's L(N, D), the frontier's
  E + A C^-gamma), and the table's, read back with ``predict(analysis, C)``.

Then the product's own forecast check on each held-out budget (``preregister`` then ``score``, as
``ff-plan forecast_from=`` and ``ff-analyze`` do): its realised optimum with its 95% interval, the table's
ratio to it, and how many distinct sweeps (the same runs under two names counted once) it passes.

Then summaries over sweeps, and for the two Chinchilla digitisations fitted on ALL budgets:
the exponent a of the table and of each approach, and tokens per parameter at 1e24 FLOPs.

    PYTHONPATH=src python benchmarks/bench_forecast.py            # markdown on stdout, progress on stderr
    PYTHONPATH=src python benchmarks/bench_forecast.py --check    # exit 1 unless the targets below hold

Targets (--check): the table's loss forecast within 1% at the median and 3% at worst; the table's
N within 20% of N_real on >= 90% of sweeps (those with an interior vertex); the two Chinchilla
digitisations' table a within 0.02 of each other and within 0.03 of 0.49 (Hoffmann et al.,
approach 2).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SHARED = REPO.parent / "shared" / "data"
PUBLIC = DATA / "public_isoflops.csv"
SINGLE_FILES = ("llama3_isoflops.csv", "chinchilla_isoflops.csv", "marin_comma_isoflops.csv")
SVG_SWEEP = "epoch_chinchilla_svg"
CHINCHILLA_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)  # Hoffmann et al., Figure 3
SVG_TOLERANCE = 0.10  # a run belongs to a budget when its Training FLOP is within 10% of it
APPROACHES = ("envelope", "isoflop", "isoflop_vp", "parametric")
N_BOOTSTRAP, SEED = 200, 0

# --check targets
LOSS_MEDIAN, LOSS_WORST = 0.01, 0.03
N_TOL, N_FRACTION = 0.20, 0.90
A_AGREE, A_PUBLISHED, A_TOL = 0.02, 0.49, 0.03
LOCAL_WINDOW = 4.0  # the second estimate of the realised optimum: runs within this factor of the best size


# --------------------------------------------------------------------------- pure helpers

def parabola_optimum(params, losses) -> dict:
    """Fit loss = c2 x^2 + c1 x + c0 with x = ln N (one budget's runs; approach 2's parabola).

    Returns ``n_vertex`` (the vertex's N when the parabola opens upward and the vertex lies within
    the sampled sizes, else None), ``loss`` (the parabola's minimum over the sampled sizes: the
    vertex value when interior, else the lower end value), ``interior`` and the best run
    (``n_best``, ``loss_best``). Needs at least 3 distinct sizes."""
    N = np.asarray(params, dtype=float)
    L = np.asarray(losses, dtype=float)
    x = np.log(N)
    if np.unique(x).size < 3:
        raise ValueError(f"a parabola needs 3 distinct sizes, got {np.unique(x).size}")
    c2, c1, c0 = np.polyfit(x, L, 2)
    lo, hi = float(x.min()), float(x.max())
    interior = False
    if c2 > 0:
        xv = -c1 / (2.0 * c2)
        interior = lo <= xv <= hi
    if interior:
        n_vertex = float(np.exp(xv))
        loss = float(np.polyval([c2, c1, c0], xv))
    else:
        n_vertex = None
        loss = float(min(np.polyval([c2, c1, c0], lo), np.polyval([c2, c1, c0], hi)))
    i = int(np.argmin(L))
    return {"n_vertex": n_vertex, "loss": loss, "interior": interior,
            "n_best": float(N[i]), "loss_best": float(L[i])}


def local_optimum(params, losses, window: float = LOCAL_WINDOW) -> float | None:
    """A second estimate of a budget's own minimum, less bent by asymmetry far from it than the parabola
    through every run: the product's ``local_minimum`` (a parabola through the runs within a factor ``window``
    of the best run's size), else, with fewer than 3 sizes there, the vertex through every run. None when
    neither is interior."""
    from flops_fit.analysis.common import local_minimum

    found = local_minimum(params, losses, window)
    return found[0] if found is not None else parabola_optimum(params, losses)["n_vertex"]


def by_budget(runs) -> dict:
    """Runs grouped by their ``budget`` (float), budgets ascending."""
    groups = defaultdict(list)
    for r in runs:
        groups[float(r["budget"])].append(r)
    return dict(sorted(groups.items()))


def record(i: int, params: float, tokens: float, budget: float, loss: float, prefix: str = "r") -> dict:
    """A run record as ``load_external`` builds it (6ND FLOPs, no loss curve)."""
    return {"id": f"{prefix}{i:04d}", "status": "completed", "params": float(params), "tokens": float(tokens),
            "loss": float(loss), "budget": float(budget), "flops": 6.0 * float(params) * float(tokens),
            "history": [], "data_unit": "tokens"}


def load_public(path: Path = PUBLIC) -> dict:
    """``{sweep: [run records]}`` from tests/data/public_isoflops.csv, in file order."""
    sweeps: dict[str, list] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            runs = sweeps.setdefault(row["sweep"], [])
            runs.append(record(len(runs), row["params"], row["tokens"], row["budget"], row["loss"]))
    return sweeps


def load_svg_chinchilla(shared: Path = SHARED):
    """Chinchilla's Figure 4 runs (../shared/data/chinchilla_svg_extracted.csv) whose Training FLOP
    lies within 10% of one of the 9 IsoFLOP budgets, as an IsoFLOP sweep: budget = that nominal
    budget, params = Model Size, tokens = C / (6N) with the run's own C. One model size appearing
    twice at one budget is an extraction artefact (Chinchilla trained one run per size and budget):
    it counts once, the point whose C is nearer the budget (the rule Open-Athena/scaling-law-analysis
    applies to the same file). None when the file is absent (it is reference data that stays
    outside the repository)."""
    path = Path(shared) / "chinchilla_svg_extracted.csv"
    if not path.is_file():
        return None
    best: dict[tuple, tuple] = {}  # (budget, rounded N) -> (distance to the budget, N, C, loss)
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            N, C, L = float(row["Model Size"]), float(row["Training FLOP"]), float(row["loss"])
            near = [B for B in CHINCHILLA_BUDGETS if abs(C / B - 1.0) <= SVG_TOLERANCE]
            if near:
                key, dist = (near[0], round(N)), abs(C / near[0] - 1.0)
                if key not in best or dist < best[key][0]:
                    best[key] = (dist, N, C, L)
    return [record(i, N, C / (6.0 * N), B, L, prefix="svg")
            for i, ((B, _), (_, N, C, L)) in enumerate(best.items())]


def approach_forecast(fit: dict, C: float):
    """(N, loss) an approach forecasts at C: N = k_N C^a; loss from its surface (approach 3:
    E + A/N^alpha + B/D^beta with D = k_D C^b, else C/(6N)) or its ``loss`` field; loss None when
    it has neither. (None, None) when the fit did not succeed."""
    if not fit or fit.get("status") != "ok" or fit.get("k_N") is None or fit.get("a") is None:
        return None, None
    N = fit["k_N"] * C ** fit["a"]
    D = fit["k_D"] * C ** fit["b"] if fit.get("k_D") is not None and fit.get("b") is not None else C / (6.0 * N)
    if all(fit.get(k) is not None for k in ("E", "A", "B", "alpha", "beta")):
        loss = fit["E"] + fit["A"] / N ** fit["alpha"] + fit["B"] / D ** fit["beta"]
    else:
        loss = fit.get("loss")
    return float(N), (float(loss) if loss is not None else None)


def frontier_forecast(fit: dict, C: float):
    """The loss frontier's E + A C^-gamma at C, or None."""
    if not fit or fit.get("status") != "ok" or any(fit.get(k) is None for k in ("E", "A", "gamma")):
        return None
    return float(fit["E"] + fit["A"] * C ** (-fit["gamma"]))


def inside(value, interval):
    """True/False whether ``value`` lies in ``interval`` ([lo, hi]); None when either is missing."""
    if value is None or not interval or interval[0] is None or interval[1] is None:
        return None
    return bool(interval[0] <= value <= interval[1])


# --------------------------------------------------------------------------- formatting

def fN(x):
    if x is None or not math.isfinite(x):
        return "-"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def fratio(r):
    return "-" if r is None else f"{r:.2f}x"


def fpct(e):
    return "-" if e is None else f"{e:+.2%}"


def fyes(b):
    return "n/a" if b is None else ("yes" if b else "no")


# --------------------------------------------------------------------------- the benchmark

def all_sweeps() -> dict:
    """Every sweep the benchmark runs: ``{name: runs}``."""
    from flops_fit.analysis import load_external

    sweeps = dict(load_public())
    for fname in SINGLE_FILES:
        sweeps[f"{Path(fname).stem} (tests/data)"] = load_external(DATA / fname)
    svg = load_svg_chinchilla()
    if svg is None:
        print(f"skipping {SVG_SWEEP}: {SHARED / 'chinchilla_svg_extracted.csv'} not found "
              f"(reference data kept outside the repository)", file=sys.stderr)
    else:
        sweeps[SVG_SWEEP] = svg
    return sweeps


def held_out(name: str, runs: list) -> dict:
    """Fit without the largest budget; forecast it; compare with its own runs."""
    from flops_fit.analysis import run_analysis
    from flops_fit.analysis.predict import predict

    groups = by_budget(runs)
    C = max(groups)
    kept = [r for b, rs in groups.items() if b != C for r in rs]
    held = groups[C]
    real = parabola_optimum([r["params"] for r in held], [r["loss"] for r in held])
    real["n_local"] = local_optimum([r["params"] for r in held], [r["loss"] for r in held])
    out = {"sweep": name, "n_runs": len(runs), "n_kept": len(kept), "n_held": len(held), "n_budgets": len(groups),
           "budget": C, "real": real, "approaches": {}, "frontier_loss": None, "table": None, "error": None}
    try:
        analysis = run_analysis(kept, n_bootstrap=N_BOOTSTRAP, seed=SEED, table_budgets=[C])
    except Exception as e:  # noqa: BLE001 - report, keep going
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    fits = analysis.get("fits", {})
    for a in APPROACHES:
        out["approaches"][a] = approach_forecast(fits.get(a), C)
    out["frontier_loss"] = frontier_forecast(fits.get("loss_vs_compute"), C)
    try:
        p = predict(analysis, C)
    except Exception as e:  # noqa: BLE001
        out["error"] = f"predict: {type(e).__name__}: {e}"
        return out
    out["table"] = {"source": analysis.get("table_source"), "params": p.get("params"), "loss": p.get("loss"),
                    "params_ci": p.get("params_ci"), "loss_ci": p.get("loss_ci"),
                    "row_params_ci": p.get("params_ci_with_model")}
    out["check"] = product_check(analysis, C, held)
    return out


def product_check(analysis: dict, C: float, held: list) -> dict | None:
    """The product's own forecast check (``ff-plan forecast_from=`` then ``ff-analyze``) run on the held-out
    budget: the table's forecast pre-registered from ``analysis``, scored against that budget's runs. Its
    realised optimum is the minimum of a Chinchilla-shaped curve with the source's exponents, with a
    residual-bootstrap interval. Returns the realised optimum, its interval, and the table's ratio to it, or
    None when the check cannot score (fewer than 3 sizes, no interior minimum)."""
    from flops_fit.analysis.forecast_check import preregister, score

    try:
        sc = score(preregister(analysis, C), held)
    except Exception:  # noqa: BLE001 - a check that cannot score is reported as such
        return None
    real, table = sc["realised"], sc["forecasts"][0]
    if not real["interior"]:
        return None
    return {"params": real["params"], "params_ci": real["params_ci"], "method": real["method"],
            "ratio": table["params_ratio"], "in_table_interval": table["params_inside"],
            "forecast_in_realised_ci": inside(table["params"], real["params_ci"])}


def sweep_key(runs: list) -> tuple:
    """The same runs under two names (a file in tests/data and its sweep in public_isoflops.csv) share this key."""
    return tuple(sorted((round(float(r["params"]), -3), round(float(r["loss"]), 4)) for r in runs))


def ratio(N, real, key: str = "n_vertex"):
    return None if N is None or real[key] is None else N / real[key]


def loss_err(L, real):
    return None if L is None else L / real["loss"] - 1.0


def used_approaches(results) -> list:
    return [a for a in APPROACHES if any(r["approaches"].get(a, (None, None))[0] is not None for r in results)]


def print_sweeps(results):
    print("## Realised optimum at the held-out (largest) budget\n")
    print("N_real: vertex of a parabola in log N through that budget's losses (only when inside the sampled "
          "sizes); N_local: the same through only the runs within a factor "
          f"{LOCAL_WINDOW:g} of the best run's size (a second estimate: how well the budget's own minimum is "
          "measured); L_real: the parabola's minimum; best run: the lowest-loss run.\n")
    print("| sweep | runs (fit / held out) | budgets | held-out C | N_real | N_local | L_real | best run N "
          "| best run loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        re = r["real"]
        print(f"| {r['sweep']} | {r['n_kept']} / {r['n_held']} | {r['n_budgets']} | {r['budget']:.3g} | "
              f"{fN(re['n_vertex']) if re['interior'] else 'not interior'} | {fN(re['n_local'])} | {re['loss']:.4f} | "
              f"{fN(re['n_best'])} | {re['loss_best']:.4f} |")
    approaches = used_approaches(results)
    skipped = [a for a in APPROACHES if a not in approaches]
    print("\n## Forecasts at the held-out budget\n")
    print("Each cell: N ratio (forecast / N_real) / loss error (forecast / L_real - 1). Table: "
          "`predict(analysis, C)`; 'in bootstrap CI': its params_ci; 'in table interval': its "
          "params_ci_with_model, the interval the table prints (model uncertainty and the backtest's forecast error)."
          + (f" Skipped everywhere: {', '.join(skipped)}." if skipped else "") + "\n")
    head = " | ".join(approaches)
    print(f"| sweep | {head} | frontier loss | table source | table N ratio | table loss error "
          f"| in bootstrap CI | in table interval |")
    print("|---|" + "---|" * (len(approaches) + 6))
    for r in results:
        if r["error"]:
            print(f"| {r['sweep']} | error: {r['error']} |" + " |" * (len(approaches) + 5))
            continue
        re = r["real"]
        cells = []
        for a in approaches:
            N, L = r["approaches"].get(a, (None, None))
            cells.append("-" if N is None else f"{fratio(ratio(N, re))} / {fpct(loss_err(L, re))}")
        t = r["table"]
        print(f"| {r['sweep']} | {' | '.join(cells)} | {fpct(loss_err(r['frontier_loss'], re))} | {t['source']} | "
              f"{fratio(ratio(t['params'], re))} | {fpct(loss_err(t['loss'], re))} | "
              f"{fyes(inside(re['n_vertex'], t['params_ci']))} | {fyes(inside(re['n_vertex'], t['row_params_ci']))} |")


def print_checks(results, keys: dict):
    """The product's forecast check on every held-out budget, and how many distinct sweeps it passes."""
    ok = [r for r in results if not r["error"]]
    print("\n## The product's forecast check at each held-out budget\n")
    print("What `ff-plan forecast_from=` and `ff-analyze` report: the realised optimum is the minimum of a "
          "Chinchilla-shaped curve with the source sweep's exponents (forecast_check.realised_optimum), with a "
          "residual-bootstrap 95% interval; the parabola vertex (N_real above) beside it. A held-out optimum is "
          "itself measured only to its interval.\n")
    print("| sweep | realised N [95%] | parabola vertex | table N / realised | realised in table interval "
          "| table N in realised interval |")
    print("|---|---|---|---|---|---|")
    for r in ok:
        c = r.get("check")
        if c is None:
            print(f"| {r['sweep']} | not scorable | {fN(r['real']['n_vertex'])} | - | - | - |")
            continue
        lo, hi = c["params_ci"] or (None, None)
        print(f"| {r['sweep']} | {fN(c['params'])} [{fN(lo)}, {fN(hi)}] | {fN(r['real']['n_vertex'])} | "
              f"{fratio(c['ratio'])} | {fyes(c['in_table_interval'])} | {fyes(c['forecast_in_realised_ci'])} |")
    scored = [r for r in ok if r.get("check")]
    distinct = {}
    for r in scored:
        distinct.setdefault(keys[r["sweep"]], r)
    out = {}
    for label, group in (("every sweep", scored), ("distinct sweeps (each set of runs once)", list(distinct.values()))):
        within = sum(abs(r["check"]["ratio"] - 1.0) <= N_TOL for r in group)
        cov = sum(bool(r["check"]["in_table_interval"]) for r in group)
        cons = sum(bool(r["check"]["forecast_in_realised_ci"]) for r in group)
        print(f"- {label}: table N within {N_TOL:.0%} of the realised optimum on {within}/{len(group)}; realised "
              f"optimum inside the table's interval on {cov}/{len(group)}; table N inside the realised optimum's "
              f"own interval on {cons}/{len(group)}")
        out[label] = (within, len(group))
    return out


def summarise(pairs) -> dict:
    """``pairs``: list of (N ratio or None, loss error or None, inside or None) over sweeps."""
    ratios = [p[0] for p in pairs if p[0] is not None]
    errs = [abs(p[1]) for p in pairs if p[1] is not None]
    ins = [p[2] for p in pairs if p[2] is not None]
    return {
        "n_N": len(ratios), "n_L": len(errs),
        "loss_median": float(np.median(errs)) if errs else None,
        "loss_worst": float(max(errs)) if errs else None,
        "n_within": sum(abs(x - 1.0) <= N_TOL for x in ratios),
        "frac_within": (sum(abs(x - 1.0) <= N_TOL for x in ratios) / len(ratios)) if ratios else None,
        "log_median": float(np.median([abs(math.log(x)) for x in ratios])) if ratios else None,
        "coverage": (sum(ins) / len(ins)) if ins else None, "n_cov": len(ins),
    }


def print_summary(results) -> dict:
    ok = [r for r in results if not r["error"]]
    rows = {}
    for a in used_approaches(ok):
        rows[a] = summarise([(ratio(r["approaches"][a][0], r["real"]),
                              loss_err(r["approaches"][a][1], r["real"]), None) for r in ok])
    rows["loss_vs_compute (frontier)"] = summarise([(None, loss_err(r["frontier_loss"], r["real"]), None) for r in ok])
    rows["table (predict)"] = summarise([(ratio(r["table"]["params"], r["real"]),
                                          loss_err(r["table"]["loss"], r["real"]),
                                          inside(r["real"]["n_vertex"], r["table"]["params_ci"])) for r in ok])
    rows["table (predict), against N_local"] = summarise([(ratio(r["table"]["params"], r["real"], "n_local"),
                                                           None, None) for r in ok])
    table_row_cov = summarise([(None, None, inside(r["real"]["n_vertex"], r["table"]["row_params_ci"])) for r in ok])
    n_interior = sum(r["real"]["interior"] for r in ok)
    print(f"\n## Summary over {len(ok)} sweeps ({n_interior} with an interior N_real; "
          f"{len(results) - len(ok)} failed)\n")
    print(f"| forecast | median abs loss error | worst abs loss error | N within {N_TOL:.0%} | median abs ln(N ratio) "
          f"| interval coverage of N_real |")
    print("|---|---|---|---|---|---|")

    def pct(x):
        return "-" if x is None else f"{x:.2%}"

    for name, s in rows.items():
        within = "-" if s["frac_within"] is None else f"{s['n_within']}/{s['n_N']} ({s['frac_within']:.0%})"
        cov = "n/a" if s["coverage"] is None else f"{s['coverage']:.0%} of {s['n_cov']}"
        if name == "table (predict)":
            tc = table_row_cov
            cov += ("; table interval (with model uncertainty): n/a" if tc["coverage"] is None
                    else f"; table interval (with model uncertainty): {tc['coverage']:.0%} of {tc['n_cov']}")
        logm = "-" if s["log_median"] is None else f"{s['log_median']:.3f}"
        print(f"| {name} | {pct(s['loss_median'])} | {pct(s['loss_worst'])} | {within} | {logm} | {cov} |")
    return rows["table (predict)"]


def chinchilla_exponents(sweeps: dict) -> dict:
    """Both Chinchilla digitisations (and Epoch's grouping from public_isoflops.csv, for
    information) fitted on ALL budgets: table a, each approach's a, tokens/param at 1e24."""
    from flops_fit.analysis import run_analysis
    from flops_fit.analysis.predict import predict

    names = {"chinchilla_isoflops (tests/data)": "ml-scalefit (tests/data/chinchilla_isoflops.csv)",
             SVG_SWEEP: "Epoch SVG extraction, grouped here (../shared/data)",
             "epochai_chinchilla__massivetext__chinchilla": "Epoch SVG extraction, grouped by the source repo (info)"}
    out = {}
    print("\n## Chinchilla digitisations, all budgets (published: a = 0.49 approach 2, 0.50 approach 1, "
          "0.46 approach 3; Epoch's approach 3: 0.513)\n")
    print("| digitisation | runs | budgets | table source | table a | " + " | ".join(f"{a} a" for a in APPROACHES)
          + " | tokens/param at 1e24 |")
    print("|---|---|---|---|---|" + "---|" * len(APPROACHES) + "---|")
    for key, label in names.items():
        if key not in sweeps:
            print(f"| {label} | absent |" + " |" * (len(APPROACHES) + 4))
            continue
        t0 = time.time()
        runs = sweeps[key]
        analysis = run_analysis(runs, n_bootstrap=N_BOOTSTRAP, seed=SEED)
        fits, src = analysis["fits"], analysis["table_source"]
        ta = fits[src]["a"] if src else None
        p = predict(analysis, 1e24)
        out[key] = ta
        cells = [f"{fits[a]['a']:.3f}" if fits.get(a, {}).get("status") == "ok" and fits[a].get("a") is not None
                 else "-" for a in APPROACHES]
        print(f"| {label} | {len(runs)} | {len(by_budget(runs))} | {src} | {ta:.3f} | {' | '.join(cells)} | "
              f"{p['tokens_per_param']:.1f} |")
        print(f"  all-budget fit {key}: {time.time() - t0:.1f}s", file=sys.stderr)
    return out


def check(table: dict, chin: dict) -> bool:
    ok = True
    print("\n## Targets (--check)\n")

    def line(passed, text):
        nonlocal ok
        ok &= bool(passed)
        print(f"- {'PASS' if passed else 'FAIL'}: {text}")

    lm, lw = table["loss_median"], table["loss_worst"]
    show = lambda x: "-" if x is None else f"{x:.2%}"  # noqa: E731
    line(lm is not None and lm <= LOSS_MEDIAN, f"table loss error median {show(lm)} <= {LOSS_MEDIAN:.0%}")
    line(lw is not None and lw <= LOSS_WORST, f"table loss error worst {show(lw)} <= {LOSS_WORST:.0%}")
    fw = table["frac_within"]
    line(fw is not None and fw >= N_FRACTION,
         f"table N within {N_TOL:.0%} on {table['n_within']}/{table['n_N']} sweeps "
         f"({'-' if fw is None else f'{fw:.0%}'}) >= {N_FRACTION:.0%}")
    a1, a2 = chin.get("chinchilla_isoflops (tests/data)"), chin.get(SVG_SWEEP)
    if a1 is None or a2 is None:
        print(f"- SKIP: Chinchilla digitisations' a (ml-scalefit a={a1}, SVG a={a2}; "
              f"{SHARED / 'chinchilla_svg_extracted.csv'} absent?)")
    else:
        line(abs(a1 - a2) <= A_AGREE,
             f"Chinchilla table a agree: |{a1:.3f} - {a2:.3f}| = {abs(a1 - a2):.3f} <= {A_AGREE}")
        for label, a in (("ml-scalefit", a1), ("SVG", a2)):
            line(abs(a - A_PUBLISHED) <= A_TOL, f"{label} table a {a:.3f} within {A_TOL} of {A_PUBLISHED}")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 unless the forecast targets hold")
    args = ap.parse_args(argv)
    sweeps = all_sweeps()
    results = []
    t_all = time.time()
    for i, (name, runs) in enumerate(sweeps.items(), 1):
        t0 = time.time()
        results.append(held_out(name, runs))
        err = results[-1]["error"]
        print(f"[{i}/{len(sweeps)}] {name}: {len(runs)} runs, {time.time() - t0:.1f}s"
              + (f" ERROR {err}" if err else ""), file=sys.stderr)
    print_sweeps(results)
    table = print_summary(results)
    print_checks(results, {name: sweep_key(runs) for name, runs in sweeps.items()})
    chin = chinchilla_exponents(sweeps)
    print(f"\n(total {time.time() - t_all:.0f}s)", file=sys.stderr)
    passed = check(table, chin)
    return 0 if (passed or not args.check) else 1


if __name__ == "__main__":
    sys.exit(main())
