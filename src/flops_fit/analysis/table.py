"""The compute-optimal table: N_opt, D_opt and the loss at each budget, with intervals.

The allocation comes from one approach (the table's source), the loss from the parametric
surface when there is one, else the loss frontier. Budgets: the planned ones, any extra ones,
and every decade up to ``max_budget``. Intervals pair the bootstrap replicates of the source
with those of the loss model (the same resample counts drive every approach).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from flops_fit.analysis.agreement import model_range
from flops_fit.analysis.common import column_intervals, jfloat
from flops_fit.analysis.sweep import BUDGET_RTOL


def table_budgets(sweep_budgets, planned, extra, max_budget, min_flops) -> list[float]:
    """Planned budgets + extra + decades up to ``max_budget`` (deduplicated within 1%)."""
    vals = [float(b) for b in list(planned) + list(extra) if b is not None and float(b) > 0]
    base = min(vals) if vals else (min(sweep_budgets) if len(sweep_budgets) else min_flops)
    if base and max_budget and max_budget > 0:
        lo = math.ceil(math.log10(base) - 1e-9)
        hi = math.floor(math.log10(max_budget) + 1e-9)
        vals += [10.0 ** k for k in range(lo, hi + 1)]
    vals.sort()
    out = []
    for v in vals:
        if not out or v > out[-1] * (1 + BUDGET_RTOL):
            out.append(v)
    return out


@dataclass
class Table:
    """The rows of analysis.json's ``table`` and where they came from."""

    rows: list = field(default_factory=list)
    source: str | None = None  # the approach that gives N_opt, D_opt
    loss_source: str | None = None  # the model that gives the loss

    def to_json(self) -> list[dict]:
        return self.rows


# "auto": the model test's choice (selection.py: one surface, or a curve per budget) when both
# fits succeeded, else the first of these that did. Approaches 2b and 3 before 2: they are exact
# on every noise-free Chinchilla surface (approach 2 is not); see docs/analysis-evidence.md.
AUTO_ORDER = ("isoflop_vp", "parametric", "isoflop", "envelope")
SOURCES = ("auto",) + AUTO_ORDER


def table_source(fits: dict, preferred: str = "auto", selected: str | None = None) -> str | None:
    """The approach the table uses: ``preferred`` when it succeeded; for "auto" the model test's
    ``selected`` approach when it succeeded, else the first of AUTO_ORDER."""
    if preferred != "auto" and preferred in fits and fits[preferred].ok:
        return preferred
    if preferred == "auto" and selected in fits and fits[selected].ok:
        return selected
    for name in AUTO_ORDER:
        if name in fits and fits[name].ok:
            return name
    return None


def build_table(budgets, planned, fits: dict, ci: float, preferred: str = "auto", selected: str | None = None) -> Table:
    """Rows at ``budgets`` from ``fits`` (the typed results of each approach, by name)."""
    source = table_source(fits, preferred, selected)
    if source is None:
        return Table()
    par, lvc = fits["parametric"], fits["loss_vs_compute"]
    Cb = np.asarray(budgets, dtype=float)
    f = fits[source]
    Nt, Dt = f.allocation(Cb)
    Nr, Dr = f.allocation_replicates(Cb)
    if par.ok:
        loss_source = "parametric"
        Lt = par.law.loss(Nt, Dt)
        rl = par.replicate_law()
        if rl is not None and Nr is not None:
            with np.errstate(all="ignore"):
                Lr = rl.loss(Nr, Dr)
        else:
            Lr = None
    elif lvc.ok:
        loss_source = "loss_vs_compute"
        Lt = lvc.predict(Cb)
        Lr = lvc.predict_replicates(Cb)
    else:
        loss_source = None
        Lt = np.full(Cb.shape, np.nan)
        Lr = None
    pci, tci, lci = column_intervals(Nr, ci), column_intervals(Dr, ci), column_intervals(Lr, ci)
    spread = model_range(fits, Cb)
    rows = []
    for j, c in enumerate(Cb):
        rng = [float(spread[0][j]), float(spread[1][j])] if spread is not None else None
        hull = None
        if rng is not None:
            lo, hi = (pci[j] if (pci and pci[j]) else [rng[0], rng[1]])
            hull = [min(lo, rng[0]), max(hi, rng[1])]
        rows.append({
            "budget": float(c),
            "params": jfloat(Nt[j]),
            "tokens": jfloat(Dt[j]),
            "tokens_per_param": jfloat(Dt[j] / Nt[j]),
            "loss": jfloat(Lt[j]),
            "params_ci": pci[j] if pci else None,
            "tokens_ci": tci[j] if tci else None,
            "loss_ci": lci[j] if lci else None,
            "planned": any(abs(c - p) <= BUDGET_RTOL * p for p in planned),
            # N_opt across every approach, and the interval widened to include it (model uncertainty)
            "params_model_range": rng,
            "params_ci_with_model": hull,
        })
    return Table(rows, source, loss_source)
