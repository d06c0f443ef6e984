"""ff-plot's figures, drawn from analysis.json (and the runs' loss curves when present).

No torch here: plotting runs on a laptop next to a cluster's run directory.
"""

from __future__ import annotations

import contextvars
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from flops_fit.analysis.summary import interval_level
from flops_fit.units import fmt_interval, human, sci

APPROACH_STYLE = {
    "isoflop": ("Approach 2: IsoFLOP profiles", "tab:blue", "-"),
    "isoflop_vp": ("Approach 2b: Chinchilla-shaped IsoFLOP curves", "tab:purple", "-."),
    "parametric": ("Approach 3: parametric L(N, D)", "tab:red", "--"),
    "envelope": ("Approach 1: training-curve envelope", "tab:green", ":"),
}


# make_plots(..., figures=[...]) collects the drawn Figures here instead of closing them
_KEEP: contextvars.ContextVar[list | None] = contextvars.ContextVar("flops_fit_keep_figures", default=None)


def _plt():
    import matplotlib

    if "ipykernel" not in sys.modules:  # a notebook keeps its own (inline) backend
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    kept = _KEEP.get()
    if kept is None:
        plt.close(fig)
    else:
        kept.append(fig)
    return path


def _budget_colors(budgets: Sequence[float]):
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    n = max(len(budgets) - 1, 1)
    return {b: cmap(0.9 * i / n) for i, b in enumerate(sorted(budgets))}


def _tick_formatter(unit: str = ""):
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{human(v)}{unit}" if v > 0 else "")


def _flops_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: sci(v, 1) if v > 0 else "")


def _points(analysis: Mapping) -> list[dict]:
    pts = [p for p in analysis.get("points", []) if p.get("status", "completed") == "completed" and p.get("loss") is not None]
    if analysis.get("params_kind") == "non_embedding":
        pts = [{**p, "params": p.get("non_embedding_params") or p["params"]} for p in pts]
    return pts


def _params_label(analysis: Mapping) -> str:
    return "non-embedding parameters" if analysis.get("params_kind") == "non_embedding" else "parameters"


def plot_isoflop(analysis: Mapping, path: Path, dpi: int = 130) -> Path | None:
    plt = _plt()
    pts = _points(analysis)
    iso = analysis.get("fits", {}).get("isoflop", {})
    rows = iso.get("budgets") or []
    budgets = sorted({p["budget"] for p in pts if p.get("budget")} | {r["budget"] for r in rows})
    if not budgets:
        return None
    colors = _budget_colors(budgets)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for b in budgets:
        bp = sorted((p for p in pts if p.get("budget") == b), key=lambda p: p["params"])
        if bp:
            ax.plot([p["params"] for p in bp], [p["loss"] for p in bp], "o", color=colors[b], ms=5,
                    label=f"{sci(b)} FLOPs")
    for r in rows:
        c = colors.get(r["budget"], "k")
        if r.get("coef") and r.get("params_min") and r.get("params_max"):
            lo, hi = np.log10(r["params_min"]), np.log10(r["params_max"])
            x = np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 200)
            c2, c1, c0 = r["coef"]
            ax.plot(10**x, c2 * x**2 + c1 * x + c0, "-", color=c, lw=1.3, alpha=0.8)
        if r.get("params_opt") and r.get("loss_opt") is not None:
            interior = r.get("interior", True)
            ax.plot(r["params_opt"], r["loss_opt"], "*", ms=13, mec="k", mew=0.8,
                    color=c if interior else "white", zorder=5)
    vp = analysis.get("fits", {}).get("isoflop_vp", {})
    al, be = vp.get("alpha"), vp.get("beta")
    for r in vp.get("budgets") or []:  # approach 2b: the Chinchilla-shaped curve of each budget
        coef = r.get("coef") or [None]
        if al is None or be is None or None in coef or not r.get("params_min"):
            continue
        lo, hi = np.log10(r["params_min"]), np.log10(r["params_max"])
        n = 10 ** np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 200)
        e, a, b = coef
        ax.plot(n, e + a * n ** -al + b * n ** be, ":", color=colors.get(r["budget"], "k"), lw=1.2, alpha=0.9)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_tick_formatter())
    ax.set_xlabel(f"Model size N ({_params_label(analysis)})")
    ax.set_ylabel("Final held-out loss")
    ax.set_title("IsoFLOP profiles: loss vs model size at fixed compute\n"
                 "(solid: parabola; dotted: Chinchilla-shaped curve, 2b; stars: parabola minima, white = at the "
                 "grid's edge)", fontsize=8.5)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(title="Compute budget", fontsize=8, title_fontsize=8.5, loc="best")
    return _save(fig, path, dpi)


