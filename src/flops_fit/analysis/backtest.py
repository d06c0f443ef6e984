"""How well does each approach forecast budgets it never saw? A rolling-origin backtest of the sweep.

A user bets on the table *beyond* the sweep, so the table's model is chosen by how well each
candidate forecasts, on the user's own runs, the budgets just beyond the ones it was fitted on:

    for each origin k (the last ``MAX_ORIGINS`` cut points, fitting on at least ``MIN_FIT_BUDGETS``
    IsoFLOP budgets): fit every approach on the runs of the budgets up to the k-th, forecast the
    compute-optimal N and the loss at every larger IsoFLOP budget, and compare with what those
    budgets' own runs show.

What a budget "shows" is its own minimum, measured by the curve that describes its runs near their best
more closely (``observed_optima``): approach 2b's Chinchilla-shaped curve, exact on a Chinchilla surface,
or a parabola in ln N through only the runs within a factor 4 of the best, which needs no candidate's
shape; only where the minimum lies inside the sampled sizes. The fits of the past are the same functions
as the full analysis (no bootstrap), run on :meth:`Sweep.below`.

Each candidate's score is the root-mean-square log error of its forecasts (of N_opt for the
allocation, of the loss for the loss models). The table follows its default (the model test's
choice: one surface or a curve per budget, see selection.py) unless another candidate forecast
clearly better (``SWITCH``): on a noise-free Chinchilla surface the default forecasts exactly and
stays; where one surface misfits the budgets, its forecasts show it. Candidates whose score is
within ``COMPETITIVE`` of the best are "competitive": where they disagree, the table's interval is
widened to contain their forecasts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flops_fit.analysis.common import jfloat, local_minimum
from flops_fit.analysis.diagnostics import Diagnostics
from flops_fit.analysis.envelope import envelope_approach
from flops_fit.analysis.frontier import frontier_approach
from flops_fit.analysis.isoflop import isoflop_approach
from flops_fit.analysis.isoflop_vp import isoflop_vp_approach
from flops_fit.analysis.parametric import parametric_approach
from flops_fit.analysis.table import AUTO_ORDER, LOSS_ORDER

ALLOCATION_MODELS = AUTO_ORDER  # the candidates, in the table's own order of preference
LOSS_MODELS = LOSS_ORDER
MIN_FIT_BUDGETS = 3  # an origin fits on at least this many IsoFLOP budgets
MAX_ORIGINS = 2  # the last cut points of the sweep: fitted on the most data, the closest to the full fit (an
# earlier origin fits the loss frontier on 4 points, whose wild extrapolation says little about the full fit)
SWITCH = 1.5  # leave the default candidate only for one whose RMS log error is this many times smaller
# ... and smaller by more than this: below it forecasts are equally good (each budget's own minimum, the
# "observed" value, is itself measured only to a few % in N; the loss far more precisely)
# (on a mock sweep with 0.5% loss noise and 7 sizes per budget, the candidates' errors differ by up to 7%
# with every approach unbiased: tests/test_analysis_run.py's base sweep)
# the loss: the frontier's backtest error on Chinchilla's sweep without its largest budget is 1.8% against the
# surface's 0.7%, yet the frontier forecasts that budget's loss within 0.1% and the surface 1.5%
EPS = {"params": 0.10, "loss": 0.01}
COMPETITIVE = 2.0  # within this factor of the best score (plus 2%): competitive (interval widened)
COMPETITIVE_ABS = 0.02
LOSS_COMPETITIVE_ABS = 0.002


@dataclass
class Backtest:
    status: str
    reason: str | None = None
    pairs: list = field(default_factory=list)  # one per (origin, target budget)
    params_score: dict = field(default_factory=dict)  # candidate -> RMS log error of N_opt (None: no forecast)
    loss_score: dict = field(default_factory=dict)  # loss model -> RMS log error of the loss
    chosen: str | None = None
    loss_chosen: str | None = None
    competitive: list = field(default_factory=list)
    loss_competitive: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        out = {"status": self.status, "method": ("rolling origin: fit on the budgets up to each origin, forecast "
                                                 "every larger IsoFLOP budget's own minimum (N_opt and loss)")}
        if not self.ok:
            out["reason"] = self.reason
            return out
        out.update(params_score=self.params_score, loss_score=self.loss_score, chosen=self.chosen,
                   loss_chosen=self.loss_chosen, competitive=self.competitive,
                   loss_competitive=self.loss_competitive, pairs=self.pairs,
                   switch=SWITCH, competitive_factor=COMPETITIVE)
        return out

    def forecast_error(self, source: str | None = None, fits: dict | None = None) -> dict:
        """What the table's intervals do not already hold of the backtest's errors, and the median ratio of
        target to fitted budgets (TableModel widens its intervals by them beyond the sweep).

        For the allocation (``source``, default the chosen one): the RMS log error in excess of the sampling
        noise that the bootstrap already carries, sqrt(max(0, mean(e^2) - mean(sd_obs^2 + sd_fc^2))), with
        sd_obs the bootstrap spread of each target budget's own minimum (approach 2b's replicates) and sd_fc
        that of the source's forecast there (its replicates, from ``fits``). Without a bootstrap the whole
        RMS error counts. The loss model's RMS error counts whole (it is small)."""
        if not self.ok:
            return {}
        name = source or self.chosen
        err = self.params_score.get(name)
        if err is not None and fits is not None:
            err = _excess(self.errors(name), self.pairs, name, fits)
        return {"params": err, "loss": self.loss_score.get(self.loss_chosen),
                "ahead": float(np.median([p["ahead"] for p in self.pairs])),
                "raw_params": self.params_score.get(name)}

    def errors(self, name: str, kind: str = "params") -> list:
        """The candidate's forecast errors (forecast / observed - 1) over every pair (``kind``: params | loss)."""
        who = "approach" if kind == "params" else "model"
        return [f["error"] for p in self.pairs for f in p[kind] if f[who] == name and f["error"] is not None]


