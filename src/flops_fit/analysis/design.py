"""Sequential design: which next runs narrow the N_opt(C*) interval most per FLOP (``ff-plan next_from=``).

Pure numpy, no I/O. The current fit's uncertainty is the bootstrap replicates of the fitted surface
L(N, D) = E + A/N^alpha + B/D^beta (analysis.json's ``table_model``), and the sweep's residual noise
(:func:`residual_sigma`). A design (the runs so far plus candidate runs) is scored by simulation: each
simulated study takes one replicate as the truth, draws every run's loss from it with the residual noise,
refits the cheap estimator (approach 2: a parabola in log N through each budget's log losses, a power law
through the minima) and reads off log N_opt(C*); the expected width of the interval is the central ``ci``
range of the estimate's error over the simulations (:meth:`Simulator.width`). Simulations share their random
numbers across designs, so the difference two candidates make is not noise.

The proxy's width is not the analysis's own interval (that bootstraps the table's approach); it predicts
the *ratio* by which a batch shrinks the bootstrap interval (in log width). What the user sees is the table's
``params_ci_with_model``, which also holds the approaches' disagreement and the backtest's forecast error:
:class:`SeenWidth` computes it as the table does after the bootstrap part shrinks by that ratio and the
sweep's largest budget moves to the batch's. :func:`choose_batch` adds candidates greedily, the best
reduction of that width per FLOP first, until the FLOP allowance is spent or the target is expected to be
reached (a candidate's FLOPs given the batch so far: under schedule=wsd its marginal cost, each trunk counted
once); it plans nothing and says why when the model choice alone leaves the interval wider than the target
(or leaves less than ``min_gain`` to win), and when the whole batch is expected to narrow it by less than
``min_gain``. A new budget a batch buys is also a forecast check (:func:`score_checks` scores it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from flops_fit.analysis.common import log_parabolas
from flops_fit.analysis.table import TableModel
from flops_fit.errors import FlopsFitError
from flops_fit.law import ChinchillaLaw
from flops_fit.units import fmt_flops, human

SURFACE_KEYS = ("E", "A", "B", "alpha", "beta")
_FAIL = 5.0  # the log error a simulation whose estimator failed (no minimum, too few budgets) counts as


@dataclass
class Design:
    """The goal of the next batch (also the schema of ``design`` in conf/plan.yaml)."""

    target_budget: Optional[float] = None  # C*: the budget whose N_opt interval to narrow (default: the table's largest row)
    target_width: Optional[float] = None  # stop once the interval's width hi / lo - 1 is at most this (0.2: hi 1.2x lo)
    max_flops: Optional[float] = None  # the next batch's FLOP allowance (default: the FLOPs spent so far)
    max_total_flops: Optional[float] = None  # the whole study's allowance, the runs so far included
    min_gain: float = 0.05  # plan nothing when the batch is expected to narrow the interval by less than this share
    new_budget_factor: float = 4.0  # a new budget's IsoFLOP at this x the largest budget
    new_points: int = 5  # sizes in a new budget's IsoFLOP
    sims: int = 400  # simulated studies per design
    seed: int = 0

    def validate(self) -> None:
        for key in ("target_budget", "target_width", "max_flops", "max_total_flops"):
            v = getattr(self, key)
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and float(v) > 0):
                raise FlopsFitError(f"design.{key}={v!r} must be a positive number (or null)")
        if not 0.0 <= float(self.min_gain) < 1.0:
            raise FlopsFitError(f"design.min_gain={self.min_gain} must be in [0, 1), e.g. design.min_gain=0.05")
        if not float(self.new_budget_factor) > 1.0:
            raise FlopsFitError(f"design.new_budget_factor={self.new_budget_factor} must be > 1")
        if int(self.new_points) < 3:
            raise FlopsFitError(f"design.new_points={self.new_points} must be at least 3 (a parabola needs 3 sizes)")
        if int(self.sims) < 50:
            raise FlopsFitError(f"design.sims={self.sims} must be at least 50, e.g. design.sims=400")


@dataclass
class Candidate:
    """One unit the design may buy: a run (a new size at an existing budget) or a new budget's IsoFLOP."""

    kind: str  # "size" | "budget"
    budget: float
    params: np.ndarray
    tokens: np.ndarray
    flops: float
    entries: list = field(default_factory=list)  # the plan entries it stands for (opaque here)
    z: np.ndarray | None = None  # its runs' standard normal noise, (sims, runs): shared by every design

    @property
    def label(self) -> str:
        if self.kind == "budget":
            return f"new budget {self.budget:.3g} FLOPs ({len(self.params)} sizes)"
        return f"size {self.params[0]:.3g} params at {self.budget:.3g} FLOPs"


