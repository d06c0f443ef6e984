"""A run's record as an experiment tracker sees it (:mod:`flops_fit.trackers`), and the live view.

Every point of the record's loss curve becomes one logged step, at the data units seen: the held-out
``loss``, the ``flops`` spent and the ``lr`` the schedule gave at that step (the same functions the
training loop sets it with, :mod:`flops_fit.training.optim`). The run's ``final_loss``, throughput and
counts are its summary; the plan's settings and the trainer's are its parameters.

:class:`LiveLog` logs the points before the record exists: a thread of ff-train reads the heartbeats of the
runs it trains (in its own process or in packed workers; :mod:`flops_fit.training.status`) every few seconds
and sends the held-out points each has measured so far, so a tracker shows a run's curve while it trains.
The record then adds the rest (the learning rate, the final loss, the summary) and closes the run.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

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


def run_params(run: Mapping[str, Any], plan: Mapping[str, Any]) -> dict:
    """The parameters a run is logged with: the plan's settings and the run's own (a record, or its plan
    entry while it trains)."""
    settings = {k: plan.get(k) for k in PLAN_SETTINGS if plan.get(k) is not None}
    params = flatten(settings)
    params.update(flatten({k: run.get(k) for k in ("id", "budget", "size", "trainer", "status")}, "run."))
    return params


def history_points(history) -> list[dict]:
    """A run's held-out loss curve (a record's or a heartbeat's ``history``) as tracker points, stepped by the
    data units seen."""
    return [{"step": int(h["tokens"]), "loss": h.get("loss"), "flops": h.get("flops")} for h in history or []]


def run_log(record: Mapping[str, Any], plan: Mapping[str, Any]) -> tuple[dict, list[dict], dict]:
    """(parameters, points, summary) of one run for :meth:`flops_fit.trackers.Tracker.log_run`."""
    params = run_params(record, plan)
    params.update(flatten(record.get("trainer_settings") or {}, "trainer."))
    points = []
    for h, point in zip(record.get("history") or [], history_points(record.get("history"))):
        lr = lr_at(record, h["tokens"])
        if lr is not None:
            point["lr"] = lr
        points.append(point)
    summary = {("final_loss" if k == "loss" else k): float(record[k]) for k in SUMMARY
               if isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool)}
    return params, points, summary


LIVE_EVERY_S = 5.0  # seconds between two reads of the running runs' heartbeats


class LiveLog:
    """Log the held-out points of ``runs`` (plan entries) to ``tracker`` while they train: a daemon thread reads
    their heartbeats (``runs/.heartbeat/<id>.json``) every ``every`` seconds. A tracker that fails for a run
    says so once, through ``note``, and the sweep goes on."""

    def __init__(self, heartbeats: Path, tracker, plan: Mapping[str, Any], runs: Iterable[Mapping[str, Any]], *,
                 trainer: str, every: float = LIVE_EVERY_S, note: Callable[[str], None] = print):
        self.folder, self.tracker, self.plan, self.every, self.note = Path(heartbeats), tracker, plan, every, note
        self.runs = {e["id"]: {**e, "trainer": trainer} for e in runs}  # its status comes with its record
        self.failed: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="flops-fit-live-log", daemon=True)

    def start(self) -> "LiveLog":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.poll()

    def poll(self) -> None:
        """Send every running run's points measured so far (the tracker keeps only those it lacks)."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.json")):
            try:
                beat = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # gone (the run finished) or being replaced
            run_id, history = beat.get("id"), beat.get("history") or []
            if run_id not in self.runs or run_id in self.failed or not history:
                continue
            try:
                self.tracker.log_points(run_id, run_params(self.runs[run_id], self.plan), history_points(history))
            except Exception as e:  # noqa: BLE001 - a tracker's trouble never costs a run
                self.failed.add(run_id)
                self.note(f"{run_id}: not logged live to {self.tracker.name} ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:160]}); its record will be")
