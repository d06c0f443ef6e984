"""Reproduce Chinchilla's approach-3 fit (Hoffmann et al. 2022, as replicated by Epoch AI).

    python scripts/chinchilla_reproduce.py [--csv ../shared/data/chinchilla_svg_extracted.csv] [--bootstrap 1000]

Turns Epoch's extracted training runs into flops-fit's external format (params, tokens, loss;
dropping the 5 highest-loss rows and taking tokens = C / 6N, as Epoch did), analyses them the way
`ff-analyze input=... objective=huber_log` does (Chinchilla's objective: Huber, delta 1e-3, on
log L; flops-fit's default objective is least squares on L, see docs/analysis-evidence.md),
writes outputs/chinchilla/analysis.json, and prints the fit beside the published one.
"""

import argparse
import csv
import sys
from pathlib import Path

PUBLISHED = {"E": 1.8172, "A": 477.78, "B": 2142.93, "alpha": 0.3473, "beta": 0.3672}  # Huber + 4500-start grid
EPOCH_SE_ALPHA = 0.0154


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--csv", default=str(repo.parent / "shared" / "data" / "chinchilla_svg_extracted.csv"))
    ap.add_argument("--run-dir", default="outputs/chinchilla")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()

    src = Path(args.csv)
    if not src.is_file():
        sys.exit(f"chinchilla_reproduce: error: {src} not found; pass --csv PATH to Epoch AI's svg_extracted_data.csv")
    with src.open() as f:
        rows = [(float(r["Model Size"]), float(r["Training FLOP"]), float(r["loss"])) for r in csv.DictReader(f)]
    rows.sort(key=lambda r: r[2])
    rows = rows[:-5]  # drop the 5 highest-loss rows
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    runs_csv = run_dir / "chinchilla_runs.csv"
    with runs_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["params", "tokens", "loss"])
        for n, c, l in rows:
            w.writerow([n, c / (6 * n), l])
    print(f"{len(rows)} runs -> {runs_csv}")

    from flops_fit.analysis import load_external, run_analysis
    from flops_fit.artifacts import RunDir

    analysis = run_analysis(load_external(runs_csv), n_bootstrap=args.bootstrap, objective="huber_log",
                            progress=False)
    analysis["input"] = str(runs_csv)
    RunDir(run_dir).write_analysis(analysis)
    fit = analysis["fits"]["parametric"]
    print(f"approach 3, objective {fit['objective_kind']}, engine {fit['engine']} -> {run_dir / 'analysis.json'}")
    print("\nparameter   flops-fit   published (Epoch's re-run of Chinchilla's method)")
    for k, v in PUBLISHED.items():
        print(f"{k:<10} {fit[k]:>10.4f}   {v:>10.4f}   ({100 * (fit[k] / v - 1):+.2f}%)")
    if fit.get("alpha_ci"):
        lo, hi = fit["alpha_ci"]
        print(f"alpha 95% interval [{lo:.4f}, {hi:.4f}]; Epoch: (0.317, 0.373), bootstrap SE {EPOCH_SE_ALPHA}")


if __name__ == "__main__":
    main()