def width_of(interval) -> float | None:
    """An interval's width hi / lo - 1 (about (hi - lo) / N_opt when narrow; unlike that, it does not move
    with where the point estimate sits inside a wide interval)."""
    if not interval or not interval[0] or not float(interval[0]) > 0:
        return None
    return float(interval[1]) / float(interval[0]) - 1.0


def fmt_width(w: float) -> str:
    """A width for people: a percentage while narrow, hi / lo once the interval spans a factor 2 or more."""
    return f"{w:.1%}" if w < 1.0 else f"hi/lo {w + 1.0:.3g}x"


def _log_width(rel: float) -> float:
    """log(hi / lo) of an interval of width ``rel`` = hi / lo - 1."""
    return float(np.log1p(rel))


def _rel_width(log_w: float) -> float:
    return float(np.expm1(log_w))


class SeenWidth:
    """The width of the interval the user sees at C* (the table's ``params_ci_with_model``, else ``params_ci``)
    as a batch would leave it: the table's own computation (:meth:`TableModel.rows`) on a copy of its model
    whose source approach's bootstrap replicates are pulled towards its point by ``shrink`` (in log N_opt, so
    the bootstrap interval's log width scales by exactly ``shrink``) and whose largest budget is ``top`` (the
    backtest's forecast error widens the interval only beyond it).

    The other approaches the table's interval holds: one whose N_opt(C*) differs from the source's by no more
    than their paired bootstrap difference explains (0 inside its ``ci`` interval) disagrees by noise, and its
    distance to the source shrinks by ``shrink`` too; one that differs by more disagrees by model, and stays.
    The backtest's error rate stays as it is. Runs of this design are not scored for changing those.
    ``shrink=0`` leaves the model choice alone (:meth:`floor`)."""

    def __init__(self, table_model: Mapping, budget: float):
        model = TableModel.from_json(dict(table_model))
        self.budget = float(budget)
        self.top = float(model.sweep_max or 0.0)
        src = model.approach()
        if src.get("replicates") is None:
            raise FlopsFitError("the table's approach has no bootstrap replicates: re-run ff-analyze with bootstrap=50 "
                                "or more")
        self._src = src
        logC = np.log(self.budget)
        mine = self._log_n(src["replicates"], logC)
        self.noise_only = []  # the competitive approaches whose disagreement with the source is noise
        for a in model.approaches:
            if a is src or a["approach"] not in model.competitive or a.get("replicates") is None:
                continue
            with np.errstate(all="ignore"):
                d = self._log_n(a["replicates"], logC) - mine
            d = d[np.isfinite(d)]
            if d.size >= 10:
                q = (1.0 - float(model.ci)) / 2.0
                lo, hi = np.quantile(d, [q, 1.0 - q])
                if lo <= 0.0 <= hi:
                    self.noise_only.append(a["approach"])
        # the loss models do not move N_opt's intervals: left out, so each evaluation is cheap
        self._model = replace(model, loss_source=None, loss_models={}, loss_competitive=[])

    @staticmethod
    def _log_n(rep, logC):
        with np.errstate(all="ignore"):
            return np.log(np.asarray(rep["k_N"], dtype=float)) + np.asarray(rep["a"], dtype=float) * logC

    @staticmethod
    def _pulled(ap: Mapping, to: Mapping, s: float) -> dict:
        """``ap``'s power law N_opt = k_N C^a pulled towards ``to``'s by ``s`` in log N_opt (arrays pairwise)."""
        with np.errstate(all="ignore"):
            k_N, a = np.asarray(ap["k_N"], dtype=float), np.asarray(ap["a"], dtype=float)
            return dict(ap, k_N=to["k_N"] * (k_N / to["k_N"]) ** s, a=to["a"] + s * (a - to["a"]))

    def _towards_source(self, ap: dict, s: float) -> dict:
        """``ap`` (point and replicates) pulled towards the source's by ``s`` in log N_opt (replicates pairwise)."""
        src = self._src
        out = dict(ap, **{k: float(v) for k, v in self._pulled(ap, src, s).items() if k in ("k_N", "a")})
        if ap.get("replicates") is not None:
            out["replicates"] = self._pulled(ap["replicates"], src["replicates"], s)
        return out

    def row(self, shrink: float = 1.0, top: float | None = None) -> dict:
        s, src = float(shrink), self._src
        reps = self._pulled(src["replicates"], src, s)  # the source's spread around its point, scaled by s
        approaches = []
        for a in self._model.approaches:
            if a["approach"] == src["approach"]:
                a = dict(src, replicates=reps)
            elif a["approach"] in self.noise_only:
                a = self._towards_source(a, s)
            approaches.append(a)
        m = replace(self._model, approaches=approaches, sweep_max=max(self.top, float(top or 0.0)) or None)
        return m.rows([self.budget])[0]

    def __call__(self, shrink: float = 1.0, top: float | None = None) -> float:
        w = seen_width(self.row(shrink, top))
        return float("inf") if w is None else w

    def floor(self, top: float | None = None) -> float:
        """The width the model choice alone leaves (no bootstrap spread, no disagreement by noise), the sweep's
        largest budget at ``top``."""
        return self(0.0, top)


