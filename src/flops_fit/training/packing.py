"""Packing: several small CPU runs trained at once, each in its own process with a share of the cores.

A small model cannot keep a multi-core CPU busy: its step is a chain of small operators whose
threads mostly wait for each other (docs/performance.md). Two such runs in two processes with one
core each finish sooner than the same two runs one after the other with both cores, and each run
computes exactly what it computes alone: a worker process builds the run from plan.json, seeds it
with ``trainer.seed`` and trains it through the same ``Sweep.run`` path (per-run lock, record
re-read, atomic record, checkpoint kept or discarded, resume) as a sequential sweep.

``trainer.pack`` chooses: ``1`` one run at a time (as before), ``k`` every run packed ``k`` at a
time with ``cores // k`` threads each, ``null`` (the default) from a short probe: for the model
sizes of the sweep it times a few training steps with every core and with one core, and packs a
size when ``cores`` single-core runs beat one whole-machine run by :data:`MARGIN` (the probed
sizes are searched by bisection, assuming larger models use threads better, so a sweep probes a
few sizes, not all). Runs of larger sizes then train one at a time with the whole machine.
Packing is skipped when the packable work is too short to pay for starting the workers
(:data:`MIN_PACKED_SECONDS`), on a GPU, and for sweeps given Python objects (the workers rebuild
the model and data from plan.json).

Worker processes are started with ``spawn`` (no fork of a threaded parent) and die with the parent
(Linux ``PR_SET_PDEATHSIG``): killing ``ff-train`` kills its runs, whose checkpoints and the
records already written are intact, so re-running it resumes as a sequential sweep would.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from flops_fit.errors import FlopsFitError
from flops_fit.planning import unit_flops
from flops_fit.training.workload import unit_seconds
from flops_fit.units import fmt_duration

MARGIN = 1.15  # pack when `workers` one-core runs are this much faster than one run on every core
MIN_PACKED_SECONDS = 30.0  # ... and the packed runs would take at least this long one at a time
PROBE_STEPS = 2  # timed steps per probe (after one untimed), at least PROBE_SECONDS of them
PROBE_SECONDS = 0.2
CLOSE = 1.3  # probes whose per-thread speed-up is within this factor of MARGIN are measured twice


@dataclass
class Packing:
    """How a sweep's tasks are trained: ``packed`` ones ``workers`` at a time with ``threads`` threads
    each, then the ``alone`` ones one at a time with the whole machine."""

    workers: int
    threads: int
    packed: list = field(default_factory=list)
    alone: list = field(default_factory=list)
    probes: dict = field(default_factory=dict)  # size -> {"whole": steps/s, "split": steps/s}
    expected_s: float | None = None  # training time so packed (evaluations not included), when estimated

    def describe(self) -> str:
        probed = ", ".join(f"{s}: {p['split'] * self.workers / p['whole']:.2f}x" for s, p in sorted(self.probes.items()))
        expected = "" if self.expected_s is None else \
            f"; expected training time so packed about {fmt_duration(self.expected_s)} (evaluations not included)"
        return (f"packing {len(self.packed)} task(s) {self.workers} at a time ({self.threads} thread(s) each), "
                f"{len(self.alone)} with the whole machine" + (f"; probed packed/whole speed-up {probed}" if probed else "")
                + expected)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_packing(tasks: list, trainer, *, quiet: bool = False, note: Callable[[str], None] = print,
                   rates: Mapping[float, float] | None = None) -> Packing | None:
    """The packing of ``tasks`` (sweep.Task) for ``trainer`` (a sweep.RealTrainer), or None: one at a time.

    ``rates`` (``{params: FLOP/s}`` with the whole machine, the sweep's throughput probe) turn into the
    expected training time of the packing chosen (:func:`packed_seconds`)."""
    from flops_fit.training.loop import resolve_device

    cfg = trainer.cfg
    if cfg.pack == 1 or not tasks or not trainer.packable or resolve_device(cfg.device).type != "cpu":
        return None
    cores = available_cores()
    if cfg.pack is not None:  # packed as asked, every task
        workers = min(int(cfg.pack), len(tasks))
        return Packing(workers, max(1, cores // int(cfg.pack)), _longest_first(tasks)) if workers > 1 else None
    if cores < 2 or len(tasks) < 2:
        return None
    whole_threads = int(cfg.threads or cores)
    params = {t.size: int(t.runs[0]["params"]) for t in tasks}
    sizes = sorted(params, key=params.get)
    # the whole sweep at the smallest model's speed (the slowest per FLOP) is an upper bound on its time:
    # a sweep that short is not worth probing further
    first = probe(trainer, sizes[0], [whole_threads])[whole_threads]
    if sum(_task_seconds(t, trainer, {sizes[0]: {"whole": first}}, params) for t in tasks) < MIN_PACKED_SECONDS:
        return None
    probes: dict = {}

    def packs(size) -> bool:
        if size not in probes:
            rates = probe(trainer, size, [whole_threads, 1])
            probes[size] = {"whole": rates[whole_threads], "split": rates[1]}
        p = probes[size]
        return cores * p["split"] >= MARGIN * p["whole"]

    lo, hi = 0, len(sizes)  # bisect: sizes[:lo] pack, sizes[hi:] do not
    while lo < hi:
        mid = (lo + hi) // 2
        if packs(sizes[mid]):
            lo = mid + 1
        else:
            hi = mid
    small = set(sizes[:lo])
    packed = [t for t in tasks if t.size in small]
    alone = [t for t in tasks if t.size not in small]
    plan = Packing(cores, 1, _longest_first(packed), alone, probes)
    seconds = sum(_task_seconds(t, trainer, probes, params) for t in packed)
    if len(packed) < 2 or seconds < MIN_PACKED_SECONDS:
        if not quiet and probes:
            note(f"training one run at a time ({len(packed)} small task(s), ~{seconds:.0f} s of them: "
                 f"too little to pack)")
        return None
    if rates:
        if sizes[0] not in probes and packed:  # the smallest model gains the most: its one-thread speed too
            probes[sizes[0]] = {"whole": first, "split": probe(trainer, sizes[0], [1])[1]}
        plan.expected_s = packed_seconds(plan, rates, params)
    if not quiet:
        note(plan.describe())
    return plan


def packed_seconds(plan: Packing, rates: Mapping[float, float], params: Mapping[Any, int]) -> float:
    """The training time of ``plan``: each task's whole-machine time (workload.unit_seconds at ``rates``)
    slowed by the per-run speed of one thread of the nearest probed size, the packed tasks dealt longest
    first to whichever worker frees first, then the ``alone`` tasks one after another."""
    def one_thread_slowdown(task) -> float:  # a task on one of `workers` threads, against the whole machine
        near = _nearest_probed(plan.probes, params, task.size)
        return plan.probes[near]["whole"] / plan.probes[near]["split"]

    free = [0.0] * plan.workers
    for task in plan.packed:
        i = free.index(min(free))
        free[i] += unit_seconds(task.runs, rates) * one_thread_slowdown(task)
    return max(free) + sum(unit_seconds(task.runs, rates) for task in plan.alone)


def probe(trainer, size, threads: list[int]) -> dict:
    """Training steps per second of ``size`` with each thread count of ``threads`` (two of them: best of two
    alternating rounds when their per-core rates are close), on a throwaway model and one batch; the
    global RNG, the data source's position and the thread count are left as they were."""
    import torch

    from flops_fit.training.loop import Runtime, _prepare_model, train_step
    from flops_fit.training.loss import resolve_loss
    from flops_fit.training.optim import build_optimizer

    cfg, data = trainer.cfg, trainer.data
    before = torch.get_num_threads()
    position = data.state_dict() if callable(getattr(data, "state_dict", None)) else None
    try:
        with torch.random.fork_rng(devices=[]):
            model = _prepare_model(trainer.spec.build(size), torch.device("cpu"), cfg.seed)
            optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2))
            loss_fn = resolve_loss(cfg.loss if trainer.loss_fn is None else trainer.loss_fn)
            x, y = data.train_batch(cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
            rt, params = Runtime(torch.device("cpu"), None), list(model.parameters())

            def rate(n_threads: int) -> float:
                torch.set_num_threads(n_threads)
                train_step(model, optimizer, None, loss_fn, x, y, rt, params, cfg.grad_clip)  # untimed
                steps, start = 0, time.perf_counter()
                while steps < PROBE_STEPS or (time.perf_counter() - start < PROBE_SECONDS and steps < 50):
                    train_step(model, optimizer, None, loss_fn, x, y, rt, params, cfg.grad_clip)
                    steps += 1
                return steps / (time.perf_counter() - start)

            rates = {n: rate(n) for n in threads}
            if len(rates) == 2:  # a close call gets a second round, so a neighbour's burst does not decide alone
                (a, ra), (b, rb) = rates.items()
                if 1 / CLOSE < (rb / b) / (ra / a) / MARGIN < CLOSE:  # per-thread speed-up near the margin
                    rates = {n: max(r, rate(n)) for n, r in rates.items()}
    finally:
        torch.set_num_threads(before)
        if position is not None:
            data.load_state_dict(position)
    return rates


def _nearest_probed(probes: dict, params: Mapping[Any, int], size) -> Any:
    """The probed size nearest ``size`` in log-parameters."""
    return min(probes, key=lambda s: abs(math.log(max(params[s], 1) / max(params[size], 1))))


def _task_seconds(task, trainer, probes: dict, params: dict) -> float:
    """A task's time one at a time with the whole machine, at the FLOP rate probed for the nearest size."""
    if not probes:
        return math.inf
    per_batch = trainer.data.examples_per_batch(trainer.cfg.batch_size)
    near = _nearest_probed(probes, params, task.size)
    flops_per_step = per_batch * 6.0 * max(params[near], 1)  # 6N per data unit: the scale, not the count
    return unit_flops(task.runs) / (probes[near]["whole"] * flops_per_step)


def _longest_first(tasks: list) -> list:
    """Longest tasks first (by FLOPs: a WSD trunk once plus its cooldowns), so the last ones to finish are
    short and no worker idles long."""
    return sorted(tasks, key=lambda t: -unit_flops(t.runs))


# -------------------------------------------------------------------------------------------------
# running packed tasks

_WORKER: dict[str, Any] = {}


def run_packed(packing: Packing, sweep, trainer, *, data_path: str | None = None) -> None:
    """Train ``packing.packed`` in ``packing.workers`` worker processes, then ``packing.alone`` here."""
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    cfg = replace(trainer.cfg, threads=packing.threads)
    # the classes travel by reference (module and name): this module does not import the sweep's
    args = (type(trainer), type(sweep), str(sweep.rd.root.resolve()), cfg, data_path, sweep.retry_failed, sweep.quiet,
            packing.workers, os.getpid())
    pool = ProcessPoolExecutor(max_workers=packing.workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=args)
    try:
        stamps = [sweep.stamps(task.runs) for task in packing.packed]  # taken before the workers write records
        futures = {pool.submit(_train_task, task): i for i, task in enumerate(packing.packed)}
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, return_when=FIRST_EXCEPTION)
            for f in done:
                try:
                    counts = f.result()
                except BrokenProcessPool:
                    ids = ", ".join(e["id"] for e in packing.packed[futures[f]].runs)
                    raise FlopsFitError(f"a packed training process died while training {ids}; re-run ff-train to "
                                        f"continue from the checkpoints, or pass trainer.pack=1") from None
                for k, v in counts.items():
                    sweep.counts[k] = sweep.counts.get(k, 0) + v
                sweep.log_written(stamps[futures[f]])  # the records the worker wrote, logged from here
                sweep.tick(len(packing.packed[futures[f]].runs))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for p in list(getattr(pool, "_processes", {}).values()):  # the workers' runs stop with the sweep
            p.terminate()
        raise
    pool.shutdown(wait=True)
    for task in packing.alone:
        sweep.task(task)


def _start_worker(trainer_cls, sweep_cls, root: str, cfg, data_path, retry_failed: bool, quiet: bool, workers: int,
                  parent: int) -> None:
    """A worker process: die with the parent, take its threads, build the trainer from plan.json."""
    _die_with(parent)
    import torch

    from flops_fit.artifacts import RunDir

    torch.set_num_threads(int(cfg.threads))
    rd = RunDir(root)
    trainer = trainer_cls(rd.read_plan(), cfg, data_path, rd)
    trainer.concurrent = workers
    trainer.bars = False  # one line per finished run; progress bars of several processes would interleave
    _WORKER.update(trainer=trainer, sweep_cls=sweep_cls, rd=rd, cfg=cfg, retry_failed=retry_failed, quiet=quiet)


def _train_task(task) -> dict:
    w = _WORKER
    sweep = w["sweep_cls"](w["rd"], w["cfg"], w["trainer"], retry_failed=w["retry_failed"], quiet=w["quiet"])
    try:
        sweep.task(task)
    finally:
        sweep.close()
    return sweep.counts


def _die_with(parent: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if os.getppid() != parent:
        os._exit(1)
