"""One training loop for any model in the contract, on the CPU or a GPU.

    train_run(experiment, model=..., data=..., trainer=...) -> the runs/<id>.json record

Read it top to bottom, like nanoGPT's train.py. ``train_run`` sets up (device, model, FLOPs per
token, schedule, optimizer; the last checkpoint when there is one), then every step is

    lr for this step -> a batch -> forward, loss, backward, clip, optimizer step
    -> divergence check -> held-out loss every ``eval_every`` steps -> checkpoint when due

and the run ends with the held-out loss over the whole held-out split and its record.

Data: any :class:`flops_fit.data.base.DataSource` (``train_batch(batch_size, generator) -> (x, y)``,
``eval_batches(batch_size)``, ``examples_per_batch(batch_size)``, ``data_unit``). A source that
keeps its own position may add ``state_dict()`` / ``load_state_dict(state)``; checkpoints save it.

What the loop guarantees:

* the same config and seed give identical losses on the CPU, whoever built the model: torch is
  seeded with ``trainer.seed`` and a model with ``reset_parameters()`` is re-initialised under it
  (a model built on the meta device is materialised on the training device first);
* AdamW over the model's ``param_groups(lr, weight_decay)`` hook (μP) or, without one, weight decay
  on matrices only; fused kernels on CUDA and the CPU;
* ``trainer.batch_size`` examples a step, or fewer where the plan entry's ``min_steps`` (grid.min_steps,
  docs/short-runs.md) asks for more steps (:func:`run_batch`; the record says ``batch_size``, ``steps``,
  ``warmup``);
* ``steps = ceil(tokens / examples_per_batch)``; linear warmup over ``warmup_frac`` of them, then
  cosine decay reaching ``min_lr_ratio x lr`` at the last step; gradient-norm clipping; an experiment
  with ``schedule: wsd`` (a shared-trunk WSD plan, docs/wsd.md) holds the peak instead and decays over
  its last ``cooldown_frac`` of steps (:class:`Schedule`);
* one loss function (``trainer.loss`` or ``loss_fn=``) for training and held-out evaluation;
* held-out loss every ``eval_every_frac`` of the run (``history``) and a final ``loss``;
* a run whose training or held-out loss is not finite or exceeds ``diverge_factor x`` the first
  training loss stops with status ``diverged``;
* with ``checkpoint_path``, a checkpoint every ``checkpoint_every`` steps / ``checkpoint_minutes``
  minutes, and a run that finds one continues from it (on the CPU, to the same final loss);
* GPU: bf16 autocast (``dtype=bfloat16``), or fp16 autocast with gradient scaling
  (``dtype=float16``), TF32 matmuls, optional ``torch.compile``, pinned non-blocking copies;
* several devices (``trainer.devices``, or torchrun): DistributedDataParallel, each rank on its
  slice of the same global batch, so steps, tokens, FLOPs and the schedule do not depend on how
  many there are; only rank 0 writes checkpoints and heartbeats (:mod:`flops_fit.training.distributed`).

Throughput figures (``tokens_per_s``, ``achieved_flops_per_s``) use the training time only
(evaluation and checkpoints excluded); achieved FLOP/s counts ``measured`` FLOPs (what the hardware
executes) when the model gives them, else the run's convention.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from flops_fit.artifacts import now_iso
from flops_fit.errors import FlopsFitError
from flops_fit.flops import count_params, flops_by_convention
from flops_fit.planning import batch_basis_tokens, batch_limit, run_batch_size, units_per_example_of
from flops_fit.training import checkpoints
from flops_fit.training.config import FINGERPRINT_SETTINGS, TrainerConfig
from flops_fit.training.distributed import World
from flops_fit.training.loss import call_model, resolve_loss, targets_in
from flops_fit.training.memory import hold_freed_memory
from flops_fit.training.optim import (SCHEDULES, build_optimizer, cooldown_start, lr_factor, set_lr,
                                      warmup_steps_for, wsd_lr_factor)
from flops_fit.training.record import history_point, run_record
from flops_fit.training.status import Heartbeat
from flops_fit.units import human

_WARNED: set[str] = set()


def train_run(
    experiment: Mapping[str, Any],
    *,
    model: torch.nn.Module,
    data,
    trainer: Mapping[str, Any] | TrainerConfig,
    flops_convention: str = "6nd",
    loss_fn: Callable | None = None,
    checkpoint_path=None,
    provenance: Mapping[str, Any] | None = None,
    progress: bool = True,
    position: int = 0,
    heartbeat_path=None,
) -> dict:
    """Train ``model`` on ``data`` for ``experiment['tokens']`` data units; return the run record.

    ``loss_fn(output, targets)`` overrides ``trainer.loss``. With ``checkpoint_path`` the run saves
    checkpoints there and continues from one it finds (the caller deletes it once the record is
    safe: :func:`flops_fit.training.checkpoints.discard`). ``provenance`` adds keys to the record.
    With ``heartbeat_path`` the run keeps a heartbeat there (:mod:`flops_fit.training.status`).
    Under torch.distributed every rank calls this alike; rank 0's record is the run's.
    """
    segment = Segment()
    run = setup(experiment, model, data, trainer, flops_convention, loss_fn, checkpoint_path)
    state = (_resume(run) if run.ckpt is not None else None) or RunState()
    segment.start_step = state.step
    if heartbeat_path is not None and run.world.is_main:
        run.heartbeat = Heartbeat(heartbeat_path, experiment, steps=run.sched.steps, per_batch=run.sched.per_batch,
                                  world_size=run.world.size)
        run.heartbeat.checkpoint_step = state.step or None  # resumed from a checkpoint at this step
        run.heartbeat.beat(state, live=False)

    show = progress and run.world.is_main
    bar = _Bar(experiment, run, position, enabled=show and run.cfg.progress, done=state.step)
    try:
        train_steps(run, state, segment, bar)
        if run.heartbeat is not None:
            run.heartbeat.beat(state, phase="final evaluation", live=False)
        final_loss = final_evaluation(run, state)
    finally:
        bar.close()

    record = _record(experiment, run, state, segment, final_loss, provenance)
    if show:
        _summary(record, stream_bar=bool(run.cfg.progress))
    return record


def measure_throughput(
    experiment: Mapping[str, Any],
    *,
    model: torch.nn.Module,
    data,
    trainer: Mapping[str, Any] | TrainerConfig,
    flops_convention: str = "6nd",
    loss_fn: Callable | None = None,
    steps: int = 3,
) -> float:
    """FLOP/s (under the run's convention) of ``steps`` training steps of this run, after one warm-up
    step; nothing is recorded or saved. Without ``torch.compile`` (compiling alone takes a minute)."""
    cfg = dataclasses.replace(TrainerConfig.from_mapping(trainer), compile=False)
    run = setup(experiment, model, data, cfg, flops_convention, loss_fn, None)
    params = list(run.model.parameters())
    for i in range(steps + 1):
        if i == 1:
            run.rt.sync()
            t0 = time.perf_counter()
        x, y = next_batch(run)
        train_step(run.step_model, run.optimizer, run.scaler, run.loss_fn, x, y, run.rt, params, cfg.grad_clip)
    run.rt.sync()
    return steps * run.sched.per_batch * run.fpt.run / max(time.perf_counter() - t0, 1e-9)


# -------------------------------------------------------------------------------------------------
# the loop


def train_steps(run: "Setup", state: "RunState", segment: "Segment", bar: "_Bar") -> None:
    """Steps from ``state.step`` to the end of the schedule, or until the run diverges."""
    cfg, sched = run.cfg, run.sched
    params = list(run.model.parameters())
    watch = LossWatch(sched.check_every, cfg.diverge_factor)
    state.clock = time.perf_counter()
    try:
        while state.step < sched.steps:
            set_lr(run.optimizer, sched.lr_factor(state.step, cfg.min_lr_ratio))
            x, y = next_batch(run)
            loss = train_step(run.step_model, run.optimizer, run.scaler, run.loss_fn, x, y, run.rt, params,
                              cfg.grad_clip)
            loss = run.world.mean(loss)  # every rank judges divergence on the same (global) loss
            state.step += 1
            last = state.step == sched.steps
            eval_now = state.step % sched.eval_every == 0 and not last
            save_now = (run.ckpt is not None and run.ckpt.enabled and not last
                        and run.world.checkpoint_due(run.ckpt, state.step, sched.check_every))
            if watch.add(loss, state, force=last or eval_now or save_now):
                return
            if eval_now:
                with off_the_clock(state, run.rt):
                    held_out = evaluate(run.eval_model, run.data, sched.eval_batch_size, run.loss_fn, run.rt,
                                        sched.history_batches, run.world)
                state.history.append(history_point(state.step * sched.per_batch, run.fpt.run, held_out))
                if not math.isfinite(held_out) or held_out > cfg.diverge_factor * state.first_loss:
                    state.stop("diverged", f"held-out loss {held_out:.4g} at step {state.step}")
                    return
            if save_now and run.world.is_main:
                with off_the_clock(state, run.rt):
                    _save(run, state, segment)
                if run.heartbeat is not None:
                    run.heartbeat.checkpoint_step = state.step
            bar.advance(state)
            if run.heartbeat is not None and (eval_now or save_now or run.heartbeat.due()):
                run.heartbeat.beat(state)
    finally:
        run.rt.sync()
        state.train_time += time.perf_counter() - state.clock


def next_batch(run: "Setup"):
    """This rank's share of the next global batch, on the device (the whole batch on one device)."""
    return run.rt.to_device(*run.world.local(run.data.train_batch(run.sched.batch_size, run.generator)))


def train_step(model, optimizer, scaler, loss_fn, x, y, rt: "Runtime", params, grad_clip: float) -> torch.Tensor:
    """One optimizer step on one batch: forward, loss, backward, clip, update. Returns the loss (detached)."""
    with rt.autocast():
        output = call_model(model, x, y, loss_fn)
    loss = loss_fn(output, y)
    if scaler is None:
        loss.backward()
    else:  # float16: scale the loss so small gradients survive, unscale before clipping
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


@torch.no_grad()
def evaluate(model, data, batch_size: int, loss_fn, rt: "Runtime", max_batches: int | None = None,
             world: World = World()) -> float:
    """Mean held-out loss over ``data.eval_batches`` (the first ``max_batches`` when given), each
    batch weighted by its number of targets. Several ranks share the batches out and add up."""
    return evaluate_split(model, data, batch_size, loss_fn, rt, None, world, stop=max_batches)[0]


@torch.no_grad()
def evaluate_split(model, data, batch_size: int, loss_fn, rt: "Runtime", head: int | None = None,
                   world: World = World(), stop: int | None = None) -> tuple[float, float | None, int]:
    """``(mean held-out loss over the first stop batches (all when None), the same over the first
    head batches (None when head is None), the number of batches evaluated)`` from one pass: the whole
    split's final loss and the history's (``Schedule.history_batches``) come from the same forward passes."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64, device=rt.device)  # loss x targets, targets; the same for head; batches
    try:
        for i, (x, y) in enumerate(data.eval_batches(batch_size)):
            if stop and i >= stop:
                break
            if not world.owns(i):
                continue
            x, y = rt.to_device(x, y)
            with rt.autocast():
                output = call_model(model, x, y, loss_fn)
            n = targets_in(y)
            weighted = loss_fn(output, y).double() * n
            sums[0] += weighted
            sums[1] += n
            sums[4] += 1
            if head and i < head:
                sums[2] += weighted
                sums[3] += n
    finally:
        model.train(was_training)
    total, count, head_total, head_count, batches = world.sum(sums).tolist()
    if count == 0:
        raise FlopsFitError("the dataset's held-out split is empty (eval_batches yielded nothing)")
    return float(total / count), (float(head_total / head_count) if head and head_count else None), int(batches)


def final_evaluation(run: "Setup", state: "RunState") -> float | None:
    """The held-out loss over the whole held-out split, the run's result (None unless completed).

    Its history point is measured like the others: on the first ``Schedule.history_batches`` batches
    when those are not the whole split (from the same pass), so that a loss curve is on one set of data
    throughout."""
    if state.status != "completed":
        return None
    loss, capped, state.held_out_batches = evaluate_split(run.eval_model, run.data, run.sched.eval_batch_size,
                                                          run.loss_fn, run.rt, run.sched.history_batches, run.world)
    if not math.isfinite(loss):
        state.stop("diverged", "non-finite final held-out loss")
        return None
    state.history.append(history_point(state.step * run.sched.per_batch, run.fpt.run,
                                       loss if capped is None else capped))
    return loss


# -------------------------------------------------------------------------------------------------
# setup: device, model, FLOPs, schedule


@dataclass
class Runtime:
    """Where the run trains and in which precision."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None: plain float32

    @classmethod
    def for_config(cls, cfg: TrainerConfig, world: World = World()) -> "Runtime":
        hold_freed_memory()  # no page faults on every step's fresh tensors (training/memory.py)
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        device = world.device(resolve_device(cfg.device))
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return cls(device, {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.amp_dtype])

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_device(self, x, y):
        """Move a batch to the device (pinned, non-blocking on CUDA)."""
        if self.device.type == "cuda":
            if x.device.type == "cpu":
                x, y = x.pin_memory(), y.pin_memory()
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"warning: {message}", file=sys.stderr, flush=True)


