"""``ff-plan next_from=RUN_DIR``: the next batch of a sequential study, appended to RUN_DIR's own plan.

The batch goes into the same run directory as the runs so far: plan.json keeps every earlier entry as it
was (each with its ``batch``; entries of the first plan are batch 0) and appends the new ones, so ``ff-train``
skips what is already trained (a kill at any point resumes as after any other kill) and ``ff-analyze`` fits
every run. plan.json's ``design`` keeps the history: the target budget C*, each batch's runs, FLOPs, the
width it started from and the width it was expected to reach (analysis/design.py chooses it); ff-analyze
records what the last batch did buy (analysis.json's ``design``).

Candidates are the model's own sizes, laid out by :func:`flops_fit.planning.make_plan` with the source
plan's model, data, FLOPs convention, min_steps rule and batch basis (as a forecast check does): new sizes
at every budget so far (around the fitted optimum, twice the grid's span), and a new IsoFLOP at
``design.new_budget_factor`` (or its square root) x the largest budget (3 or ``design.new_points`` sizes). A planned id is never a
candidate again. Under ``schedule=wsd`` every candidate is a size with no trunk in the sweep yet, laid out as a
WSD sweep (:func:`_wsd_candidates`) and costed by what it adds to ``sweep_flops`` given the batch chosen so far
(:func:`marginal_cost`), since ff-train does not extend a trained trunk. A new budget a batch buys is a forecast
check: the table's and every approach's forecast there, pre-registered in the batch's record
(``forecast_checks``) as ``ff-plan forecast_from=`` registers it, which ``ff-analyze`` scores on that batch's runs.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np

from flops_fit.artifacts import RunDir
from flops_fit.errors import FlopsFitError

DONE = ("completed", "failed", "diverged")


def plan_next(source: str, design_cfg: Mapping[str, Any]) -> dict:
    """Decide and write the next batch into ``source``'s plan.json; returns ``{"plan", "decision", "lines"}``
    (``decision``: "planned" | "stop" | "pending")."""
    from flops_fit.analysis.design import (Candidate, Design, SeenWidth, Simulator, choose_batch, existing_groups,
                                           fmt_width, residual_sigma, seen_width, surface_draws, width_of)
    from flops_fit.analysis.forecast_check import preregister
    from flops_fit.analysis.predict import predict
    from flops_fit.planning import sweep_flops
    from flops_fit.units import fmt_flops, fmt_interval, human

    design = Design(**dict(design_cfg or {}))
    design.validate()
    rd = RunDir(source)
    if not rd.root.is_dir():
        raise FlopsFitError(f"next_from={source}: no such run directory")
    plan = rd.read_plan()
    if plan.get("forecast_check"):
        raise FlopsFitError(f"next_from={source} is a forecast check; give the sweep it checked")
    wsd = (plan.get("schedule") or {}).get("name") == "wsd"
    if not rd.analysis_path.is_file():
        raise FlopsFitError(f"next_from={source}: no analysis.json there; run ff-train and ff-analyze run_dir={source} "
                            f"first")
    analysis = rd.read_analysis()
    records = {r["id"]: r for r in rd.iter_runs()}
    experiments = [dict(e, batch=int(e.get("batch", 0))) for e in plan["experiments"]]
    history = dict(plan.get("design") or {})
    batches = list(history.get("batches") or [])
    if not batches:
        batches = [{"batch": 0, "runs": [e["id"] for e in experiments], "flops": sweep_flops(experiments)}]
    while len(batches) > 1 and not batches[-1].get("runs"):
        batches = batches[:-1]  # the last decision was a stop: this one replaces it
    number = max(int(b["batch"]) for b in batches) + 1
    pending = [e["id"] for e in experiments if (records.get(e["id"]) or {}).get("status") not in DONE]
    if pending:
        return {"plan": plan, "decision": "pending",
                "lines": [f"design: {len(pending)} planned run(s) not trained yet (e.g. {pending[0]}): "
                          f"ff-train run_dir={source}, then ff-analyze, then plan the next batch"]}
    analysed = {p.get("id") for p in analysis.get("points") or []}
    done = [e for e in experiments if records[e["id"]].get("status") == "completed" and not e.get("train_subset")]
    stale = [e["id"] for e in done if e["id"] not in analysed]
    if stale:
        raise FlopsFitError(f"next_from={source}: analysis.json predates {len(stale)} completed run(s) (e.g. {stale[0]}); "
                            f"re-run ff-analyze run_dir={source} first")
    table = analysis.get("table") or []
    if not analysis.get("table_model") or not table:
        raise FlopsFitError(f"next_from={source}: its analysis.json has no table to narrow; see its diagnostics")
    target = float(design.target_budget or history.get("target_budget") or max(float(r["budget"]) for r in table))
    row = predict(analysis, target)
    boot_now = width_of(row.get("params_ci"))
    if boot_now is None:
        raise FlopsFitError(f"next_from={source}: its analysis has no interval on N_opt; re-run ff-analyze "
                            f"run_dir={source} bootstrap=200")
    width_now = seen_width(row)  # the interval the user sees: the bootstrap's, widened for the model choice
    target_width = design.target_width if design.target_width is not None else history.get("target_width")
    spent = float(sweep_flops(experiments))
    seen = SeenWidth(analysis["table_model"], target)
    floor_now = seen.floor()
    head = (f"design: N_opt({fmt_flops(target)}) = {human(row['params'])} params, interval width "
            f"{fmt_width(width_now)} (the bootstrap's {fmt_width(boot_now)}, the model choice's alone "
            f"{fmt_width(floor_now)}); {fmt_flops(spent)} spent over {len(experiments)} runs in {number} batch(es)")
    record = {"batch": number, "planned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "width_before": width_now, "bootstrap_width_before": boot_now, "model_floor_before": floor_now,
              "target_width": target_width}
    allowance = float(design.max_flops) if design.max_flops else spent
    if design.max_total_flops:
        allowance = min(allowance, float(design.max_total_flops) - spent)
    stop, lines_wsd = None, []
    if target_width is not None and width_now <= float(target_width):
        stop = f"the interval's width {fmt_width(width_now)} is within design.target_width={float(target_width):g}"
    elif allowance <= 0:
        stop = f"design.max_total_flops={design.max_total_flops:g} is spent ({fmt_flops(spent)})"
    batch = None
    if stop is None:
        sigma = residual_sigma([e["budget"] for e in done], [e["params"] for e in done],
                               [records[e["id"]]["loss"] for e in done])
        sim = Simulator(surface_draws(analysis["table_model"]), sigma, target,
                        sims=design.sims, seed=design.seed + number, ci=float(analysis["table_model"].get("ci", 0.95)),
                        k=_k_of(plan))
        existing = existing_groups(sim, [e["budget"] for e in done], [e["params"] for e in done],
                                   [e["tokens"] for e in done])
        if wsd:
            laid, left_out = _wsd_candidates(plan, analysis, experiments, design)
            cost = marginal_cost(experiments)
            if left_out[0]:
                lines_wsd = [f"design: schedule=wsd: {left_out[0]} candidate run(s) of {left_out[1]} size(s) that "
                             f"already have a trunk left out (ff-train does not extend a trained trunk); every "
                             f"candidate is a new size, a new trunk, costed by the FLOPs it adds to the sweep"]
        else:
            laid, cost = _candidates(plan, analysis, experiments, design), None
        cands = [Candidate(kind, float(b), np.array([e["params"] for e in es], dtype=float),
                           np.array([e["tokens"] for e in es], dtype=float), float(sweep_flops(es)), es)
                 for kind, b, es in laid]
        batch = choose_batch(sim, existing, cands, width_now=width_now, allowance=allowance,
                             target_width=None if target_width is None else float(target_width),
                             min_gain=float(design.min_gain), seen=seen, cost=cost)
        stop = batch.stop
        record.update(batch.to_json())
    record["target_budget"] = target
    lines = [head] + lines_wsd
    if stop:
        record.update(runs=[], flops=0.0, stop=stop)
        lines.append(f"design: stop: {stop}")
        decision = "stop"
        new_entries: list = []
    else:
        basis = plan["experiments"][0].get("eval_basis_tokens")
        new_entries, checks = [], []
        top = max(float(e["budget"]) for e in experiments)
        for c in batch.chosen:
            entries = [dict(e, batch=number) for e in c.entries]
            for e in entries:
                if basis is not None:
                    e["eval_basis_tokens"] = basis
            new_entries += entries
            if c.kind == "budget":
                # a new budget beyond the sweep is a forecast check: its forecast registered before it trains,
                # scored by ff-analyze on these runs (analysis/design.score_checks)
                block = preregister(analysis, c.budget, factor=c.budget / top, source=str(source))
                checks.append(dict(block, runs=[e["id"] for e in entries]))
        if wsd:
            _warm_up_new_trunks(new_entries)
            record["new_trunks"] = sorted({e["trunk"] for e in new_entries})
        # what the batch adds to the sweep: under wsd its new trunks, each once, and their cooldowns; under cosine
        # its runs' own FLOPs
        added = sweep_flops(experiments + new_entries) - sweep_flops(experiments)
        record.update(runs=[e["id"] for e in new_entries], flops=float(added))
        if checks:
            record["forecast_checks"] = checks
        lines.append(f"design: batch {number}: {len(new_entries)} run(s), {fmt_flops(record['flops'])} of an allowance of "
                     f"{fmt_flops(allowance)}; expected width {fmt_width(batch.expected_width)} (now {fmt_width(width_now)})"
                     + (f", target {fmt_width(float(target_width))}" if target_width is not None else ""))
        lines += [f"  {label}: {fmt_flops(f)}, expected width after it {fmt_width(w)}" for label, f, w in batch.steps]
        for b in checks:
            t = b["table"]
            lines.append(f"design: forecast check at {fmt_flops(b['budget'])} registered {b['registered']}: N_opt "
                         f"{human(t['params'])} params {fmt_interval(t.get('params_ci_with_model'), human)}; "
                         f"ff-analyze scores it once its {len(b['runs'])} runs are trained")
        decision = "planned"
    batches.append(record)
    experiments += new_entries
    history.update(target_budget=target, target_width=target_width, batches=batches,
                   width="hi / lo - 1 of the table's params_ci_with_model (else params_ci) at target_budget")
    out = {k: v for k, v in plan.items() if k not in ("schema_version", "created", "provenance")}
    out.update(experiments=experiments, budgets=sorted({float(e["budget"]) for e in experiments}),
               sweep_flops=sweep_flops(experiments), runs_flops=float(sum(e["flops"] for e in experiments)),
               design=history)
    rd.write_plan(out)
    return {"plan": rd.read_plan(), "decision": decision, "lines": lines}


def _k_of(plan: Mapping) -> float:
    """FLOPs per token per parameter of the plan's runs (6 under 6ND): the simulator's C = k N D."""
    ks = [float(e["flops_per_token"]) / float(e["params"]) for e in plan["experiments"]
          if e.get("flops_per_token") and e.get("params")]
    return float(np.median(ks)) if ks else 6.0


def _candidates(plan: Mapping, analysis: Mapping, experiments: list, design) -> list[tuple[str, float, list]]:
    """[(kind, budget, plan entries)]: one run per new size at each budget so far; a new budget's IsoFLOP."""
    from flops_fit.analysis.design import candidate_layouts
    from flops_fit.analysis.predict import predict
    from flops_fit.models import ModelSpec
    from flops_fit.planning import Grid, make_plan, sweep_batch_basis

    model = ModelSpec.from_description(plan["model"])
    src_grid = dict(plan.get("grid") or {})
    planned = {e["id"] for e in experiments}
    basis = sweep_batch_basis(experiments)

    def lay(budget: float, points: int, span: float) -> list[dict]:
        grid = Grid(points=points, span=span, tokens_per_param=float(src_grid.get("tokens_per_param", 20.0)),
                    min_tokens_per_param=float(src_grid.get("min_tokens_per_param", 1.0)),
                    min_tokens=int(src_grid.get("min_tokens", 0)), min_steps=src_grid.get("min_steps"),
                    max_epochs=src_grid.get("max_epochs"))
        try:
            centre = float(predict(analysis, budget)["params"])
        except FlopsFitError:
            return []
        try:
            new = make_plan(model, [budget], grid=grid, flops=plan.get("flops_convention", "6nd"),
                            dataset=plan.get("dataset"), centres={budget: centre},
                            batch_basis=basis, unique_units=plan.get("unique_units"),
                            unique_source=plan.get("unique_units_source"))
        except FlopsFitError:
            return []
        return [e for e in new["experiments"] if e["id"] not in planned]

    out = []
    budgets = sorted({float(e["budget"]) for e in experiments})
    for kind, budget, points, span in candidate_layouts(budgets, int(src_grid.get("points", 7)),
                                                        float(src_grid.get("span", 4.0)), design):
        entries = lay(budget, points, span)
        if kind == "size":
            out += [("size", budget, [e]) for e in entries]
        elif len(entries) >= 3:
            out.append(("budget", budget, entries))
    return out


