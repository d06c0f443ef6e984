"""Where a sweep stands: the heartbeats running runs write, and the status ``ff-status`` reports.

A real run trained by ``ff-train`` keeps ``runs/.heartbeat/<id>.json`` up to date (rank 0 only,
written atomically at its start, every :data:`INTERVAL_S` seconds, at each evaluation and
checkpoint, and before its final evaluation)::

    {id, phase, step, steps, tokens, planned_tokens, loss, tokens_per_s, elapsed_s, checkpoint_step,
     world_size, host, pid, started, updated, updated_unix, history}

(``history``: the held-out loss points measured so far, as the record will hold them; ff-train's tracker
logs them live from here, :class:`flops_fit.training.track.LiveLog`)

and the sweep deletes it once the run's record is written. :func:`sweep_status` reads the plan,
the records, the heartbeats and the checkpoint files (never torch) and sorts every planned run
into one state:

``completed`` | ``failed`` | ``diverged``   its record says so
``running``     a live heartbeat: on this host, its process is alive; elsewhere, it was updated
                within ``stale_after`` seconds
``pending``     not started, or interrupted (a stale heartbeat and/or a checkpoint to resume from)
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping

from flops_fit.artifacts import RunDir, now_iso, read_json, write_json
from flops_fit.errors import FlopsFitError
from flops_fit.units import fmt_duration, human

INTERVAL_S = 10.0  # seconds between two heartbeats of a running run
STATES = ("completed", "failed", "diverged", "running", "pending")


def heartbeat_path(rd: RunDir, run_id: str) -> Path:
    return rd.runs_dir / ".heartbeat" / f"{run_id}.json"


def checkpoint_path(rd: RunDir, run_id: str) -> Path:
    return rd.checkpoint_path(run_id)


class Heartbeat:
    """Writes one run's heartbeat file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, experiment: Mapping[str, Any], *, steps: int, per_batch: int,
                 world_size: int = 1, interval: float | None = None):
        self.path = Path(path)
        self.interval = float(INTERVAL_S if interval is None else interval)
        self.steps, self.per_batch = int(steps), int(per_batch)
        self.base = {"id": experiment.get("id"), "steps": self.steps, "planned_tokens": experiment.get("tokens"),
                     "world_size": int(world_size), "host": socket.gethostname(), "pid": os.getpid(),
                     "started": now_iso()}
        self.checkpoint_step: int | None = None
        self._last = -float("inf")

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.interval

    def beat(self, state, phase: str = "training", live: bool = True) -> None:
        """Write the heartbeat now. ``state`` is the loop's RunState; ``live``: its training clock is
        running (inside the steps), so the time since ``state.clock`` counts too."""
        elapsed = float(state.train_time) + (time.perf_counter() - state.clock if live and state.clock else 0.0)
        tokens = int(state.step) * self.per_batch
        rate = tokens / elapsed if elapsed > 0 else None
        loss = state.last_loss if state.last_loss == state.last_loss else None  # NaN: not read yet
        write_json(self.path, {**self.base, "phase": phase, "step": int(state.step), "tokens": tokens,
                               "loss": loss, "tokens_per_s": rate, "elapsed_s": elapsed,
                               "checkpoint_step": self.checkpoint_step, "updated": now_iso(),
                               "updated_unix": time.time(), "history": list(state.history)}, compact=True)
        self._last = time.monotonic()


def discard_heartbeat(rd: RunDir, run_id: str) -> None:
    try:
        heartbeat_path(rd, run_id).unlink()
    except FileNotFoundError:
        pass


# -------------------------------------------------------------------------------------------------
# ff-status