def observed_optima(sweep, iso, isovp) -> dict:
    """{budget index in the sweep: (N_opt, loss)} for the IsoFLOP budgets whose own minimum is measured.

    Each is measured by the curve that describes the budget's runs near their best (within a factor
    ``LOCAL_WINDOW``) more closely: approach 2b's Chinchilla-shaped curve (exact on a Chinchilla surface), or a
    parabola in ln N through those runs alone (:func:`~flops_fit.analysis.common.local_minimum`). Real curves
    are not all of 2b's shape, whose exponents every budget shares: on Marin's sweeps 2b puts the minima 15-25%
    below the runs' own, and a backtest scored against them would choose 2b for agreeing with itself. Where
    the window holds every run of the budget, the parabola is approach 2's own and would judge approach 2
    against itself, so 2b's curve measures it. Only minima inside the sampled sizes count."""
    out = {}
    if iso.budgets is None:
        return out
    vp = {}
    if isovp is not None and isovp.full is not None and isovp.budgets:
        vp = {b["budget"]: b for b in isovp.budgets}
    for g in iso.groups:
        m = sweep.labels == g
        N, L = sweep.N[m], sweep.L[m]
        b = vp.get(float(sweep.budgets[g]))
        curve = None
        if b is not None and b["interior"] and b["params_opt"] and b["loss_opt"]:
            curve = (float(b["params_opt"]), float(b["loss_opt"]), isovp.curve(b, N))
        local = local_minimum(N, L)
        if local is not None and not local[2].all() and (
                curve is None or np.sum((L[local[2]] - curve[2][local[2]]) ** 2) > local[3]):
            out[int(g)] = local[:2]
        elif curve is not None:
            out[int(g)] = curve[:2]
    return out


