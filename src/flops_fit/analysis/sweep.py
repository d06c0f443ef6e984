"""The analysis's typed input: run records -> a :class:`Sweep` of arrays, budgets grouped.

Takes the ``runs/<id>.json`` records (or :func:`load_external` rows), keeps the completed ones
with a finite loss, and lists the rest with the reason. Budgets are the recorded ones, else
the run's FLOPs grouped within 1%. FLOPs per token as a function of N is read off the runs
(:class:`FlopsPerTokenFromRuns`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from flops_fit.analysis.diagnostics import Diagnostics
from flops_fit.errors import FlopsFitError
from flops_fit.law import SIX_ND

BUDGET_RTOL = 0.01  # runs whose FLOPs agree within 1% share a budget


# ---------------------------------------------------------------------------------------------
# budgets and FLOPs per token


def group_budgets(values, rtol: float = BUDGET_RTOL):
    """Group FLOP values that agree within ``rtol`` (relative) into budgets.

    Returns ``(labels, budgets)``: ``labels[i]`` indexes ``budgets`` (each group's most common
    value, else its median), sorted ascending.
    """
    v = np.asarray(values, dtype=float)
    order = np.argsort(v)
    labels = np.empty(v.size, dtype=np.int64)
    budgets = []
    start = None
    members: list[int] = []
    for i in order:
        if start is None or v[i] > start * (1.0 + rtol):
            if members:
                budgets.append(_representative(v[members]))
            start = v[i]
            members = []
        members.append(i)
        labels[i] = len(budgets)
    if members:
        budgets.append(_representative(v[members]))
    return labels, np.asarray(budgets)


def _representative(values):
    """The budget of a group: its most common value (the planned budget), else the median."""
    vals, counts = np.unique(values, return_counts=True)
    if counts.max() > 1:
        return float(vals[np.argmax(counts)])
    return float(np.sort(values)[(values.size - 1) // 2])


class FlopsPerTokenFromRuns:
    """fpt(N): training FLOPs per token as a function of the parameter count, read off the runs.

    Exactly ``6 N`` when every run's flops equal 6 x params x tokens (the ``6nd`` convention);
    otherwise piecewise-linear interpolation of the runs' flops/tokens against N in log-log,
    extended beyond the sampled sizes with the slope of a log-log least-squares line.
    """

    def __init__(self, params, flops, tokens):
        N = np.asarray(params, dtype=float)
        fpt = np.asarray(flops, dtype=float) / np.asarray(tokens, dtype=float)
        ratio = fpt / (SIX_ND * N)
        self.exact_6n = bool(N.size == 0 or np.all(np.abs(ratio - 1.0) <= 1e-6))
        if self.exact_6n:
            self.kind = "6N"
            return
        self.kind = "interpolated"
        lx = np.log(N)
        ly = np.log(fpt)
        ux = np.unique(lx)
        uy = np.array([ly[lx == u].mean() for u in ux])
        self._x, self._y = ux, uy
        if ux.size >= 2:
            self._slope = float(np.polyfit(ux, uy, 1)[0])
        else:
            self._slope = 1.0  # a single size: assume fpt proportional to N

    def __call__(self, N):
        N = np.asarray(N, dtype=float)
        if self.exact_6n:
            return SIX_ND * N
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log(N)
        y = np.interp(x, self._x, self._y)
        y = np.where(x < self._x[0], self._y[0] + self._slope * (x - self._x[0]), y)
        y = np.where(x > self._x[-1], self._y[-1] + self._slope * (x - self._x[-1]), y)
        return np.exp(y)

    @property
    def for_allocation(self):
        """What an allocation needs: None under C = 6ND (closed forms apply), else this callable."""
        return None if self.exact_6n else self


# ---------------------------------------------------------------------------------------------
# the sweep


@dataclass
class Sweep:
    """The usable runs as arrays, with their budgets and what was left out."""

    ids: list
    N: np.ndarray  # parameters (total or non-embedding, per params_kind)
    D: np.ndarray  # tokens (or samples)
    L: np.ndarray  # final loss
    C: np.ndarray  # training FLOPs
    curves: list  # per run: (tokens, flops, loss) arrays of its history
    labels: np.ndarray  # budget index of each run
    budgets: np.ndarray  # (G,) budget of each group, ascending
    n_inferred: int  # runs whose budget was inferred from their FLOPs
    data_unit: str
    fpt: FlopsPerTokenFromRuns
    excluded: list = field(default_factory=list)  # [{id, status, reason}]
    n_runs: int = 0  # records given, usable or not
    params_kind: str = "total"
    history_batches: list = field(default_factory=list)  # per run: held-out batches per history point (None: all)

    @property
    def n(self) -> int:
        return int(self.N.size)

    @property
    def sizes_per_budget(self) -> np.ndarray:
        return np.array([np.unique(np.round(self.N[self.labels == g], 6)).size for g in range(self.budgets.size)])

    @property
    def isoflop_groups(self) -> np.ndarray:
        """Indices of the budgets with runs at 3 or more sizes (the IsoFLOP profiles)."""
        return np.flatnonzero(self.sizes_per_budget >= 3)

    def below(self, budget: float) -> "Sweep":
        """The runs of the budgets up to ``budget`` (within 1%), as a sweep of their own: what a study
        that stopped there would have had (the FLOPs-per-token accounting is kept)."""
        keep_groups = np.flatnonzero(self.budgets <= budget * (1 + BUDGET_RTOL))
        keep = np.isin(self.labels, keep_groups)
        remap = np.full(self.budgets.size, -1)
        remap[keep_groups] = np.arange(keep_groups.size)
        idx = np.flatnonzero(keep)
        return Sweep(ids=[self.ids[i] for i in idx], N=self.N[idx], D=self.D[idx], L=self.L[idx], C=self.C[idx],
                     curves=[self.curves[i] for i in idx], labels=remap[self.labels[idx]],
                     budgets=self.budgets[keep_groups], n_inferred=self.n_inferred, data_unit=self.data_unit,
                     fpt=self.fpt, n_runs=int(idx.size), params_kind=self.params_kind,
                     history_batches=[self.history_batches[i] for i in idx] if self.history_batches else [])


def load_sweep(runs, params_kind: str, plan=None, diags: Diagnostics | None = None) -> Sweep:
    """Collect ``runs`` into a :class:`Sweep`; raises :class:`FlopsFitError` when none is usable."""
    diags = Diagnostics() if diags is None else diags
    rows, excluded = _collect(runs, params_kind)
    if excluded:
        by = {}
        for e in excluded:
            by.setdefault(e["status"], []).append(e["id"])
        parts = "; ".join(f"{st}: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}" for st, ids in by.items())
        diags.add("warning", "excluded_runs", f"{len(excluded)} run(s) excluded from every fit ({parts})")
    if not rows:
        raise FlopsFitError(f"no completed runs with a finite loss among {len(runs)} run(s) "
                            f"({len(excluded)} failed/diverged/invalid); fix or re-run them with ff-train retry_failed=true")
    _curves_on_one_set(rows, diags)
    N = np.array([r["N"] for r in rows])
    D = np.array([r["D"] for r in rows])
    L = np.array([r["L"] for r in rows])
    C = np.array([r["C"] for r in rows])
    data_unit = (plan or {}).get("data_unit") or next((r["data_unit"] for r in rows if r["data_unit"]), "tokens")

    # budgets: the recorded one, else the run's FLOPs; grouped within 1%
    n_inferred = sum(r["budget"] is None for r in rows)
    bvals = np.array([r["budget"] if r["budget"] is not None else r["C"] for r in rows])
    labels, budgets = group_budgets(bvals, BUDGET_RTOL)
    if n_inferred:
        sizes_per = np.array([np.unique(np.round(N[labels == g], 6)).size for g in range(budgets.size)])
        inferred = np.array([r["budget"] is None for r in rows])
        in_groups = int(np.sum(inferred & (sizes_per[labels] >= 3)))
        if in_groups < 0.5 * n_inferred:
            # continuous FLOPs (e.g. runs from a paper's figure): chance near-coincidences are
            # not IsoFLOP profiles, so every inferred run keeps a budget of its own
            idx = np.flatnonzero(inferred)
            labels = labels.copy()
            labels[idx] = budgets.size + np.arange(idx.size)
            budgets = np.concatenate([budgets, C[idx]])
            diags.add("info", "budgets_inferred",
                      f"{n_inferred} run(s) had no budget and their FLOPs do not form IsoFLOP groups (only "
                      f"{in_groups} share a FLOP count within {BUDGET_RTOL:.0%} with runs at 3+ sizes); "
                      f"treating them as unrelated budgets")
        else:
            diags.add("info", "budgets_inferred",
                      f"{n_inferred} run(s) had no budget; budgets were inferred by grouping FLOPs within "
                      f"{BUDGET_RTOL:.0%}")
    return Sweep(ids=[r["id"] for r in rows], N=N, D=D, L=L, C=C, curves=[r["hist"] for r in rows],
                 labels=labels, budgets=budgets, n_inferred=int(n_inferred), data_unit=data_unit,
                 fpt=FlopsPerTokenFromRuns(N, C, D), excluded=excluded, n_runs=len(runs), params_kind=params_kind,
                 history_batches=[r["history_batches"] for r in rows])


def _float_or(v, default):
    try:
        return float(v) if v is not None else default
    except (TypeError, ValueError):
        return default


def _curves_on_one_set(rows, diags: Diagnostics) -> None:
    """Approach 1 compares the runs' loss curves with each other: warn when the usable runs (``_collect``'s
    rows) with a curve measured theirs on different parts of the held-out split (``history_batches``:
    trainer.eval_budget or eval_max_batches)."""
    seen = {r["history_batches"] for r in rows if r["hist"][0].size}
    if len(seen) > 1:
        names = ", ".join("the whole split" if k is None else f"{k} batch{'es' if k != 1 else ''}"
                          for k in sorted(seen, key=lambda k: math.inf if k is None else k))
        diags.add("warning", "curves_on_different_data",
                  f"the runs' loss curves were evaluated on different held-out batches ({names}): approach 1 "
                  f"compares curves offset from each other; train every run with the same trainer.eval_budget "
                  f"(or eval_max_batches) and plan (its eval_basis_tokens), e.g. in a new run_dir")


def _collect(runs, params_kind):
    if params_kind not in ("total", "non_embedding"):
        raise FlopsFitError(f"params={params_kind!r} is not supported; use params=total or params=non_embedding")
    if runs is None or len(runs) == 0:
        raise FlopsFitError("no runs to analyse: run ff-train first (or pass analyze.input=<CSV/JSONL>)")
    key = "params" if params_kind == "total" else "non_embedding_params"
    rows, excluded = [], []
    for i, r in enumerate(runs):
        if not isinstance(r, dict):
            raise FlopsFitError(f"run #{i} is not a record (got {type(r).__name__}); each run must be a dict")
        rid = str(r.get("id", f"run{i}"))
        status = str(r.get("status", "completed"))
        if status != "completed":
            reason = r.get("error") or ("training diverged" if status == "diverged" else f"status {status}")
            excluded.append({"id": rid, "status": status, "reason": str(reason).splitlines()[0][:300]})
            continue
        if params_kind == "non_embedding" and r.get("non_embedding_params") is None:
            raise FlopsFitError(f"run {rid} has no 'non_embedding_params'; analyse with params=total "
                                f"or re-train with a model that reports non-embedding parameters")
        vals = {}
        bad = None
        for k, src in (("N", key), ("tokens", "tokens"), ("loss", "loss")):
            v = _float_or(r.get(src), float("nan"))
            if not (math.isfinite(v) and v > 0):
                bad = f"{src} is {r.get(src)!r}"
            vals[k] = v
        if bad:
            excluded.append({"id": rid, "status": "invalid", "reason": bad})
            continue
        total = _float_or(r.get("params"), vals["N"])
        fallback = SIX_ND * total * vals["tokens"]  # the 6ND rule when a run has no FLOP count
        flops = _float_or(r.get("flops"), fallback)
        if not (math.isfinite(flops) and flops > 0):
            flops = fallback
        budget = _float_or(r.get("budget"), None)
        ratio = flops / vals["tokens"]
        ht, hf, hl = [], [], []
        for h in r.get("history") or []:
            if not isinstance(h, dict):
                continue
            try:
                t = float(h.get("tokens"))
                lv = float(h.get("loss"))
            except (TypeError, ValueError):
                continue
            fv = _float_or(h.get("flops"), t * ratio)
            if all(math.isfinite(z) and z > 0 for z in (t, lv, fv)):
                ht.append(t)
                hf.append(fv)
                hl.append(lv)
        rows.append({"id": rid, "N": vals["N"], "D": vals["tokens"], "L": vals["loss"], "C": flops,
                     "budget": budget, "hist": (np.array(ht), np.array(hf), np.array(hl)),
                     "data_unit": r.get("data_unit"), "history_batches": r.get("history_batches")})
    return rows, excluded