def resolve_device(requested: str | None) -> torch.device:
    requested = (requested or "auto").lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            _warn_once("no-cuda", f"trainer.device={requested} but CUDA is not available here; training on the CPU instead")
            return torch.device("cpu")
        return torch.device(requested)
    if requested in ("cpu", "mps"):
        return torch.device(requested)
    raise FlopsFitError(f"trainer.device={requested!r} must be auto, cpu or cuda")


def _data_unit(model, data) -> str:
    data_unit = str(getattr(data, "data_unit", None) or getattr(model, "data_unit", "tokens"))
    model_unit = str(getattr(model, "data_unit", data_unit))
    if model_unit != data_unit:
        raise FlopsFitError(f"model counts {model_unit} but the dataset yields {data_unit}")
    return data_unit


def _prepare_model(model: torch.nn.Module, device: torch.device, seed: int) -> torch.nn.Module:
    """Seed, materialise a meta-device model, re-initialise under the seed, move to the device."""
    torch.manual_seed(seed)
    on_meta = any(p.is_meta for p in model.parameters()) or any(b.is_meta for b in model.buffers())
    has_reset = callable(getattr(model, "reset_parameters", None))
    if on_meta:
        if not has_reset:
            raise FlopsFitError(
                f"{type(model).__name__} was built on the meta device but has no reset_parameters() to initialise it"
            )
        model.to_empty(device=device)
    if has_reset:
        model.reset_parameters()
    return model.to(device).train()