def surface_draws(table_model: dict) -> dict:
    """The bootstrap replicates of the fitted surface, as arrays (R,), finite ones only."""
    lm = (table_model or {}).get("loss_models", {}).get("parametric") or {}
    reps = lm.get("replicates")
    if not reps:
        raise FlopsFitError("the analysis has no bootstrap replicates of the fitted surface L(N, D) to simulate the "
                            "next runs from (approach 3 did not fit, or bootstrap=0); re-run ff-analyze with "
                            "bootstrap=50 or more, and see its diagnostics if approach 3 failed")
    arr = {k: np.array([np.nan if v is None else v for v in reps[k]], dtype=float) for k in SURFACE_KEYS}
    ok = np.all([np.isfinite(arr[k]) for k in SURFACE_KEYS], axis=0) & (arr["alpha"] > 0) & (arr["beta"] > 0)
    ok &= (arr["A"] > 0) & (arr["B"] > 0)
    if ok.sum() < 10:
        raise FlopsFitError(f"only {int(ok.sum())} usable bootstrap replicates of the fitted surface; re-run "
                            f"ff-analyze with more (bootstrap=200)")
    return {k: v[ok] for k, v in arr.items()}


def residual_sigma(budgets, params, losses, floor: float = 1e-4) -> float:
    """The runs' noise in log loss: pooled residuals of a parabola in log N per budget with 4+ runs."""
    budgets, params, losses = (np.asarray(x, dtype=float) for x in (budgets, params, losses))
    ss, dof = 0.0, 0
    for b in np.unique(budgets):
        m = budgets == b
        if m.sum() < 4:
            continue
        y = np.log(losses[m])
        ss += float(np.sum((y - log_parabolas(params[m], y)[1]) ** 2))
        dof += int(m.sum()) - 3
    if dof == 0:
        return 0.005  # no budget to measure it on: the mock trainer's default noise
    return max(float(np.sqrt(ss / dof)), floor)


