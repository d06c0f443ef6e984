"""The forecast check, as the stages run it: ``ff-plan forecast_from=SWEEP`` plans an IsoFLOP at
``forecast_factor`` x the sweep's largest budget around its pre-registered forecast, ``ff-train``
trains it as the sweep was trained, ``ff-analyze`` scores it (analysis/forecast_check.py).

plan.json of a check holds ``forecast_check``: the forecasts (the table's row and every approach's,
with intervals, timestamped before anything trains), the source run_dir and the source runs' trainer
settings, which ff-train then requires.
"""

from __future__ import annotations

from typing import Mapping

from flops_fit.artifacts import RunDir
from flops_fit.errors import FlopsFitError


def plan_inputs(source: str, factor: float) -> tuple[dict, float, float, dict]:
    """(the source's plan, the check's budget, the centre of its grid, the forecast_check block)."""
    from flops_fit.analysis.forecast_check import preregister

    if not float(factor) > 1.0:
        raise FlopsFitError(f"forecast_factor={factor} must be > 1: the check's budget is that x the sweep's largest")
    src = RunDir(source)
    if not src.root.is_dir():
        raise FlopsFitError(f"forecast_from={source}: no such run directory")
    plan, analysis = src.read_plan(), src.read_analysis()
    if analysis.get("forecast_check"):
        raise FlopsFitError(f"forecast_from={source} is itself a forecast check; give the sweep it checked "
                            f"({analysis['forecast_check'].get('source_run_dir')})")
    if not analysis.get("table_model"):
        raise FlopsFitError(f"forecast_from={source}: its analysis.json has no table to forecast from (no approach "
                            f"fitted, or it predates forecasts); re-run ff-analyze run_dir={source}")
    budget = float(factor) * max(float(b) for b in plan["budgets"])
    block = preregister(analysis, budget, factor=float(factor), source=str(source))
    completed = [r for r in src.iter_runs() if r.get("status") == "completed"]
    block["trainer_settings"] = next((r["trainer_settings"] for r in completed
                                      if isinstance(r.get("trainer_settings"), Mapping)), None)
    block["trainer_kind"] = next((r.get("trainer") for r in completed), None)
    return plan, budget, float(block["table"]["params"]), block


def refuse_other_trainer(plan: Mapping, trainer, allow_mismatch: bool) -> None:
    """A forecast check trains as its source sweep did: one line naming the first setting that differs."""
    block = plan.get("forecast_check")
    if not block or allow_mismatch or trainer.kind == "mock" or not block.get("trainer_settings"):
        return
    old, new = block["trainer_settings"], trainer.run_settings()
    diff = [k for k in new if k in old and old[k] != new[k]]
    if diff:
        k = diff[0]
        key = "trainer.dtype" if k == "amp_dtype" else f"trainer.{k}"
        raise FlopsFitError(
            f"this forecast check trains as its source sweep {block.get('source_run_dir')} did, with {key}={old[k]}, "
            f"not {new[k]}: pass {key}={old[k]} (or allow_mismatch=true to train it otherwise)"
        )


def describe(block: Mapping) -> str:
    """ff-plan's lines about the forecasts it registered."""
    from flops_fit.units import fmt_flops, fmt_interval, human

    t = block["table"]
    lines = [f"forecast check: {block['factor']:g}x {block['source_run_dir']}'s largest budget = "
             f"{fmt_flops(block['budget'])}; forecasts registered {block['registered']}:",
             f"  table ({t['source']}): {human(t['params'])} params "
             f"{fmt_interval(t.get('params_ci_with_model'), human)}, loss {t['loss']:.4f}"]
    for name, row in (block.get("approaches") or {}).items():
        if name != t["source"]:
            lines.append(f"  {name}: {human(row['params'])} params {fmt_interval(row.get('params_ci'), human)}")
    lines.append("  train it with the same trainer as the sweep, then ff-analyze scores the forecasts")
    return "\n".join(lines)