@dataclass(frozen=True)
class FlopsPerUnit:
    """Training FLOPs per token (image): under every convention, the run's, and the throughput's."""

    by_convention: dict
    run: float  # under the run's convention: the record's flops
    hardware: float  # "measured" when the model gives it: achieved FLOP/s


_FLOPS_SEEN: dict = {}  # (model class, its config, unit) -> FLOPs per unit by convention


def _flops_by_convention(model, data_unit: str) -> dict:
    """``flops_by_convention``, computed once per model class and config in a process: the ``measured``
    count traces a meta twin (0.2 s a size, 2 s the first time), a visible share of a small run's setup."""
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return flops_by_convention(model, data_unit)
    key = (type(model).__module__, type(model).__qualname__, repr(config), data_unit)
    if key not in _FLOPS_SEEN:
        _FLOPS_SEEN[key] = flops_by_convention(model, data_unit)
    return dict(_FLOPS_SEEN[key])


def _flops_per_unit(model, data_unit: str, convention: str, experiment: Mapping) -> FlopsPerUnit:
    fpt = _flops_by_convention(model, data_unit)
    if convention not in fpt:
        planned = experiment.get("flops_per_token")
        if planned is None:
            raise FlopsFitError(
                f"{type(model).__name__} cannot give FLOPs under convention {convention!r} "
                f"(it gives {sorted(fpt)}) and the experiment has no flops_per_token"
            )
        fpt[convention] = float(planned)
    return FlopsPerUnit(fpt, fpt[convention], fpt.get("measured", fpt[convention]))


