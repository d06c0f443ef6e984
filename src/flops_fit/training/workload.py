"""Which runs a job trains, in which order, and how long they should take.

* :func:`shard_runs`: job ``shard`` of ``num_shards`` gets a share of the plan balanced by FLOPs,
  not by count (the longest-processing-time rule: runs from the largest down, each to the job with
  the fewest FLOPs so far), and trains its runs largest first, so a sweep does not end waiting for
  one big run started last. The split depends on the plan alone: a re-submitted job gets the same
  runs and trains those still unfinished.
* :func:`announce` and :func:`expectation`: the plan's FLOPs, this job's share, and the expected
  training time from a short throughput probe of the smallest and the largest pending model
  (FLOP/s interpolated between them in log-parameters).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

from flops_fit.planning import run_flops, unit_flops, work_units
from flops_fit.units import fmt_duration, human, sci, si

PROBE_STEPS = 3  # timed steps per probed model (after one warm-up step)


def shard_runs(experiments: Sequence[Mapping], shard: int = 0, num_shards: int = 1) -> list:
    """The experiments job ``shard`` trains, largest (in FLOPs) first; FLOP-balanced over the jobs."""
    order = sorted(range(len(experiments)), key=lambda i: (-run_flops(experiments[i]), i))
    loads = [0.0] * num_shards
    mine = []
    for i in order:
        k = min(range(num_shards), key=lambda j: (loads[j], j))
        loads[k] += run_flops(experiments[i])
        if k == shard:
            mine.append(experiments[i])
    return mine


def announce(plan: Mapping, pending: Sequence[Mapping], shard: int, num_shards: int) -> str:
    """One line: the plan's runs and FLOPs, and what this job has left to train."""
    total = sum(unit_flops(u) for u in work_units(plan["experiments"]))
    budgets = sum(run_flops(e) for e in plan["experiments"])
    job = f"shard {shard}/{num_shards}" if num_shards > 1 else "this job"
    left = sum(unit_flops(u) for u in work_units(pending))
    n = len(plan["experiments"])
    shared = f" (WSD trunks counted once; the runs' budgets add up to {sci(budgets)})" if total < 0.999 * budgets else ""
    head = f"plan: {n} run{'s' if n != 1 else ''}, {sci(total)} FLOPs{shared}; {job}: "
    return head + (f"{len(pending)} to train, {sci(left)} FLOPs, largest first" if pending else "nothing left to train")


def probe(pending: Sequence[Mapping], measure: Callable[[Mapping], float]) -> dict[float, float]:
    """``{params: FLOP/s}`` measured on the smallest and the largest pending model."""
    by_size = sorted(pending, key=lambda e: (float(e["params"]), e["id"]))
    picks = [by_size[0]] if len(by_size) == 1 or by_size[0]["params"] == by_size[-1]["params"] \
        else [by_size[0], by_size[-1]]
    return {float(e["params"]): float(measure(e)) for e in picks}


def rate_for(params: float, rates: Mapping[float, float]) -> float:
    """FLOP/s for a model of ``params``, log-linear between the probed sizes (constant outside)."""
    (p0, r0), (p1, r1) = min(rates.items()), max(rates.items())
    if p1 <= p0 or r0 <= 0 or r1 <= 0:
        return max(r0, r1)
    t = min(1.0, max(0.0, (math.log(params) - math.log(p0)) / (math.log(p1) - math.log(p0))))
    return math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0)))


def unit_seconds(runs: Sequence[Mapping], rates: Mapping[float, float]) -> float:
    """One unit's (planning.work_units) training time with the whole machine, at the FLOP rate probed for its
    model size."""
    return unit_flops(runs) / rate_for(float(runs[0]["params"]), rates)


def expected_seconds(pending: Sequence[Mapping], rates: Mapping[float, float]) -> float:
    """The pending runs' training time one at a time with the whole machine (evaluations not included)."""
    return sum(unit_seconds(u, rates) for u in work_units(pending))


def expectation(pending: Sequence[Mapping], rates: Mapping[float, float], where: str) -> str:
    """One line: what the probe measured and the expected training time of the pending runs."""
    measured = ", ".join(f"{si(r)}FLOP/s at {human(p)} params" for p, r in sorted(rates.items()))
    return (f"throughput probe ({PROBE_STEPS} steps per model, {where}): {measured}; expected training time "
            f"one run at a time about {fmt_duration(expected_seconds(pending, rates))} (evaluations not included)")