def marginal_cost(existing: Sequence[Mapping]):
    """``cost(chosen, candidate)`` for :func:`flops_fit.analysis.design.choose_batch` under schedule=wsd: the FLOPs
    the candidate's runs add to the sweep given the runs so far and the candidates chosen before it,
    ``sweep_flops(existing + chosen + candidate) - sweep_flops(existing + chosen)``. ``sweep_flops`` counts each
    trunk once (to its latest branch point, then each run's cooldown), so a run of a size whose new trunk an
    earlier choice already bought costs its cooldown and whatever it lengthens that trunk, not its budget."""
    from flops_fit.planning import sweep_flops

    base = list(existing)
    memo: dict = {}

    def cost(chosen, candidate) -> float:
        key = tuple(id(c) for c in chosen)
        mine = [e for c in chosen for e in c.entries]
        if key not in memo:
            memo.clear()  # the greedy only ever asks about the batch as it stands
            memo[key] = sweep_flops(base + mine)
        return float(sweep_flops(base + mine + list(candidate.entries)) - memo[key])

    return cost


def _warm_up_new_trunks(entries: list[dict]) -> None:
    """Each new trunk's ``warmup_basis_tokens``: its shortest chosen run (in place), as make_plan sets it for a
    WSD sweep's trunks; the candidates were laid out with more runs per size than a batch takes."""
    shortest: dict[str, int] = {}
    for e in entries:
        shortest[e["trunk"]] = min(shortest.get(e["trunk"], e["tokens"]), e["tokens"])
    for e in entries:
        e["warmup_basis_tokens"] = shortest[e["trunk"]]