@dataclass(frozen=True)
class Schedule:
    """How long the run is and when things happen, in optimizer steps."""

    steps: int  # ceil(planned data units / units per batch)
    per_batch: int  # data units (tokens or images) per batch
    batch_size: int  # examples per optimizer step: trainer.batch_size, or less under grid.min_steps
    warmup: int
    eval_every: int
    eval_batch_size: int
    check_every: int  # read the training loss every this many steps (a GPU sync)
    kind: str = "cosine"  # the learning-rate schedule: cosine | wsd | constant (a WSD trunk)
    decay_start: int | None = None  # wsd: the first cooldown step; constant: steps (never)
    history_batches: int | None = None  # held-out batches per history point (None: the whole split)

    @classmethod
    def for_run(cls, planned: float, data, cfg: TrainerConfig, data_unit: str, device: torch.device,
                experiment: Mapping | None = None, workers: int = 1) -> "Schedule":
        """The schedule of a run of ``planned`` data units; ``experiment`` (its plan.json entry) may ask for
        ``schedule: wsd`` (with ``cooldown_frac`` and ``warmup_basis_tokens``) or ``constant`` (a trunk), and
        for at least ``min_steps`` steps (:func:`run_batch`; ``workers`` share each batch)."""
        batch = run_batch(experiment or {}, data, cfg, workers)
        per_batch = int(data.examples_per_batch(batch))
        if per_batch <= 0:
            raise FlopsFitError(f"dataset gives {per_batch} {data_unit} per batch of {batch}")
        steps = max(1, math.ceil(planned / per_batch))
        eval_every = max(1, int(round(cfg.eval_every_frac * steps))) if cfg.eval_every_frac else steps
        check_every = 1 if device.type == "cpu" else 10
        eval_batch_size = int(cfg.eval_batch_size or cfg.batch_size)
        history_batches = cfg.history_batches((experiment or {}).get("eval_basis_tokens"),
                                              data.examples_per_batch(eval_batch_size))
        common = dict(steps=steps, per_batch=per_batch, batch_size=batch, eval_every=eval_every,
                      eval_batch_size=eval_batch_size, check_every=check_every, history_batches=history_batches)
        kind = str((experiment or {}).get("schedule") or "cosine")
        if kind == "cosine":
            return cls(warmup=warmup_steps_for(steps, cfg.warmup_frac), **common)
        if kind not in SCHEDULES:
            raise FlopsFitError(f"experiment {(experiment or {}).get('id')} has schedule={kind!r}; "
                                f"known: {', '.join(SCHEDULES)} (re-run ff-plan)")
        # WSD and its trunk: the warmup is that of the trunk's shortest run, so every run of one trunk
        # (and the trunk) warms up alike, and the step's factor before the cooldown ignores the length
        basis = (experiment or {}).get("warmup_basis_tokens") or planned
        warmup = warmup_steps_for(max(1, math.ceil(float(basis) / per_batch)), cfg.warmup_frac)
        if kind == "constant":
            return cls(warmup=warmup, kind=kind, decay_start=steps, **common)
        if experiment.get("cooldown_frac") is None:
            raise FlopsFitError(f"experiment {experiment.get('id')} has schedule=wsd but no cooldown_frac (re-run ff-plan)")
        decay_start = cooldown_start(steps, float(experiment["cooldown_frac"]))
        return cls(warmup=max(1, min(warmup, decay_start)), kind=kind, decay_start=decay_start, **common)

    def lr_factor(self, step: int, min_lr_ratio: float) -> float:
        """Multiplier of each group's peak learning rate for update ``step``."""
        if self.kind == "cosine":
            return lr_factor(step, self.steps, self.warmup, min_lr_ratio)
        return wsd_lr_factor(step, self.steps, self.warmup, self.decay_start, min_lr_ratio)