def _optimum_plot(analysis: Mapping, path: Path, key: str, dpi: int) -> Path | None:
    """N_opt(C) (key='params') or D_opt(C) (key='tokens') with every approach's law."""
    plt = _plt()
    fits = analysis.get("fits", {})
    table = analysis.get("table") or []
    unit = analysis.get("data_unit", "tokens")
    exp_key, k_key = ("a", "k_N") if key == "params" else ("b", "k_D")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    cs = [r["budget"] for r in table] or [1e18, 1e24]
    iso_rows = fits.get("isoflop", {}).get("budgets") or []
    cs = cs + [r["budget"] for r in iso_rows]
    cgrid = np.logspace(np.log10(min(cs)) - 0.1, np.log10(max(cs)) + 0.1, 200)
    drew = False
    for name, (label, color, ls) in APPROACH_STYLE.items():
        f = fits.get(name, {})
        if f.get("status") != "ok" or f.get(k_key) is None or f.get(exp_key) is None:
            continue
        ci_txt = fmt_interval(f.get(f"{exp_key}_ci"))
        ci_txt = f" {ci_txt}" if ci_txt else ""
        ax.plot(cgrid, f[k_key] * cgrid ** f[exp_key], ls=ls, color=color, lw=1.6,
                label=f"{label}: {exp_key} = {f[exp_key]:.3f}{ci_txt}")
        drew = True
    opt_key = "params_opt" if key == "params" else "tokens_opt"
    ip = [r for r in iso_rows if r.get(opt_key)]
    if ip:
        inner = [r for r in ip if r.get("interior", True)]
        edge = [r for r in ip if not r.get("interior", True)]
        if inner:
            ax.plot([r["budget"] for r in inner], [r[opt_key] for r in inner], "o", color="tab:blue", mec="k",
                    label="IsoFLOP minima (interior)")
        if edge:
            ax.plot([r["budget"] for r in edge], [r[opt_key] for r in edge], "o", mfc="white", mec="tab:blue",
                    label="IsoFLOP minima at grid edge (not fitted)")
        drew = True
    env = [p for p in fits.get("envelope", {}).get("points") or [] if p.get(key)]
    if env:
        ax.plot([p["flops"] for p in env], [p[key] for p in env], ".", color="tab:green", alpha=0.5,
                label="envelope points")
    ci_key = f"{key}_ci"
    band = [r for r in table if r.get(ci_key) and None not in r[ci_key]]
    if band:
        ax.fill_between([r["budget"] for r in band], [r[ci_key][0] for r in band], [r[ci_key][1] for r in band],
                        color="0.6", alpha=0.25, label=f"table {round(100 * interval_level(analysis))}% interval "
                                                        f"({analysis.get('table_source', '')})")
    if not drew:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(_flops_formatter())
    ax.yaxis.set_major_formatter(_tick_formatter())
    ax.set_xlabel("Training compute C (FLOPs)")
    if key == "params":
        ax.set_ylabel(f"Compute-optimal model size N_opt ({_params_label(analysis)})")
        ax.set_title("Compute-optimal model size: N_opt = k_N C^a (lines extrapolate the fits)", fontsize=10)
    else:
        ax.set_ylabel(f"Compute-optimal data D_opt ({unit})")
        ax.set_title(f"Compute-optimal training data: D_opt = k_D C^b ({unit})", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7.5, loc="upper left")
    return _save(fig, path, dpi)