def past_fits(past, *, huber_delta, objective, engine) -> dict:
    """Every approach fitted on ``past`` (a :meth:`Sweep.below`) as the full analysis fits it, without bootstrap:
    ``{isoflop, isoflop_vp, parametric, envelope, loss_vs_compute}`` (the backtest's and ``holdout=k``'s refits)."""
    d = Diagnostics()
    iso = isoflop_approach(past, None, 0.95, d)
    isovp = isoflop_vp_approach(past, iso, None, 0.95, d)
    par = parametric_approach(past, None, 0.95, d, huber_delta=huber_delta, objective=objective, engine=engine)
    env = envelope_approach(past, None, 0.95, d)
    lvc = frontier_approach(iso, env, 0.95, bootstrap=False)
    return {"isoflop": iso, "isoflop_vp": isovp, "parametric": par, "envelope": env, "loss_vs_compute": lvc}


def forecasts(fits: dict, targets) -> dict:
    """{"params": {candidate: N (T,)}, "loss": {model: L (T,)}}: each fit's forecast at the budgets ``targets``."""
    out = {}
    C = np.asarray(targets, dtype=float)
    for name in ("isoflop_vp", "parametric", "isoflop", "envelope"):
        fit = fits[name]
        if fit.ok and fit.k_N is not None and fit.a is not None:
            out[name] = fit.k_N * C ** fit.a
    loss = {}
    par, lvc = fits["parametric"], fits["loss_vs_compute"]
    if par.ok:
        loss["parametric"] = np.asarray(par.law.loss(par.k_N * C ** par.a, par.k_D * C ** par.b), dtype=float)
    if lvc.ok:
        loss["loss_vs_compute"] = np.asarray(lvc.predict(C), dtype=float)
    return {"params": out, "loss": loss}


def _log_sd(samples) -> float:
    x = np.log(np.asarray(samples, dtype=float))
    x = x[np.isfinite(x)]
    return float(np.std(x)) if x.size >= 2 else 0.0


def _excess(errors, pairs, name: str, fits: dict) -> float | None:
    """The RMS log error of ``name``'s forecasts beyond the bootstrap noise of targets and forecasts."""
    e = np.log1p(np.asarray(errors, dtype=float))
    if e.size == 0:
        return None
    vp, src = fits.get("isoflop_vp"), fits.get(name)
    rep = getattr(vp, "replicates", None)
    if rep is None or getattr(src, "replicates", None) is None:
        return float(np.sqrt(np.mean(e ** 2)))
    bud = np.array([b["budget"] for b in vp.budgets])
    noise = []
    for p in pairs:
        j = int(np.argmin(np.abs(np.log(bud / p["budget"]))))
        Nr, _ = src.allocation_replicates(np.array([p["budget"]]))
        noise.append(_log_sd(rep["params_opt"][:, j]) ** 2 + (_log_sd(Nr[:, 0]) ** 2 if Nr is not None else 0.0))
    return float(np.sqrt(max(0.0, float(np.mean(e ** 2)) - float(np.mean(noise)))))


def _rms(errors) -> float | None:
    e = np.asarray([x for x in errors if x is not None and np.isfinite(x)], dtype=float)
    if e.size == 0:
        return None
    return float(np.sqrt(np.mean(np.log1p(e) ** 2)))


def _pick(scores: dict, order, available, default: str | None = None, eps: float = 0.0) -> str | None:
    """The candidate to follow: ``default`` (the model test's choice, else the first of ``order``) unless
    another forecast clearly better, its score below the default's by more than a factor ``SWITCH`` (plus
    ``eps``); then the best. Forecast errors on real sweeps are dominated by the scatter of each budget's
    own minimum, shared by every candidate, so small differences in score are noise. A default that the
    backtest could not score (the loss frontier needs 4 compute-optimal points, which a cut of a 4-budget sweep
    does not leave) stays: the candidates that were scored are then competitive with it."""
    cand = [k for k in order if k in available and scores.get(k) is not None]
    if default in available and default not in cand:
        return default  # fitted on the whole sweep, but not on the budgets below a cut: nothing speaks against it
    if not cand:
        return None
    best = min(cand, key=lambda k: scores[k])
    if default not in cand:
        default = cand[0]
    return best if scores[default] > SWITCH * scores[best] + eps else default