def run_batch(experiment: Mapping, data, cfg: TrainerConfig, workers: int = 1) -> int:
    """Examples per optimizer step of ``experiment``'s run: ``trainer.batch_size``, or, when its plan entry
    sets ``min_steps`` (grid.min_steps), the largest power of two below it that still gives the sweep's shortest
    run (``batch_basis_tokens``) that many steps (planning.batch_limit), a multiple of ``workers``."""
    min_steps = experiment.get("min_steps")
    if not min_steps:
        return cfg.batch_size
    per_example = units_per_example_of(data)
    if per_example is None:
        _warn_once("min-steps-loader", f"grid.min_steps={min_steps}: the data sets its own batch (a DataLoader), "
                                       f"so every run trains at it, whatever its steps")
        return cfg.batch_size
    return run_batch_size(cfg.batch_size, batch_limit(batch_basis_tokens(experiment), per_example, min_steps),
                          workers)


@dataclass
class Setup:
    """Everything a run sets up before its first step."""

    cfg: TrainerConfig
    rt: Runtime
    model: torch.nn.Module
    step_model: torch.nn.Module  # the model, or its torch.compile'd / DistributedDataParallel twin (same parameters)
    optimizer: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler for float16, else None
    generator: torch.Generator  # the data order
    data: Any
    loss_fn: Callable
    sched: Schedule
    fpt: FlopsPerUnit
    flops_convention: str
    data_unit: str
    ckpt: checkpoints.Checkpointer | None
    fingerprint: dict  # what a checkpoint must agree with to be resumed
    world: World = field(default_factory=World)  # the ranks training this run together (one: just this process)
    eval_model: torch.nn.Module | None = None  # the held-out loss's model (the step model on one device)
    heartbeat: Heartbeat | None = None


