"""Shared-trunk warmup-stable-decay (WSD) sweeps: one constant-LR trunk per model size, each of its
runs a cooldown branched from it (docs/wsd.md).

A WSD run of ``S`` steps (plan.json: ``schedule: wsd``) warms up like every run of its size, holds the
peak learning rate until ``decay_start = S - round(cooldown_frac x S)``, then cools down to
``min_lr_ratio x peak`` (:func:`flops_fit.training.optim.wsd_lr_factor`). Before ``decay_start`` no
step depends on ``S``: the runs of one size follow one trajectory, the *trunk*, up to their own
``decay_start``. :func:`train_trunk` trains it once and, at each run's ``decay_start``, writes that
run's checkpoint in the ordinary format (docs/checkpoints.md) with the run's own fingerprint and
history; the trunk evaluates the held-out loss at every step at which one of its runs would. The
run's cooldown is then an ordinary resume of its checkpoint, so its record (loss, history, tokens)
is the one a standalone WSD run of the same (size, budget) gives.

Kill safety: at a branch point the branch's checkpoint is written, then the trunk's (both atomic),
and only then is the cooldown trained. Re-running the sweep resumes each branch from its own
checkpoint and the trunk from its last one; a branch whose point the trunk has already passed (its
checkpoint deleted) is trained alone from step 0, which gives the same record.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import torch

from flops_fit.errors import FlopsFitError
from flops_fit.training import checkpoints
from flops_fit.training.config import TrainerConfig
from flops_fit.training.loop import (LossWatch, RunState, Schedule, Segment, Setup, _Bar, _fingerprint, _record,
                                     _resume, _save, checkpoint_payload, evaluate, off_the_clock, setup, train_step)
from flops_fit.training.optim import set_lr
from flops_fit.training.record import history_point


@dataclass
class Branch:
    """One run of a trunk: its plan entry, its own schedule, and the steps at which it evaluates before
    its cooldown (those the trunk evaluates for it)."""

    exp: dict
    sched: Schedule
    eval_steps: frozenset = field(default_factory=frozenset)

    @property
    def id(self) -> str:
        return self.exp["id"]

    @property
    def decay_start(self) -> int:
        return int(self.sched.decay_start)

    @property
    def branched_at(self) -> int:
        """Data units trained when the cooldown starts."""
        return self.decay_start * self.sched.per_batch


class Sink(Protocol):
    """What the sweep does with each branch the trunk reaches (or cannot)."""

    def branched(self, branch: Branch) -> None:  # its checkpoint is written: train its cooldown, record it
        ...

    def passed(self, branch: Branch) -> None:  # the trunk is past its branch point: train it alone
        ...

    def diverged(self, branch: Branch, record: dict) -> None:  # the trunk diverged before its branch point
        ...


def branches_of(runs: list[Mapping], data, trainer: Mapping | TrainerConfig, device: str | torch.device = "cpu") -> list[Branch]:
    """The branches of one trunk's runs (plan entries), by branch point."""
    cfg = TrainerConfig.from_mapping(trainer)
    device = torch.device(device)
    unit = str(getattr(data, "data_unit", "tokens"))
    out = []
    for exp in runs:
        if exp.get("schedule") != "wsd" or not exp.get("trunk"):
            raise FlopsFitError(f"experiment {exp.get('id')} is not a WSD branch (schedule=wsd with a trunk); "
                                f"re-run ff-plan schedule=wsd")
        sched = Schedule.for_run(float(exp["tokens"]), data, cfg, unit, device, exp)
        every = sched.eval_every
        evals = frozenset(s for s in range(every, sched.decay_start + 1, every) if s < sched.steps)
        out.append(Branch(dict(exp), sched, evals))
    batches = {b.sched.batch_size for b in out}
    if len(batches) > 1:
        raise FlopsFitError(f"the runs of trunk {runs[0].get('trunk')} train with different batches ({sorted(batches)}); "
                            f"their batch_basis_tokens must agree (re-run ff-plan)")
    warmups = {b.sched.warmup for b in out}
    if len(warmups) > 1:
        raise FlopsFitError(f"the runs of trunk {runs[0].get('trunk')} warm up differently ({sorted(warmups)} steps); "
                            f"their warmup_basis_tokens must agree (re-run ff-plan schedule=wsd)")
    return sorted(out, key=lambda b: (b.decay_start, b.id))


