"""ff-plan's core: an IsoFLOP grid of model sizes for each compute budget.

For each budget C the planner finds the size a prior expects to be optimal (by default the
Chinchilla rule of about 20 tokens per parameter, solved with the model's real FLOPs per
token), lays ``points`` sizes log-spaced from ``N/span`` to ``N*span`` around it, rounds each
to a size the model accepts, counts its parameters on the meta device, and sets the tokens to
``C / flops_per_token``. Runs with too few tokens to be meaningful are dropped and reported.

``schedule="wsd"`` (warmup-stable-decay, docs/wsd.md) lays the grid out so that sizes are shared
across budgets: every budget takes its ``points`` sizes from one ladder (log-spaced by the grid's own
step, anchored at the smallest budget's optimum), and a budget reuses the previous budget's window
while its expected optimum lies between the window's middle and one step above it. Each size then
trains one constant-LR trunk, and each of its runs is a cooldown branched from it; ``sweep_flops``
counts the trunks once.

``grid.min_steps`` (default :data:`MIN_STEPS`) gives every run at least that many optimizer steps
(docs/short-runs.md). Every run of the sweep trains with one batch: ``trainer.batch_size`` examples per
step, or the largest power of two below it that still gives the sweep's shortest run ``min_steps`` steps
(:func:`batch_limit`, :func:`run_batch_size`). One batch, not one per budget: a batch that changes with the
budget changes the loss along the compute axis and bends the fitted exponents (the demo's a fell from 0.46 at
one batch to 0.28 with a batch per budget). Each plan entry records the rule (``min_steps``), the tokens its batch is chosen for
(``batch_basis_tokens``) and, where the data's units per example are known (text: ``dataset.seq_len``;
images: 1), the batch it allows (``max_batch_size``). ``min_steps`` 0 or null turns the rule off.

The unique data U (``unique_units``: counted from the data by ff-plan, or stated for a stream) gives each
entry its ``epochs`` = tokens / U. The plan warns when runs repeat data, and again past
:data:`~flops_fit.law.REPEAT_FREE_EPOCHS` epochs, where a repeated token is worth clearly less than a new
one (docs/data-constrained.md); ``grid.max_epochs`` drops the runs that would repeat it more.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, List, Mapping, Optional, Sequence

import numpy as np

from flops_fit.errors import FlopsFitError
from flops_fit.flops import FLOP_CONVENTIONS, flops_per_token_6n
from flops_fit.law import REPEAT_FREE_EPOCHS
from flops_fit.models import ModelCounter, ModelSpec
from flops_fit.units import fmt_percent, human, sci


@dataclass
class Grid:
    """How the sizes of each budget are laid out (also the schema of ``grid`` in conf/plan.yaml)."""

    points: int = 7  # sizes per budget
    span: float = 4.0  # factor either side of the expected optimum (N_opt / span .. N_opt * span)
    tokens_per_param: float = 20.0  # the prior: D_opt ~ tokens_per_param * N_opt
    min_tokens_per_param: float = 1.0  # drop runs with fewer training tokens than this x params
    min_tokens: int = 0  # and runs with fewer than this many tokens in absolute terms
    # every run trains at least this many optimizer steps: the whole sweep trains with one batch,
    # trainer.batch_size halved (powers of two) while the sweep's shortest run would get fewer steps
    # (docs/short-runs.md); 0 or null: off, every run at trainer.batch_size
    min_steps: Optional[int] = 100
    # drop runs that would see the unique data more than this many times (null: keep them, with a warning)
    max_epochs: Optional[float] = None
    # a data-constrained study inside the sweep (Muennighoff et al.'s design): each budget's middle size again,
    # with the same tokens on a subset of the data seen this many times, e.g. [4, 16]; they measure what
    # repetition costs on your data and only the data-constrained fit uses them (docs/data-constrained.md)
    repeat_epochs: List[float] = field(default_factory=list)

    def validate(self) -> None:
        if self.points < 1:
            raise FlopsFitError(f"grid.points={self.points} must be at least 1 (7 or more gives a good parabola)")
        if not self.span > 1.0:
            raise FlopsFitError(f"grid.span={self.span} must be > 1 (the factor either side of the expected optimum)")
        if not self.tokens_per_param > 0:
            raise FlopsFitError(f"grid.tokens_per_param={self.tokens_per_param} must be positive")
        if any(not (isinstance(e, (int, float)) and e > 1) for e in self.repeat_epochs or []):
            raise FlopsFitError(f"grid.repeat_epochs={list(self.repeat_epochs)} must be epoch counts above 1, "
                                f"e.g. grid.repeat_epochs=[4,16]")
        if self.max_epochs is not None and not (isinstance(self.max_epochs, (int, float)) and self.max_epochs > 0):
            raise FlopsFitError(f"grid.max_epochs={self.max_epochs!r} must be a positive number of passes over the "
                                f"unique data (e.g. grid.max_epochs=4), or null")
        m = self.min_steps
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 0):
            raise FlopsFitError(f"grid.min_steps={m!r} must be a whole number of optimizer steps >= 0, e.g. "
                                f"grid.min_steps=100 (0 or null: every run at trainer.batch_size)")


MIN_STEPS: int = Grid.min_steps  # the rule's default (Grid.min_steps), e.g. for flagging short runs
# the next budget a user plans, as a multiple of the sweep's largest: where the verdict answers and where a
# forecast check (ff-plan forecast_from=..., forecast_factor) trains by default
FORECAST_FACTOR: float = 4.0
SCHEDULES = ("cosine", "wsd")  # ff-plan schedule=...
COOLDOWN_FRAC = 0.2  # WSD: the share of each run's steps spent in the cooldown (Hägele et al. 2024)


def trunk_id(size_param: str, size: int) -> str:
    """The id of the constant-LR trunk a WSD sweep trains for one size."""
    return f"trunk_{size_param}{size}"


def experiment_id(budget: float, size_param: str, size: int) -> str:
    return f"C{budget:.3g}_{size_param}{size}".replace("+", "")


def check_budgets(values: Iterable) -> list[float]:
    values = list(values) if values is not None else []
    if not values:
        raise FlopsFitError("budgets.values is empty: give at least one FLOP budget, e.g. budgets.values=[1e11,1e12] or budgets=cpu_small")
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise FlopsFitError(f"budgets.values has {v!r}, which is not a number of FLOPs (e.g. 1e12)") from None
        if not (math.isfinite(f) and f > 0):
            raise FlopsFitError(f"budgets.values has {v!r}: budgets must be positive FLOP counts")
        out.append(f)
    if len(set(out)) != len(out):
        raise FlopsFitError(f"budgets.values has duplicates: {values}")
    return sorted(out)


class _FlopsPerToken:
    """FLOPs per token of a size under the chosen convention (measured ones on demand)."""

    def __init__(self, counter: ModelCounter, convention: str, dataset: Mapping | None):
        if convention not in FLOP_CONVENTIONS:
            raise FlopsFitError(f"flops={convention!r} is not a FLOPs convention; choose one of: {', '.join(FLOP_CONVENTIONS)}")
        self.counter = counter
        self.convention = convention
        self.dataset = dict(dataset or {})
        self._measured: dict[int, float] = {}

    def __call__(self, size: int) -> float:
        info = self.counter.info(size)
        if self.convention in info.flops_per_token:
            return info.flops_per_token[self.convention]
        if self.convention == "measured":
            if size not in self._measured:
                self._measured[size] = self.counter.measured_flops_per_token(size, self.dataset)
            return self._measured[size]
        raise FlopsFitError(
            f"model {self.counter.spec.target} does not give flops_per_token({self.convention!r}); "
            f"use flops=6nd or implement flops_per_token on the model"
        )


def _six_nd_optimum(budget: float, tokens_per_param: float) -> float:
    """N with C = 6 N D and D = tokens_per_param x N: the prior's optimum under the 6ND fallback."""
    return math.sqrt(budget / (flops_per_token_6n(1.0) * tokens_per_param))