class Simulator:
    """Scores designs: every design's simulated studies share the truth draws and the runs' noise."""

    def __init__(self, draws: dict, sigma: float, target_budget: float, sims: int = 400, seed: int = 0,
                 ci: float = 0.95, k: float = 6.0):
        self.rng = np.random.default_rng(seed)
        R = len(draws["E"])
        idx = np.arange(int(sims)) % R
        self.law = ChinchillaLaw(**{key: draws[key][idx][:, None] for key in SURFACE_KEYS})
        self.sims, self.sigma, self.ci = int(sims), float(sigma), float(ci)
        self.z = NormalDist().inv_cdf(0.5 + self.ci / 2.0)
        self.logC = float(np.log(target_budget))
        self.truth = np.log(np.ravel(ChinchillaLaw(**{key: draws[key][idx] for key in SURFACE_KEYS})
                                     .n_opt(target_budget, k)))

    def noise(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((self.sims, n))

    def width(self, groups: Sequence[tuple[float, np.ndarray, np.ndarray, np.ndarray]]) -> float:
        """The expected log width of the N_opt(C*) interval of a design: ``groups`` = [(budget, params,
        tokens, z)] (z: the runs' (sims, n) noise)."""
        logC, vert = [], []
        for budget, N, D, z in groups:
            if len(N) < 3:
                continue
            y = np.log(self.law.loss(N[None, :], D[None, :])) + self.sigma * z  # (sims, n)
            with np.errstate(all="ignore"):
                v = np.log(log_parabolas(N, y.T)[2])  # each simulation's vertex in log N (NaN: not convex)
            # a vertex far outside the runs is no measured minimum
            v = np.where((v > np.log(N).min() - 1.0) & (v < np.log(N).max() + 1.0), v, np.nan)
            logC.append(np.log(budget))
            vert.append(v)
        if len(logC) < 2:
            return float("inf")
        Y = np.stack(vert, axis=1)  # (sims, budgets)
        Xc = np.asarray(logC)[None, :] * np.ones_like(Y)
        m = np.isfinite(Y)
        n = m.sum(1)
        Y0, X0 = np.where(m, Y, 0.0), np.where(m, Xc, 0.0)
        with np.errstate(all="ignore"):
            mx, my = X0.sum(1) / n, Y0.sum(1) / n
            sxx = (np.where(m, (Xc - mx[:, None]) ** 2, 0.0)).sum(1)
            sxy = (np.where(m, (Xc - mx[:, None]) * (Y - my[:, None]), 0.0)).sum(1)
            pred = my + sxy / sxx * (self.logC - mx)
        err = np.where((n >= 2) & (sxx > 1e-12) & np.isfinite(pred), pred - self.truth, np.nan)
        ok = np.isfinite(err)
        fail = 1.0 - ok.mean()
        if ok.sum() < 10:
            return float(2.0 * self.z * _FAIL)
        # the central ci range of the estimates that succeeded, as a spread; a failed simulation counts as an
        # error of _FAIL (smooth in the share that fail, so a run that makes fewer fail scores better)
        q = (1.0 - self.ci) / 2.0
        lo, hi = np.quantile(err[ok], [q, 1.0 - q])
        s = (hi - lo) / (2.0 * self.z)
        return float(2.0 * self.z * np.sqrt((1.0 - fail) * s * s + fail * _FAIL ** 2))


def _groups(existing: dict, chosen: Sequence[Candidate]):
    """[(budget, params, tokens, z)] of the runs so far plus the chosen candidates."""
    by = {b: [list(p), list(t), [z]] for b, (p, t, z) in existing.items()}
    for c in chosen:
        g = by.setdefault(c.budget, [[], [], []])
        g[0] += list(c.params)
        g[1] += list(c.tokens)
        g[2].append(c.z)
    return [(b, np.asarray(p, dtype=float), np.asarray(t, dtype=float), np.concatenate([x for x in zs if x.size], axis=1))
            for b, (p, t, zs) in by.items()]


@dataclass
class Batch:
    """What :func:`choose_batch` decided."""

    chosen: list
    width_now: float  # the width the user sees at C* now (params_ci_with_model, else params_ci)
    expected_width: float  # what the batch is expected to leave
    proxy_now: float
    proxy_after: float
    flops: float
    allowance: float
    stop: str | None = None  # why nothing is planned (None: plan ``chosen``)
    steps: list = field(default_factory=list)  # [(label, flops, expected width)] in the order chosen
    model_floor: float | None = None  # the width the model choice alone would leave, at best, after this batch

    def to_json(self) -> dict:
        return {"width_before": self.width_now, "expected_width": self.expected_width, "flops": self.flops,
                "allowance": self.allowance, "proxy_width_before": _rel_width(self.proxy_now),
                "proxy_width_after": _rel_width(self.proxy_after), "model_floor": self.model_floor,
                "stop": self.stop,
                "chosen": [{"what": label, "flops": f, "expected_width": w} for label, f, w in self.steps]}


def _ids(c: Candidate) -> set:
    """The ids of the plan entries a candidate stands for (none for bare candidates)."""
    return {e["id"] for e in c.entries if isinstance(e, Mapping) and "id" in e}


def _model_stop(seen: SeenWidth, top: float, floor: float, width_now: float, target_width: float | None,
                min_gain: float) -> str | None:
    """Why no run can narrow the interval the user sees: the model choice alone leaves it wider than the target,
    or within ``min_gain`` of its width now (None: runs can narrow it)."""
    if target_width is not None and floor > target_width:
        why = f"above design.target_width={target_width:g}"
    elif width_now > 0 and 1.0 - floor / width_now < min_gain:
        why = f"within design.min_gain={min_gain:g} of its width now, {fmt_width(width_now)}"
    else:
        return None
    row = seen.row(0.0, top)
    parts = []
    rng = row.get("params_model_range")
    if rng and rng[0] > 0:
        parts.append(f"the approaches' N_opt span {human(rng[0])}-{human(rng[1])}")
    if seen.budget > top * (1.0 + 1e-9) and seen._model.forecast_error.get("params"):
        parts.append(f"the backtest's forecast error from the largest budget {fmt_flops(top)} out to "
                     f"{fmt_flops(seen.budget)}")
    return (f"the model choice alone leaves the interval at {fmt_flops(seen.budget)} {fmt_width(floor)} wide"
            + (f" ({'; '.join(parts)})" if parts else "") + f", {why}: no run this design can score narrows that "
            f"part (params_ci_with_model against params_ci in analysis.json's table; docs/design.md)")


def choose_batch(sim: Simulator, existing: dict, candidates: Sequence[Candidate], *, width_now: float,
                 allowance: float, target_width: float | None = None, min_gain: float = 0.05,
                 seen: SeenWidth | None = None,
                 cost: Callable[[Sequence[Candidate], Candidate], float] | None = None) -> Batch:
    """Greedy: the candidate with the largest expected width reduction per FLOP, then the next given it, until
    ``allowance`` FLOPs are spent or ``target_width`` is expected to be reached. ``existing``: {budget:
    (params, tokens, z)} of the runs so far; ``width_now``: the width the user sees at C* now.

    ``cost(chosen, candidate)``: the FLOPs the candidate adds given the candidates chosen so far (a WSD
    sweep's marginal cost, where runs of one size share a trunk: ff-plan passes ``sweep_flops`` of the sweep
    with it minus without it); the greedy re-prices every candidate after each choice, and the batch's
    ``flops`` is the sum of those marginal costs. A candidate whose cost with nothing chosen is above the
    allowance is left out from the start: with a cost that never falls as runs are added (a sweep never costs
    less with more runs), what a batch has spent plus the candidate's cost is at least that. Default: each
    candidate's own ``flops`` (runs trained alone, as under schedule=cosine, where the marginal cost is exactly
    that).

    ``seen`` (:class:`SeenWidth`): the width the user sees as a batch would leave it; the bootstrap part
    shrinks by the proxy's ratio, a new budget moves the backtest's widening out. Before anything is chosen,
    when the model choice alone (the best new budget within the allowance included) leaves the interval wider
    than ``target_width``, or narrows it by less than ``min_gain``, nothing is planned and the stop says so.
    Without ``seen`` the width is the bootstrap interval's alone, scaled by the proxy."""
    for c in candidates:
        if c.z is None:
            c.z = sim.noise(len(c.params))
    proxy_now = sim.width(_groups(existing, []))
    chosen: list[Candidate] = []
    steps = []
    spent, proxy = 0.0, proxy_now

    def price(c: Candidate) -> float:
        return float(c.flops) if cost is None else float(cost(chosen, c))

    pool = [c for c in candidates if price(c) <= allowance]
    top_now = seen.top if seen is not None else 0.0

    def top_of(cs):
        return max([top_now] + [c.budget for c in cs])

    def expected(p, cs):
        if not np.isfinite(p):
            return float("inf")
        if np.isfinite(proxy_now) and proxy_now > 0:
            if seen is not None:
                return seen(p / proxy_now, top_of(cs))
            return _rel_width(_log_width(width_now) * p / proxy_now)
        return _rel_width(p)

    def log_w(p, cs):
        return min(_log_width(expected(p, cs)), 1e3)

    floor = None
    if seen is not None:
        top = top_of(pool)
        floor = seen.floor(top)
        why = _model_stop(seen, top, floor, width_now, target_width, min_gain)
        if why:
            return Batch([], width_now, width_now, proxy_now, proxy_now, 0.0, allowance, stop=why, model_floor=floor)
    while pool:
        if target_width is not None and expected(proxy, chosen) <= target_width:
            break
        best, best_score, best_p = None, 0.0, proxy
        here = log_w(proxy, chosen)
        best_f = 0.0
        for c in pool:
            f = price(c)  # given what is chosen so far: a WSD trunk already bought is not paid again
            if spent + f > allowance or not f > 0:
                continue
            p = sim.width(_groups(existing, chosen + [c]))
            gain = (here - log_w(p, chosen + [c])) / f
            if gain > best_score:
                best, best_score, best_p, best_f = c, gain, p, f
        if best is None:
            break
        chosen.append(best)
        pool.remove(best)
        taken = _ids(best)  # two candidates that hold one run (a new budget's IsoFLOPs of 3 and of 5 sizes)
        pool = [c for c in pool if not (taken & _ids(c))]
        spent += best_f
        proxy = best_p
        steps.append((best.label, best_f, expected(proxy, chosen)))
    after = expected(proxy, chosen)
    batch = Batch(chosen, width_now, after, proxy_now, proxy, spent, allowance, steps=steps,
                  model_floor=None if seen is None else seen.floor(top_of(chosen)))
    if not chosen:
        batch.stop = (f"no candidate run fits the allowance of {allowance:.3g} FLOPs and narrows the interval"
                      if pool or not candidates else
                      f"every candidate costs more than the allowance of {allowance:.3g} FLOPs")
    elif width_now > 0 and 1.0 - after / width_now < min_gain:
        batch.stop = (f"the best batch within {allowance:.3g} FLOPs is expected to narrow the interval by only "
                      f"{1.0 - after / width_now:.1%} (< design.min_gain={min_gain:g}): more runs of this kind do not "
                      f"buy certainty here")
        batch.chosen, batch.steps, batch.expected_width, batch.flops = [], [], width_now, 0.0
    return batch


def candidate_layouts(budgets, points: int, span: float, design: Design) -> list[tuple[str, float, int, float]]:
    """What to lay out as candidates, [(kind, budget, sizes, span)]: at every budget so far, 2 x ``points`` + 1
    sizes over twice the grid's ``span`` around its fitted optimum, each a candidate on its own ("size"); at
    ``design.new_budget_factor`` and its square root x the largest budget, an IsoFLOP of 3 and of
    ``design.new_points`` sizes over ``span``, each a candidate as a whole ("budget")."""
    budgets = sorted(float(b) for b in budgets)
    out = [("size", b, 2 * int(points) + 1, 2.0 * float(span)) for b in budgets]
    f = float(design.new_budget_factor)
    for factor in (float(np.sqrt(f)), f):
        top = budgets[-1] * factor
        if not any(abs(top - b) <= 1e-6 * b for b in budgets):
            out += [("budget", top, n, float(span)) for n in sorted({3, int(design.new_points)})]
    return out


def existing_groups(sim: Simulator, budgets, params, tokens) -> dict:
    """{budget: (params, tokens, z)} of the runs so far, for :func:`choose_batch`."""
    budgets, params, tokens = (np.asarray(x, dtype=float) for x in (budgets, params, tokens))
    return {float(b): (params[budgets == b], tokens[budgets == b], sim.noise(int((budgets == b).sum())))
            for b in np.unique(budgets)}


def seen_width(row: Mapping) -> float | None:
    """The width of the interval a user sees on a table row: ``params_ci_with_model``, else ``params_ci``."""
    return width_of(row.get("params_ci_with_model") or row.get("params_ci"))


def outcome(design: dict, analysis: dict, runs: Sequence[Mapping] = (), seed: int = 0) -> dict | None:
    """What the last batch of a sequential design bought: its expected width at C* and the width the analysis
    of its runs gives (``width``: the interval the user sees; ``bootstrap_width``: params_ci's), and every
    forecast a batch pre-registered, scored on that batch's runs at its budget (``forecast_checks``;
    :func:`score_checks`). ``ff-analyze`` records it as analysis.json's ``design``."""
    from flops_fit.analysis.predict import predict

    batches = [b for b in design.get("batches") or [] if b.get("runs")]
    if not batches or not design.get("target_budget"):
        return None
    last = batches[-1]
    try:
        row = predict(analysis, float(design["target_budget"]))
    except FlopsFitError:
        return None
    return {"batch": last["batch"], "target_budget": float(design["target_budget"]),
            "target_width": design.get("target_width"), "width_before": last.get("width_before"),
            "expected_width": last.get("expected_width"), "width": seen_width(row),
            "bootstrap_width": width_of(row.get("params_ci")), "params": row.get("params"),
            "params_ci": row.get("params_ci"), "params_ci_with_model": row.get("params_ci_with_model"),
            "forecast_checks": score_checks(design, runs, seed=seed)}


def score_checks(design: Mapping, runs: Sequence[Mapping], seed: int = 0) -> list[dict]:
    """Each forecast a batch of the design pre-registered (its new budget's IsoFLOP, the forecast check),
    scored by :func:`flops_fit.analysis.forecast_check.score` on that batch's runs at that budget, as
    ``ff-analyze`` scores a ``forecast_from`` plan's; a check whose runs cannot be scored yet says why."""
    from flops_fit.analysis.forecast_check import score

    out = []
    for b in design.get("batches") or []:
        for block in b.get("forecast_checks") or []:
            ids = set(block.get("runs") or [])
            mine = [r for r in runs if r.get("id") in ids]
            try:
                scored = score(block, mine, seed=seed)
            except FlopsFitError as e:
                scored = {"budget": float(block["budget"]), "factor": block.get("factor"),
                          "registered": block.get("registered"), "source_run_dir": block.get("source_run_dir"),
                          "n_runs": sum(r.get("status") == "completed" for r in mine),
                          "summary": f"not scored yet: {e}"}
            out.append({"batch": b["batch"], **scored})
    return out