def setup(experiment, model, data, trainer, flops_convention, loss_fn, checkpoint_path) -> Setup:
    """Settings, device, model (seeded, on the device), FLOPs per unit, schedule, optimizer, data order."""
    cfg = TrainerConfig.from_mapping(trainer)
    world = World.current()
    rt = Runtime.for_config(cfg, world)
    loss_fn = resolve_loss(cfg.loss if loss_fn is None else loss_fn)
    data_unit = _data_unit(model, data)
    model = _prepare_model(model, rt.device, cfg.seed)
    fpt = _flops_per_unit(model, data_unit, flops_convention, experiment)
    sched = Schedule.for_run(float(experiment["tokens"]), data, cfg, data_unit, rt.device, experiment, world.size)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2),
                                device_type=rt.device.type)
    scaler = torch.amp.GradScaler(rt.device.type) if rt.amp_dtype == torch.float16 else None
    ckpt = None if checkpoint_path is None else \
        checkpoints.Checkpointer(checkpoint_path, cfg.checkpoint_every, cfg.checkpoint_minutes)
    step_model, eval_model = world.models(model, compile=cfg.compile)
    return Setup(cfg, rt, model, step_model, optimizer, scaler,
                 torch.Generator().manual_seed(cfg.seed), data, loss_fn, sched, fpt, flops_convention, data_unit,
                 ckpt, _fingerprint(experiment, cfg, sched, model, loss_fn), world, eval_model)


# -------------------------------------------------------------------------------------------------
# state, divergence, checkpoints


@dataclass
class RunState:
    """Where the run is: all a checkpoint needs besides the model, optimizer and RNGs."""

    step: int = 0
    history: list = field(default_factory=list)
    first_loss: float | None = None
    last_loss: float = math.nan
    train_time: float = 0.0  # seconds of training steps (evaluation and checkpoints excluded)
    status: str = "completed"
    reason: str | None = None
    resumed_from_step: int = 0
    segments: list = field(default_factory=list)  # the earlier processes' segments
    clock: float = 0.0  # perf_counter when training time last resumed
    held_out_batches: int | None = None  # the held-out split's batches, counted by the final evaluation

    def stop(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason

    def to_checkpoint(self) -> dict:
        return {k: getattr(self, k) for k in ("step", "history", "first_loss", "last_loss", "train_time", "segments")}


@contextlib.contextmanager
def off_the_clock(state: RunState, rt: Runtime):
    """Time spent inside is not training time (evaluation, checkpoints)."""
    rt.sync()
    state.train_time += time.perf_counter() - state.clock
    try:
        yield
    finally:
        state.clock = time.perf_counter()


class LossWatch:
    """Stops a run whose training loss is not finite or exceeds ``diverge_factor x`` the first one.

    Losses stay on the device and are read every ``check_every`` steps (each step on the CPU; a
    read is a GPU sync), and whenever ``force`` says the state must be current.
    """

    def __init__(self, check_every: int, diverge_factor: float):
        self.check_every, self.factor = check_every, float(diverge_factor or math.inf)
        self.pending: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor, state: RunState, force: bool) -> bool:
        """Record one step's loss; True when the run has diverged (``state`` says why)."""
        self.pending.append(loss)
        if not (force or state.first_loss is None or state.step % self.check_every == 0):
            return False
        values = torch.stack(self.pending).float().cpu().tolist()
        self.pending.clear()
        if state.first_loss is None:
            state.first_loss = values[0]
            if not math.isfinite(state.first_loss):
                state.stop("diverged", f"non-finite loss at step {state.step}")
                return True
        state.last_loss = values[-1]
        bad = next((v for v in values if not math.isfinite(v) or v > self.factor * state.first_loss), None)
        if bad is not None:
            state.stop("diverged", f"training loss {bad:.4g} at step {state.step} (first loss "
                                   f"{state.first_loss:.4g}, diverge_factor {self.factor:g})")
            return True
        return False