def plot_loss_vs_compute(analysis: Mapping, runs: Iterable[Mapping], path: Path, dpi: int = 130) -> Path | None:
    plt = _plt()
    pts = _points(analysis)
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 5))
    import matplotlib

    params = np.array([p["params"] for p in pts], dtype=float)
    norm = matplotlib.colors.LogNorm(vmin=params.min(), vmax=max(params.max(), params.min() * 1.01))
    cmap = matplotlib.colormaps["plasma"]
    for r in runs:
        h = r.get("history") or []
        if r.get("status") == "completed" and len(h) > 1:
            ax.plot([q["flops"] for q in h], [q["loss"] for q in h], "-", lw=0.6, alpha=0.35,
                    color=cmap(norm(r.get("params", params.min()))))
    sc = ax.scatter([p.get("flops") or p["budget"] for p in pts], [p["loss"] for p in pts], c=params, cmap=cmap,
                    norm=norm, s=22, edgecolors="k", linewidths=0.4, zorder=3)
    cb = fig.colorbar(sc, ax=ax)
    cb.set_label(f"Model size N ({_params_label(analysis)})")
    cb.ax.yaxis.set_major_formatter(_tick_formatter())
    from matplotlib.ticker import NullFormatter

    cb.ax.yaxis.set_minor_formatter(NullFormatter())
    lvc = analysis.get("fits", {}).get("loss_vs_compute", {})
    iso_rows = analysis.get("fits", {}).get("isoflop", {}).get("budgets") or []
    front = [r for r in iso_rows if r.get("loss_opt") is not None]
    if front:
        ax.plot([r["budget"] for r in front], [r["loss_opt"] for r in front], "*", ms=12, color="tab:blue",
                mec="k", zorder=4, label="IsoFLOP minima (compute-optimal frontier)")
    if lvc.get("status") == "ok":
        cs = [p.get("flops") or p["budget"] for p in pts]
        c = np.logspace(np.log10(min(cs)), np.log10(max(cs)) + 0.5, 200)
        ax.plot(c, lvc["E"] + lvc["A"] * c ** (-lvc["gamma"]), "k--", lw=1.3,
                label=f"L*(C) = {lvc['E']:.3f} + {lvc['A']:.3g} C^-{lvc['gamma']:.3f}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_flops_formatter())
    ax.set_xlabel("Training compute C (FLOPs)")
    ax.set_ylabel("Final loss" if analysis.get("input") else "Held-out loss")
    ax.set_title("Loss vs compute" + ("" if analysis.get("input") else " (thin lines: evaluation curves during training)"),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    if front or lvc.get("status") == "ok":
        ax.legend(fontsize=8)
    return _save(fig, path, dpi)


def plot_residuals(analysis: Mapping, path: Path, dpi: int = 130) -> Path | None:
    plt = _plt()
    res = [r for r in analysis.get("residuals") or [] if r.get("residual") is not None]
    if not res:
        return None
    budget_of = {p["id"]: p.get("budget") for p in analysis.get("points", [])}
    budgets = sorted({b for b in budget_of.values() if b})
    colors = _budget_colors(budgets) if budgets else {}
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for r in res:
        b = budget_of.get(r.get("id"))
        ax.plot(r["params"], r["residual"], "o", ms=5, color=colors.get(b, "tab:gray"), mec="k", mew=0.3)
    ax.axhline(0, color="k", lw=0.8)
    if 0 < len(budgets) <= 12:
        from matplotlib.lines import Line2D

        ax.legend(handles=[Line2D([], [], ls="", marker="o", color=colors[b], mec="k", mew=0.3, label=f"{sci(b)} FLOPs")
                           for b in budgets], fontsize=7.5, title="Compute budget", title_fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_tick_formatter())
    ax.set_xlabel(f"Model size N ({_params_label(analysis)})")
    ax.set_ylabel("loss - fitted L(N, D)")
    ax.set_title("Approach 3 residuals (colour: compute budget)", fontsize=10)
    ax.grid(True, alpha=0.25)
    return _save(fig, path, dpi)


def plot_bootstrap(analysis: Mapping, path: Path, dpi: int = 130) -> Path | None:
    plt = _plt()
    fits = analysis.get("fits", {})
    samples = {n: fits.get(n, {}).get("bootstrap") for n in APPROACH_STYLE}
    samples = {n: s for n, s in samples.items() if s and s.get("a")}
    if not samples:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, key, sym in ((axes[0], "a", "a  (N_opt ∝ C^a)"), (axes[1], "b", "b  (D_opt ∝ C^b)")):
        for name, s in samples.items():
            vals = np.asarray([v for v in s.get(key, []) if v is not None], dtype=float)
            if vals.size:
                label, color, _ = APPROACH_STYLE[name]
                ax.hist(vals, bins=30, alpha=0.45, color=color, label=label.split(":")[0], density=True)
                ax.axvline(fits[name].get(key, np.nan), color=color, lw=1.5)
        ax.set_xlabel(sym)
        ax.set_ylabel("bootstrap density")
        ax.grid(True, alpha=0.25)
    axes[0].legend(fontsize=7.5)
    fig.suptitle("Bootstrap spread of the scaling exponents (vertical lines: full-data fits)", fontsize=10)
    return _save(fig, path, dpi)


_FORECAST_COLORS = {"table": "k", "isoflop_vp": "tab:blue", "parametric": "tab:orange", "isoflop": "tab:green",
                    "envelope": "tab:purple"}


def plot_forecast_check(analysis: Mapping, path: Path, dpi: int = 130) -> Path | None:
    """The forecast check: the IsoFLOP trained at the forecast budget, its own minimum (band: its interval)
    and every pre-registered forecast (marker: N_opt and loss; bars: their intervals)."""
    fc = analysis.get("forecast_check")
    if not fc:
        return None
    plt = _plt()
    real = fc["realised"]
    pts = _points(analysis)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.plot([p["params"] for p in pts], [p["loss"] for p in pts], "o", color="0.3", ms=6, label="runs of the check")
    curve = (real.get("curve") or {}) if real.get("params") else {}  # no minimum: no curve to show
    lo, hi = np.log(real["params_min"]), np.log(real["params_max"])
    n = np.exp(np.linspace(lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo), 200))
    if curve.get("kind") == "chinchilla":
        e, a, b = curve["coef"]
        ax.plot(n, e + a * n ** -curve["alpha"] + b * n ** curve["beta"], "-", color="0.3", lw=1.2)
    elif curve.get("kind") == "parabola":
        ax.plot(n, np.polyval(curve["coef"], np.log(n)), "-", color="0.3", lw=1.2)
    if real.get("params"):
        ax.axvline(real["params"], color="0.3", ls="--", lw=1, label="realised optimum")
        if real.get("params_ci"):
            ax.axvspan(*real["params_ci"], color="0.5", alpha=0.15)
    for f in fc["forecasts"]:
        if not f.get("params") or f.get("loss") is None:
            continue
        c = _FORECAST_COLORS.get(f["forecast"], "tab:gray")
        xe = [[f["params"] - f["params_interval"][0]], [f["params_interval"][1] - f["params"]]] if f.get("params_interval") else None
        ye = [[f["loss"] - f["loss_interval"][0]], [f["loss_interval"][1] - f["loss"]]] if f.get("loss_interval") else None
        ax.errorbar([f["params"]], [f["loss"]], xerr=xe, yerr=ye, fmt="D" if f["forecast"] == "table" else "s",
                    color=c, ms=8 if f["forecast"] == "table" else 6, capsize=3, lw=1.2,
                    label=f"forecast: {f['forecast']}" + (f" ({f['params_ratio']:.2f}x)" if f.get("params_ratio") else ""))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_tick_formatter())
    ax.set_xlabel(f"Model size N ({_params_label(analysis)})")
    ax.set_ylabel("Final held-out loss")
    if not real.get("params"):
        ax.text(0.5, 0.04, "no minimum: the losses do not curve upwards across the sizes (not scored)",
                transform=ax.transAxes, ha="center", fontsize=8.5, color="tab:red")
    ax.set_title(f"Forecast check at {sci(fc['budget'])} FLOPs ({fc.get('factor') or '?'}x the sweep), "
                 f"forecasts registered {str(fc.get('registered', ''))[:10]}\n(bars: the forecasts' intervals; band: "
                 f"the realised optimum's interval)", fontsize=8.5)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path, dpi)