def backtest(sweep, iso, isovp, *, huber_delta=1e-3, objective="sse", engine="vp", available=(),
             loss_available=(), default=None, loss_default=None, progress=False) -> Backtest:
    """Run the rolling-origin backtest; ``available``/``loss_available``: the candidates that fitted the
    whole sweep (only those can be chosen); ``default``/``loss_default``: what to follow unless another
    candidate forecasts clearly better (see :func:`_pick`)."""
    groups = np.asarray(iso.groups if iso.groups is not None else [], dtype=int)
    obs = observed_optima(sweep, iso, isovp)
    if groups.size < MIN_FIT_BUDGETS + 1:
        return Backtest("skipped", f"needs {MIN_FIT_BUDGETS + 1}+ IsoFLOP budgets (fit on {MIN_FIT_BUDGETS}, "
                                   f"forecast the next); have {groups.size}")
    order = groups[np.argsort(sweep.budgets[groups])]
    first = max(MIN_FIT_BUDGETS, order.size - MAX_ORIGINS)
    pairs = []
    origins = list(range(first, order.size))
    it = origins
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(origins, desc="backtest", unit="origin", leave=False, disable=None)
    for k in it:
        cut = float(sweep.budgets[order[k - 1]])
        tgt = [int(g) for g in order[k:] if int(g) in obs]
        if not tgt:
            continue
        Ct = np.array([float(sweep.budgets[g]) for g in tgt])
        fc = forecasts(past_fits(sweep.below(cut), huber_delta=huber_delta, objective=objective, engine=engine), Ct)
        for j, g in enumerate(tgt):
            No, Lo = obs[g]
            pairs.append({"fit_up_to": cut, "budget": float(Ct[j]), "ahead": float(Ct[j] / cut),
                          "params_observed": No, "loss_observed": Lo,
                          "params": [{"approach": name, "forecast": jfloat(Nf[j]), "error": jfloat(Nf[j] / No - 1.0)}
                                     for name, Nf in fc["params"].items()],
                          "loss": [{"model": name, "forecast": jfloat(Lf[j]), "error": jfloat(Lf[j] / Lo - 1.0)}
                                   for name, Lf in fc["loss"].items()]})
    if not pairs:
        why = "no budget beyond an origin has a measured minimum (a convex parabola near its best run) to compare with"
        return Backtest("skipped", why)
    bt = Backtest("ok", pairs=pairs)
    for name in ALLOCATION_MODELS:
        bt.params_score[name] = _rms(bt.errors(name, "params"))
    for name in LOSS_MODELS:
        bt.loss_score[name] = _rms(bt.errors(name, "loss"))
    bt.chosen = _pick(bt.params_score, ALLOCATION_MODELS, available, default, EPS["params"])
    bt.loss_chosen = _pick(bt.loss_score, LOSS_MODELS, loss_available, loss_default, EPS["loss"])
    bt.competitive = _competitive(bt.chosen, bt.params_score, ALLOCATION_MODELS, available, COMPETITIVE_ABS)
    bt.loss_competitive = _competitive(bt.loss_chosen, bt.loss_score, LOSS_MODELS, loss_available,
                                       LOSS_COMPETITIVE_ABS)
    return bt


def _competitive(chosen, scores: dict, order, available, eps: float) -> list:
    """The candidates scored within ``COMPETITIVE`` x (plus ``eps``) of the chosen one; every scored one, and
    the chosen, when the chosen has no score."""
    if chosen is None:
        return []
    scored = [k for k in order if k in available and scores.get(k) is not None]
    if scores.get(chosen) is None:
        return [chosen] + [k for k in scored if k != chosen]
    return [k for k in scored if scores[k] <= COMPETITIVE * scores[chosen] + eps]
