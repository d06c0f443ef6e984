"""ff-plan's core: an IsoFLOP grid of model sizes for each compute budget.

For each budget C the planner finds the size a prior expects to be optimal (by default the
Chinchilla rule of about 20 tokens per parameter, solved with the model's real FLOPs per
token), lays ``points`` sizes log-spaced from ``N/span`` to ``N*span`` around it, rounds each
to a size the model accepts, counts its parameters on the meta device, and sets the tokens to
``C / flops_per_token``. Runs with too few tokens to be meaningful are dropped and reported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import numpy as np

from flops_fit.errors import FlopsFitError
from flops_fit.flops import FLOP_CONVENTIONS, flops_per_token_6n
from flops_fit.models import ModelCounter, ModelSpec
from flops_fit.units import human, sci


@dataclass
class Grid:
    """How the sizes of each budget are laid out (also the schema of ``grid`` in conf/plan.yaml)."""

    points: int = 7  # sizes per budget
    span: float = 4.0  # factor either side of the expected optimum (N_opt / span .. N_opt * span)
    tokens_per_param: float = 20.0  # the prior: D_opt ~ tokens_per_param * N_opt
    min_tokens_per_param: float = 1.0  # drop runs with fewer training tokens than this x params
    min_tokens: int = 0  # and runs with fewer than this many tokens in absolute terms

    def validate(self) -> None:
        if self.points < 1:
            raise FlopsFitError(f"grid.points={self.points} must be at least 1 (7 or more gives a good parabola)")
        if not self.span > 1.0:
            raise FlopsFitError(f"grid.span={self.span} must be > 1 (the factor either side of the expected optimum)")
        if not self.tokens_per_param > 0:
            raise FlopsFitError(f"grid.tokens_per_param={self.tokens_per_param} must be positive")


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
) -> dict:
    """Lay out the IsoFLOP sweep. Returns the body of ``plan.json``.

    ``centres`` maps a budget to the parameter count to centre its grid on (adaptive
    re-planning); other budgets use the prior. ``data_unit``: what the data counts (``tokens``,
    ``samples``, ``images``) when the data says so; otherwise the model's ``data_unit``.
    """
    grid = grid or Grid()
    grid.validate()
    budgets = check_budgets(budgets)
    centres = {float(k): float(v) for k, v in (centres or {}).items()}
    if model.size_range is None:  # find the sizes that bracket every grid (6ND estimate, generous margin)
        rough = [centres.get(b) or _six_nd_optimum(b, grid.tokens_per_param) for b in budgets]
        model = model.with_size_range_for(min(rough) / (4 * grid.span), max(rough) * 4 * grid.span)
    counter = ModelCounter(model)
    fpt = _FlopsPerToken(counter, flops, dataset)

    experiments: list[dict] = []
    dropped: list[dict] = []
    warnings: list[str] = []
    data_unit = data_unit or counter.info(model.round_size(model.size_range[0])).data_unit
    iterator = budgets
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(budgets, desc="planning", unit="budget", leave=False, disable=None)
    for budget in iterator:
        centre = _match_centre(centres, budget)
        source = "refined" if centre is not None else "prior"
        if centre is None:
            centre = _expected_optimum(counter, fpt, budget, grid.tokens_per_param)
        targets = centre * grid.span ** np.linspace(-1.0, 1.0, grid.points) if grid.points > 1 else [centre]
        sizes: list[int] = []
        for t in targets:
            s = counter.size_for_params(float(t))
            if s not in sizes:
                sizes.append(s)
        if len(sizes) < grid.points:
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
            else:
                why = "closer together than the sizes the model accepts"
                fix = "allow finer sizes (e.g. a smaller model.kwargs.head_dim), or plan fewer grid.points"
            warnings.append(
                f"budget {sci(budget)} FLOPs: only {len(sizes)} distinct sizes of {grid.points} planned; "
                f"targets fall {why}: {fix}"
            )
        for size in sorted(sizes):
            info = counter.info(size)
            per_token = fpt(size)
            tokens = int(budget // per_token)
            entry = {
                "id": experiment_id(budget, model.size_param, size),
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
            floor = max(grid.min_tokens_per_param * info.params, grid.min_tokens)
            if tokens < floor:
                reason = (
                    f"{human(tokens)} {data_unit} < {grid.min_tokens_per_param:g} per parameter"
                    if tokens < grid.min_tokens_per_param * info.params
                    else f"{human(tokens)} {data_unit} < grid.min_tokens={grid.min_tokens}"
                )
                dropped.append({k: entry[k] for k in ("id", "budget", "size", "params", "tokens")} | {"reason": reason})
            else:
                experiments.append(entry)
    if not experiments:
        raise FlopsFitError(
            "every planned run was dropped for having too few tokens: raise the budgets (budgets.values=...), "
            "lower grid.min_tokens_per_param, or shrink model.size_range"
        )
    return {
        "model": model.describe(),
        "dataset": dict(dataset or {}),
        "data_unit": data_unit,
        "flops_convention": flops,
        "budgets": budgets,
        "grid": asdict(grid),
        "experiments": experiments,
        "dropped": dropped,
        "warnings": warnings,
    }


def _match_centre(centres: Mapping[float, float], budget: float) -> float | None:
    for b, n in centres.items():
        if abs(b - budget) <= 1e-6 * budget:
            return n
    return None


def format_plan(plan: Mapping) -> str:
    """The plan as a table a user can read."""
    unit = plan.get("data_unit", "tokens")
    size_param = plan["model"]["size_param"]
    head = f"{'budget':>12}  {size_param:>10}  {'params':>9}  {unit:>9}  {unit[:3] + '/param':>10}  id"
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
        lines.append(
            f"{budget:>12}  {e['size']:>10}  {human(e['params']):>9}  {human(e['tokens']):>9}  "
            f"{e['tokens'] / e['params']:>10.1f}  {e['id']}"
        )
    for w in plan.get("warnings", []):
        lines.append(f"warning: {w}")
    if plan.get("dropped"):
        lines.append(f"dropped {len(plan['dropped'])} runs with too few {unit}:")
        for d in plan["dropped"]:
            lines.append(f"  {d['id']}: {human(d['params'])} params, {d['reason']}")
    return "\n".join(lines)