def _expected_optimum(counter: ModelCounter, fpt: _FlopsPerToken, budget: float, tokens_per_param: float) -> float:
    """N such that C / fpt(N) = tokens_per_param * N, by fixed-point on the model's real counts."""
    n = _six_nd_optimum(budget, tokens_per_param)
    for _ in range(4):
        size = counter.size_for_params(n)
        info = counter.info(size)
        ratio = fpt(size) / info.params  # FLOPs per token per parameter (6 for 6ND)
        n = math.sqrt(budget / (ratio * tokens_per_param))
    return n


def make_plan(
    model: ModelSpec,
    budgets: Iterable[float],
    *,
    grid: Grid | None = None,
    flops: str = "6nd",
    dataset: Mapping | None = None,
    centres: Mapping[float, float] | None = None,
    data_unit: str | None = None,
    progress: bool = False,
    schedule: str = "cosine",
    cooldown_frac: float = COOLDOWN_FRAC,
    units_per_example: int | None = None,
    batch_basis: float | None = None,
    unique_units: float | None = None,
    unique_source: str | None = None,
) -> dict:
    """Lay out the IsoFLOP sweep. Returns the body of ``plan.json``.

    ``centres`` maps a budget to the parameter count to centre its grid on (adaptive
    re-planning); other budgets use the prior. ``data_unit``: what the data counts (``tokens``,
    ``samples``, ``images``) when the data says so; otherwise the model's ``data_unit``.
    ``schedule``: ``cosine`` (every run trained alone) or ``wsd`` (sizes shared across budgets,
    one trunk per size, each run a cooldown of ``cooldown_frac`` of its steps branched from it).
    ``batch_basis``: the data units grid.min_steps chooses the sweep's batch for (default: the sweep's shortest
    run; a forecast check passes its source sweep's, so that it trains with the sweep's batch).
    ``units_per_example``: data units per example (a text window's tokens, 1 image) when the caller knows
    them; otherwise read from ``dataset`` where it says (:func:`dataset_units_per_example`). With them and
    ``grid.min_steps`` each entry records the batch the rule allows (``max_batch_size``).
    ``unique_units``: U, the data's unique training units (None: unknown); ``unique_source`` says where it
    came from ("counted" | "stated"). With U every entry records ``unique_units`` and ``epochs``.
    """
    grid = grid or Grid()
    grid.validate()
    check_schedule(schedule, cooldown_frac)
    budgets = check_budgets(budgets)
    centres = {float(k): float(v) for k, v in (centres or {}).items()}
    if model.size_range is None:  # find the sizes that bracket every grid (6ND estimate, generous margin)
        rough = [centres.get(b) or _six_nd_optimum(b, grid.tokens_per_param) for b in budgets]
        model = model.with_size_range_for(min(rough) / (4 * grid.span), max(rough) * 4 * grid.span)
    counter = ModelCounter(model)
    fpt = _FlopsPerToken(counter, flops, dataset)
    data_unit = data_unit or counter.info(model.round_size(model.size_range[0])).data_unit
    unique = int(unique_units) if unique_units else None

    experiments: list[dict] = []
    dropped: list[dict] = []
    warnings: list[str] = []
    iterator = budgets
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(budgets, desc="planning", unit="budget", leave=False, disable=None)
    ladder = _Ladder(grid) if schedule == "wsd" else None
    for budget in iterator:
        centre = _match_centre(centres, budget)
        source = "refined" if centre is not None else "prior"
        if centre is None:
            centre = _expected_optimum(counter, fpt, budget, grid.tokens_per_param)
        sizes, warning = _budget_sizes(counter, grid, budget, centre, ladder)
        warnings += [warning] if warning else []
        for entry in _budget_entries(counter, fpt, budget, sizes, centre, source, unique):
            reason = _drop_reason(entry, grid, data_unit)
            if reason:
                dropped.append({k: entry[k] for k in ("id", "budget", "size", "params", "tokens")} | {"reason": reason})
            else:
                experiments.append(entry)
    if not experiments:
        raise _nothing_planned(grid, dropped, unique, data_unit)
    warnings += _complete_runs(experiments, budgets, grid, schedule, cooldown_frac, unique, data_unit,
                               model.size_param)
    if max(sum(e["budget"] == b for e in experiments) for b in budgets) < 3:
        warnings.insert(0, (
            f"no budget has 3 or more model sizes (grid.points={grid.points}): approaches 2 and 2b need them to "
            "locate each budget's minimum, and approaches 1 and 3 need runs that span several sizes and token "
            "counts; for a scaling study plan grid.points=5 or more"
        ))
    per_example = units_per_example or dataset_units_per_example(dataset)
    if grid.min_steps:
        warnings += _apply_min_steps(experiments, int(grid.min_steps), per_example, data_unit, batch_basis)
    return {
        "model": model.describe(),
        "dataset": dict(dataset or {}),
        "data_unit": data_unit,
        "flops_convention": flops,
        "budgets": budgets,
        "grid": asdict(grid),
        "schedule": {"name": schedule, **({"cooldown_frac": cooldown_frac} if schedule == "wsd" else {})},
        "sweep_flops": sweep_flops(experiments),
        "runs_flops": float(sum(e["flops"] for e in experiments)),
        **({"units_per_example": per_example} if grid.min_steps and per_example else {}),
        "unique_units": unique,
        "unique_units_source": (unique_source or "counted") if unique else "unknown",
        "experiments": experiments,
        "dropped": dropped,
        "warnings": warnings,
    }


