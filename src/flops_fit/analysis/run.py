"""``run_analysis(runs, ...)``: every approach, the table and the checks, assembled into the
body of ``analysis.json`` (see docs/architecture.md) in one place. No file I/O happens here.

Each step lives in its own module and returns a typed result with ``to_json()``:

    sweep.load_sweep            runs -> arrays, budgets, FLOPs per token        (Sweep)
    isoflop.isoflop_approach    approach 2                                       (IsoflopFit)
    isoflop_vp.isoflop_vp_approach  approach 2b: Chinchilla-shaped IsoFLOP curves    (IsoflopVPFit)
    parametric.parametric_approach  approach 3                                   (ParametricFit)
    envelope.envelope_approach  approach 1                                       (EnvelopeFit)
    frontier.frontier_approach  L*(C) through the compute-optimal points         (FrontierFit)
    table.build_table           the compute-optimal table                        (Table)
    agreement.compare_approaches    the approaches side by side
    holdout.holdout_check       refit without the largest budgets, predict them  (Holdout)
    backtest.backtest           rolling-origin forecasts of the larger budgets: chooses the table's model (Backtest)
    data_constrained.data_answer    the data-constrained fit, epochs for U, the inference-aware optimum (DataAnswer)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from flops_fit.analysis.agreement import compare_approaches, explain
from flops_fit.analysis.backtest import Backtest, backtest
from flops_fit.analysis.common import resample_counts
from flops_fit.analysis.data_constrained import DataAnswer, data_answer
from flops_fit.analysis.diagnostics import Diagnostics
from flops_fit.analysis.envelope import EnvelopeFit, envelope_approach
from flops_fit.analysis.frontier import FrontierFit, frontier_approach
from flops_fit.analysis.holdout import Holdout, holdout_check
from flops_fit.analysis.isoflop import IsoflopFit, isoflop_approach
from flops_fit.analysis.isoflop_vp import IsoflopVPFit, isoflop_vp_approach
from flops_fit.analysis.parametric import ENGINES, ParametricFit, parametric_approach
from flops_fit.analysis.selection import ModelSelection, select_model
from flops_fit.analysis.sweep import Sweep, load_sweep
from flops_fit.analysis.table import AUTO_ORDER, LOSS_ORDER, SOURCES, Table, build_table, table_model
from flops_fit.analysis.table import table_source as source_of_table
from flops_fit.analysis.varpro import check_objective
from flops_fit.analysis.verdict import verdict
from flops_fit.analysis.table import table_budgets as budgets_of_table
from flops_fit.errors import FlopsFitError

SCHEMA_VERSION = 1


@dataclass
class Analysis:
    """Everything ``ff-analyze`` found, typed; :meth:`to_json` is the body of analysis.json."""

    sweep: Sweep
    n_bootstrap: int
    seed: int
    ci: float
    isoflop: IsoflopFit
    isoflop_vp: IsoflopVPFit
    parametric: ParametricFit
    envelope: EnvelopeFit
    loss_vs_compute: FrontierFit
    table: Table
    agreement: list
    diagnostics: Diagnostics
    holdout: Holdout | None = None
    backtest: Backtest | None = None
    short_runs: dict | None = None
    selection: ModelSelection | None = None
    explanation: dict | None = None
    data: DataAnswer | None = None  # unique data, repetition and inference (docs/data-constrained.md)

    @property
    def fits(self) -> dict:
        return {"isoflop": self.isoflop, "isoflop_vp": self.isoflop_vp, "parametric": self.parametric,
                "envelope": self.envelope, "loss_vs_compute": self.loss_vs_compute}

    def to_json(self) -> dict:
        s = self.sweep
        out = {
            "schema_version": SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "params_kind": s.params_kind,
            "data_unit": s.data_unit,
            "n_runs": s.n_runs,
            "n_used": s.n,
            "excluded_runs": s.excluded,
            "flops_per_token": s.fpt.kind,
            "budgets_inferred": bool(s.n_inferred),
            "bootstrap": {"n": self.n_bootstrap, "seed": self.seed, "ci": self.ci},
            "fits": {name: fit.to_json() for name, fit in self.fits.items()},
            "table": self.table.to_json(),
            "table_source": self.table.source,
            "table_loss_source": self.table.loss_source,
            "table_model": self.table.model.to_json() if self.table.model is not None else None,
            "backtest": self.backtest.to_json() if self.backtest is not None else None,
            "model_selection": self.selection.to_json() if self.selection is not None else None,
            "agreement": self.agreement,
            "explanation": self.explanation,
            "diagnostics": self.diagnostics.to_json(),
            "residuals": self.parametric.residuals(s) if self.parametric.ok else [],
        }
        if self.data is not None:
            out["fits"]["data_constrained"] = self.data.fit_json()
            out["unique_data"] = self.data.to_json()
            self.data.extend_table(out["table"])
        if self.holdout is not None:
            out["holdout"] = self.holdout.to_json()
        if self.short_runs is not None:
            out["short_runs"] = self.short_runs
        out["verdict"] = verdict(out)
        return out


def check_options(*, ci, n_bootstrap, holdout, huber_delta, objective="sse", engine="vp",
                  table_source="auto") -> None:
    if not 0.0 < float(ci) < 1.0:
        raise FlopsFitError(f"ci={ci} must be between 0 and 1 (e.g. ci=0.95)")
    if int(n_bootstrap) < 0:
        raise FlopsFitError(f"bootstrap={n_bootstrap} must be >= 0")
    if int(holdout) < 0:
        raise FlopsFitError(f"holdout={holdout} must be >= 0")
    if not float(huber_delta) > 0:
        raise FlopsFitError(f"huber_delta={huber_delta} must be positive (the Chinchilla value is 1e-3)")
    check_objective(objective)
    if engine not in ENGINES:
        raise FlopsFitError(f"engine={engine!r} is not one of {', '.join(ENGINES)}")
    if table_source not in SOURCES:
        raise FlopsFitError(f"table_source={table_source!r} is not one of {', '.join(SOURCES)}")


def analyze_runs(runs, *, plan=None, params_kind="total", n_bootstrap=200, seed=0, ci=0.95, holdout=0,
                 table_budgets=(), table_max_budget=1e24, huber_delta=1e-3, objective="sse", engine="vp",
                 table_source="auto", progress=False, check_short=True, unique_tokens=None,
                 inference_tokens=None) -> Analysis:
    """Fit approaches 1-3 and the loss frontier to ``runs``; return the typed :class:`Analysis`.

    ``objective``/``engine``: approach 3's objective and optimiser (see parametric_approach);
    ``table_source``: the approach the table follows ("auto": see table.AUTO_ORDER); ``check_short``: flag
    the runs trained for too few optimizer steps and say how much they move the answer; ``unique_tokens``:
    the unique data to read the table for (default: the plan's); ``inference_tokens``: tokens the model will
    serve, for the inference-aware optimum beside each row (docs/data-constrained.md)."""
    check_options(ci=ci, n_bootstrap=n_bootstrap, holdout=holdout, huber_delta=huber_delta, objective=objective,
                  engine=engine, table_source=table_source)
    ci, B, seed = float(ci), int(n_bootstrap), int(seed)
    diags = Diagnostics()
    # grid.repeat_epochs runs (trained on a subset of the data) measure repetition: only the data-constrained fit
    # reads them; the IsoFLOP fits and the table see the fresh-data runs
    all_runs = runs
    runs = [r for r in runs if not (isinstance(r, dict) and r.get("train_subset"))]
    if len(runs) < len(all_runs):
        diags.add("info", "repeat_runs", f"{len(all_runs) - len(runs)} run(s) trained on a subset of the data "
                  f"(grid.repeat_epochs) are fitted only by the data-constrained law")
    sweep = load_sweep(runs, params_kind, plan, diags)
    groups = sweep.isoflop_groups
    # one set of resample counts (stratified by budget when there are IsoFLOP profiles) drives
    # every approach, so the table can pair replicates of one approach with those of another
    counts = resample_counts(sweep.n, B, seed, strata=sweep.labels if groups.size else None) if B else None

    iso = isoflop_approach(sweep, counts, ci, diags)
    isovp = isoflop_vp_approach(sweep, iso, counts, ci, diags)
    par = parametric_approach(sweep, counts, ci, diags, huber_delta=huber_delta, objective=objective, engine=engine,
                              progress=progress)
    env = envelope_approach(sweep, counts, ci, diags)
    lvc = frontier_approach(iso, env, ci, bootstrap=B > 0)
    if lvc.ok and lvc.E < 1e-6 * min(p["loss"] for p in lvc.points):
        diags.add("warning", "frontier_unidentified",
                  f"the loss frontier L*(C) = E + A C^-gamma put E at 0: its {len(lvc.points)} points do not identify "
                  f"the irreducible loss, so beyond the sweep it falls as a pure power law and its loss forecast runs "
                  f"low; more budgets pin it (docs/forecasts.md)")
    fits = {"isoflop": iso, "isoflop_vp": isovp, "parametric": par, "envelope": env, "loss_vs_compute": lvc}

    planned = [float(b) for b in (plan or {}).get("budgets", [])] if plan else []
    planned = planned or [float(sweep.budgets[g]) for g in groups]
    tb = budgets_of_table([float(b) for b in sweep.budgets], planned, table_budgets, table_max_budget,
                       float(sweep.C.min()))
    selection = select_model(sweep, isovp) if (isovp.ok and par.ok) else None
    available = [k for k in AUTO_ORDER if fits[k].ok and fits[k].k_N is not None]
    loss_available = [k for k in LOSS_ORDER if fits[k].ok]
    bt = backtest(sweep, iso, isovp, huber_delta=huber_delta, objective=objective, engine=engine,
                  available=available, loss_available=loss_available, progress=progress,
                  default=selection.chosen if selection else None, loss_default=LOSS_ORDER[0])
    if bt.ok and bt.chosen is not None:  # chosen for how it forecasts the sweep's own larger budgets
        chosen, competitive = bt.chosen, bt.competitive
        loss_chosen, loss_competitive = bt.loss_chosen, bt.loss_competitive
    else:  # too few budgets to backtest: the model test, and every approach's answer as model uncertainty
        chosen, competitive = (selection.chosen if selection else None), available
        loss_chosen, loss_competitive = None, ()
    span = sweep.budgets[groups] if groups.size else sweep.C
    model = table_model(fits, ci, planned, span, table_source, chosen, loss_chosen, competitive, loss_competitive,
                        forecast_error=bt.forecast_error(source_of_table(fits, table_source, chosen), fits))
    table = build_table(tb, model)
    if table.source is None:
        diags.add("error", "no_table", "no approach produced a fit, so there is no compute-optimal table")
    agreement = compare_approaches(fits, ci, diags, budget=max(tb) if tb else None)
    explanation = explain(sweep, fits, selection)
    shorts = _short_runs_effect(runs, plan, table, dict(
        params_kind=params_kind, seed=seed, ci=ci, table_budgets=table_budgets, table_max_budget=table_max_budget,
        huber_delta=huber_delta, objective=objective, engine=engine, table_source=table_source), diags) \
        if check_short else None
    surface = par.law if par.ok else None
    data = data_answer(all_runs, table.to_json(), surface, plan=plan, params_kind=params_kind,
                       unique_tokens=unique_tokens, inference_tokens=inference_tokens, n_bootstrap=B, seed=seed,
                       ci=ci, huber_delta=huber_delta, objective=objective)
    if data is not None and data.unique_tokens and any((r.get("epochs") or 0) > 1 for r in data.rows):
        worst = max(data.rows, key=lambda r: r.get("epochs") or 0)
        diags.add("warning", "repeats_data",
                  f"the table's D_opt passes the {data.unique_tokens:.3g} unique {sweep.data_unit} (up to "
                  f"{worst['epochs']:.1f} epochs)" + (
                      f": where it does, the data-constrained optimum for that data (R_D*={data.R_D_star:.3g}, "
                      f"R_N*={data.R_N_star:.3g}, {data.law_source}) is smaller and trained longer"
                      if data.law_source else "") + "; see the table's epochs (docs/data-constrained.md)")
    hold = (holdout_check(int(holdout), sweep, iso, diags, huber_delta=huber_delta, objective=objective, engine=engine,
                          isovp=isovp) if int(holdout) > 0 else None)
    return Analysis(sweep=sweep, n_bootstrap=B, seed=seed, ci=ci, isoflop=iso, isoflop_vp=isovp, parametric=par,
                    envelope=env, selection=selection, explanation=explanation,
                    loss_vs_compute=lvc, table=table, agreement=agreement, diagnostics=diags, holdout=hold,
                    backtest=bt, short_runs=shorts, data=data)


def _short_runs_effect(runs, plan, table, options: dict, diags: Diagnostics) -> dict | None:
    """The completed runs trained for fewer optimizer steps than the plan's grid.min_steps (else 100), and how
    far the table's answer at 4x the largest budget moves without them (a refit, no bootstrap)."""
    from flops_fit.planning import FORECAST_FACTOR, MIN_STEPS
    from flops_fit.training.record import short_runs

    rule = ((plan or {}).get("grid") or {}).get("min_steps") or MIN_STEPS
    flagged = short_runs([r for r in runs if isinstance(r, dict)], int(rule))
    if not flagged:
        return None
    out = {"min_steps": int(rule), "runs": [{"id": i, "steps": n} for i, n in flagged], "budget": None,
           "params_shift": None, "loss_shift": None}
    ids = {i for i, _ in flagged}
    msg = (f"{len(flagged)} run(s) trained fewer than {rule} optimizer steps ("
           + ", ".join(f"{i}: {n}" for i, n in flagged[:6]) + (" ..." if len(flagged) > 6 else "") + ")")
    if table.model is not None:
        budget = FORECAST_FACTOR * float(table.model.sweep_max)
        here = table.model.rows([budget])[0]
        try:
            rest = analyze_runs([r for r in runs if r.get("id") not in ids], plan=plan, n_bootstrap=0, holdout=0,
                                check_short=False, **options)
        except FlopsFitError:
            rest = None
        if rest is not None and rest.table.model is not None:
            there = rest.table.model.rows([budget])[0]
            out.update(budget=budget, params_shift=there["params"] / here["params"] - 1.0,
                       loss_shift=(there["loss"] / here["loss"] - 1.0) if (there["loss"] and here["loss"]) else None)
            msg += (f"; without them the table's N_opt at {budget:.2g} FLOPs moves {out['params_shift']:+.0%}"
                    + (f" and its loss {out['loss_shift']:+.2%}" if out["loss_shift"] is not None else ""))
        else:
            msg += "; without them no approach fits"
    diags.add("warning", "short_runs", msg + ": short runs end before their loss settles and bend the fits; "
              "re-plan with grid.min_steps (docs/short-runs.md)")
    return out


def run_analysis(runs, **options) -> dict:
    """Fit approaches 1-3 and the loss frontier to ``runs``; return the analysis.json body.

    Options: ``plan``, ``params_kind`` ("total" | "non_embedding"), ``n_bootstrap``, ``seed``, ``ci``,
    ``holdout``, ``table_budgets``, ``table_max_budget``, ``huber_delta``, ``objective``, ``engine``,
    ``table_source``, ``progress`` (see :func:`analyze_runs`)."""
    return analyze_runs(runs, **options).to_json()
