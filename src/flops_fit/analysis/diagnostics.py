"""Diagnostics: the warnings and notes analysis.json carries, each with a code, a level and a
message that names the budget and the fix."""

from __future__ import annotations

import numpy as np

from flops_fit.units import fmt_flops, fmt_params


class Diagnostics(list):
    """A list of ``{level, code, budget?, message}`` dicts, in the order they were raised."""

    def add(self, level: str, code: str, message: str, budget=None) -> None:
        d = {"level": level, "code": code}
        if budget is not None:
            d["budget"] = float(budget)
        d["message"] = message
        self.append(d)

    def to_json(self) -> list[dict]:
        return list(self)


def edge_minimum(diags: Diagnostics, entry: dict, Ns, Ls, convex) -> None:
    """Warn that a budget's IsoFLOP minimum is not inside its grid, and say which way to move it."""
    b = entry["budget"]
    lo, hi = entry["params_min"], entry["params_max"]
    opt = entry["params_opt"]
    best_N = Ns[np.argmin(Ls)]
    if convex and opt is not None and opt >= hi:
        where, move = f"at or above the largest sampled size ({fmt_params(hi)})", "larger"
    elif convex and opt is not None and opt <= lo:
        where, move = f"at or below the smallest sampled size ({fmt_params(lo)})", "smaller"
    elif best_N >= hi:
        where, move = f"not bracketed: loss still falls at the largest size ({fmt_params(hi)})", "larger"
    elif best_N <= lo:
        where, move = f"not bracketed: loss still falls at the smallest size ({fmt_params(lo)})", "smaller"
    else:
        where, move = "not bracketed (the loss does not curve upwards across the sizes)", None
    est = f" (fitted vertex {fmt_params(opt)})" if (convex and opt is not None) else ""
    fix = (f"move this budget's grid towards {move} models" if move else
           "widen the grid (more sizes, larger span) for this budget")
    diags.add("warning", "isoflop_edge",
              f"budget {fmt_flops(b)}: the IsoFLOP minimum is {where}{est}; {fix} (e.g. re-plan with refine_from)", b)


def bootstrap_failures(diags: Diagnostics, name: str, a_samples) -> None:
    """Note when more than 10% of an approach's bootstrap replicates could not be fitted."""
    a_samples = np.asarray(a_samples)
    frac = float(np.mean(~np.isfinite(a_samples))) if a_samples.size else 0.0
    if frac > 0.1:
        diags.add("info", "bootstrap_failures",
                  f"{frac:.0%} of the {name} bootstrap replicates could not be fitted (too few usable points)")