def _budget_sizes(counter: "ModelCounter", grid: Grid, budget: float, centre: float, ladder) -> tuple[list[int], str | None]:
    """The distinct accepted sizes nearest the budget's targets (``grid.points`` around ``centre``, or the
    WSD ladder's rungs), and a warning when fewer than ``grid.points`` remain, saying why and what to change."""
    model = counter.spec
    if ladder is not None:
        targets = ladder.targets(centre)
    else:
        targets = centre * grid.span ** np.linspace(-1.0, 1.0, grid.points) if grid.points > 1 else [centre]
    sizes: list[int] = []
    for t in targets:
        s = counter.size_for_params(float(t))
        if s not in sizes:
            sizes.append(s)
    if len(sizes) >= grid.points:
        return sizes, None
    lo_p, hi_p = counter.info(min(sizes)).params, counter.info(max(sizes)).params
    where = []
    if min(targets) < 0.8 * lo_p and min(sizes) == model.round_size(model.size_range[0]):
        where.append(f"below the smallest model ({human(lo_p)} params)")
    if max(targets) > 1.25 * hi_p and max(sizes) == model.round_size(model.size_range[1]):
        where.append(f"above the largest model ({human(hi_p)} params)")
    if where:
        why = " and ".join(where)
        fix = (f"widen model.size_range={list(model.size_range)}, change the budgets or the model's "
               f"fixed shape (e.g. depth)")
        if model.size_multiple > 1 and "below" in why and model.size_range[0] < min(sizes):
            fix += f", or lower model.size_multiple={model.size_multiple} (its smallest size is {min(sizes)})"
    else:
        why = "closer together than the sizes the model accepts"
        fix = "allow finer sizes (e.g. a smaller model.kwargs.head_dim), or plan fewer grid.points"
    return sizes, (f"budget {sci(budget)} FLOPs: only {len(sizes)} distinct sizes of {grid.points} planned; "
                   f"targets fall {why}: {fix}")


