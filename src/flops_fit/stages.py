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
from flops_fit.settings import (AnalyzeSettings, PlanSettings, PlotSettings, StatusSettings, TrainSettings,
                                with_defaults)
from flops_fit.trackers import check_logger

SETTINGS = {"plan": PlanSettings, "train": TrainSettings, "analyze": AnalyzeSettings, "plot": PlotSettings,
            "status": StatusSettings}


def check(stage: str, cfg: Mapping[str, Any]) -> dict:
    """``cfg`` with its defaults filled in, its values checked before anything is built or written.

    The CLI calls this right after composing (so ``trainer.lr=-1`` fails in a second, not after
    the data is loaded); each stage function calls it again for the Python API's dicts.
    """
    cfg = with_defaults(SETTINGS[stage], cfg)
    if stage == "plan":
        from flops_fit.planning import Grid, check_budgets

        Grid(**dict(cfg["grid"])).validate()
        if cfg.get("refine_from") and cfg.get("forecast_from"):
            raise FlopsFitError("refine_from= and forecast_from= plan different things (a re-centred sweep, a check of "
                                "a forecast): give one")
        if cfg.get("next_from") and (cfg.get("refine_from") or cfg.get("forecast_from")):
            raise FlopsFitError("next_from= adds a batch to its own run_dir's plan; give it without refine_from= "
                                "or forecast_from=")
        if cfg.get("next_from"):
            from flops_fit.analysis.design import Design

            Design(**dict(cfg.get("design") or {})).validate()
        elif not cfg.get("refine_from") and not cfg.get("forecast_from"):
            check_budgets((cfg.get("budgets") or {}).get("values"))
        rng = (cfg.get("model") or {}).get("size_range")
        if rng is not None and (len(rng) != 2 or int(rng[0]) < 1 or int(rng[1]) < int(rng[0])):
            raise FlopsFitError(f"model.size_range={list(rng)} must be [min, max] with 1 <= min <= max, "
                                f"e.g. model.size_range=[{min(rng) if rng else 8},{max(rng) if rng else 4096}]")
        if float(cfg["budget_step"]) <= 1:
            raise FlopsFitError(f"budget_step={cfg['budget_step']} must be > 1")
    elif stage == "train":
        from flops_fit.training.config import check_trainer

        check_trainer(cfg["trainer"])
        check_logger(cfg["logger"])
        if int(cfg["num_shards"]) < 1 or not 0 <= int(cfg["shard"]) < int(cfg["num_shards"]):
            raise FlopsFitError(f"shard={cfg['shard']} must be in [0, num_shards={cfg['num_shards']})")
    elif stage == "plot":
        check_logger(cfg["logger"])
    elif stage == "status":
        if not float(cfg["stale_after"]) > 0:
            raise FlopsFitError(f"stale_after={cfg['stale_after']} must be a number of seconds > 0, e.g. stale_after=300")
    elif stage == "analyze":
        check_logger(cfg["logger"])
        if cfg["params"] not in ("total", "non_embedding"):
            raise FlopsFitError(f"params={cfg['params']!r} must be 'total' or 'non_embedding'")
        from flops_fit.analysis.run import check_options

        check_options(ci=float(cfg["ci"]), n_bootstrap=int(cfg["bootstrap"]), holdout=int(cfg["holdout"]),
                      huber_delta=float(cfg["huber_delta"]), objective=cfg["objective"], engine=cfg["engine"],
                      table_source=cfg["table_source"])
    return cfg


def _record_config(rd: RunDir, stage: str, cfg: Mapping) -> None:
    rd.write_config(stage, yaml.safe_dump(dict(cfg), sort_keys=False))


