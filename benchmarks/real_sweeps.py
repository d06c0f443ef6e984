"""Real public sweeps (tests/data): what the authors published, what every approach and objective
gives, and a held-out-budget check (fit without the largest budget, predict its optimum and its
runs' losses). Prints markdown tables for docs/analysis-evidence.md.

    PYTHONPATH=src python benchmarks/real_sweeps.py
"""

from __future__ import annotations

from pathlib import Path

from flops_fit.analysis import load_external, run_analysis
from flops_fit.analysis.varpro import OBJECTIVES

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SWEEPS = {  # file: (name, published a, note)
    "llama3_isoflops.csv": ("Llama 3 (Meta)", 0.47, "D* = 0.29 C^0.53; 402B at 3.8e25"),
    "chinchilla_isoflops.csv": ("Chinchilla IsoFLOP (DeepMind)", 0.49, "approach 2; Epoch's approach 3: 0.513"),
    "marin_comma_isoflops.csv": ("Marin, Comma", None, "none found"),
}
C_REF = 3.8e25


def n_at(fit, C=C_REF):
    return fit["k_N"] * C ** fit["a"] if fit.get("status") == "ok" else float("nan")


def main():
    print("| sweep | published a | approach 2 | 2b curves | 3: sse | 3: huber | 3: sse_log | 3: huber_log "
          "| model test p | table (source) | N_opt at 3.8e25: 2 / 2b / 3 (sse) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    hold = []
    for fname, (name, pub, note) in SWEEPS.items():
        runs = load_external(DATA / fname)
        outs = {o: run_analysis(runs, n_bootstrap=0, objective=o, holdout=1 if o == "sse" else 0)
                for o in OBJECTIVES}
        base = outs["sse"]
        f = base["fits"]
        par = {o: outs[o]["fits"]["parametric"]["a"] for o in OBJECTIVES}
        ms = base["model_selection"] or {}
        src = base["table_source"]
        ta = base["fits"][src]["a"]
        pub_s = f"{pub:.2f} ({note})" if pub is not None else note
        p = ms.get("p_value")
        print(f"| {name} ({len(runs)} runs) | {pub_s} | {f['isoflop']['a']:.3f} | {f['isoflop_vp']['a']:.3f} | "
              f"{par['sse']:.3f} | {par['huber']:.3f} | {par['sse_log']:.3f} | {par['huber_log']:.3f} | "
              f"{p:.1e} | {ta:.3f} ({src}) | {n_at(f['isoflop']) / 1e9:.0f}B / {n_at(f['isoflop_vp']) / 1e9:.0f}B / "
              f"{n_at(f['parametric']) / 1e9:.0f}B |")
        h = base.get("holdout")
        if h and h.get("status") == "ok":
            r = h["rows"][0]
            hold.append((name, h, r))
    print()
    print("Held-out check: fit without the largest budget, predict it. Observed optimum: that budget's own "
          "Chinchilla-shaped minimum (its parabola vertex in brackets).")
    print()
    print("| sweep | held-out budget | observed N_opt | approach 2 | 2b curves | 3 (sse) | 3: RMSE of its runs' "
          "losses | 3: loss at optimum |")
    print("|---|---|---|---|---|---|---|---|")
    for name, h, r in hold:
        obs = r.get("params_observed_curve") or r["params_observed"]

        def e(v):
            return f"{v / 1e9:.2f}B ({v / obs - 1:+.0%})" if v else "-"

        print(f"| {name} | {r['budget']:.0e} | {obs / 1e9:.2f}B ({r['params_observed'] / 1e9:.2f}B) | "
              f"{e(r.get('isoflop_params'))} | {e(r.get('isoflop_vp_params'))} | {e(r.get('parametric_params'))} | "
              f"{r.get('parametric_run_loss_rmse', float('nan')):.2%} | {r.get('parametric_loss_error', float('nan')):+.2%} |")


if __name__ == "__main__":
    main()
