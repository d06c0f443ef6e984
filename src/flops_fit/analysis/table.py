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


@dataclass
class TableModel:
    """What every row of the table is computed from, at any budget: N_opt = k_N C^a, D_opt = k_D C^b from
    the table's approach, the loss from the loss model (the frontier L*(C) = E + A0 (C/C0)^-gamma, or the
    surface L(N, D) at the table's allocation), the same quantities per bootstrap replicate (paired: one
    set of resample counts drives every approach), and the competitive candidates' allocations.

    Serialised as analysis.json's ``table_model``; the table's rows and ``predict`` at any budget are
    both :meth:`rows`, so they cannot disagree."""

    source: str
    k_N: float
    a: float
    k_D: float
    b: float
    ci: float = 0.95
    loss_source: str | None = None
    loss_models: dict = field(default_factory=dict)  # every loss model that fitted: name -> its parameters
    replicates: dict | None = None  # k_N, a, k_D, b and the loss model's parameters, (R,) arrays
    candidates: list = field(default_factory=list)  # [{approach, k_N, a, k_D, b}] (model uncertainty)
    loss_competitive: list = field(default_factory=list)  # loss models the backtest could not tell apart
    planned: list = field(default_factory=list)
    # the backtest's forecast errors (RMS log error of the chosen allocation and loss models, at the median
    # ratio ``ahead`` beyond the data they were fitted on): beyond the sweep's largest budget ``sweep_max``
    # the *_ci_with_model intervals widen by z x error x log(C / sweep_max) / log(ahead)
    forecast_error: dict = field(default_factory=dict)  # {"params": s, "loss": s, "ahead": ratio}
    sweep_max: float | None = None

    # -- the computation ----------------------------------------------------------------------
    @staticmethod
    def _loss_of(kind_params: dict, C, N, D):
        p = kind_params
        with np.errstate(all="ignore"):
            if p.get("kind") == "frontier":
                return p["E"] + p["A0"] * (C / p["C0"]) ** (-p["gamma"])
            if p.get("kind") == "surface":
                return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]
        return np.full(np.broadcast(C, N).shape, np.nan)

    def rows(self, budgets) -> list[dict]:
        """The table's rows at ``budgets`` (FLOPs): point values, ``ci`` intervals from the replicates,
        and the intervals widened to contain every competitive candidate's value (``*_ci_with_model``)."""
        C = np.atleast_1d(np.asarray(budgets, dtype=float))
        N, D = self.k_N * C ** self.a, self.k_D * C ** self.b
        loss = self.loss_models.get(self.loss_source or "")
        L = np.asarray(self._loss_of(loss, C, N, D), dtype=float) if loss else np.full(C.shape, np.nan)
        pci = tci = lci = None
        if self.replicates is not None:
            r = {k: (np.asarray(v, dtype=float) if not isinstance(v, dict) else v) for k, v in self.replicates.items()}
            with np.errstate(all="ignore"):
                Nr = r["k_N"][:, None] * C[None, :] ** r["a"][:, None]
                Dr = r["k_D"][:, None] * C[None, :] ** r["b"][:, None]
            pci, tci = column_intervals(Nr, self.ci), column_intervals(Dr, self.ci)
            if r.get("loss"):
                lp = {k: (np.asarray(v, dtype=float)[:, None] if isinstance(v, (list, np.ndarray)) else v)
                      for k, v in r["loss"].items()}
                lci = column_intervals(np.asarray(self._loss_of(lp, C[None, :], Nr, Dr), dtype=float), self.ci)
        cand_N = [c["k_N"] * C ** c["a"] for c in self.candidates]
        cand_D = [c["k_D"] * C ** c["b"] for c in self.candidates]
        cand_L = [np.asarray(self._loss_of(self.loss_models[k], C, N, D), dtype=float) for k in self.loss_competitive
                  if k != self.loss_source and k in self.loss_models]
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
            for key, ci_, vals, point in (("params", row["params_ci"], cand_N, N[j]),
                                          ("tokens", row["tokens_ci"], cand_D, D[j]),
                                          ("loss", row["loss_ci"], cand_L, L[j])):
                pts = [float(v[j]) for v in vals if np.isfinite(v[j])] + ([float(point)] if np.isfinite(point) else [])
                rng = [min(pts), max(pts)] if len(pts) >= 2 else None
                if key == "params":
                    row["params_model_range"] = rng
                base = ci_ or ([float(point)] * 2 if np.isfinite(point) else None)
                iv = [min(base[0], rng[0]), max(base[1], rng[1])] if (base and rng) else (ci_ if ci_ else None)
                f = widen["loss" if key == "loss" else "params"][j]
                if iv is not None and f > 1.0:
                    iv = [iv[0] / f, iv[1] * f]
                row[f"{key}_ci_with_model"] = iv
            out.append(row)
        return out

    def _widening(self, C) -> dict:
        """Multiplicative widening per budget from the backtest's forecast errors (1 inside the sweep)."""
        ones = np.ones(C.shape)
        fe = self.forecast_error or {}
        ahead = fe.get("ahead")
        if not self.sweep_max or not ahead or ahead <= 1.0:
            return {"params": ones, "loss": ones}
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + self.ci / 2.0)
        reach = np.maximum(np.log(C / self.sweep_max), 0.0) / np.log(ahead)
        return {k: (np.exp(z * float(fe[k]) * reach) if fe.get(k) else ones) for k in ("params", "loss")}

    # -- JSON -----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        rep = None
        if self.replicates is not None:
            rep = {k: _r(v) for k, v in self.replicates.items() if k != "loss"}
            if self.replicates.get("loss"):
                rep["loss"] = {k: (_r(v) if isinstance(v, (list, np.ndarray)) else v)
                               for k, v in self.replicates["loss"].items()}
        return {"source": self.source, "k_N": self.k_N, "a": self.a, "k_D": self.k_D, "b": self.b, "ci": self.ci,
                "loss_source": self.loss_source, "loss_models": self.loss_models, "candidates": self.candidates,
                "loss_competitive": self.loss_competitive, "planned": self.planned, "forecast_error": self.forecast_error,
                "sweep_max": self.sweep_max, "replicates": rep}

    @classmethod
    def from_json(cls, d: dict) -> "TableModel":
        rep = d.get("replicates")
        if rep is not None:
            rep = {k: (_arr(v) if k != "loss" else {q: (_arr(w) if isinstance(w, list) else w) for q, w in v.items()})
                   for k, v in rep.items()}
        return cls(source=d["source"], k_N=d["k_N"], a=d["a"], k_D=d["k_D"], b=d["b"], ci=d.get("ci", 0.95),
                   loss_source=d.get("loss_source"), loss_models=d.get("loss_models") or {}, replicates=rep,
                   candidates=d.get("candidates") or [], loss_competitive=d.get("loss_competitive") or [],
                   planned=d.get("planned") or [], forecast_error=d.get("forecast_error") or {},
                   sweep_max=d.get("sweep_max"))