def plot_data_constrained(analysis: Mapping, path: Path, dpi: int = 130) -> Path | None:
    """At one budget (the verdict's, else the table's largest), the optimum for less and less unique data: its
    loss against the epochs the unlimited-data D_opt would take (left) and how N_opt and D_opt shift (right)."""
    from flops_fit.analysis.data_constrained import law_from_analysis

    ud = analysis.get("unique_data") or {}
    law = law_from_analysis(analysis) if ud else None
    rows = [r for r in analysis.get("table") or [] if r.get("params") and r.get("tokens")]
    if law is None or not rows:
        return None
    v = analysis.get("verdict") or {}
    C = float(v.get("budget") or max(r["budget"] for r in rows))
    row = min(rows, key=lambda r: abs(np.log(r["budget"] / C)))
    C, k = float(row["budget"]), float(row["budget"]) / (row["params"] * row["tokens"])
    d0 = float(law.surface.d_opt(C, k))
    U = ud.get("unique_tokens")
    epochs = np.geomspace(1.0, max(64.0, 1.5 * d0 / float(U)) if U else 64.0, 40)
    opts = [law.optimum(C, d0 / e, k) for e in epochs]
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax.plot(epochs, [o.loss for o in opts], "-", color="tab:red", label="data-constrained optimum")
    ax.axhline(opts[0].loss_unlimited, color="k", ls="--", lw=1, label="unlimited data")
    bx.plot(epochs, [o.params / o.params_unlimited for o in opts], "-", color="tab:blue", label="N_opt / unlimited")
    bx.plot(epochs, [o.tokens / o.tokens_unlimited for o in opts], "-", color="tab:green", label="D_opt / unlimited")
    bx.plot(epochs, [o.epochs for o in opts], ":", color="tab:purple", label="epochs trained at the optimum")
    for a in (ax, bx):
        a.set_xscale("log")
        a.axvline(4.0, color="0.6", lw=1, ls=":")  # up to ~4 epochs repeats are nearly free (Muennighoff et al.)
        if U:
            a.axvline(d0 / float(U), color="tab:orange", lw=1.5, label=f"your data: {human(U)} unique")
        a.set_xlabel(f"epochs of the unlimited-data D_opt ({human(d0)}) over the unique data")
        a.legend(fontsize=8)
    bx.set_yscale("log")
    ax.set_ylabel("loss")
    src = ud.get("law_source") or "published"
    fig.suptitle(f"Less unique data at {sci(C)} FLOPs (R_D*={law.R_D_star:.3g}, R_N*={law.R_N_star:.3g}, {src})")
    return _save(fig, path, dpi)