def plan(cfg: Mapping[str, Any], *, model: Any = None, data: Any = None) -> dict:
    """ff-plan: write ``plan.json`` for ``cfg['model']`` x ``cfg['budgets']['values']``.

    ``model`` (a :class:`~flops_fit.models.ModelSpec`) and ``data`` (a data source) are the Python
    API's objects; they replace ``cfg['model']`` and ``cfg['dataset']``.
    """
    from flops_fit.models import ModelSpec
    from flops_fit.planning import Grid, check_budgets, make_plan, sweep_batch_basis, units_per_example_of

    cfg = dict(check("plan", cfg))
    if cfg.get("next_from"):
        return _plan_next(cfg)
    if model is not None:
        cfg["model"] = model.describe()
        cfg["dataset"] = _describe_data(data)
    rd = RunDir(cfg["run_dir"])
    grid = Grid(**dict(cfg.get("grid") or {}))
    centres = None
    batch_basis = None  # grid.min_steps chooses the batch for the plan's own shortest run, unless a check's
    if cfg.get("refine_from"):
        # the model, data and FLOPs convention are those of the sweep being refined
        source_plan, centres, budgets = _refine(cfg["refine_from"], cfg)
        model = ModelSpec.from_description(source_plan["model"])
        dataset = dict(source_plan.get("dataset") or {})
        flops = source_plan.get("flops_convention", "6nd")
    elif cfg.get("forecast_from"):
        # an IsoFLOP at forecast_factor x the sweep's largest budget, around its pre-registered forecast, with
        # the sweep's model (or the Python API's same objects), data, FLOPs convention and schedule
        from flops_fit.checks import plan_inputs

        source_plan, check_budget, centre, forecast_block = plan_inputs(cfg["forecast_from"],
                                                                        float(cfg["forecast_factor"]))
        budgets, centres = [check_budget], {check_budget: centre}
        if model is None:
            model = ModelSpec.from_description(source_plan["model"])
            dataset = dict(source_plan.get("dataset") or {})
        else:
            dataset = cfg["dataset"]
        flops = source_plan.get("flops_convention", "6nd")
        # ... the sweep's batch: its grid.min_steps rule on the sweep's shortest run
        grid.min_steps = (source_plan.get("grid") or {}).get("min_steps", 0) or 0
        batch_basis = sweep_batch_basis(source_plan["experiments"])
        cfg["schedule"] = (source_plan.get("schedule") or {}).get("name", cfg["schedule"])
        cfg["cooldown_frac"] = (source_plan.get("schedule") or {}).get("cooldown_frac", cfg["cooldown_frac"])
    elif model is not None:
        budgets = check_budgets((cfg.get("budgets") or {}).get("values"))
        dataset = cfg["dataset"]
        flops = cfg["flops"]
    else:
        budgets = check_budgets((cfg.get("budgets") or {}).get("values"))
        model = ModelSpec.from_config(cfg["model"])
        dataset = dict(cfg.get("dataset") or {})
        if dataset:  # catch a bad dataset now, not hours later when ff-train loads it
            from flops_fit.data import normalize_config

            normalize_config(dataset)
            _check_vocabulary(model, dataset)
        flops = cfg["flops"]
    # a Python data object's units per example (grid.min_steps' batches); a config's are read from it
    per_example = units_per_example_of(data) if data is not None and dataset.get("kind") == "python" else None
    source = source_plan if (cfg.get("refine_from") or cfg.get("forecast_from")) and data is None else None
    unique, unique_source = _unique_data(dataset, data, source)
    result = make_plan(model, budgets, grid=grid, flops=flops, dataset=dataset, centres=centres,
                       data_unit=getattr(data, "data_unit", None), progress=not cfg["quiet"],
                       schedule=str(cfg["schedule"]), cooldown_frac=float(cfg["cooldown_frac"]),
                       units_per_example=per_example, batch_basis=batch_basis,
                       unique_units=unique, unique_source=unique_source)
    result["budgets_name"] = ("refined" if cfg.get("refine_from") else "forecast check" if cfg.get("forecast_from")
                              else (cfg.get("budgets") or {}).get("name", "custom"))
    if cfg.get("refine_from"):
        result["refined_from"] = str(cfg["refine_from"])
    if cfg.get("forecast_from"):
        result["forecast_check"] = forecast_block
    if rd.has_plan():
        _refuse_orphaning_completed_runs(rd, result, force=bool(cfg["force"]))
    _record_config(rd, "plan", cfg)
    rd.write_plan(result)
    return rd.read_plan()


def _plan_next(cfg: Mapping) -> dict:
    """ff-plan next_from=RUN_DIR: the next batch of a sequential design, appended to RUN_DIR's plan (design.py);
    the plan returned carries ``design_decision`` ("planned" | "stop" | "pending") and ``design_lines``."""
    from flops_fit.design import plan_next

    source = str(cfg["next_from"])
    if str(cfg.get("run_dir")) not in (source, SETTINGS["plan"].run_dir) and \
            RunDir(cfg["run_dir"]).root.resolve() != RunDir(source).root.resolve():
        raise FlopsFitError(f"next_from={source} plans the next batch into its own run_dir; drop run_dir="
                            f"{cfg['run_dir']} (or pass run_dir={source})")
    out = plan_next(source, cfg.get("design") or {})
    _record_config(RunDir(source), "plan", {**cfg, "run_dir": source})
    return {**out["plan"], "design_decision": out["decision"], "design_lines": out["lines"]}