def trunk_experiment(trunk: str, branches: list[Branch]) -> dict:
    """The trunk as a run: constant LR after the shared warmup, as long as its latest branch point."""
    first = branches[0].exp
    per_batch = branches[0].sched.per_batch
    return {"id": trunk, "size": first.get("size"), "params": first.get("params"), "schedule": "constant",
            "tokens": max(b.decay_start for b in branches) * per_batch,
            "warmup_basis_tokens": first.get("warmup_basis_tokens"), "eval_basis_tokens": first.get("eval_basis_tokens"),
            # the branches' batch (grid.min_steps: one for the budgets sharing this trunk, batch_basis_tokens)
            "min_steps": first.get("min_steps"), "batch_basis_tokens": first.get("batch_basis_tokens")}


def train_trunk(
    trunk: str,
    branches: list[Branch],
    serve: list[Branch],
    sink: Sink,
    *,
    model: torch.nn.Module,
    data,
    trainer: Mapping[str, Any] | TrainerConfig,
    flops_convention: str,
    loss_fn: Callable | None,
    trunk_checkpoint,
    branch_checkpoint: Callable[[str], Any],
    provenance: Mapping[str, Any] | None = None,
    progress: bool = True,
    position: int = 0,
) -> RunState:
    """Train ``trunk`` (whose runs are ``branches``) far enough to branch every run of ``serve``.

    Resumes from ``trunk_checkpoint`` when it holds this trunk; writes each served branch's checkpoint
    at ``branch_checkpoint(id)`` on reaching its branch point and hands it to ``sink.branched``.
    Returns the trunk's state (``status`` says whether it diverged).
    """
    if not serve:
        return RunState()
    segment = Segment()
    run = setup(trunk_experiment(trunk, branches), model, data, trainer, flops_convention, loss_fn, trunk_checkpoint)
    state = (_resume(run) if run.ckpt is not None else None) or RunState()
    segment.start_step = state.step
    for b in [b for b in serve if b.decay_start < state.step]:  # deleted checkpoints: the trunk is past them
        sink.passed(b)
    serve = [b for b in serve if b.decay_start >= state.step]
    if not serve:
        return state
    stop = max(b.decay_start for b in serve)
    evals = frozenset().union(*(b.eval_steps for b in branches))
    bar = _Bar({"id": trunk}, run, position, enabled=progress and run.cfg.progress, done=state.step)
    try:
        _trunk_steps(run, state, segment, bar, serve, evals, stop, sink, branch_checkpoint, provenance)
    finally:
        bar.close()
    if progress:
        print(f"[{trunk}] trunk {state.status} at step {state.step} of {run.sched.steps} "
              f"({len(serve)} branch{'es' if len(serve) != 1 else ''} served, "
              f"{state.train_time:.1f} s of training)", flush=True)
    return state