def _fingerprint(experiment, cfg: TrainerConfig, sched: Schedule, model, loss_fn) -> dict:
    """What a checkpoint must agree with to be resumed: the run, its schedule and its optimizer."""
    fingerprint = {
        "run_id": experiment.get("id"),
        "params": count_params(model)[0],
        "steps": sched.steps,
        "per_batch": sched.per_batch,
        "warmup": sched.warmup,
        "eval_every": sched.eval_every,
        "loss": _describe(loss_fn),
        **{k: getattr(cfg, k) for k in FINGERPRINT_SETTINGS},
    }
    if sched.kind != "cosine":  # (cosine checkpoints keep the fingerprint they always had)
        fingerprint.update(schedule=sched.kind, decay_start=sched.decay_start)
    if sched.history_batches is not None:  # (as do those whose history is on the whole split)
        fingerprint["history_batches"] = sched.history_batches
    return fingerprint


def _describe(fn) -> str:
    """A name for a loss function that is the same in every process."""
    if isinstance(fn, functools.partial):
        return f"{_describe(fn.func)}({', '.join(f'{k}={v!r}' for k, v in sorted(fn.keywords.items()))})"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def checkpoint_payload(run: Setup, state: RunState, segment: Segment) -> dict:
    """What a checkpoint of ``run`` at ``state`` holds (the format is docs/checkpoints.md)."""
    return {
        "fingerprint": run.fingerprint,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "grad_scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "rng": checkpoints.rng_states(run.generator),
        "data": run.data.state_dict() if callable(getattr(run.data, "state_dict", None)) else None,
        "state": {**state.to_checkpoint(), "segments": state.segments + [segment.as_dict(state.step)]},
        "saved": now_iso(),
    }


def _save(run: Setup, state: RunState, segment: Segment) -> None:
    """Write the run's checkpoint."""
    checkpoints.save(run.ckpt.path, checkpoint_payload(run, state, segment))
    run.ckpt.saved()


def _resume(run: Setup) -> RunState | None:
    """Load the run's checkpoint into ``run`` and return its state; None when there is none to use."""
    payload = checkpoints.load(run.ckpt.path)
    if payload is None:
        return None
    if payload.get("fingerprint") != run.fingerprint:
        old = payload.get("fingerprint") or {}
        diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in run.fingerprint.items() if old.get(k) != v)
        _warn_once(f"ckpt-{run.ckpt.path}", f"{run.ckpt.path} was written by a different run setup ({diff}); "
                                            f"starting from step 0")
        return None
    run.model.load_state_dict(payload["model"])
    kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in run.optimizer.param_groups]
    run.optimizer.load_state_dict(payload["optimizer"])
    for g, flags in zip(run.optimizer.param_groups, kernels):  # this device's kernels, not the saver's
        g.update(flags)
    if run.scaler is not None and payload.get("grad_scaler"):
        run.scaler.load_state_dict(payload["grad_scaler"])
    if payload.get("data") is not None and callable(getattr(run.data, "load_state_dict", None)):
        run.data.load_state_dict(payload["data"])
    checkpoints.set_rng_states(payload["rng"], run.generator)
    state = RunState(**payload["state"])
    state.resumed_from_step = state.step
    return state


# -------------------------------------------------------------------------------------------------
# the record and the progress display


@dataclass
class Segment:
    """One process's stretch of a run (a resumed run has several)."""

    started: str = field(default_factory=now_iso)
    t0: float = field(default_factory=time.perf_counter)
    start_step: int = 0

    def as_dict(self, end_step: int) -> dict:
        return {"started": self.started, "start_step": self.start_step, "end_step": end_step,
                "wall_time_s": time.perf_counter() - self.t0}


