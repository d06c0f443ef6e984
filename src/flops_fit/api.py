"""``flops_fit.find_optimal``: the four stages chained for notebook users.

Two forms, one pipeline. Both run plan -> train -> analyze -> plot in one run directory, write
the same artifacts as ``ff-plan``/``ff-train``/``ff-analyze``/``ff-plot`` (so those commands work on
it afterwards), and resume: a second call skips the runs already completed.

**Your objects** (a model class or factory, a torch dataset, a loss)::

    import flops_fit
    result = flops_fit.find_optimal(
        model_cls=MyNet, model_size_param="width", model_kwargs={"depth": 4},
        dataset=my_dataset,                 # Dataset / IterableDataset / DataLoader of (inputs, targets)
        loss_fn=my_loss,                    # optional: cross-entropy over the last dimension by default
        compute_budgets=[1e11, 3e11, 1e12],
        mode="local",                       # "mock" (closed-form truth, instant) | "local" (CPU) | "gpu"
        output_dir="outputs/mynet",
    )
    print(result.chinchilla_table())

**Configs** (the command line's YAML options, by name or as dicts)::

    result = flops_fit.find_optimal(run_dir="outputs/nb", model="gpt", dataset="bbc_news",
                                    budgets="cpu_small", trainer="local")

Settings not named in the signature go in ``**options`` by their name in the stage settings
(``lr=3e-3``, ``batch_size=64``, ``points=9``, ``bootstrap=500``, ``holdout=1``, ...); each is routed to
the stage that owns it and type-checked as a command-line override would be.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from flops_fit.artifacts import RunDir
from flops_fit.planning import FORECAST_FACTOR
from flops_fit.errors import FlopsFitError

MODES = ("mock", "local", "gpu")
NO_TABLE_WHY = "result.analysis['diagnostics'] says why"  # where a Result without a table keeps the reasons
_OBJECT_KEYS = ("model_cls", "model_size_param", "model_kwargs", "loss_fn", "compute_budgets", "mode",
                "output_dir", "eval_dataset", "size_range", "size_multiple", "tie", "data_unit")
_CONFIG_KEYS = ("run_dir", "model", "budgets", "trainer", "plan_overrides", "train_overrides", "analyze_overrides")


def _group(name: str, value: Any, overrides: list[str], nodes: dict) -> None:
    """A group given by option name becomes an override, a dict a whole node (see config.compose)."""
    if value is None:
        return
    if isinstance(value, str):
        overrides.append(f"{name}={value}")
    elif isinstance(value, Mapping):
        nodes[name] = dict(value)
    else:
        raise FlopsFitError(f"{name}={value!r}: give a config option name (e.g. '{name}=...') or a dict")


@dataclass
class Result:
    """What :func:`find_optimal` (and :func:`load`) returns: the analysis of one run directory."""

    run_dir: str
    analysis: dict
    # the Python objects a find_optimal(model_cls=...) call trained with: a forecast check trains the same
    _objects: dict | None = field(default=None, repr=False, compare=False)

    @property
    def forecast_check(self) -> dict | None:
        """A forecast check's score (analysis.json's ``forecast_check``), or None for a sweep."""
        return self.analysis.get("forecast_check")

    def check_forecast(self, factor: float = FORECAST_FACTOR, points: int = 5,
                       run_dir: str | os.PathLike | None = None, plot: bool = True) -> "Result":
        """Check this sweep's forecast before betting on it: register the forecasts at ``factor`` x its largest
        budget (the table's and every approach's, with intervals), train an IsoFLOP of ``points`` sizes there
        around the table's forecast exactly as this sweep was trained, and score them against its optimum.

        Returns the check's :class:`Result` (``.forecast_check``, ``.table()``, ``.plot()``); the check lives in
        ``run_dir`` (default ``<this run_dir>/forecast_check_<factor>x``). Re-running resumes it."""
        from flops_fit import stages
        from flops_fit.config.compose import compose

        if self.forecast_check:
            raise FlopsFitError(f"{self.run_dir} is a forecast check already; check the sweep it checked")
        check_dir = str(run_dir or os.path.join(self.run_dir, f"forecast_check_{float(factor):g}x"))
        plan_ov = [f"run_dir={check_dir}", f"forecast_from={self.run_dir}", f"forecast_factor={float(factor)}",
                   f"grid.points={int(points)}"]
        objects = self._objects or {}
        if objects:
            _warn_plan(stages.plan(compose("plan", plan_ov), model=objects["model"], data=objects["data"]))
            train_cfg = compose("train", [f"run_dir={check_dir}", *objects["train_overrides"]])
            stages.train(train_cfg, model=objects["model"], data=objects["data"], loss_fn=objects["loss_fn"])
        else:
            _warn_plan(stages.plan(compose("plan", plan_ov)))
            stages.train(compose("train", [f"run_dir={check_dir}"], {"trainer": _trainer_of(self.run_dir)}))
        return _analyze_and_plot(check_dir, [], plot)

    def chinchilla_table(self, budgets: Sequence[float] | None = None) -> str:
        """A Markdown table: budget, N_opt, D_opt, tokens per parameter and loss, with intervals.

        ``budgets``: the FLOP budgets to show (default: the analysis's table rows); budgets not in
        the table are computed the same way, intervals included.
        """
        from flops_fit.analysis.summary import markdown_table, no_table_message

        if not self.analysis.get("table"):
            raise FlopsFitError(no_table_message(NO_TABLE_WHY))
        return markdown_table(self.analysis, budgets)

    def table(self) -> str:
        """The printed summary ``ff-analyze`` shows: the approaches side by side and the table."""
        from flops_fit.analysis import summary_lines

        return "\n".join(summary_lines(self.analysis))

    def predict(self, budget: float, *, inference_tokens: float | None = None,
                unique_tokens: float | None = None) -> dict:
        """The table's row at ``budget`` FLOPs, on the table or off it: params, tokens, loss and their intervals
        (``*_ci``: the bootstrap's; ``*_ci_with_model``: what the table prints, with model uncertainty).

        With the unique data known (the analysis's, or ``unique_tokens=``): ``epochs`` and, past one epoch,
        ``data_constrained`` (N, D, epochs, loss for that data); with ``inference_tokens=``: ``inference``, the
        model that reaches the row's loss at the least training + 2N-per-token FLOPs (docs/data-constrained.md)."""
        from flops_fit.analysis import predict
        from flops_fit.analysis.data_constrained import row_extras

        row = predict(self.analysis, float(budget))
        row.update(row_extras(self.analysis, row, unique_tokens=unique_tokens, inference_tokens=inference_tokens))
        return row

    def plot(self, show: bool = False) -> list:
        """Write the figures and report.html into the run directory; return the matplotlib Figures."""
        from flops_fit import stages
        from flops_fit.config.compose import compose

        out = stages.plot(compose("plot", [f"run_dir={self.run_dir}"]), keep_figures=True)
        figures = out["figures"]
        if show:
            import matplotlib.pyplot as plt

            plt.show()
        return figures

    def to_dict(self) -> dict:
        """The analysis (analysis.json's body) with the run directory."""
        return {"run_dir": self.run_dir, **self.analysis}

    def __repr__(self) -> str:
        rows = len(self.analysis.get("table") or [])
        return f"Result(run_dir={self.run_dir!r}, table_source={self.analysis.get('table_source')!r}, rows={rows})"


def find_optimal(
    model_cls: Callable | None = None,
    model_size_param: str | None = None,
    dataset: Any = None,
    loss_fn: Callable | None = None,
    compute_budgets: Sequence[float] | None = None,
    mode: str | None = None,
    output_dir: str | os.PathLike | None = None,
    train: bool = True,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    eval_dataset: Any = None,
    size_range: Sequence[int] | None = None,
    size_multiple: int | None = None,
    tie: Mapping[str, Any] | None = None,
    data_unit: str | None = None,
    unique_units: float | None = None,
    run_dir: str | None = None,
    model: str | Mapping | None = None,
    budgets: str | Sequence[float] | None = None,
    trainer: str | Mapping | None = None,
    plan_overrides: Sequence[str] = (),
    train_overrides: Sequence[str] = (),
    analyze_overrides: Sequence[str] = (),
    plot: bool = True,
    target_width: float | None = None,
    max_flops: float | None = None,
    target_budget: float | None = None,
    logger: str | None = None,
    **options: Any,
) -> Result:
    """Plan, train, analyze (and plot) a scaling-law study; returns a :class:`Result`.

    Objects form: ``model_cls`` (a class or any callable taking ``<model_size_param>=<int>`` plus
    ``model_kwargs`` and returning an ``nn.Module``: a plain module or a ``transformers`` model, counted
    by its ``num_params()``, ``num_parameters()`` or its parameters), ``dataset`` (a torch
    ``Dataset``, ``IterableDataset`` or ``DataLoader`` of ``(inputs, targets)``, or a flops-fit data
    source), optional ``loss_fn(output, targets)`` (default: cross-entropy of the output's logits;
    ``"model"``: the model's own loss given ``labels=``), ``compute_budgets`` in FLOPs and ``mode``.
    ``size_range=[lo, hi]`` bounds the size parameter (default: found by the planner).
    ``size_multiple``: every planned size is a multiple of it. ``tie``: other constructor arguments
    as rules of the size, ``{"num_attention_heads": "size // 64"}`` (an integer formula of ``size``) or
    ``{"num_attention_heads": lambda size: size // 64}``.
    ``eval_dataset``: held-out data (default: a fixed split no training batch touches).
    ``data_unit``: ``"tokens"`` or ``"samples"`` (default: inferred from one batch).
    ``unique_units``: the unique tokens or samples the data holds, for a stream that cannot be counted
    (a Dataset is counted: its length x units per example); the plan gives each run its epochs.

    Config form: ``run_dir``, ``model``/``dataset``/``trainer`` as option names or dicts,
    ``budgets`` as an option name or a list, Hydra-style ``*_overrides``.

    ``train=False`` plans only (and analyzes whatever runs the directory already holds).

    ``logger``: an experiment tracker for every run, the analysis and the figures (``"tensorboard"``,
    ``"mlflow"``, ``"wandb"``; the CLI's ``logger=``; README, Experiment trackers). Default: none.

    A sequential design (config form, docs/design.md): ``target_width`` (the N_opt interval's width hi / lo - 1
    at ``target_budget``, default the table's largest row) and/or ``max_flops`` (the whole study's FLOPs)
    make the planned grid the first batch; then train, analyze and ``ff-plan next_from=`` alternate until the
    interval reaches the target, the allowance is spent or no batch is expected to narrow it. Called again on
    the same ``run_dir`` after a kill, it resumes: completed runs are not trained again.
    """
    objects = model_cls is not None
    logged = _logger_overrides(logger)
    design = {k: float(v) for k, v in (("target_width", target_width), ("max_total_flops", max_flops),
                                       ("target_budget", target_budget)) if v is not None}
    if design and (objects or not train):
        raise FlopsFitError("target_width=/max_flops= run a sequential design, which trains batch after batch through "
                            "the config form: pass model='...' (not model_cls=) and keep train=True")
    given = {k for k, v in locals().items() if k in _CONFIG_KEYS and v not in (None, (), [])}
    if objects:
        if given:
            raise FlopsFitError(
                f"find_optimal got model_cls= (the objects form) and {', '.join(sorted(given))}= (the config form); "
                f"use one form: with model_cls, pass output_dir=, compute_budgets= and mode="
            )
        if isinstance(dataset, (str, Mapping)):
            raise FlopsFitError(f"dataset={dataset!r} is a config option; with model_cls= pass the dataset object "
                                f"itself (a torch Dataset/DataLoader), or use model='...' with dataset='...'")
        return _find_optimal_objects(
            model_cls, model_size_param, dataset, loss_fn, compute_budgets, mode or "mock", output_dir, train,
            model_kwargs=model_kwargs, eval_dataset=eval_dataset, size_range=size_range, data_unit=data_unit,
            size_multiple=size_multiple, tie=tie, plot=plot, options=options, unique_units=unique_units,
            logged=logged)
    stray = [k for k, v in (("model_size_param", model_size_param), ("loss_fn", loss_fn),
                            ("model_kwargs", model_kwargs), ("eval_dataset", eval_dataset),
                            ("size_range", size_range), ("size_multiple", size_multiple), ("tie", tie),
                            ("data_unit", data_unit)) if v is not None]
    if stray:
        raise FlopsFitError(f"find_optimal got {', '.join(stray)}= without model_cls=; pass model_cls=YourModel "
                            f"(the objects form), or use model='...'/dict (the config form)")
    if compute_budgets is not None:
        if budgets is not None:
            raise FlopsFitError("find_optimal got both compute_budgets= and budgets=; pass one")
        budgets = compute_budgets
    if mode is not None:
        if trainer is not None:
            raise FlopsFitError("find_optimal got both mode= and trainer=; pass one")
        trainer = _check_mode(mode)
    if output_dir is not None:
        if run_dir is not None:
            raise FlopsFitError("find_optimal got both output_dir= and run_dir=; pass one")
        run_dir = str(output_dir)
    if unique_units is not None:
        plan_overrides = [*plan_overrides, f"dataset.unique_units={int(unique_units)}"]
    return _find_optimal_configs(
        run_dir or "outputs/find_optimal", model=model, dataset=dataset, budgets=budgets, trainer=trainer,
        plan_overrides=plan_overrides, train_overrides=[*train_overrides, *logged],
        analyze_overrides=[*analyze_overrides, *logged],
        train=train, plot=plot, options=options, design=design)


def _logger_overrides(logger: str | None) -> list[str]:
    """``["logger=<name>"]`` for find_optimal's ``logger=`` (checked against the conf/logger group), or []."""
    if logger is None:
        return []
    from flops_fit.config.compose import group_options

    known = group_options("logger")
    if logger not in known:
        raise FlopsFitError(f"logger={logger!r} is not a tracker flops-fit knows; use one of {', '.join(known)} "
                            f"(README, Experiment trackers)")
    return [f"logger={logger}"]


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise FlopsFitError(f"mode={mode!r} must be one of {', '.join(MODES)}")
    return mode


def _route_options(options: Mapping[str, Any]) -> dict[str, dict]:
    """Split ``**options`` by the stage settings that own each name (grid, trainer, plan, analyze)."""
    from flops_fit.planning import Grid
    from flops_fit.settings import AnalyzeSettings, PlanSettings
    from flops_fit.training.config import TrainerConfig

    owners = [("grid", Grid), ("trainer", TrainerConfig), ("analyze", AnalyzeSettings), ("plan", PlanSettings)]
    skip = {"run_dir", "model", "dataset", "budgets", "grid", "trainer", "name", "kind", "quiet", "debug", "input"}
    out: dict[str, dict] = {name: {} for name, _ in owners}
    for key, value in options.items():
        for name, cls in owners:
            if key not in skip and key in {f.name for f in dataclasses.fields(cls)}:
                out[name][key] = value
                break
        else:
            known = sorted({f.name for _, cls in owners for f in dataclasses.fields(cls)} - skip)
            raise FlopsFitError(f"find_optimal got an unknown option {key}=; known options: {', '.join(known)}")
    return out


def _dotted(section: str, values: Mapping[str, Any]) -> list[str]:
    """Hydra overrides ``section.key=value`` (values written as Hydra reads them)."""
    import json

    prefix = f"{section}." if section else ""
    out = []
    for k, v in values.items():
        text = "null" if v is None else json.dumps(v) if isinstance(v, (list, dict, bool)) else str(v)
        out.append(f"{prefix}{k}={text}")
    return out


def _find_optimal_configs(run_dir, *, model, dataset, budgets, trainer, plan_overrides, train_overrides,
                          analyze_overrides, train, plot, options, design=None) -> Result:
    from flops_fit import stages
    from flops_fit.config.compose import compose

    rd = RunDir(run_dir)
    if design and rd.has_plan() and rd.read_plan().get("design"):
        # a sequential design under way (killed, or called again): its plan.json holds every batch so far
        return _design_loop(run_dir, trainer, train_overrides, options, analyze_overrides, plot, design)

    routed = _route_options(options)
    plan_ov, plan_nodes = [f"run_dir={run_dir}", *_dotted("grid", routed["grid"]), *_dotted("", routed["plan"]),
                           *plan_overrides], {}
    _group("model", model, plan_ov, plan_nodes)
    _group("dataset", dataset, plan_ov, plan_nodes)
    if isinstance(budgets, str):
        plan_ov.append(f"budgets={budgets}")
    elif budgets is not None:
        plan_nodes["budgets"] = {"name": "custom", "values": [float(b) for b in budgets]}
    _warn_plan(stages.plan(compose("plan", plan_ov, plan_nodes)))

    if train:
        train_ov, train_nodes = [f"run_dir={run_dir}", *train_overrides], {}
        _group("trainer", trainer, train_ov, train_nodes)
        train_ov += _dotted("trainer", routed["trainer"])
        stages.train(compose("train", train_ov, train_nodes))
    if design:
        return _design_loop(run_dir, trainer, train_overrides, options, analyze_overrides, plot, design)
    return _analyze_and_plot(run_dir, [*_dotted("", routed["analyze"]), *analyze_overrides], plot)


MAX_BATCHES = 20  # a sequential design stops after this many batches, whatever its target


def _design_loop(run_dir, trainer, train_overrides, options, analyze_overrides, plot, design) -> Result:
    """Train what is pending, analyze, plan the next batch (``next_from``); until the design says stop."""
    from flops_fit import stages
    from flops_fit.config.compose import compose

    routed = _route_options(options)
    analyze_ov = [f"run_dir={run_dir}", *_dotted("", routed["analyze"]), *analyze_overrides]
    for _ in range(MAX_BATCHES):
        train_ov, train_nodes = [f"run_dir={run_dir}", *train_overrides], {}
        _group("trainer", trainer, train_ov, train_nodes)
        stages.train(compose("train", [*train_ov, *_dotted("trainer", routed["trainer"])], train_nodes))
        stages.analyze(compose("analyze", analyze_ov))
        out = stages.plan(compose("plan", [f"run_dir={run_dir}", f"next_from={run_dir}",
                                           *_dotted("design", design)]))
        if out["design_decision"] != "planned":  # stop, or runs that failed to train ("pending")
            if out["design_decision"] == "pending":
                _warn_user(f"flops-fit design: {out['design_lines'][-1]}")
            break
    return _analyze_and_plot(run_dir, analyze_ov[1:], plot)


def _warn_user(message: str) -> None:
    """A UserWarning at the line of the user's find_optimal call: called from a helper of
    _find_optimal_objects or _find_optimal_configs, each called by find_optimal."""
    import warnings

    # stacklevel: _warn_user < helper < _find_optimal_objects or _configs < find_optimal < the user's line
    warnings.warn(message, UserWarning, stacklevel=5)


def _warn_plan(plan: Mapping[str, Any]) -> None:
    """The plan's warnings (those ff-plan prints under its table), as Python warnings at the user's call."""
    for w in plan.get("warnings", []):
        _warn_user(f"flops-fit plan: {w}")


def _trainer_of(run_dir: str) -> dict:
    """The trainer a sweep's ff-train ran with (its configs/train.yaml): what its forecast check trains with."""
    import yaml

    rd = RunDir(run_dir)
    path = rd.config_path("train")
    if not path.is_file():
        raise FlopsFitError(f"{path} is missing, so the trainer {run_dir} was trained with is unknown: run the check "
                            f"from the command line (ff-plan forecast_from={run_dir}, ff-train trainer=...)")
    trainer = dict(yaml.safe_load(path.read_text()).get("trainer") or {})
    trainer.pop("progress", None)
    return trainer


def _analyze_and_plot(run_dir: str, analyze_overrides: Sequence[str], plot: bool) -> Result:
    from flops_fit import stages
    from flops_fit.config.compose import compose

    analysis = stages.analyze(compose("analyze", [f"run_dir={run_dir}", *analyze_overrides]))
    # the figures go to the analysis's tracker too (logger=..., logger.save_dir=..., ...)
    logged = [o for o in analyze_overrides if o.lstrip("+").split("=", 1)[0].split(".", 1)[0] == "logger"]
    if not analysis.get("table"):
        from flops_fit.analysis.summary import no_table_message

        _warn_user(f"flops-fit: {no_table_message(NO_TABLE_WHY)}")
    if plot:
        stages.plot(compose("plot", [f"run_dir={run_dir}", *logged]))
    return Result(run_dir=str(run_dir), analysis=analysis)


def _as_data_source(dataset: Any, eval_dataset: Any, data_unit: str | None, seed: int, unique_units=None):
    """A flops-fit data source as it is; a torch Dataset / IterableDataset / DataLoader adapted."""
    if all(hasattr(dataset, a) for a in ("train_batch", "eval_batches", "examples_per_batch")):
        if eval_dataset is not None:
            raise FlopsFitError("eval_dataset= goes with a torch dataset; a flops-fit data source keeps its own held-out split")
        if unique_units is not None:
            dataset._stated_unique = unique_units  # what the user states wins over what the source counts
        return dataset
    from flops_fit.data.torch_data import TorchData

    return TorchData(dataset, eval_dataset=eval_dataset, data_unit=data_unit, seed=seed, unique_units=unique_units)


def _find_optimal_objects(model_cls, size_param, dataset, loss_fn, compute_budgets, mode, output_dir, train, *,
                          model_kwargs, eval_dataset, size_range, data_unit, plot, options, size_multiple=None,
                          tie=None, unique_units=None, logged=()) -> Result:
    from flops_fit import stages
    from flops_fit.config.compose import compose
    from flops_fit.models import ModelSpec

    mode = _check_mode(mode)
    if not size_param or not isinstance(size_param, str):
        raise FlopsFitError("model_size_param= is required with model_cls=: the name of the constructor argument "
                            "that sets the model's size, e.g. model_size_param='width'")
    if compute_budgets is None:
        raise FlopsFitError("compute_budgets= is required: a list of FLOP budgets, e.g. compute_budgets=[1e11, 3e11, 1e12]")
    if isinstance(compute_budgets, (int, float)):
        compute_budgets = [compute_budgets]
    if loss_fn is not None and not callable(loss_fn) and loss_fn not in ("model", "cross_entropy"):
        raise FlopsFitError(f"loss_fn={loss_fn!r} is not callable: give a function loss_fn(output, targets) -> scalar tensor, "
                            f"or 'model' for the model's own loss (given labels=)")
    if dataset is None and mode != "mock":
        raise FlopsFitError(f"mode={mode!r} trains for real and needs dataset=... (a torch Dataset or DataLoader)")
    run_dir = str(output_dir or "outputs/find_optimal")
    routed = _route_options(options)
    spec = ModelSpec.from_callable(model_cls, size_param, kwargs=dict(model_kwargs or {}), size_range=size_range,
                                   size_multiple=size_multiple, tie=tie)
    data = None
    if dataset is not None:
        data = _as_data_source(dataset, eval_dataset, data_unit, seed=int(routed["trainer"].get("seed", 0)),
                               unique_units=unique_units)
    spec.check_contract()

    plan_ov = [f"run_dir={run_dir}", *_dotted("grid", routed["grid"]), *_dotted("", routed["plan"])]
    plan_nodes = {"budgets": {"name": "custom", "values": [float(b) for b in compute_budgets]}}
    _warn_plan(stages.plan(compose("plan", plan_ov, plan_nodes), model=spec, data=data))
    train_overrides = [f"trainer={mode}", *_dotted("trainer", routed["trainer"]), *logged]
    if train:
        train_cfg = compose("train", [f"run_dir={run_dir}", *train_overrides])
        stages.train(train_cfg, model=spec, data=data, loss_fn=loss_fn)
    result = _analyze_and_plot(run_dir, [*_dotted("", routed["analyze"]), *logged], plot)
    result._objects = {"model": spec, "data": data, "loss_fn": loss_fn, "train_overrides": train_overrides}
    return result


def load(run_dir: str | os.PathLike) -> Result:
    """A :class:`Result` for a run directory that ``ff-analyze`` (or :func:`find_optimal`) analysed."""
    return Result(run_dir=str(run_dir), analysis=RunDir(run_dir).read_analysis())