def make_plots(analysis: Mapping, runs: Sequence[Mapping], out_dir: Path, fmt: str = "png", dpi: int = 130,
               figures: list | None = None) -> list[Path]:
    """Draw every figure that the analysis supports; returns the files written.

    ``figures``: a list that receives the drawn matplotlib Figures, left open (for a notebook);
    without it every figure is closed once written.
    """
    token = _KEEP.set(figures)
    try:
        return _make_plots(analysis, runs, out_dir, fmt, dpi)
    finally:
        _KEEP.reset(token)


def _make_plots(analysis: Mapping, runs: Sequence[Mapping], out_dir: Path, fmt: str, dpi: int) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        ("forecast_check", lambda p: plot_forecast_check(analysis, p, dpi)),
        ("isoflop", lambda p: plot_isoflop(analysis, p, dpi)),
        ("n_opt", lambda p: _optimum_plot(analysis, p, "params", dpi)),
        ("d_opt", lambda p: _optimum_plot(analysis, p, "tokens", dpi)),
        ("loss_vs_compute", lambda p: plot_loss_vs_compute(analysis, runs, p, dpi)),
        ("parametric_residuals", lambda p: plot_residuals(analysis, p, dpi)),
        ("bootstrap_exponents", lambda p: plot_bootstrap(analysis, p, dpi)),
        ("data_constrained", lambda p: plot_data_constrained(analysis, p, dpi)),
    ]
    written = []
    for name, draw in jobs:
        final = out_dir / f"{name}.{fmt}"
        tmp = out_dir / f".{name}.tmp.{fmt}"  # drawn aside, then moved: no half-written figure
        if draw(tmp) is not None:
            tmp.replace(final)
            written.append(final)
        elif final.exists():
            final.unlink()  # a stale figure from an earlier analysis would mislead
    return written
