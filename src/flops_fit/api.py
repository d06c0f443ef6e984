"""``flops_fit.find_optimal``: the four stages chained for notebook users.

It composes the same YAML configs the command line uses (so defaults match), lets you pass
config-group names, Hydra-style overrides or whole dicts, and runs plan -> train -> analyze
-> plot in one run directory::

    import flops_fit
    result = flops_fit.find_optimal(run_dir="outputs/nb", trainer="mock", budgets=[1e18, 1e19, 1e20])
    print(result.table())
    result.predict(1e21)      # {'budget': 1e21, 'params': ..., 'tokens': ..., 'loss': ...}
    result.plot()             # paths of the PNGs and the report
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from flops_fit.artifacts import RunDir
from flops_fit.errors import FlopsFitError


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
    """What :func:`find_optimal` returns: the analysis and handy accessors."""

    run_dir: str
    analysis: dict

    def table(self) -> str:
        """The printed summary: the approaches side by side and the compute-optimal table."""
        from flops_fit.analysis import summary_lines

        return "\n".join(summary_lines(self.analysis))

    def predict(self, budget: float) -> dict:
        """Compute-optimal params, tokens and loss at ``budget`` FLOPs (from the table's source fit)."""
        return predict(self.analysis, float(budget))

    def plot(self) -> dict:
        """Write the figures and report.html into the run directory; returns their paths."""
        from flops_fit import stages
        from flops_fit.config.compose import compose

        return stages.plot(compose("plot", [f"run_dir={self.run_dir}"]))


def predict(analysis: Mapping, budget: float) -> dict:
    """Compute-optimal params/tokens at ``budget`` from the fit the table uses, and its loss."""
    fits = analysis.get("fits", {})
    source = analysis.get("table_source")
    fit = fits.get(source or "", {})
    if fit.get("status") != "ok" or fit.get("k_N") is None:
        fit = next((fits[k] for k in ("isoflop", "parametric", "envelope")
                    if fits.get(k, {}).get("status") == "ok" and fits[k].get("k_N") is not None), None)
        if fit is None:
            raise FlopsFitError("the analysis has no successful fit to predict from; see its diagnostics")
    params = fit["k_N"] * budget ** fit["a"]
    tokens = fit["k_D"] * budget ** fit["b"]
    par, lvc = fits.get("parametric", {}), fits.get("loss_vs_compute", {})
    if par.get("status") == "ok":
        loss = par["E"] + par["A"] / params ** par["alpha"] + par["B"] / tokens ** par["beta"]
    elif lvc.get("status") == "ok":
        loss = lvc["E"] + lvc["A"] * budget ** (-lvc["gamma"])
    else:
        loss = None
    return {"budget": budget, "params": params, "tokens": tokens, "tokens_per_param": tokens / params, "loss": loss}


def find_optimal(
    run_dir: str = "outputs/find_optimal",
    *,
    model: str | Mapping | None = None,
    dataset: str | Mapping | None = None,
    budgets: str | Sequence[float] | None = None,
    trainer: str | Mapping | None = None,
    plan_overrides: Sequence[str] = (),
    train_overrides: Sequence[str] = (),
    analyze_overrides: Sequence[str] = (),
    plot: bool = True,
) -> Result:
    """Plan, train, analyze (and plot) a scaling-law study; returns a :class:`Result`.

    ``model``/``dataset``/``trainer`` take a config option name (``"gpt"``, ``"bbc_news"``,
    ``"mock"``) or a dict for the whole node, e.g. a user's own class::

        model={"name": "mine", "_target_": "mypkg.MyNet", "size_param": "width",
               "size_range": [16, 4096], "kwargs": {"depth": 4}}

    ``budgets`` is an option name (``"cpu_small"``) or a list of FLOPs.
    """
    from flops_fit import stages
    from flops_fit.config.compose import compose

    plan_ov, plan_nodes = [f"run_dir={run_dir}", *plan_overrides], {}
    _group("model", model, plan_ov, plan_nodes)
    _group("dataset", dataset, plan_ov, plan_nodes)
    if isinstance(budgets, str):
        plan_ov.append(f"budgets={budgets}")
    elif budgets is not None:
        plan_nodes["budgets"] = {"name": "custom", "values": [float(b) for b in budgets]}
    stages.plan(compose("plan", plan_ov, plan_nodes))

    train_ov, train_nodes = [f"run_dir={run_dir}", *train_overrides], {}
    _group("trainer", trainer, train_ov, train_nodes)
    stages.train(compose("train", train_ov, train_nodes))

    analysis = stages.analyze(compose("analyze", [f"run_dir={run_dir}", *analyze_overrides]))
    result = Result(run_dir=str(run_dir), analysis=analysis)
    if plot:
        result.plot()
    return result


def load(run_dir: str) -> Result:
    """A :class:`Result` for a run directory that was already analysed."""
    return Result(run_dir=str(run_dir), analysis=RunDir(run_dir).read_analysis())
