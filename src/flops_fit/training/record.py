"""The run record, ``runs/<id>.json``: built here and nowhere else, for real, mock and failed runs.

Keys (docs/architecture.md lists them; ``id, status, params, tokens, flops, loss, history`` are
fixed for scripts and users):

``id, budget, size``            from the plan's experiment
``status``                      completed | failed | diverged
``params, non_embedding_params`` the trained model's counts (the plan's for mock and failed runs)
``tokens, planned_tokens``      data units trained (whole batches: a little over the plan) and planned
``flops, flops_per_token, flops_convention``   flops = flops_per_token[convention] x tokens
``flops_by_convention``         the same total under every convention the model gives
``loss``                        the final held-out loss (None unless completed)
``history``                     [{tokens, flops, loss}] evaluation points along the run
``cooldown_frac, warmup_basis_tokens``  a WSD run's plan entry's (what ff-plan and ff-train compare)
``min_steps, batch_basis_tokens`` the plan entry's grid.min_steps rule, when on (docs/short-runs.md)
``unique_units, unique_units_seen, epochs``  when the plan knows the data's unique units U: U, the
                                unique units this run could see (min(tokens, U); text windows are drawn
                                at random, so a single-epoch run covers about 1 - 1/e of them), tokens / U
``train_subset, repeat_of``     a grid.repeat_epochs run: the units of the data it trained on, and its fresh twin
``trainer, data_unit, finished`` and what the trainer adds: ``batch_size`` (examples per step: this run's,
                                under the rule; ``trainer_settings.batch_size`` is the cap), ``steps``,
                                ``warmup`` (steps), seed, ``trainer_settings``, device, timings, error, ...

:func:`short_runs` lists the completed runs trained for fewer optimizer steps than a threshold (for the
analysis to flag; it reads plain record dicts and imports no torch).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from flops_fit.artifacts import now_iso
from flops_fit.flops import flops_per_token_6n
from flops_fit.planning import MIN_STEPS, RUN_PLAN_KEYS


def history_point(tokens: int, flops_per_token: float, loss: float) -> dict:
    """One point of a loss curve: data units seen, FLOPs spent, held-out loss."""
    return {"tokens": int(tokens), "flops": float(flops_per_token) * tokens, "loss": float(loss)}


def planned_flops_per_token(experiment: Mapping, convention: str) -> dict[str, float]:
    """FLOPs per token under each convention the plan knows, for runs not trained here (mock, failed)."""
    params = experiment["params"]
    out = {"6nd": flops_per_token_6n(params),
           "6nd_nonembedding": flops_per_token_6n(experiment.get("non_embedding_params", params))}
    out[convention] = float(experiment.get("flops_per_token") or out.get(convention) or flops_per_token_6n(params))
    return out


def run_record(
    experiment: Mapping[str, Any],
    *,
    status: str,
    trainer: str,
    flops_convention: str,
    data_unit: str,
    params: int,
    non_embedding_params: int,
    tokens: int,
    flops_per_token: Mapping[str, float],
    loss: float | None,
    history: list[dict],
    **details: Any,
) -> dict:
    """The record of one run. ``details`` add trainer-specific keys; those that are None are left out."""
    fpt = float(flops_per_token[flops_convention])
    record = {
        "id": experiment["id"],
        "status": status,
        "budget": experiment.get("budget"),
        "size": experiment.get("size"),
        "params": params,
        "non_embedding_params": non_embedding_params,
        "tokens": tokens,
        "planned_tokens": experiment.get("tokens"),
        "flops": fpt * tokens,
        "flops_per_token": fpt,
        "flops_convention": flops_convention,
        "flops_by_convention": {k: float(v) * tokens for k, v in flops_per_token.items()},
        "loss": loss,
        "history": list(history),
        "trainer": trainer,
        "data_unit": data_unit,
    }
    record.update((rec_key, experiment[key]) for key, rec_key in RUN_PLAN_KEYS.items()
                  if key != "tokens" and experiment.get(key) is not None)
    if experiment.get("unique_units"):  # the data's unique units: how often this run repeats them
        U = int(experiment["unique_units"])
        record.update(unique_units=U, unique_units_seen=min(int(tokens), U), epochs=float(tokens) / U)
    if experiment.get("train_subset"):  # a grid.repeat_epochs run: trained on the data's first train_subset units
        record.update(train_subset=int(experiment["train_subset"]), repeat_of=experiment.get("repeat_of"))
    if experiment.get("min_steps"):  # the rule its batch was chosen by (planning.plan_differences reads them)
        record.update(min_steps=experiment["min_steps"], batch_basis_tokens=experiment.get("batch_basis_tokens"))
    record.update((k, v) for k, v in details.items() if v is not None)
    record["finished"] = now_iso()
    return record


def planned_record(experiment: Mapping, *, status: str, trainer: str, flops_convention: str, data_unit: str,
                   loss: float | None, history: list[dict], **details: Any) -> dict:
    """The record of a run whose sizes come from the plan: a mock run, or one that failed."""
    return run_record(
        experiment,
        status=status,
        trainer=trainer,
        flops_convention=flops_convention,
        data_unit=data_unit,
        params=experiment["params"],
        non_embedding_params=experiment.get("non_embedding_params", experiment["params"]),
        tokens=experiment["tokens"],
        flops_per_token=planned_flops_per_token(experiment, flops_convention),
        loss=loss,
        history=history,
        **details,
    )


def record_steps(record: Mapping) -> int | None:
    """The optimizer steps a run record says it trained: its ``steps``, or, for a record without them,
    ``ceil(tokens / (batch_size x units per example))`` (an image is one unit; a text window its ``seq_len``
    tokens, from the record's dataset or model); None when the record does not tell (a mock run's, one
    trained elsewhere). A mock run has no optimizer: its ``steps`` count the points of its closed-form
    history, so it is never a short run."""
    if record.get("trainer") == "mock":
        return None
    steps = record.get("steps")
    if isinstance(steps, (int, float)) and not isinstance(steps, bool):
        return int(steps)
    tokens, batch = record.get("tokens"), record.get("batch_size")
    if not tokens or not batch:
        return None
    if record.get("data_unit", "tokens") != "tokens":
        per_example = 1
    else:
        per_example = ((record.get("dataset") or {}).get("seq_len")
                       or ((record.get("model") or {}).get("kwargs") or {}).get("seq_len"))
    if not isinstance(per_example, int) or per_example <= 0:
        return None
    return math.ceil(float(tokens) / (int(batch) * per_example))


def short_runs(records: Iterable[Mapping], min_steps: int | None = None) -> list[tuple[str, int]]:
    """``[(id, steps)]`` of the completed runs among ``records`` (``runs/<id>.json`` dicts) that trained
    fewer than ``min_steps`` optimizer steps (default :data:`flops_fit.planning.MIN_STEPS`, grid.min_steps'
    default; 0: none), in the order given. Records whose steps are unknown (:func:`record_steps`) are
    skipped. Such runs end before their loss settles at their schedule's end and bend the fits
    (docs/short-runs.md)."""
    threshold = MIN_STEPS if min_steps is None else int(min_steps)
    out = []
    for r in records:
        if r.get("status") != "completed":
            continue
        steps = record_steps(r)
        if steps is not None and steps < threshold:
            out.append((str(r["id"]), steps))
    return out
