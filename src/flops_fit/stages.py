"""The four stages as plain functions of a plain config dict (what the CLI composes).

Each reads only what the earlier stage wrote in ``run_dir``, writes its artifact atomically,
records the resolved config it ran with in ``run_dir/configs/<stage>.yaml``, and returns a
result the caller can print. Heavy imports stay inside the functions: ``analyze`` and
``plot`` never import torch.
"""

from __future__ import annotations

from typing import Any, Mapping

import yaml

from flops_fit.artifacts import RunDir
from flops_fit.errors import FlopsFitError


def _record_config(rd: RunDir, stage: str, cfg: Mapping) -> None:
    rd.write_config(stage, yaml.safe_dump(dict(cfg), sort_keys=False))


def plan(cfg: Mapping[str, Any]) -> dict:
    """ff-plan: write ``plan.json`` for ``cfg['model']`` x ``cfg['budgets']['values']``."""
    from flops_fit.models import ModelSpec
    from flops_fit.planning import Grid, check_budgets, make_plan

    rd = RunDir(cfg["run_dir"])
    grid = Grid(**dict(cfg.get("grid") or {}))
    centres = None
    if cfg.get("refine_from"):
        # the model, data and FLOPs convention are those of the sweep being refined
        source_plan, centres, budgets = _refine(cfg["refine_from"], cfg)
        model = ModelSpec.from_config({**source_plan["model"], "_target_": source_plan["model"]["target"]})
        dataset = dict(source_plan.get("dataset") or {})
        flops = source_plan.get("flops_convention", "6nd")
    else:
        budgets = check_budgets((cfg.get("budgets") or {}).get("values"))
        model = ModelSpec.from_config(cfg["model"])
        dataset = dict(cfg.get("dataset") or {})
        if dataset:  # catch a bad dataset now, not hours later when ff-train loads it
            from flops_fit.data import normalize_config

            normalize_config(dataset)
        flops = cfg.get("flops", "6nd")
    result = make_plan(model, budgets, grid=grid, flops=flops, dataset=dataset, centres=centres,
                       progress=not cfg.get("quiet", False))
    result["budgets_name"] = "refined" if cfg.get("refine_from") else (cfg.get("budgets") or {}).get("name", "custom")
    if cfg.get("refine_from"):
        result["refined_from"] = str(cfg["refine_from"])
    if rd.has_plan():
        _warn_if_plan_changes_completed_runs(rd, result)
    _record_config(rd, "plan", cfg)
    rd.write_plan(result)
    return rd.read_plan()


def _refine(source: str, cfg: Mapping) -> tuple[dict, dict, list[float]]:
    """The source sweep's plan, a centre per budget (its fitted optimum) and the budgets:
    the source's own plus ``add_budgets`` larger ones, each ``budget_step`` x the last."""
    from flops_fit.analysis import refine_centres
    from flops_fit.api import predict

    src = RunDir(source)
    plan, analysis = src.read_plan(), src.read_analysis()
    estimates = refine_centres(analysis)
    budgets = sorted(float(b) for b in plan["budgets"])
    step = float(cfg.get("budget_step", 4.0))
    if step <= 1:
        raise FlopsFitError(f"budget_step={step} must be > 1")
    for _ in range(int(cfg.get("add_budgets", 0))):
        budgets.append(budgets[-1] * step)
    centres = {}
    for b in budgets:
        match = [n for c, n in estimates.items() if abs(c - b) <= 0.01 * b]
        if match:
            centres[b] = match[0]
        else:
            try:
                centres[b] = predict(analysis, b)["params"]
            except FlopsFitError:
                pass  # no fit to extrapolate from: the prior places this budget's grid
    if not centres:
        raise FlopsFitError(f"refine_from={source}: its analysis.json has no fitted optimum to centre on; "
                            f"train more runs there and re-run ff-analyze")
    return plan, centres, budgets


def _warn_if_plan_changes_completed_runs(rd: RunDir, new: dict) -> None:
    done = {r["id"] for r in rd.iter_runs() if r.get("status") == "completed"}
    new_ids = {e["id"] for e in new["experiments"]}
    orphaned = done - new_ids
    if orphaned:
        print(f"note: {len(orphaned)} completed runs in {rd.runs_dir} are not in the new plan; "
              f"ff-analyze only uses runs listed in plan.json")