def _record(experiment, run: Setup, state: RunState, segment: Segment, final_loss, provenance) -> dict:
    segments = state.segments + [segment.as_dict(state.step)]
    tokens = state.step * run.sched.per_batch
    rate = tokens / state.train_time if state.train_time > 0 else 0.0
    devices = run.world.size
    params, non_emb = count_params(run.model)
    cfg = run.cfg
    return run_record(
        experiment,
        status=state.status,
        trainer=cfg.kind if cfg.kind != "mock" else "local",
        flops_convention=run.flops_convention,
        data_unit=run.data_unit,
        params=params,
        non_embedding_params=non_emb,
        tokens=int(tokens),
        flops_per_token=run.fpt.by_convention,
        loss=final_loss,
        history=state.history,
        reason=state.reason,
        device=str(run.rt.device),
        threads=torch.get_num_threads() if run.rt.device.type == "cpu" else None,
        schedule=run.sched.kind,
        history_batches=_history_batches(run.sched, state),
        dtype=cfg.amp_dtype,
        seed=cfg.seed,
        lr=cfg.lr,
        batch_size=run.sched.batch_size,
        trainer_settings=cfg.run_settings(),
        steps=state.step,
        warmup=run.sched.warmup,
        resumed_from_step=state.resumed_from_step,
        segments=segments,
        wall_time_s=sum(s["wall_time_s"] for s in segments),
        train_time_s=state.train_time,
        tokens_per_s=rate,
        achieved_flops_per_s=rate * run.fpt.hardware,
        world_size=devices,
        tokens_per_s_per_device=rate / devices,
        achieved_flops_per_s_per_device=rate * run.fpt.hardware / devices,
        **dict(provenance or {}),
    )


def _history_batches(sched: Schedule, state: RunState) -> int | None:
    """The held-out batches each history point evaluated; None when that was the whole split."""
    k, whole = sched.history_batches, state.held_out_batches
    return None if k is None or (whole is not None and k >= whole) else k


class _Bar:
    """A tqdm bar per run: data units, loss, units/s and achieved FLOP/s."""

    def __init__(self, experiment, run: Setup, position: int, enabled: bool, done: int):
        from tqdm.auto import tqdm

        self.run, self.enabled = run, enabled
        self.unit = "tok" if run.data_unit == "tokens" else "img"
        per_batch = run.sched.per_batch
        self.tqdm = tqdm(total=run.sched.steps * per_batch, initial=done * per_batch,
                         desc=str(experiment.get("id", "run")), unit=self.unit, unit_scale=True, position=position,
                         leave=False, disable=not enabled, dynamic_ncols=True, mininterval=0.5)

    def advance(self, state: RunState) -> None:
        if not self.enabled:
            return
        sched = self.run.sched
        self.tqdm.update(sched.per_batch)
        if state.step % sched.check_every == 0:
            elapsed = state.train_time + (time.perf_counter() - state.clock)
            rate = state.step * sched.per_batch / max(elapsed, 1e-9)
            self.tqdm.set_postfix_str(f"loss={state.last_loss:.3f} {human(rate)}{self.unit}/s "
                                      f"{human(rate * self.run.fpt.hardware)}FLOP/s", refresh=False)

    def close(self) -> None:
        self.tqdm.close()


def _summary(r: dict, stream_bar: bool) -> None:
    unit = "tok" if r["data_unit"] == "tokens" else "img"
    loss = f"{r['loss']:.4f}" if r.get("loss") is not None else "n/a"
    line = (
        f"[{r['id']}] {r['status']}: loss {loss}, {human(r['params'])} params, {human(r['tokens'])} {unit} in "
        f"{r['steps']} steps, {r['wall_time_s']:.1f} s, {human(r['tokens_per_s'])} {unit}/s, "
        f"{human(r['achieved_flops_per_s'])}FLOP/s on {r['device']}"
    )
    if r.get("world_size", 1) > 1:
        line += f" x {r['world_size']} ({human(r['tokens_per_s_per_device'])} {unit}/s per device)"
    if r.get("resumed_from_step"):
        line += f" (resumed from step {r['resumed_from_step']})"
    if r.get("reason"):
        line += f" ({r['reason']})"
    if stream_bar:
        from tqdm.auto import tqdm

        tqdm.write(line)
    else:
        print(line, flush=True)
