"""Do the approaches agree on the exponent a? One comparison per pair of successful approaches."""

from __future__ import annotations

from flops_fit.analysis.diagnostics import Diagnostics
from flops_fit.units import fmt_interval

APPROACHES = ("envelope", "isoflop", "parametric")
NO_CI = "[no interval]"


def compare_approaches(fits: dict, ci: float, diags: Diagnostics) -> list[dict]:
    """``[{approaches, a, a_ci, difference, agree}]`` for each pair; a warning when two disagree.

    Two approaches agree when their intervals for a overlap (None without intervals)."""
    out = []
    ok_names = [k for k in APPROACHES if fits[k].ok]
    for i in range(len(ok_names)):
        for j in range(i + 1, len(ok_names)):
            p, q = ok_names[i], ok_names[j]
            ap, aq = fits[p].a, fits[q].a
            cp, cq = fits[p].a_ci, fits[q].a_ci
            if ap is None or aq is None:
                continue
            agree = (not (cp[1] < cq[0] or cq[1] < cp[0])) if (cp and cq) else None
            out.append({"approaches": [p, q], "a": [ap, aq], "a_ci": [cp, cq], "difference": aq - ap, "agree": agree})
            if agree is False:
                diags.add("warning", "approaches_disagree",
                          f"{p} a={ap:.3f} {fmt_interval(cp, missing=NO_CI)} and {q} a={aq:.3f} {fmt_interval(cq, missing=NO_CI)} "
                          f"disagree beyond "
                          f"their {ci:.0%} intervals; check the diagnostics above and the residual plots")
    return out
