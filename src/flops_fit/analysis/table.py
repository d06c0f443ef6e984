"""The compute-optimal table: N_opt, D_opt and the loss at each budget, with intervals.

The allocation comes from one approach (the table's source), the loss from one loss model (the
frontier L*(C), or the surface), both chosen by how they forecast the sweep's own larger budgets
(backtest.py). Budgets: the planned ones, any extra ones, and every decade up to ``max_budget``.
Intervals pair the bootstrap replicates of the source with those of the loss model (the same
resample counts drive every approach); the ``*_ci_with_model`` intervals also contain the
competitive approaches' values and, beyond the sweep, the backtest's forecast error.
:class:`TableModel` computes a row at any budget: the table and ``predict`` are that one computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from flops_fit.analysis.common import column_intervals, jfloat
from flops_fit.analysis.sweep import BUDGET_RTOL
from flops_fit.analysis.frontier import predict_frontier
from flops_fit.errors import FlopsFitError
from flops_fit.law import ChinchillaLaw


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
    model: "TableModel | None" = None  # what the rows are computed from (analysis.json's table_model)

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


def _power_law_replicates(fit, span):
    """Per-replicate (k_N, a, k_D, b) of a fit's allocation, read off at the two ends of ``span`` (exact for
    every power-law allocation; for approach 3 under another FLOPs rule than 6ND, the chord over the sweep)."""
    if getattr(fit, "replicates", None) is None:
        return None
    lo, hi = float(min(span)), float(max(span))
    if hi <= lo * 1.01:
        lo, hi = lo / 10.0, lo * 10.0
    Nr, Dr = fit.allocation_replicates(np.array([lo, hi]))
    if Nr is None:
        return None
    with np.errstate(all="ignore"):
        a = np.log(Nr[:, 1] / Nr[:, 0]) / np.log(hi / lo)
        b = np.log(Dr[:, 1] / Dr[:, 0]) / np.log(hi / lo)
        k_N = Nr[:, 0] / lo ** a
        k_D = Dr[:, 0] / lo ** b
    return {"k_N": k_N, "a": a, "k_D": k_D, "b": b}


def _r(x):
    """A replicate array as JSON: 6 significant digits, NaN as None."""
    return [float(f"{v:.6g}") if np.isfinite(v) else None for v in np.ravel(np.asarray(x, dtype=float))]


def _arr(v):
    return np.array([np.nan if x is None else x for x in v], dtype=float)


def _rep_to_json(rep):
    if rep is None:
        return None
    return {k: (_r(v) if isinstance(v, (list, np.ndarray)) else v) for k, v in rep.items()}


def _rep_from_json(rep):
    if rep is None:
        return None
    return {k: (_arr(v) if isinstance(v, list) else v) for k, v in rep.items()}


def _loss_of(p: dict, C, N, D):
    """A loss model's L at budgets C and allocations N, D: the frontier L*(C) = E + A0 (C/C0)^-gamma, or the
    surface L(N, D) = E + A/N^alpha + B/D^beta (fields scalars, or (R, 1) columns for replicates)."""
    with np.errstate(all="ignore"):
        if p.get("kind") == "frontier":
            return np.asarray(predict_frontier(p, C) + 0.0 * N, dtype=float)  # one value per (budget, replicate)
        return np.asarray(ChinchillaLaw.from_mapping(p).loss(N, D), dtype=float)


def _col(rep: dict, k: str):
    v = rep[k]
    return v[:, None] if isinstance(v, np.ndarray) else v


@dataclass
class TableModel:
    """What every row of the table is computed from, at any budget: each approach's allocation N_opt = k_N C^a,
    D_opt = k_D C^b, each loss model (the frontier L*(C), or the surface L(N, D) at the allocation), the same
    per bootstrap replicate (paired: one set of resample counts drives every approach), which ones the table
    follows (``source``, ``loss_source``) and which the backtest could not tell apart from them.

    Serialised as analysis.json's ``table_model``; the table's rows, ``predict`` at any budget and the
    pre-registered forecast of a forecast check are all :meth:`rows`, so they cannot disagree."""

    source: str
    ci: float = 0.95
    approaches: list = field(default_factory=list)  # [{approach, k_N, a, k_D, b, replicates}] every one that fitted
    competitive: list = field(default_factory=list)  # approaches the backtest could not tell apart from the source
    loss_source: str | None = None
    loss_models: dict = field(default_factory=dict)  # name -> {kind, parameters..., replicates}
    loss_competitive: list = field(default_factory=list)
    planned: list = field(default_factory=list)
    # the backtest's forecast errors (RMS log error of the source and the loss model, at the median ratio
    # ``ahead`` beyond the budgets they were fitted on): beyond the sweep's largest budget ``sweep_max`` the
    # *_ci_with_model intervals widen (in quadrature, in log space) by z x error x log(C / sweep_max) / log(ahead)
    forecast_error: dict = field(default_factory=dict)  # {"params": s, "loss": s, "ahead": ratio}
    sweep_max: float | None = None

    def approach(self, name: str | None = None) -> dict:
        name = name or self.source
        found = next((a for a in self.approaches if a["approach"] == name), None)
        if found is None:
            raise FlopsFitError(f"the analysis has no successful {name!r} fit; it has: "
                                f"{', '.join(a['approach'] for a in self.approaches) or 'none'}")
        return found

    @property
    def k_N(self):
        return self.approach()["k_N"]

    @property
    def a(self):
        return self.approach()["a"]

    # -- the computation ----------------------------------------------------------------------
    def rows(self, budgets, approach: str | None = None) -> list[dict]:
        """Rows at ``budgets`` (FLOPs) for ``approach`` (default: the table's source): point values, ``ci``
        intervals from the replicates and, for the source, the intervals widened to contain every
        competitive approach's and loss model's value and the backtest's forecast error (``*_ci_with_model``)."""
        C = np.atleast_1d(np.asarray(budgets, dtype=float))
        ap = self.approach(approach)
        N, D = ap["k_N"] * C ** ap["a"], ap["k_D"] * C ** ap["b"]
        loss = self.loss_models.get(self.loss_source or "")
        L = _loss_of(loss, C, N, D) if loss else np.full(C.shape, np.nan)
        pci = tci = lci = None
        r = ap.get("replicates")
        if r is not None:
            with np.errstate(all="ignore"):
                Nr = _col(r, "k_N") * C[None, :] ** _col(r, "a")
                Dr = _col(r, "k_D") * C[None, :] ** _col(r, "b")
            pci, tci = column_intervals(Nr, self.ci), column_intervals(Dr, self.ci)
            lr = (loss or {}).get("replicates")
            if lr is not None:
                lp = {**{k: _col(lr, k) for k in lr}, "kind": loss["kind"]}
                lci = column_intervals(_loss_of(lp, C[None, :], Nr, Dr), self.ci)
        own = ap["approach"] == self.source
        others = [a for a in self.approaches if own and a["approach"] != self.source and a["approach"] in self.competitive]
        cand_N = [a["k_N"] * C ** a["a"] for a in others]
        cand_D = [a["k_D"] * C ** a["b"] for a in others]
        cand_L = [_loss_of(self.loss_models[k], C, N, D) for k in self.loss_competitive
                  if own and k != self.loss_source and k in self.loss_models]
        widen = self._widening(C)
        out = []
        for j, c in enumerate(C):
            row = {
                "budget": float(c),
                "params": jfloat(N[j]),
                "tokens": jfloat(D[j]),
                "tokens_per_param": jfloat(D[j] / N[j]),
                "loss": jfloat(L[j]),
                "params_ci": pci[j] if pci else None,
                "tokens_ci": tci[j] if tci else None,
                "loss_ci": lci[j] if lci else None,
                "planned": any(abs(c - p) <= BUDGET_RTOL * p for p in self.planned),
            }
            if own:
                for key, ci_, vals, point in (("params", row["params_ci"], cand_N, N[j]),
                                              ("tokens", row["tokens_ci"], cand_D, D[j]),
                                              ("loss", row["loss_ci"], cand_L, L[j])):
                    pts = [float(v[j]) for v in vals if np.isfinite(v[j])] + ([float(point)] if np.isfinite(point) else [])
                    rng = [min(pts), max(pts)] if len(pts) >= 2 else None
                    if key == "params":
                        row["params_model_range"] = rng
                    base = ci_ or ([float(point)] * 2 if np.isfinite(point) else None)
                    iv = [min(base[0], rng[0]), max(base[1], rng[1])] if (base and rng) else (ci_ if ci_ else None)
                    w = widen["loss" if key == "loss" else "params"][j]
                    if iv is not None and w > 0.0 and np.isfinite(point):  # in quadrature, in log space
                        lo, hi = np.log(point / iv[0]), np.log(iv[1] / point)
                        iv = [float(point * np.exp(-np.hypot(lo, w))), float(point * np.exp(np.hypot(hi, w)))]
                    row[f"{key}_ci_with_model"] = [float(v) for v in iv] if iv is not None else None
            out.append(row)
        return out

    def _widening(self, C) -> dict:
        """Per budget, the log half-width the backtest's forecast error adds (0 inside the sweep):
        z x error x log(C / sweep_max) / log(ahead), the error growing with the distance of the forecast."""
        zeros = np.zeros(C.shape)
        fe = self.forecast_error or {}
        ahead = fe.get("ahead")
        if not self.sweep_max or not ahead or ahead <= 1.0:
            return {"params": zeros, "loss": zeros}
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + self.ci / 2.0)
        reach = np.maximum(np.log(C / self.sweep_max), 0.0) / np.log(ahead)
        return {k: (z * float(fe[k]) * reach if fe.get(k) else zeros) for k in ("params", "loss")}

    # -- JSON -----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"source": self.source, "ci": self.ci,
                "approaches": [{**a, "replicates": _rep_to_json(a.get("replicates"))} for a in self.approaches],
                "competitive": self.competitive, "loss_source": self.loss_source,
                "loss_models": {k: {**m, "replicates": _rep_to_json(m.get("replicates"))}
                                for k, m in self.loss_models.items()},
                "loss_competitive": self.loss_competitive, "planned": self.planned,
                "forecast_error": self.forecast_error, "sweep_max": self.sweep_max}

    @classmethod
    def from_json(cls, d: dict) -> "TableModel":
        return cls(source=d["source"], ci=d.get("ci", 0.95),
                   approaches=[{**a, "replicates": _rep_from_json(a.get("replicates"))} for a in d.get("approaches") or []],
                   competitive=d.get("competitive") or [], loss_source=d.get("loss_source"),
                   loss_models={k: {**m, "replicates": _rep_from_json(m.get("replicates"))}
                                for k, m in (d.get("loss_models") or {}).items()},
                   loss_competitive=d.get("loss_competitive") or [], planned=d.get("planned") or [],
                   forecast_error=d.get("forecast_error") or {}, sweep_max=d.get("sweep_max"))