def _unique_data(dataset: Mapping, data: Any, source_plan: Mapping | None) -> tuple[int | None, str | None]:
    """U, the data's unique training units, and whether it was "counted" or "stated" ((None, None): unknown).

    A re-plan (refine_from, forecast_from) keeps its source plan's; a Python data object says its own; a
    dataset config is built and counted here, so that data that is missing fails at ff-plan, in one line,
    rather than when ff-train first loads it (the tokenized stream is cached for ff-train)."""
    if source_plan is not None:
        u = source_plan.get("unique_units")
        return (int(u), source_plan.get("unique_units_source", "counted")) if u else (None, None)
    if data is not None:
        return (data.unique_units, data.unique_source) if hasattr(data, "unique_source") else (None, None)
    if not dataset or dataset.get("kind") == "python":
        return None, None
    if dataset.get("unique_units"):  # stated: trusted, and the data may live only where ff-train runs (data_path)
        return int(dataset["unique_units"]), "stated"
    from flops_fit.data import build_data

    source = build_data(dataset)
    return source.unique_units, source.unique_source


def _check_vocabulary(model, dataset: Mapping) -> None:
    """Token ids run up to dataset.vocab_size - 1: a model with a smaller vocabulary would fail on them."""
    model_vocab, data_vocab = model.kwargs.get("vocab_size"), dataset.get("vocab_size")
    if dataset.get("kind", "text") == "text" and isinstance(model_vocab, int) and isinstance(data_vocab, int) \
            and model_vocab < data_vocab:
        raise FlopsFitError(
            f"model.kwargs.vocab_size={model_vocab} is below dataset.vocab_size={data_vocab}: token ids up to "
            f"{data_vocab - 1} are beyond the model's vocabulary; set model.kwargs.vocab_size=${{dataset.vocab_size}}"
        )


def _describe_data(data: Any) -> dict:
    """What plan.json records of a Python data object: enough to recognise it, not to rebuild it."""
    if data is None:
        return {}
    # flops-fit's own sources (build_data(...), examples.TinyStoriesDataset ...): their config rebuilds them
    config = getattr(data, "config", None) or getattr(data, "cfg", None)
    if isinstance(config, Mapping) and config.get("kind") in ("text", "image"):
        return dict(config)
    info = {k: v for k, v in (data.info() if hasattr(data, "info") else {}).items()
            if isinstance(v, (str, int, float, bool)) or v is None}
    return {**info, "name": info.get("name") or type(data).__name__, "kind": "python",
            "note": "a Python object given to find_optimal: train this plan from Python, not with ff-train"}


def _refine(source: str, cfg: Mapping) -> tuple[dict, dict, list[float]]:
    """The source sweep's plan, a centre per budget (its fitted optimum) and the budgets:
    the source's own plus ``add_budgets`` larger ones, each ``budget_step`` x the last."""
    from flops_fit.analysis import predict, refine_centres

    src = RunDir(source)
    plan, analysis = src.read_plan(), src.read_analysis()
    estimates = refine_centres(analysis)
    budgets = sorted(float(b) for b in plan["budgets"])
    step = float(cfg["budget_step"])
    for _ in range(int(cfg["add_budgets"])):
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


