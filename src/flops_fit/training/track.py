"""A run's record as an experiment tracker sees it (:mod:`flops_fit.trackers`).

Every point of the record's loss curve becomes one logged step, at the data units seen: the held-out
``loss``, the ``flops`` spent and the ``lr`` the schedule gave at that step (the same functions the
training loop sets it with, :mod:`flops_fit.training.optim`). The run's ``final_loss``, throughput and
counts are its summary; the plan's settings and the trainer's are its parameters.
"""

from __future__ import annotations

from typing import Any, Mapping

from flops_fit.trackers import flatten

# what the tracker's parameters take from plan.json
PLAN_SETTINGS = ("model", "dataset", "data_unit", "flops_convention", "grid", "schedule", "budgets_name")
SUMMARY = ("loss", "tokens_per_s", "achieved_flops_per_s", "wall_time_s", "params", "non_embedding_params", "tokens",
           "flops", "steps")


def lr_at(record: Mapping[str, Any], tokens: float) -> float | None:
    """The learning rate at the step that had seen ``tokens`` data units, or None (a mock run has no schedule)."""
    from flops_fit.training.optim import cooldown_start, lr_factor, wsd_lr_factor

    lr, steps, done = record.get("lr"), record.get("steps"), record.get("tokens")
    if not lr or not steps or not done:
        return None
    settings = record.get("trainer_settings") or {}
    min_ratio = float(settings.get("min_lr_ratio", 0.0))
    warmup = int(record.get("warmup") or 1)
    step = max(0, min(int(steps) - 1, round(float(tokens) / (float(done) / int(steps))) - 1))
    kind = record.get("schedule") or "cosine"
    if kind == "constant":
        factor = wsd_lr_factor(step, int(steps), warmup, int(steps), min_ratio)
    elif kind == "wsd":
        start = cooldown_start(int(steps), float(record.get("cooldown_frac") or 0.2))
        factor = wsd_lr_factor(step, int(steps), warmup, start, min_ratio)
    else:
        factor = lr_factor(step, int(steps), warmup, min_ratio)
    return float(lr) * factor


def run_log(record: Mapping[str, Any], plan: Mapping[str, Any]) -> tuple[dict, list[dict], dict]:
    """(parameters, points, summary) of one run for :meth:`flops_fit.trackers.Tracker.log_run`."""
    settings = {k: plan.get(k) for k in PLAN_SETTINGS if plan.get(k) is not None}
    params = flatten(settings)
    params.update(flatten({k: record.get(k) for k in ("id", "budget", "size", "trainer", "status")}, "run."))
    params.update(flatten(record.get("trainer_settings") or {}, "trainer."))
    points = []
    for h in record.get("history") or []:
        point = {"step": int(h["tokens"]), "loss": h.get("loss"), "flops": h.get("flops")}
        lr = lr_at(record, h["tokens"])
        if lr is not None:
            point["lr"] = lr
        points.append(point)
    summary = {("final_loss" if k == "loss" else k): float(record[k]) for k in SUMMARY
               if isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool)}
    return params, points, summary