def _budget_entries(counter: "ModelCounter", fpt, budget: float, sizes, centre: float, source: str,
                    unique: int | None) -> list[dict]:
    """One plan entry per size, smallest first: the tokens the budget buys at the size's FLOPs per token."""
    out = []
    for size in sorted(sizes):
        info = counter.info(size)
        per_token = fpt(size)
        tokens = int(budget // per_token)
        entry = {
            "id": experiment_id(budget, counter.spec.size_param, size),
            "budget": budget,
            "size": size,
            "params": info.params,
            "non_embedding_params": info.non_embedding_params,
            "tokens": tokens,
            "flops_per_token": per_token,
            "flops": tokens * per_token,
            "centre_params": centre,
            "centre_source": source,
        }
        if unique:
            entry.update(unique_units=unique, epochs=tokens / float(unique))
        out.append(entry)
    return out


def _drop_reason(entry: Mapping, grid: Grid, data_unit: str) -> str | None:
    """Why the plan leaves ``entry`` out (beyond grid.max_epochs, or too few tokens), or None to keep it."""
    tokens, params = entry["tokens"], entry["params"]
    if grid.max_epochs is not None and entry.get("epochs") is not None and entry["epochs"] > grid.max_epochs:
        return f"{entry['epochs']:.1f} epochs of the unique data > grid.max_epochs={grid.max_epochs:g}"
    if tokens < grid.min_tokens_per_param * params:
        return f"{human(tokens)} {data_unit} < {grid.min_tokens_per_param:g} per parameter"
    if tokens < grid.min_tokens:
        return f"{human(tokens)} {data_unit} < grid.min_tokens={grid.min_tokens}"
    return None


def _nothing_planned(grid: Grid, dropped, unique: int | None, data_unit: str) -> FlopsFitError:
    """The error when every run was dropped, naming what to change."""
    if grid.max_epochs is not None and dropped and all("max_epochs" in d["reason"] for d in dropped):
        return FlopsFitError(
            f"every planned run would repeat the {human(unique)} unique {data_unit} more than "
            f"grid.max_epochs={grid.max_epochs:g} times: lower the budgets or raise grid.max_epochs")
    return FlopsFitError(
        "every planned run was dropped for having too few tokens: raise the budgets (budgets.values=...), "
        "lower grid.min_tokens_per_param, or shrink model.size_range"
    )


def _complete_runs(experiments: list[dict], budgets, grid: Grid, schedule: str, cooldown_frac: float,
                   unique: int | None, data_unit: str, size_param: str) -> list[str]:
    """What the runs need beyond their budget's grid, in place: the repeated-data runs (grid.repeat_epochs),
    the held-out evaluation's basis, the WSD branches; returns the plan's warnings about repeated data."""
    warnings = []
    if grid.repeat_epochs:
        if schedule != "cosine":
            raise FlopsFitError("grid.repeat_epochs plans runs trained alone on a subset of the data; use "
                                "schedule=cosine with it")
        experiments += repeat_runs(experiments, budgets, grid.repeat_epochs, unique, data_unit)
    warnings += repetition_warnings([e for e in experiments if not e.get("train_subset")], unique, data_unit)
    shortest = min(e["tokens"] for e in experiments)
    for e in experiments:  # trainer.eval_budget's basis: every run's loss curve on the same held-out batches
        e["eval_basis_tokens"] = shortest
    if schedule == "wsd":
        _branch_from_trunks(experiments, size_param, cooldown_frac)
    return warnings


def repeat_runs(experiments: Sequence[Mapping], budgets: Sequence[float], epochs: Sequence[float],
                unique_units: float | None, data_unit: str) -> list[dict]:
    """Each budget's middle size again for each epoch count e: the same tokens D on the first D / e units of the
    data (``train_subset``), so D / e unique units seen e times, at the same compute as the fresh-data run."""
    if not unique_units:
        raise FlopsFitError("grid.repeat_epochs needs the data's unique units, and this data's are unknown: state "
                            "them with dataset.unique_units=<count>")
    out = []
    for b in budgets:
        runs = sorted((e for e in experiments if e["budget"] == b), key=lambda e: e["params"])
        if not runs:
            continue
        mid = runs[len(runs) // 2]
        for ep in epochs:
            subset = int(mid["tokens"] / float(ep))
            if subset < 1 or subset > unique_units:
                continue  # the data cannot hold this many epochs' subset of fresh units
            out.append({**mid, "id": f"{mid['id']}_rep{float(ep):g}", "unique_units": subset,
                        "epochs": mid["tokens"] / subset, "train_subset": subset, "repeat_of": mid["id"]})
    if not out:
        raise FlopsFitError(f"grid.repeat_epochs={list(epochs)}: no budget's middle run trains enough {data_unit} "
                            f"for a subset to repeat; raise the budgets")
    return out


def repetition_warnings(experiments: Sequence[Mapping], unique_units: float | None, data_unit: str) -> list[str]:
    """One warning when runs repeat the unique data, another when some pass :data:`REPEAT_FREE_EPOCHS`."""
    if not unique_units:
        return []
    over = [e for e in experiments if e["tokens"] > unique_units]
    if not over:
        return []
    most = max(over, key=lambda e: e["tokens"])
    out = [f"{len(over)} of {len(experiments)} runs repeat the data: they train on more than its "
           f"{human(unique_units)} unique {data_unit}, up to {most['tokens'] / unique_units:.1f} epochs ({most['id']}); "
           f"the fitted law then describes this data repeated, not fresh data (docs/data-constrained.md)"]
    past = [e for e in over if e["tokens"] / unique_units > REPEAT_FREE_EPOCHS]
    if past:
        out.append(f"{len(past)} {'run passes' if len(past) == 1 else 'runs pass'} {REPEAT_FREE_EPOCHS:g} epochs, where a repeated {data_unit[:-1] if data_unit.endswith('s') else data_unit} "
                   f"is worth clearly less than a new one (Muennighoff et al. 2023): ff-analyze fits the "
                   f"data-constrained law to them; grid.max_epochs={REPEAT_FREE_EPOCHS:g} keeps runs within it")
    return out


def batch_limit(units: float, units_per_example: float, min_steps: int | None) -> int | None:
    """The largest power-of-two batch (in examples) that trains ``units`` data units in at least ``min_steps``
    optimizer steps, ``steps = ceil(units / (batch x units_per_example))``; 1 when even one example a step
    gives fewer; None when the rule is off (``min_steps`` 0 or None)."""
    if not min_steps:
        return None
    per = float(units_per_example)
    if not per > 0:
        raise FlopsFitError(f"the data gives {units_per_example} units per example; grid.min_steps needs a positive count")
    batch = 1
    while math.ceil(float(units) / (2 * batch * per)) >= min_steps:
        batch *= 2
    return batch


def run_batch_size(cap: int, limit: int | None, multiple: int = 1) -> int:
    """The batch (examples per optimizer step) a run trains with: ``cap`` (``trainer.batch_size``), or the
    rule's ``limit`` (:func:`batch_limit`) when that is smaller, rounded down to a multiple of ``multiple``
    (the workers that share each batch) and at least ``multiple``."""
    batch = int(cap) if limit is None else min(int(cap), int(limit))
    return max(int(multiple), batch // int(multiple) * int(multiple))


def batch_basis_tokens(experiment: Mapping) -> float:
    """The data units a run's batch is chosen for: the sweep's shortest run's (or, in a forecast check, its
    source sweep's), recorded in its plan entry; its own where the entry does not say."""
    return float(experiment.get("batch_basis_tokens") or experiment["tokens"])


def sweep_batch_basis(experiments) -> float | None:
    """The data units a plan's grid.min_steps batch was chosen for (its entries' ``batch_basis_tokens``), so
    that runs planned later (a forecast check, a design's next batch) train with the same batch; None when the
    rule was off."""
    return min((float(e["batch_basis_tokens"]) for e in experiments if e.get("batch_basis_tokens")), default=None)


def dataset_units_per_example(dataset: Mapping | None) -> int | None:
    """Data units per example where a dataset config says: a text window's ``seq_len`` tokens, one image;
    None otherwise (a torch dataset's are known once it is loaded: :func:`units_per_example_of`)."""
    d = dict(dataset or {})
    if not d:
        return None
    kind = d.get("kind", "text")
    value = d.get("seq_len") if kind == "text" else 1 if kind == "image" else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def units_per_example_of(data) -> int | None:
    """A data source's units per example (``examples_per_batch(1)``) when its batches grow with the batch size;
    None when they do not (a DataLoader sets its own batch), so no batch can be chosen for it."""
    one, two = int(data.examples_per_batch(1)), int(data.examples_per_batch(2))
    return one if one > 0 and two == 2 * one else None


def _apply_min_steps(experiments: list[dict], min_steps: int, per_example: int | None, data_unit: str,
                     basis: float | None = None) -> list[str]:
    """Record grid.min_steps in every entry (in place), its ``batch_basis_tokens`` (the sweep's shortest run, or
    ``basis``: one batch for the whole sweep) and, with ``per_example``, the batch the rule allows; returns the
    warning for runs that cannot reach ``min_steps`` steps even one example a step."""
    short = []
    shortest = float(basis) if basis else min(x["tokens"] for x in experiments)
    limit = batch_limit(shortest, per_example, min_steps) if per_example else None  # one batch for every run
    for e in experiments:
        e.update(batch_basis_tokens=shortest, min_steps=min_steps)
        if limit is not None:
            e["max_batch_size"] = limit
            if math.ceil(e["tokens"] / (limit * per_example)) < min_steps:
                short.append(e)
    if not short:
        return []
    e = min(short, key=lambda x: x["tokens"])
    return [f"grid.min_steps={min_steps}: {len(short)} run(s) hold fewer than {min_steps} examples, so even a batch of "
            f"one example gives fewer steps (e.g. {e['id']}: {human(e['tokens'])} {data_unit}, "
            f"{math.ceil(e['tokens'] / per_example)} steps); their budgets train one example a step: raise the "
            f"budgets, shrink the examples (e.g. dataset.seq_len) or lower grid.min_steps"]


def check_schedule(schedule: str, cooldown_frac: float) -> None:
    if schedule not in SCHEDULES:
        raise FlopsFitError(f"schedule={schedule!r} is not a schedule; choose one of: {', '.join(SCHEDULES)}")
    try:
        ok = 0.0 < float(cooldown_frac) < 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise FlopsFitError(f"cooldown_frac={cooldown_frac!r} must be a fraction of each run's steps in (0, 1), e.g. 0.2")


# What a run's plan entry decides of its training, and the key of its record that keeps it: a completed run
# whose record says otherwise was trained for another plan (ff-plan and ff-train refuse to mix them)
RUN_PLAN_KEYS = {"tokens": "planned_tokens", "cooldown_frac": "cooldown_frac", "warmup_basis_tokens": "warmup_basis_tokens"}


def plan_differences(experiment: Mapping, record: Mapping) -> list[tuple[str, object, object]]:
    """``[(key, the record's value, the plan entry's)]`` for each of :data:`RUN_PLAN_KEYS` on which a run's
    record and its plan entry disagree (a key either lacks is not compared: records written before it), and
    for the batch: a trained run's ``batch_size`` against the one the entry's ``grid.min_steps`` rule gives
    under the ``trainer.batch_size`` the run was trained with (:func:`planned_batch_size`; where the plan does
    not know the batch, the rule's inputs ``min_steps`` and ``batch_basis_tokens``)."""
    out = []
    for key, rec_key in RUN_PLAN_KEYS.items():
        old, new = record.get(rec_key), experiment.get(key)
        if old is not None and new is not None and not math.isclose(float(old), float(new), rel_tol=1e-9):
            out.append((key, old, new))
    if record.get("batch_size") is not None:  # a run trained for real (mock runs have no batch)
        new = planned_batch_size(experiment, record)
        if new is not None and new != int(record["batch_size"]):
            out.append(("batch_size", record["batch_size"], new))
        elif new is None:  # the plan does not know the batch: the rule's inputs
            out += [(k, record[k], experiment.get(k)) for k in ("min_steps", "batch_basis_tokens")
                    if record.get(k) is not None and record[k] != experiment.get(k)]
    return out


def planned_batch_size(experiment: Mapping, record: Mapping) -> int | None:
    """The batch ``experiment`` (a plan entry) trains with under the ``trainer.batch_size`` and the workers
    ``record`` (a trained run's) had; None where the plan does not know it (a rule but no ``max_batch_size``)."""
    cap = (record.get("trainer_settings") or {}).get("batch_size") or record.get("batch_size")
    if cap is None:
        return None
    if not experiment.get("min_steps"):
        return run_batch_size(int(cap), None)
    if experiment.get("max_batch_size") is None:
        return None
    return run_batch_size(int(cap), int(experiment["max_batch_size"]), int(record.get("world_size") or 1))


class _Ladder:
    """The shared sizes of a WSD sweep: parameter targets ``anchor x step^k`` (``step`` is the grid's own
    spacing, ``span^(2 / (points - 1))``), anchored at the first budget's optimum. Each budget takes the
    ``points`` rungs around a window middle ``m``; ``m`` is kept from the budget before while the budget's
    expected optimum lies between ``m`` and ``m + 1`` rungs, so consecutive budgets share their sizes. The
    window thus lags the optimum by less than one step, towards smaller models (more tokens per parameter),
    never towards runs the planner would drop for too few tokens."""

    def __init__(self, grid: Grid):
        self.points = grid.points
        self.step = grid.span ** (2.0 / (grid.points - 1)) if grid.points > 1 else grid.span
        self.anchor: float | None = None
        self.middle = 0

    def targets(self, centre: float) -> np.ndarray:
        if self.anchor is None:
            self.anchor = centre
        rung = math.log(centre / self.anchor) / math.log(self.step)
        if not self.middle <= rung + 1e-9 <= self.middle + 1 + 2e-9:
            self.middle = math.floor(rung + 1e-9)
        offsets = np.arange(self.points) - (self.points - 1) / 2.0
        return self.anchor * self.step ** (self.middle + offsets)


def _branch_from_trunks(experiments: list[dict], size_param: str, cooldown_frac: float) -> None:
    """Mark every run of a WSD plan as a cooldown branch of its size's trunk (in place)."""
    smallest: dict[int, int] = {}
    for e in experiments:
        smallest[e["size"]] = min(smallest.get(e["size"], e["tokens"]), e["tokens"])
    for e in experiments:
        e.update(schedule="wsd", cooldown_frac=float(cooldown_frac), trunk=trunk_id(size_param, e["size"]),
                 warmup_basis_tokens=smallest[e["size"]])


def work_units(experiments: Sequence[Mapping]) -> list[list[Mapping]]:
    """The runs as units of work, in order of first appearance: each run alone, the runs of one WSD trunk
    together (one trajectory, branched)."""
    units: list[list[Mapping]] = []
    trunks: dict[str, list[Mapping]] = {}
    for e in experiments:
        if e.get("schedule") == "wsd":
            if e["trunk"] not in trunks:
                trunks[e["trunk"]] = []
                units.append(trunks[e["trunk"]])
            trunks[e["trunk"]].append(e)
        else:
            units.append([e])
    return units


def run_flops(exp: Mapping) -> float:
    """A planned run's training FLOPs under the plan's convention."""
    if exp.get("flops"):
        return float(exp["flops"])
    fpt = exp.get("flops_per_token") or 6.0 * float(exp["params"])
    return float(fpt) * float(exp["tokens"])


def unit_flops(runs: Sequence[Mapping]) -> float:
    """What one unit of work (:func:`work_units`) costs, in FLOPs: a run's own, or a WSD trunk's to its latest
    branch point once plus each of its runs' cooldowns."""
    if runs[0].get("schedule") != "wsd":
        return sum(run_flops(e) for e in runs)
    per_token = float(runs[0]["flops_per_token"])
    frac = float(runs[0]["cooldown_frac"])
    return per_token * ((1 - frac) * max(r["tokens"] for r in runs) + frac * sum(r["tokens"] for r in runs))


def sweep_flops(experiments: Sequence[Mapping]) -> float:
    """What training the plan's runs costs, in FLOPs: each run alone, except that the runs of one WSD trunk
    share it (the trunk to the latest branch point once, then each run's own cooldown)."""
    return sum(unit_flops(u) for u in work_units(experiments))


def _match_centre(centres: Mapping[float, float], budget: float) -> float | None:
    for b, n in centres.items():
        if abs(b - budget) <= 1e-6 * budget:
            return n
    return None


def format_plan(plan: Mapping) -> str:
    """The plan as a table a user can read."""
    unit = plan.get("data_unit", "tokens")
    size_param = plan["model"]["size_param"]
    per_example = plan.get("units_per_example")
    batches = bool(per_example) and all(e.get("max_batch_size") for e in plan["experiments"])
    steps_cols = f"{'batch<=':>7}  {'steps>=':>7}  " if batches else ""
    U = plan.get("unique_units")
    epoch_col = f"{'epochs':>7}  " if U else ""
    head = (f"{'budget':>12}  {size_param:>10}  {'params':>9}  {unit:>9}  {unit[:3] + '/param':>10}  "
            f"{epoch_col}{steps_cols}id")
    lines = [
        f"IsoFLOP plan: {len(plan['experiments'])} runs over {len(plan['budgets'])} budgets "
        f"(model {plan['model']['name']}, FLOPs convention {plan['flops_convention']})",
        head,
        "-" * len(head),
    ]
    last = None
    for e in plan["experiments"]:
        budget = f"{sci(e['budget'])} FLOPs" if e["budget"] != last else ""
        last = e["budget"]
        steps = ""
        if batches:  # the batch the rule allows, and the fewest steps the run can train (at that batch)
            steps = f"{e['max_batch_size']:>7}  {math.ceil(e['tokens'] / (e['max_batch_size'] * per_example)):>7}  "
        lines.append(
            f"{budget:>12}  {e['size']:>10}  {human(e['params']):>9}  {human(e['tokens']):>9}  "
            f"{e['tokens'] / e['params']:>10.1f}  {(format(e['tokens'] / U, '>7.2f') + '  ') if U else ''}{steps}{e['id']}"
        )
    if U:
        lines.append(f"unique data: {human(U)} {unit} ({plan.get('unique_units_source', 'counted')}); "
                     f"epochs = {unit} / unique {unit}")
    elif "unique_units_source" in plan:
        lines.append(f"unique data: unknown (a stream flops-fit cannot count): epochs are not known; state it with "
                     f"dataset.unique_units=<{unit}> (Python: find_optimal(unique_units=...))")
    if plan.get("sweep_flops") is not None:
        runs, sweep = float(plan["runs_flops"]), float(plan["sweep_flops"])
        if (plan.get("schedule") or {}).get("name") == "wsd":
            trunks = len({e["trunk"] for e in plan["experiments"]})
            lines.append(f"schedule wsd: {trunks} trunk{'s' if trunks != 1 else ''}, cooldown {fmt_percent(plan['schedule']['cooldown_frac'], 0, signed=False)} "
                         f"of each run; sweep {sci(sweep)} FLOPs (trunks counted once) = {fmt_percent(sweep / runs, signed=False)} "
                         f"of the runs' budgets, {sci(runs)} FLOPs")
        else:
            lines.append(f"schedule cosine: sweep {sci(sweep)} FLOPs = the runs' budgets, {sci(runs)} FLOPs")
    rule = (plan.get("grid") or {}).get("min_steps")
    if rule:
        how = ("every run trains min(trainer.batch_size, batch<=) examples a step (one batch for the sweep), "
               "steps>= steps or more" if batches else "ff-train picks the sweep's batch from the data's units per example")
        lines.append(f"grid.min_steps={rule}: {how}; every run {rule} or more where its data allows (docs/short-runs.md)")
    for w in plan.get("warnings", []):
        lines.append(f"warning: {w}")
    if plan.get("dropped"):
        lines.append(f"dropped {len(plan['dropped'])} runs with too few {unit}:")
        for d in plan["dropped"]:
            lines.append(f"  {d['id']}: {human(d['params'])} params, {d['reason']}")
    return "\n".join(lines)
