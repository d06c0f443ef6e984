"""Each stage's settings and their defaults: the one source the CLI's schemas, the YAML files
and the Python API share.

``config/schema.py`` registers these classes in Hydra's ConfigStore, so a typo or a wrong type
fails when the config is composed; the YAML files in ``conf/`` override only what differs;
``stages.py`` fills any key a caller left out from here (:func:`with_defaults`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from flops_fit.analysis.design import Design
from flops_fit.data.config import DatasetConfig
from flops_fit.errors import FlopsFitError
from flops_fit.planning import COOLDOWN_FRAC, FORECAST_FACTOR, Grid
from flops_fit.trackers import LoggerConfig
from flops_fit.training.config import TrainerConfig

MISSING: Any = "???"  # OmegaConf's marker for a required value


@dataclass
class ModelConfig:
    """A model is a class (`_target_`) plus the name of its size parameter."""

    name: str = MISSING
    _target_: str = MISSING
    size_param: str = MISSING
    # Inclusive bounds the planner may choose the size parameter from (null: the planner finds the
    # sizes whose parameter counts bracket every budget's grid).
    size_range: Optional[List[int]] = None
    # Every other constructor argument (fixed across the sweep).
    kwargs: Dict[str, Any] = field(default_factory=dict)
    # Every planned size is a multiple of this (e.g. 64 for a transformer whose heads are 64 wide).
    size_multiple: int = 1
    # Constructor arguments that follow the size: {num_attention_heads: "size // 64", intermediate_size: "4 * size"}
    # (an integer formula of size with + - * //, parentheses, integers, min(), max(); see flops_fit.models).
    tie: Dict[str, Any] = field(default_factory=dict)
    # model=hf (conf/model/hf.yaml passes both to its builder, flops_fit.examples.hf): a transformers model class,
    # config class or model_type, and/or a local config.json
    architecture: Optional[str] = None
    config: Optional[str] = None


@dataclass
class BudgetsConfig:
    """A named list of compute budgets in FLOPs."""

    name: str = MISSING
    values: List[float] = MISSING


@dataclass
class PlanSettings:
    run_dir: str = "outputs/default"
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    budgets: BudgetsConfig = MISSING
    grid: Grid = field(default_factory=Grid)
    flops: str = "6nd"  # 6nd | 6nd_nonembedding | chinchilla | measured
    # cosine: every run trained alone with its own cosine schedule | wsd: sizes shared across budgets,
    # one constant-LR trunk per size, each run a cooldown branched from it (docs/wsd.md)
    schedule: str = "cosine"
    cooldown_frac: float = COOLDOWN_FRAC  # wsd: the share of each run's steps spent cooling down
    refine_from: Optional[str] = None  # a run_dir whose analysis.json centres the new grid
    add_budgets: int = 0  # with refine_from: extra budgets, each `budget_step` x the largest
    budget_step: float = 4.0
    # a forecast check: an IsoFLOP at forecast_factor x this run_dir's largest budget, centred on its table's
    # forecast, which plan.json registers (with every approach's) before anything trains (docs/forecasts.md)
    forecast_from: Optional[str] = None
    forecast_factor: float = FORECAST_FACTOR
    # a sequential design: the next batch of runs into this run_dir's own plan, chosen to narrow the N_opt
    # interval at design.target_budget most per FLOP (docs/design.md)
    next_from: Optional[str] = None
    design: Design = field(default_factory=Design)
    force: bool = False  # replace a plan whose completed runs the new plan would orphan
    quiet: bool = False
    debug: bool = False  # show the traceback of an error instead of its one line


@dataclass
class TrainSettings:
    """ff-train reads the model and dataset from plan.json; only the trainer is chosen here."""

    run_dir: str = "outputs/default"
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # an experiment tracker (flops_fit.trackers)
    data_path: Optional[str] = None  # relocate the planned dataset's files on this machine
    shard: int = 0
    num_shards: int = 1
    retry_failed: bool = False
    limit: Optional[int] = None  # train at most this many pending runs (for smoke tests)
    allow_mismatch: bool = False  # train although earlier runs in run_dir used another model, dataset or FLOPs convention
    quiet: bool = False
    debug: bool = False  # show the traceback of an error instead of its one line


@dataclass
class StatusSettings:
    """ff-status: where the sweep in run_dir stands (reads only; writes nothing)."""

    run_dir: str = "outputs/default"
    stale_after: float = 120.0  # seconds without a heartbeat after which a run on another host counts as stopped
    all: bool = False  # list every run (long lists of completed and pending runs are cut at 20)
    json: bool = False  # print the status as JSON (for scripts)
    quiet: bool = False
    debug: bool = False  # show the traceback of an error instead of its one line


@dataclass
class AnalyzeSettings:
    run_dir: str = "outputs/default"
    input: Optional[str] = None  # CSV/JSONL of params,tokens,loss[,budget] trained elsewhere
    params: str = "total"  # total | non_embedding
    bootstrap: int = 200
    seed: int = 0
    ci: float = 0.95
    holdout: int = 0
    table_budgets: List[float] = field(default_factory=list)  # extra budgets for the table
    table_max_budget: float = 1e24
    huber_delta: float = 1e-3
    # approach 3: sse | huber | sse_log | huber_log (Chinchilla's); evidence in docs/analysis-evidence.md
    objective: str = "sse"
    engine: str = "vp"  # vp (variable projection) | lbfgs (the 4500-start 5-D fit)
    table_source: str = "auto"  # auto (the approach that forecasts the sweep's own larger budgets best: docs/forecasts.md) | isoflop | isoflop_vp | parametric
    # the unique data to read the table for (default: the plan's); past one epoch the table gives the
    # data-constrained optimum (docs/data-constrained.md)
    unique_tokens: Optional[float] = None
    # tokens the model will serve: beside each row, the model that reaches its loss at least training + 2N/token
    inference_tokens: Optional[float] = None
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # log the table and the figures to a tracker
    quiet: bool = False
    debug: bool = False  # show the traceback of an error instead of its one line


@dataclass
class PlotSettings:
    run_dir: str = "outputs/default"
    format: str = "png"
    dpi: int = 130
    report: bool = True
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # log the figures to a tracker
    quiet: bool = False
    debug: bool = False  # show the traceback of an error instead of its one line


def with_defaults(cls: type, cfg: Mapping[str, Any], where: str = "") -> dict:
    """``cfg`` with every key ``cls`` declares and the caller left out filled from its default.

    A key ``cls`` does not declare is refused with one line naming it (the CLI's schema
    catches these earlier; this guards the Python API's plain dicts).
    """
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise FlopsFitError(f"{where}{unknown[0]} is not a setting; known: {', '.join(sorted(known))}")
    out = {}
    for name, f in known.items():
        if name in cfg:
            out[name] = cfg[name]
        elif f.default is not dataclasses.MISSING:
            out[name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
            out[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out