def train(cfg: Mapping[str, Any]) -> dict:
    """ff-train: train the pending runs of the plan in ``cfg['run_dir']``."""
    from flops_fit.training.sweep import train_plan

    rd = RunDir(cfg["run_dir"])
    rd.read_plan()  # fail early, before anything is written, when there is no plan
    suffix = f"-shard{cfg.get('shard', 0)}" if int(cfg.get("num_shards", 1)) > 1 else ""
    _record_config(rd, f"train{suffix}", cfg)
    return train_plan(
        cfg["run_dir"],
        cfg["trainer"],
        shard=int(cfg.get("shard", 0)),
        num_shards=int(cfg.get("num_shards", 1)),
        retry_failed=bool(cfg.get("retry_failed", False)),
        limit=cfg.get("limit"),
        data_path=cfg.get("data_path"),
        quiet=bool(cfg.get("quiet", False)),
        allow_mismatch=bool(cfg.get("allow_mismatch", False)),
    )


def load_runs(rd: RunDir) -> tuple[list[dict], dict]:
    """The run records of the plan in ``rd`` (runs not in plan.json are ignored)."""
    plan = rd.read_plan()
    by_id = {r["id"]: r for r in rd.iter_runs()}
    runs = [by_id[e["id"]] for e in plan["experiments"] if e["id"] in by_id]
    if not runs:
        raise FlopsFitError(f"no run records in {rd.runs_dir}: run `ff-train run_dir={rd.root}` first")
    return runs, plan


def analyze(cfg: Mapping[str, Any]) -> dict:
    """ff-analyze: fit the scaling laws to the runs (or to an external CSV/JSONL) -> analysis.json."""
    from flops_fit.analysis import load_external, run_analysis

    rd = RunDir(cfg["run_dir"])
    if cfg.get("input"):
        runs, plan = load_external(cfg["input"]), None
    else:
        runs, plan = load_runs(rd)
    if cfg.get("params", "total") not in ("total", "non_embedding"):
        raise FlopsFitError(f"params={cfg.get('params')!r} must be 'total' or 'non_embedding'")
    if int(cfg.get("bootstrap", 0)) < 0:
        raise FlopsFitError(f"bootstrap={cfg.get('bootstrap')} must be >= 0")
    if not 0 < float(cfg.get("ci", 0.95)) < 1:
        raise FlopsFitError(f"ci={cfg.get('ci')} must be between 0 and 1 (e.g. 0.95)")
    result = run_analysis(
        runs,
        plan=plan,
        params_kind=cfg.get("params", "total"),
        n_bootstrap=int(cfg.get("bootstrap", 200)),
        seed=int(cfg.get("seed", 0)),
        ci=float(cfg.get("ci", 0.95)),
        holdout=int(cfg.get("holdout", 0)),
        table_budgets=list(cfg.get("table_budgets") or []),
        table_max_budget=float(cfg.get("table_max_budget", 1e24)),
        huber_delta=float(cfg.get("huber_delta", 1e-3)),
        progress=not cfg.get("quiet", False),
    )
    if cfg.get("input"):
        result["input"] = str(cfg["input"])
    # every run the analysis saw, so ff-plot and readers need nothing but analysis.json
    result["points"] = [
        {k: r.get(k) for k in ("id", "status", "budget", "params", "non_embedding_params", "tokens", "flops", "loss")}
        for r in runs
    ]
    _record_config(rd, "analyze", cfg)
    rd.write_analysis(result)
    return rd.read_analysis()


def plot(cfg: Mapping[str, Any]) -> dict:
    """ff-plot: figures in ``plots/`` and ``report.html`` from analysis.json and the runs."""
    from flops_fit.plotting import make_plots
    from flops_fit.report import write_report

    rd = RunDir(cfg["run_dir"])
    analysis = rd.read_analysis()
    # loss curves, when the run records are there (runs trained elsewhere have none)
    runs = [] if analysis.get("input") or not rd.has_plan() else load_runs(rd)[0]
    _record_config(rd, "plot", cfg)
    paths = make_plots(analysis, runs, rd.plots_dir, fmt=cfg.get("format", "png"), dpi=int(cfg.get("dpi", 130)))
    out = {"plots": [str(p) for p in paths]}
    if cfg.get("report", True):
        out["report"] = str(write_report(analysis, paths, rd.report_path))
    return out