def _loss_model(name: str, fits: dict) -> dict | None:
    """A loss model's parameters and replicates, or None when it did not fit."""
    if name == "parametric" and fits["parametric"].ok:
        law, r = fits["parametric"].law, fits["parametric"].replicates
        keys = ("E", "A", "B", "alpha", "beta")
        return {"kind": "surface", **{k: float(getattr(law, k)) for k in keys},
                "replicates": {k: np.asarray(r[k], dtype=float) for k in keys} if r is not None else None}
    if name == "loss_vs_compute" and fits["loss_vs_compute"].ok:
        f, r = fits["loss_vs_compute"], fits["loss_vs_compute"].replicates
        return {"kind": "frontier", "E": f.E, "A0": f.A0, "C0": f.C0, "gamma": f.gamma,
                "replicates": ({"E": np.asarray(r["E"]), "A0": np.asarray(r["A0"]), "gamma": np.asarray(r["gamma"]),
                                "C0": float(r["C0"])} if r is not None else None)}
    return None


# the loss models, the default first: the frontier through the budgets' own minima forecasts the loss of a
# held-out budget within 0.9% on every public sweep, the surface at 0.5-5.8% (benchmarks/bench_forecast.py)
LOSS_ORDER = ("loss_vs_compute", "parametric")


def table_model(fits: dict, ci: float, planned, span, preferred: str = "auto", selected: str | None = None,
                loss_selected: str | None = None, competitive=(), loss_competitive=(),
                forecast_error: dict | None = None) -> TableModel | None:
    """The table's model from the approaches' fits: every approach's allocation and every loss model with
    their paired replicates; the table follows ``table_source(...)`` and ``loss_selected`` (else the first
    of LOSS_ORDER that fitted); ``competitive``: the approaches the backtest could not tell apart from it."""
    source = table_source(fits, preferred, selected)
    if source is None:
        return None
    approaches = [{"approach": k, "k_N": float(fits[k].k_N), "a": float(fits[k].a), "k_D": float(fits[k].k_D),
                   "b": float(fits[k].b), "replicates": _power_law_replicates(fits[k], span)}
                  for k in AUTO_ORDER if k in fits and fits[k].ok and fits[k].k_N is not None and fits[k].a is not None]
    models = {k: m for k in LOSS_ORDER if (m := _loss_model(k, fits)) is not None}
    loss_name = loss_selected if loss_selected in models else next(iter(models), None)
    return TableModel(source=source, ci=float(ci), approaches=approaches, competitive=list(competitive),
                      loss_source=loss_name, loss_models=models, loss_competitive=list(loss_competitive),
                      planned=[float(p) for p in planned], forecast_error=dict(forecast_error or {}),
                      sweep_max=float(max(span)))


def build_table(budgets, model: TableModel | None) -> Table:
    """Rows at ``budgets`` from the table's model (an empty table when no approach fitted)."""
    if model is None:
        return Table()
    model = TableModel.from_json(model.to_json())  # the rows from what analysis.json keeps, as predict reads it
    return Table(model.rows(budgets), model.source, model.loss_source, model)