def _refuse_orphaning_completed_runs(rd: RunDir, new: dict, force: bool) -> None:
    """A new plan over completed runs of another plan would silently drop them from the study, or, where it
    keeps a run's id for another entry (other tokens, a WSD cooldown or warmup), pass them off as its own."""
    from flops_fit.planning import plan_differences

    completed = {r["id"]: r for r in rd.iter_runs() if r.get("status") == "completed"}
    entries = {e["id"]: e for e in new["experiments"]}
    changed = [(i, d) for i, r in sorted(completed.items()) if i in entries for d in plan_differences(entries[i], r)[:1]]
    if changed and not force:
        run_id, (key, old, now) = changed[0]
        raise FlopsFitError(
            f"{rd.root} holds {len(changed)} completed run(s) trained for other plan entries than the new plan's "
            f"(e.g. {run_id}: {key}={old}, now {key}={now}); plan into a new run_dir=..., or pass force=true to "
            f"replace the plan (ff-train will then refuse to mix them unless allow_mismatch=true)"
        )
    orphaned = set(completed) - set(entries)
    if not orphaned:
        return
    if not force:
        raise FlopsFitError(
            f"{rd.root} holds {len(orphaned)} completed runs of another plan that the new plan does not list; "
            f"plan into a new run_dir=..., or pass force=true to replace the plan (their records stay in {rd.runs_dir})"
        )
    print(f"note: {len(orphaned)} completed runs in {rd.runs_dir} are not in the new plan; "
          f"ff-analyze only uses runs listed in plan.json")


def train(cfg: Mapping[str, Any], *, model: Any = None, data: Any = None, loss_fn: Any = None) -> dict:
    """ff-train: train the pending runs of the plan in ``cfg['run_dir']``.

    ``model``, ``data`` and ``loss_fn`` are the Python API's objects (the plan's recorded model and
    dataset cannot rebuild them); the command line passes none.
    """
    from flops_fit.training import distributed
    from flops_fit.training.sweep import train_plan

    cfg = check("train", cfg)
    rd = RunDir(cfg["run_dir"])
    plan = rd.read_plan()  # fail early, before anything is written, when there is no plan
    if plan.get("forecast_check"):
        from flops_fit.checks import refuse_other_trainer
        from flops_fit.training.config import TrainerConfig

        refuse_other_trainer(plan, TrainerConfig.from_mapping(cfg["trainer"]), bool(cfg["allow_mismatch"]))
    if distributed.launches_workers(cfg["trainer"]):
        n = distributed.devices_of(cfg["trainer"])
        raise FlopsFitError(f"trainer.devices={n} needs {n} worker processes: use `ff-train ... trainer.devices={n}` "
                            f"(it starts them), or launch this script with `torchrun --nproc_per_node={n}`")
    if distributed.is_main_process():
        suffix = f"-shard{cfg['shard']}" if int(cfg["num_shards"]) > 1 else ""
        _record_config(rd, f"train{suffix}", cfg)
    return train_plan(
        cfg["run_dir"],
        cfg["trainer"],
        shard=int(cfg["shard"]),
        num_shards=int(cfg["num_shards"]),
        retry_failed=bool(cfg["retry_failed"]),
        limit=cfg["limit"],
        data_path=cfg["data_path"],
        quiet=bool(cfg["quiet"]),
        allow_mismatch=bool(cfg["allow_mismatch"]),
        model=model,
        data=data,
        loss_fn=loss_fn,
        logger=cfg["logger"],
    )


def status(cfg: Mapping[str, Any]) -> dict:
    """ff-status: every planned run of ``cfg['run_dir']`` by state (completed, failed, diverged,
    running, pending) with the progress of those under way; reads the run directory, writes nothing."""
    from flops_fit.training.status import sweep_status

    cfg = check("status", cfg)
    return sweep_status(cfg["run_dir"], stale_after=float(cfg["stale_after"]))


def load_runs(rd: RunDir) -> tuple[list[dict], dict]:
    """The run records of the plan in ``rd`` (runs not in plan.json are ignored)."""
    plan = rd.read_plan()
    by_id = {r["id"]: r for r in rd.iter_runs()}
    runs = [by_id[e["id"]] for e in plan["experiments"] if e["id"] in by_id]
    if not runs:
        raise FlopsFitError(f"no run records in {rd.runs_dir}: run `ff-train run_dir={rd.root}` first")
    return runs, plan