def _nearest(entries: list[dict], targets) -> list[dict]:
    """For each target parameter count, the entry of the nearest size (in log params) not taken yet."""
    left, out = list(entries), []
    for t in targets:
        if not left:
            break
        e = min(left, key=lambda x: abs(np.log(float(x["params"]) / float(t))))
        left.remove(e)
        out.append(e)
    return sorted(out, key=lambda x: x["params"])


def _wsd_candidates(plan: Mapping, analysis: Mapping, experiments: list, design) -> tuple[list, tuple[int, int]]:
    """The candidates of a schedule=wsd sweep, [(kind, budget, plan entries)], and (runs, sizes) left out.

    ff-train does not extend a trained trunk (its checkpoint is gone once its runs complete, and a kept one does
    not resume a longer trunk) and a run shorter than a trunk's shortest would change the warmup its completed
    runs hold, so every candidate is a model size with no trunk in the sweep: a new trunk of its own. They are
    laid out as a WSD plan lays out its sizes (make_plan with schedule=wsd and the sweep's cooldown_frac: one
    ladder of sizes shared across budgets, so a new size's runs at several budgets share one new trunk) with
    the size candidates' grid (2 x ``grid.points`` + 1 sizes over twice the span, around each budget's fitted
    optimum), over the budgets so far and the new ones together. A run of a size that already has a trunk is
    dropped (counted). At an existing budget each run is a candidate; at a new budget an IsoFLOP of 3 and of
    ``design.new_points`` of its new sizes, the nearest to the grid's targets around the fitted optimum."""
    from flops_fit.analysis.design import candidate_layouts
    from flops_fit.analysis.predict import predict
    from flops_fit.models import ModelSpec
    from flops_fit.planning import COOLDOWN_FRAC, Grid, make_plan, sweep_batch_basis

    model = ModelSpec.from_description(plan["model"])
    src_grid = dict(plan.get("grid") or {})
    points, span = int(src_grid.get("points", 7)), float(src_grid.get("span", 4.0))
    cooldown = float((plan.get("schedule") or {}).get("cooldown_frac", COOLDOWN_FRAC))
    planned = {e["id"] for e in experiments}
    trunked = {e["size"] for e in experiments if e.get("trunk")}
    layouts = candidate_layouts(sorted({float(e["budget"]) for e in experiments}), points, span, design)
    size_grid = next(((n, sp) for kind, _, n, sp in layouts if kind == "size"), (2 * points + 1, 2.0 * span))
    centres = {}
    for _, budget, _, _ in layouts:
        try:
            centres[budget] = float(predict(analysis, budget)["params"])
        except FlopsFitError:
            continue
    if not centres:
        return [], (0, 0)
    grid = Grid(points=size_grid[0], span=size_grid[1],
                tokens_per_param=float(src_grid.get("tokens_per_param", 20.0)),
                min_tokens_per_param=float(src_grid.get("min_tokens_per_param", 1.0)),
                min_tokens=int(src_grid.get("min_tokens", 0)), min_steps=src_grid.get("min_steps"),
                max_epochs=src_grid.get("max_epochs"))
    try:
        laid = make_plan(model, sorted(centres), grid=grid, flops=plan.get("flops_convention", "6nd"),
                         dataset=plan.get("dataset"), centres=centres, schedule="wsd", cooldown_frac=cooldown,
                         batch_basis=sweep_batch_basis(experiments), unique_units=plan.get("unique_units"),
                         unique_source=plan.get("unique_units_source"))["experiments"]
    except FlopsFitError:
        return [], (0, 0)
    old = [e for e in laid if e["size"] in trunked]
    new = [e for e in laid if e["size"] not in trunked and e["id"] not in planned]
    out = []
    for kind, budget, n, sp in layouts:
        if budget not in centres:
            continue
        here = [e for e in new if abs(float(e["budget"]) - budget) <= 1e-6 * budget]
        if kind == "size":
            out += [("size", budget, [e]) for e in here]
        else:
            pick = _nearest(here, centres[budget] * sp ** np.linspace(-1.0, 1.0, n))
            if len(pick) >= 3:
                out.append(("budget", budget, pick))
    return out, (len(old), len({e["size"] for e in old}))