def _alive(beat: Mapping[str, Any], now: float, stale_after: float) -> bool:
    """Whether the process behind a heartbeat still runs."""
    if beat.get("host") == socket.gethostname() and beat.get("pid"):
        try:
            os.kill(int(beat["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process: it exists
            pass
        except (OSError, ValueError):
            pass
        else:
            return True
        return True
    return now - float(beat.get("updated_unix") or 0) <= stale_after


def sweep_status(run_dir: str | os.PathLike, stale_after: float = 120.0, now: float | None = None) -> dict:
    """Every planned run of ``run_dir`` with its state, and the progress of those under way.

    Returns ``{run_dir, planned, counts: {state: n}, runs: [{id, state, budget, params, flops, ...}]}``
    in plan order; running and interrupted runs carry their heartbeat's ``step, steps, tokens,
    planned_tokens, tokens_per_s, eta_s, age_s, host, world_size`` and ``checkpoint_step``.
    """
    rd = RunDir(run_dir)
    plan = rd.read_plan()
    now = time.time() if now is None else float(now)
    records = {}
    if rd.runs_dir.is_dir():
        for path in rd.runs_dir.glob("*.json"):
            try:
                rec = read_json(path, "run record")
            except FlopsFitError:
                continue  # being replaced right now, or foreign: the next look sees it
            if isinstance(rec, dict) and "id" in rec:
                records[rec["id"]] = rec
    runs = []
    for exp in plan["experiments"]:
        rid = exp["id"]
        entry = {"id": rid, "budget": exp.get("budget"), "params": exp.get("params"), "tokens": exp.get("tokens"),
                 "flops": exp.get("flops")}
        rec = records.get(rid)
        if rec is not None and rec.get("status") in ("completed", "failed", "diverged"):
            entry.update(state=rec["status"], loss=rec.get("loss"), reason=rec.get("reason") or rec.get("error"),
                         wall_time_s=rec.get("wall_time_s"), world_size=rec.get("world_size"))
        else:
            beat = _read_beat(heartbeat_path(rd, rid))
            ckpt = checkpoint_path(rd, rid)
            if beat is not None:
                age = max(0.0, now - float(beat.get("updated_unix") or 0))
                entry.update({k: beat.get(k) for k in ("phase", "step", "steps", "tokens", "planned_tokens", "loss",
                                                       "tokens_per_s", "host", "pid", "world_size",
                                                       "checkpoint_step")})
                entry["age_s"] = age
                rate, left = beat.get("tokens_per_s"), (beat.get("planned_tokens") or 0) - (beat.get("tokens") or 0)
                entry["eta_s"] = max(0.0, left) / rate if rate else None
                entry["state"] = "running" if _alive(beat, now, stale_after) else "pending"
            else:
                entry["state"] = "pending"
            if entry["state"] == "pending":
                entry["checkpoint"] = ckpt.is_file()
                if entry["checkpoint"] and beat is not None and ckpt.stat().st_mtime > float(beat.get("updated_unix") or 0):
                    entry["checkpoint_step"] = None  # saved after the last heartbeat: a later step than it says
        runs.append(entry)
    counts = {s: sum(r["state"] == s for r in runs) for s in STATES}
    return {"run_dir": str(rd.root), "planned": len(runs), "counts": counts, "runs": runs}


def _read_beat(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        beat = read_json(path, "heartbeat")
    except FlopsFitError:
        return None
    return beat if isinstance(beat, dict) else None


def format_status(status: Mapping[str, Any], show_all: bool = False, limit: int = 20) -> str:
    """The status as text: a summary line, then the runs of each state (long lists cut at ``limit``
    unless ``show_all``)."""
    counts = status["counts"]
    n = status["planned"]
    lines = [f"{status['run_dir']}: {n} run{'s' if n != 1 else ''} planned: "
             + ", ".join(f"{counts[s]} {s}" for s in STATES)]
    for state in ("running", "pending", "failed", "diverged", "completed"):
        rows = [r for r in status["runs"] if r["state"] == state]
        if not rows:
            continue
        if state == "pending":  # interrupted runs first: they have something to show
            rows.sort(key=lambda r: (r.get("step") is None and not r.get("checkpoint")))
        lines.append(f"{state}:")
        shown = rows if show_all or len(rows) <= limit else rows[:limit]
        lines += [f"  {_describe(r)}" for r in shown]
        if len(shown) < len(rows):
            lines.append(f"  ... and {len(rows) - len(shown)} more (all=true lists every run)")
    return "\n".join(lines)


def _describe(r: Mapping[str, Any]) -> str:
    head = f"{r['id']:<24}"
    if r["state"] == "running":
        steps, step = r.get("steps") or 0, r.get("step") or 0
        pct = f"{100 * step / steps:.0f}%" if steps else "?"
        parts = [f"step {step}/{steps} ({pct})", f"{human(r.get('tokens') or 0)}/{human(r.get('planned_tokens') or 0)} tokens"]
        if r.get("tokens_per_s"):
            parts.append(f"{human(r['tokens_per_s'])} tokens/s")
        if r.get("eta_s") is not None:
            parts.append(f"about {fmt_duration(r['eta_s'])} left")
        if r.get("phase") and r["phase"] != "training":
            parts.append(str(r["phase"]))
        where = f"{r.get('host')}" + (f" x{r['world_size']}" if (r.get("world_size") or 1) > 1 else "")
        parts.append(f"on {where}, heartbeat {fmt_duration(r.get('age_s') or 0)} ago")
        return head + "  " + ", ".join(parts)
    if r["state"] == "pending":
        if r.get("step") is not None:
            resume = (f"resumes from its checkpoint at step {r['checkpoint_step']}" if r.get("checkpoint")
                      and r.get("checkpoint_step") else
                      "resumes from its last checkpoint" if r.get("checkpoint") else "restarts from step 0")
            return (head + f"  interrupted at step {r['step']}/{r.get('steps')} (last heartbeat "
                    f"{fmt_duration(r.get('age_s') or 0)} ago on {r.get('host')}); {resume}")
        if r.get("checkpoint"):
            return head + "  interrupted; resumes from its checkpoint"
        return head + f"  not started ({_flops(r)})"
    if r["state"] == "completed":
        loss = f"loss {r['loss']:.4f}" if isinstance(r.get("loss"), (int, float)) else "loss ?"
        took = f", {fmt_duration(r['wall_time_s'])}" if r.get("wall_time_s") else ""
        return head + f"  {loss}{took}"
    return head + f"  {r.get('reason') or ''}".rstrip()


def _flops(r: Mapping[str, Any]) -> str:
    from flops_fit.units import sci

    return f"{sci(r['flops'])} FLOPs" if r.get("flops") else "?"