def analyze(cfg: Mapping[str, Any]) -> dict:
    """ff-analyze: fit the scaling laws to the runs (or to an external CSV/JSONL) -> analysis.json; a forecast
    check's run_dir (plan.json with ``forecast_check``): score its registered forecasts."""
    from flops_fit.analysis import load_external

    cfg = check("analyze", cfg)
    rd = RunDir(cfg["run_dir"])
    if cfg["input"]:
        runs, plan = load_external(cfg["input"]), None
    else:
        runs, plan = load_runs(rd)
    if plan and plan.get("forecast_check"):
        from flops_fit.analysis.forecast_check import analyze_check

        result = analyze_check(plan["forecast_check"], runs, plan=plan, seed=int(cfg["seed"]))
    else:
        result = _analyze_sweep(runs, plan, cfg)
    if cfg.get("input"):
        result["input"] = str(cfg["input"])
    if plan and plan.get("design"):  # a sequential design: what its last batch bought against what it expected
        from flops_fit.analysis.design import outcome

        result["design"] = outcome(plan["design"], result, runs, seed=int(cfg["seed"]))
    # every run the analysis saw, so ff-plot and readers need nothing but analysis.json
    result["points"] = [
        {k: r.get(k) for k in ("id", "status", "budget", "params", "non_embedding_params", "tokens", "flops", "loss")}
        for r in runs if not r.get("train_subset")  # grid.repeat_epochs runs: the data-constrained fit's alone
    ]
    _record_config(rd, "analyze", cfg)
    rd.write_analysis(result)
    analysis = rd.read_analysis()
    _track(cfg, rd, analysis, "analysis", sorted(rd.plots_dir.glob("*.png")) if rd.plots_dir.is_dir() else [])
    return analysis


def _track(cfg: Mapping, rd: RunDir, analysis: Mapping, name: str, figures: list) -> None:
    """ff-analyze and ff-plot with a ``logger``: the table, the fitted exponents and the figures, as ``name``."""
    from flops_fit.trackers import flatten, open_tracker

    tracker = open_tracker(cfg.get("logger"), rd.root)
    if tracker is None:
        return
    from flops_fit.analysis.summary import markdown_table, no_table_message

    table = [{k: v for k, v in row.items() if isinstance(v, (int, float, str))} for row in analysis.get("table") or []]
    text = markdown_table(analysis) if table else no_table_message("why: the diagnostics in analysis.json")
    fits = analysis.get("fits") or {}
    summary = {f"{approach}.{k}": float(fit[k]) for approach, fit in fits.items() if isinstance(fit, Mapping)
               for k in ("a", "b") if isinstance(fit.get(k), (int, float)) and not isinstance(fit.get(k), bool)}
    settings = {k: v for k, v in cfg.items() if k not in ("logger", "run_dir", "quiet", "debug")}
    tracker.log_analysis(flatten(settings, f"{name}."), table, text, summary, [str(p) for p in figures], name=name)


def _analyze_sweep(runs, plan, cfg) -> dict:
    from flops_fit.analysis import run_analysis

    return run_analysis(
        runs,
        plan=plan,
        params_kind=cfg["params"],
        n_bootstrap=int(cfg["bootstrap"]),
        seed=int(cfg["seed"]),
        ci=float(cfg["ci"]),
        holdout=int(cfg["holdout"]),
        table_budgets=list(cfg["table_budgets"] or []),
        table_max_budget=float(cfg["table_max_budget"]),
        huber_delta=float(cfg["huber_delta"]),
        objective=cfg["objective"],
        engine=cfg["engine"],
        table_source=cfg["table_source"],
        progress=not cfg["quiet"],
        unique_tokens=None if cfg.get("unique_tokens") is None else float(cfg["unique_tokens"]),
        inference_tokens=None if cfg.get("inference_tokens") is None else float(cfg["inference_tokens"]),
    )


def plot(cfg: Mapping[str, Any], *, keep_figures: bool = False) -> dict:
    """ff-plot: figures in ``plots/`` and ``report.html`` from analysis.json and the runs.

    ``keep_figures``: also return the open matplotlib Figures (``out['figures']``) for a notebook.
    """
    from flops_fit.plotting import make_plots
    from flops_fit.report import write_report

    cfg = check("plot", cfg)
    rd = RunDir(cfg["run_dir"])
    analysis = rd.read_analysis()
    # loss curves, when the run records are there (runs trained elsewhere have none)
    runs = [] if analysis.get("input") or not rd.has_plan() else load_runs(rd)[0]
    _record_config(rd, "plot", cfg)
    figures: list | None = [] if keep_figures else None
    paths = make_plots(analysis, runs, rd.plots_dir, fmt=cfg["format"], dpi=int(cfg["dpi"]), figures=figures)
    out = {"plots": [str(p) for p in paths]}
    if keep_figures:
        out["figures"] = figures
    if cfg["report"]:
        out["report"] = str(write_report(analysis, paths, rd.report_path))
    _track(cfg, rd, analysis, "plots", [p for p in paths if str(p).endswith(".png")])
    return out