def _loss_params(name: str, fits: dict) -> dict | None:
    if name == "parametric" and fits["parametric"].ok:
        law = fits["parametric"].law
        return {"kind": "surface", "E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta}
    if name == "loss_vs_compute" and fits["loss_vs_compute"].ok:
        f = fits["loss_vs_compute"]
        return {"kind": "frontier", "E": f.E, "A0": f.A0, "C0": f.C0, "gamma": f.gamma}
    return None


def _loss_replicates(name: str, fits: dict) -> dict | None:
    if name == "parametric" and fits["parametric"].replicates is not None:
        r = fits["parametric"].replicates
        return {"kind": "surface", **{k: np.asarray(r[k], dtype=float) for k in ("E", "A", "B", "alpha", "beta")}}
    if name == "loss_vs_compute" and fits["loss_vs_compute"].replicates is not None:
        r = fits["loss_vs_compute"].replicates
        return {"kind": "frontier", "E": np.asarray(r["E"]), "A0": np.asarray(r["A0"]), "gamma": np.asarray(r["gamma"]),
                "C0": float(r["C0"])}
    return None


# the loss models, the default first: the frontier through the budgets' own minima forecasts the loss of a
# held-out budget within 0.9% on every public sweep, the surface at 0.5-5.8% (benchmarks/bench_forecast.py)
LOSS_ORDER = ("loss_vs_compute", "parametric")


def table_model(fits: dict, ci: float, planned, span, preferred: str = "auto", selected: str | None = None,
                loss_selected: str | None = None, competitive=(), loss_competitive=(),
                forecast_error: dict | None = None) -> TableModel | None:
    """The table's model from the approaches' fits: the allocation of ``table_source(...)``, the loss of
    ``loss_selected`` (else the first of LOSS_ORDER that fitted), their paired replicates, the competitive
    candidates (those the backtest could not tell apart from the chosen one) and the backtest's errors."""
    source = table_source(fits, preferred, selected)
    if source is None:
        return None
    f = fits[source]
    loss_name = loss_selected if _loss_params(loss_selected or "", fits) else next(
        (k for k in LOSS_ORDER if _loss_params(k, fits)), None)
    rep = None
    if getattr(f, "replicates", None) is not None:
        rep = _power_law_replicates(f, span)
        if rep is not None and loss_name:
            rep["loss"] = _loss_replicates(loss_name, fits)
    cands = [{"approach": k, "k_N": fits[k].k_N, "a": fits[k].a, "k_D": fits[k].k_D, "b": fits[k].b}
             for k in competitive if k != source and k in fits and fits[k].ok and fits[k].k_N is not None]
    return TableModel(source=source, k_N=float(f.k_N), a=float(f.a), k_D=float(f.k_D), b=float(f.b), ci=float(ci),
                      loss_source=loss_name, loss_models={k: _loss_params(k, fits) for k in LOSS_ORDER if _loss_params(k, fits)},
                      replicates=rep, candidates=cands, loss_competitive=list(loss_competitive), planned=[float(p) for p in planned],
                      forecast_error=dict(forecast_error or {}), sweep_max=float(max(span)))


def build_table(budgets, model: TableModel | None) -> Table:
    """Rows at ``budgets`` from the table's model (an empty table when no approach fitted)."""
    if model is None:
        return Table()
    model = TableModel.from_json(model.to_json())  # the rows from what analysis.json keeps, as predict reads it
    return Table(model.rows(budgets), model.source, model.loss_source, model)