def _trunk_steps(run: Setup, state: RunState, segment: Segment, bar: _Bar, serve: list[Branch], evals: frozenset,
                 stop: int, sink: Sink, branch_checkpoint, provenance) -> None:
    """The trunk's steps up to ``stop``: the training loop's step, with evaluations where any run of the
    trunk evaluates and a branch-out at each served run's branch point."""
    cfg, sched = run.cfg, run.sched
    params = list(run.model.parameters())
    watch = LossWatch(sched.check_every, cfg.diverge_factor)
    at: dict[int, list[Branch]] = {}
    for b in serve:
        at.setdefault(b.decay_start, []).append(b)
    state.clock = time.perf_counter()
    try:
        if state.step in at:  # resumed exactly at a branch point whose checkpoint is gone
            with off_the_clock(state, run.rt):
                _branch_out(run, state, segment, at[state.step], sink, branch_checkpoint)
        while state.step < stop:
            set_lr(run.optimizer, sched.lr_factor(state.step, cfg.min_lr_ratio))
            x, y = run.rt.to_device(*run.data.train_batch(sched.batch_size, run.generator))
            loss = train_step(run.step_model, run.optimizer, run.scaler, run.loss_fn, x, y, run.rt, params,
                              cfg.grad_clip)
            state.step += 1
            eval_now = state.step in evals
            branch_now = state.step in at
            save_now = (run.ckpt is not None and run.ckpt.enabled and not branch_now and state.step < stop
                        and run.ckpt.due(state.step))
            if watch.add(loss, state, force=eval_now or branch_now or save_now):
                break
            if eval_now:
                with off_the_clock(state, run.rt):
                    held_out = evaluate(run.step_model, run.data, sched.eval_batch_size, run.loss_fn, run.rt,
                                        sched.history_batches)
                state.history.append(history_point(state.step * sched.per_batch, run.fpt.run, held_out))
                if not math.isfinite(held_out) or held_out > cfg.diverge_factor * state.first_loss:
                    state.stop("diverged", f"held-out loss {held_out:.4g} at step {state.step}")
                    break
            if branch_now:
                with off_the_clock(state, run.rt):
                    _branch_out(run, state, segment, at[state.step], sink, branch_checkpoint)
            elif save_now:
                with off_the_clock(state, run.rt):
                    _save(run, state, segment)
            bar.advance(state)
    finally:
        run.rt.sync()
        state.train_time += time.perf_counter() - state.clock
    if state.status != "completed":  # the runs not yet branched diverge where a standalone run would
        for b in serve:
            if b.decay_start >= state.step:
                sink.diverged(b, _branch_record(run, state, segment, b, provenance))


def _branch_state(run: Setup, state: RunState, segment: Segment, b: Branch, trunk: str) -> dict:
    """The branch's view of the trunk's state: its own evaluations, the trunk's segments (labelled)."""
    per_batch = run.sched.per_batch
    segments = [dict(s, trunk=trunk) for s in state.segments + [segment.as_dict(state.step)]]
    history = [p for p in state.history if p["tokens"] // per_batch in b.eval_steps]
    return {**state.to_checkpoint(), "history": history, "segments": segments}


def _branch_out(run: Setup, state: RunState, segment: Segment, branches: list[Branch], sink: Sink,
                branch_checkpoint) -> None:
    """At a branch point: each branch's checkpoint, then the trunk's, then each cooldown (``sink``)."""
    trunk = run.fingerprint["run_id"]
    for b in branches:
        payload = checkpoint_payload(run, state, segment)
        payload["fingerprint"] = _fingerprint(b.exp, run.cfg, b.sched, run.model, run.loss_fn)
        payload["state"] = _branch_state(run, state, segment, b, trunk)
        checkpoints.save(branch_checkpoint(b.id), payload)
    if run.ckpt is not None:
        _save(run, state, segment)
    for b in branches:
        with _trunk_untouched(run):
            sink.branched(b)


class _trunk_untouched:
    """Whatever a cooldown trained in this process does to the global RNGs, the data source's position or
    the thread count, the trunk continues as if it had not run."""

    def __init__(self, run: Setup):
        self.run = run

    def __enter__(self):
        self.rng = checkpoints.rng_states(self.run.generator)
        data = self.run.data
        self.data = data.state_dict() if callable(getattr(data, "state_dict", None)) else None
        self.threads = torch.get_num_threads()

    def __exit__(self, *exc):
        checkpoints.set_rng_states(self.rng, self.run.generator)
        if self.data is not None:
            self.run.data.load_state_dict(self.data)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        return False


def _branch_record(run: Setup, state: RunState, segment: Segment, b: Branch, provenance) -> dict:
    """The record of a branch whose trunk diverged before its branch point (what its standalone run records)."""
    view = _branch_state(run, state, segment, b, run.fingerprint["run_id"])
    branch_state = dataclasses.replace(state, history=view["history"], segments=view["segments"][:-1])
    return _record(b.exp, dataclasses.replace(run, sched=b.sched), branch_state, segment, None,
                   {**dict(provenance or {}), "trunk": b.exp.get("trunk")})
