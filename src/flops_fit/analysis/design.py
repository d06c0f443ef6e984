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
the *ratio* by which a batch shrinks it: expected width = current width x proxy(after) / proxy(now).
:func:`choose_batch` adds candidates greedily, the best width reduction per FLOP first, until the FLOP
allowance is spent or the target is expected to be reached; when the whole batch is expected to narrow the
interval by less than ``min_gain`` it plans nothing and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Optional, Sequence

import numpy as np

from flops_fit.errors import FlopsFitError
from flops_fit.law import ChinchillaLaw

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
        x, y = np.log(params[m]), np.log(losses[m])
        coef = np.polyfit(x - x.mean(), y, 2)
        ss += float(np.sum((y - np.polyval(coef, x - x.mean())) ** 2))
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
            x = np.log(N) - np.log(N).mean()
            X = np.stack([np.ones_like(x), x, x * x], axis=1)
            coef = np.linalg.lstsq(X, y.T, rcond=None)[0]  # (3, sims)
            with np.errstate(all="ignore"):
                v = np.where(coef[2] > 0, -coef[1] / (2 * coef[2]), np.nan) + np.log(N).mean()
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
    width_now: float  # the analysis's current relative width at C*
    expected_width: float  # what the batch is expected to leave
    proxy_now: float
    proxy_after: float
    flops: float
    allowance: float
    stop: str | None = None  # why nothing is planned (None: plan ``chosen``)
    steps: list = field(default_factory=list)  # [(label, flops, expected width)] in the order chosen

    def to_json(self) -> dict:
        return {"width_before": self.width_now, "expected_width": self.expected_width, "flops": self.flops,
                "allowance": self.allowance, "proxy_width_before": _rel_width(self.proxy_now),
                "proxy_width_after": _rel_width(self.proxy_after), "stop": self.stop,
                "chosen": [{"what": label, "flops": f, "expected_width": w} for label, f, w in self.steps]}


def choose_batch(sim: Simulator, existing: dict, candidates: Sequence[Candidate], *, width_now: float,
                 allowance: float, target_width: float | None = None, min_gain: float = 0.05) -> Batch:
    """Greedy: the candidate with the largest expected width reduction per FLOP, then the next given it, until
    ``allowance`` FLOPs are spent or ``target_width`` is expected to be reached. ``existing``: {budget:
    (params, tokens, z)} of the runs so far; ``width_now``: the analysis's relative width at C*."""
    for c in candidates:
        if c.z is None:
            c.z = sim.noise(len(c.params))
    proxy_now = sim.width(_groups(existing, []))
    chosen: list[Candidate] = []
    steps = []
    spent, proxy = 0.0, proxy_now
    pool = [c for c in candidates if c.flops <= allowance]

    def expected(p):
        if np.isfinite(proxy_now) and proxy_now > 0 and np.isfinite(p):
            return _rel_width(_log_width(width_now) * p / proxy_now)
        return _rel_width(p) if np.isfinite(p) else float("inf")

    while pool:
        if target_width is not None and expected(proxy) <= target_width:
            break
        best, best_score, best_p = None, 0.0, proxy
        for c in pool:
            if spent + c.flops > allowance:
                continue
            p = sim.width(_groups(existing, chosen + [c]))
            gain = (min(proxy, 1e3) - min(p, 1e3)) / c.flops
            if gain > best_score:
                best, best_score, best_p = c, gain, p
        if best is None:
            break
        chosen.append(best)
        pool.remove(best)
        spent += best.flops
        proxy = best_p
        steps.append((best.label, best.flops, expected(proxy)))
    after = expected(proxy)
    batch = Batch(chosen, width_now, after, proxy_now, proxy, spent, allowance, steps=steps)
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


def outcome(design: dict, analysis: dict) -> dict | None:
    """What the last batch of a sequential design bought: its expected width at C* and the width the analysis
    of its runs gives (``ff-analyze`` records it as analysis.json's ``design``)."""
    from flops_fit.analysis.predict import predict

    batches = [b for b in design.get("batches") or [] if b.get("runs")]
    if not batches or not design.get("target_budget"):
        return None
    last = batches[-1]
    try:
        row = predict(analysis, float(design["target_budget"]))
    except FlopsFitError:
        return None
    actual = width_of(row.get("params_ci"))
    return {"batch": last["batch"], "target_budget": float(design["target_budget"]),
            "target_width": design.get("target_width"), "width_before": last.get("width_before"),
            "expected_width": last.get("expected_width"), "width": actual, "params": row.get("params"),
            "params_ci": row.get("params_ci")}
