"""ff-train's core: train every planned experiment of a run directory, one record per run.

* Completed runs are skipped, so re-running (or resuming after a kill) is safe; a real run that
  was interrupted continues from its last checkpoint (``checkpoints/<id>.pt``).
* ``shard``/``num_shards`` split one plan across parallel jobs (e.g. Hydra's joblib or submitit
  launcher): job k trains experiments i with i % num_shards == k. A per-run file lock keeps any
  two processes (two shards of different splits, a duplicate ff-train) from training the same run.
* A run that raises is recorded as ``failed`` with its error and the sweep goes on; bad input
  (a missing plan, a wrong trainer setting) stops it with a FlopsFitError before anything runs.
* A plan whose model, dataset or FLOPs convention differs from what the completed runs in the
  directory were trained with is refused (``allow_mismatch=True`` overrides).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from filelock import FileLock, Timeout

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from flops_fit.artifacts import RunDir
from flops_fit.errors import FlopsFitError
from flops_fit.models import ModelSpec
from flops_fit.planning import plan_differences
from flops_fit.training import checkpoints, distributed, workload
from flops_fit.training.config import TrainerConfig
from flops_fit.training.mock import train_mock
from flops_fit.training.record import planned_record
from flops_fit.training.status import discard_heartbeat, heartbeat_path

OUTCOMES = ("completed", "failed", "diverged")


def train_plan(
    run_dir: str,
    trainer: Mapping[str, Any] | TrainerConfig,
    *,
    shard: int = 0,
    num_shards: int = 1,
    retry_failed: bool = False,
    limit: int | None = None,
    data_path: str | None = None,
    quiet: bool = False,
    allow_mismatch: bool = False,
    model: ModelSpec | None = None,
    data: Any = None,
    loss_fn: Any = None,
    logger: Mapping[str, Any] | None = None,
) -> dict:
    """Train the pending runs of ``run_dir``'s plan. Returns counts per outcome.

    ``model``, ``data`` and ``loss_fn`` are Python objects (from ``find_optimal``) that replace what
    the plan records: a model spec built from a callable, a data source, a loss function.
    ``logger``: the ``logger`` config (:mod:`flops_fit.trackers`); each recorded run is logged to it.
    """
    cfg = TrainerConfig.from_mapping(trainer)  # every setting checked before data or models are built
    world, joined = distributed.join(cfg)
    try:
        if world.enabled and cfg.kind == "mock" and not world.is_main:
            return _nothing_to_do()  # mock runs take no device: rank 0 trains them all
        return _train_plan(run_dir, cfg, world if cfg.kind != "mock" else distributed.World(), shard=shard,
                           num_shards=num_shards, retry_failed=retry_failed, limit=limit, data_path=data_path,
                           quiet=quiet, allow_mismatch=allow_mismatch, model=model, data=data, loss_fn=loss_fn,
                           logger=logger)
    finally:
        distributed.leave(joined)


def _train_plan(run_dir, cfg: TrainerConfig, world: distributed.World, *, shard, num_shards, retry_failed, limit,
                data_path, quiet, allow_mismatch, model, data, loss_fn, logger=None) -> dict:
    rd = RunDir(run_dir)
    counts = dict.fromkeys(OUTCOMES + ("skipped_completed", "skipped_failed", "skipped_locked"), 0)

    def pending_runs():  # on rank 0 only: the others train what it found
        plan = rd.read_plan()
        if num_shards < 1:
            raise FlopsFitError(f"num_shards={num_shards} must be at least 1")
        if not 0 <= shard < num_shards:
            raise FlopsFitError(f"shard={shard} must be in 0..{num_shards - 1} (num_shards={num_shards})")
        records = {r["id"]: r for r in rd.iter_runs()}
        if not allow_mismatch:
            refuse_mismatch(plan, records.values(), rd, cfg)
        if any(e.get("trunk") for e in plan["experiments"]):  # a WSD trunk and its branches stay together
            mine = shard_experiments(plan["experiments"], shard, num_shards)
        else:
            mine = workload.shard_runs(plan["experiments"], shard, num_shards)
        todo = [e for e in mine if _todo(records.get(e["id"]), retry_failed, counts)]
        return plan, mine, todo[: max(int(limit), 0)] if limit is not None else todo

    plan, mine, pending = world.decide(pending_runs)
    talk = not quiet and world.is_main
    if world.is_main and distributed.devices_of(cfg) not in (1, world.size):
        print(f"warning: trainer.devices={cfg.devices} but {world.size} workers were started (torchrun); "
              f"training on {world.size}", file=sys.stderr, flush=True)
    if talk:
        print(workload.announce(plan, pending, shard, num_shards), flush=True)

    train_one, rates = None, None
    if pending:
        train_one = MockTrainer(plan, cfg) if cfg.kind == "mock" else world.main_first(
            lambda: RealTrainer(plan, cfg, data_path, rd, spec=model, data=data, loss_fn=loss_fn, world=world))
        if cfg.kind != "mock" and not quiet:
            rates = _expect(train_one, pending, world, talk)
    if world.is_main:
        rd.runs_dir.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pending), desc=f"sweep (shard {shard}/{num_shards})" if num_shards > 1 else "sweep",
               unit="run", disable=True if not talk or not pending else None, position=0, dynamic_ncols=True)
    tasks = sweep_tasks(plan["experiments"], pending, real=isinstance(train_one, RealTrainer))
    sweep = Sweep(rd, cfg, train_one, retry_failed=retry_failed, quiet=not talk, counts=counts, bar=bar, world=world)
    if world.is_main and pending:
        from flops_fit.trackers import open_tracker

        sweep.track(open_tracker(logger, run_dir), plan)
    live = None
    if sweep.tracker is not None and isinstance(train_one, RealTrainer):  # a mock run has no curve to wait for
        from flops_fit.training.track import LiveLog

        live = LiveLog(rd.runs_dir / ".heartbeat", sweep.tracker, plan, pending, trainer=cfg.kind,
                       note=bar.write).start()
    try:
        packing = None
        if isinstance(train_one, RealTrainer) and train_one.packable:
            from flops_fit.training.packing import choose_packing

            packing = choose_packing(tasks, train_one, quiet=quiet, note=bar.write, rates=rates)
        if packing is not None and packing.workers > 1:
            from flops_fit.training.packing import run_packed

            run_packed(packing, sweep, train_one, data_path=data_path)
        else:
            for task in tasks:
                sweep.task(task)
    finally:
        if live is not None:
            live.stop()
        sweep.close()
        bar.close()
    counts["pending_before"] = len(pending)
    counts["shard_size"] = len(mine)
    return counts


def _nothing_to_do() -> dict:
    counts = dict.fromkeys(OUTCOMES + ("skipped_completed", "skipped_failed", "skipped_locked"), 0)
    return {**counts, "pending_before": 0, "shard_size": 0}


def _expect(trainer: "RealTrainer", pending: list, world: distributed.World, talk: bool) -> dict | None:
    """Print the expected training time from a few measured steps (every rank probes; rank 0 prints);
    returns the probed ``{params: FLOP/s}`` (None when the probe failed)."""
    try:
        rates = workload.probe(pending, trainer.throughput)
    except FlopsFitError:
        raise
    except Exception as e:  # e.g. out of memory: the run itself will say so in its record
        if world.enabled:
            raise
        if talk:
            print(f"throughput probe failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); no estimate",
                  flush=True)
        return None
    if talk:
        where = f"{trainer.cfg.device} x {world.size}" if world.enabled else str(trainer.cfg.device)
        print(workload.expectation(pending, rates, where), flush=True)
    return rates


def shard_experiments(experiments: list[dict], shard: int, num_shards: int) -> list[dict]:
    """Shard ``shard``'s experiments: the i-th unit of work goes to shard i % num_shards, where a unit is
    one run, or all the runs of one WSD trunk (a trunk and its branches are trained together)."""
    if num_shards == 1:
        return list(experiments)
    unit: dict[Any, int] = {}
    keys = [e.get("trunk") or ("run", i) for i, e in enumerate(experiments)]
    for k in keys:
        unit.setdefault(k, len(unit))
    return [e for e, k in zip(experiments, keys) if unit[k] % num_shards == shard]


@dataclass
class Task:
    """A unit of work: one run, or the pending runs of one WSD trunk (``trunk``, with all its runs)."""

    runs: list[dict]
    trunk: str | None = None
    trunk_runs: list[dict] = field(default_factory=list)

    @property
    def size(self):
        return self.runs[0].get("size")


def sweep_tasks(experiments: list[dict], pending: list[dict], real: bool) -> list[Task]:
    """The pending runs as tasks, in plan order: WSD runs grouped by trunk when trained for real (the mock
    needs no trunk), every other run alone."""
    if not real:
        return [Task([e]) for e in pending]
    tasks: list[Task] = []
    for runs in workload.work_units(pending):
        trunk = runs[0].get("trunk") if runs[0].get("schedule") == "wsd" else None
        tasks.append(Task(list(runs), trunk, [x for x in experiments if x.get("trunk") == trunk]) if trunk
                     else Task(list(runs)))
    return tasks


class Sweep:
    """Claims, trains and records runs: the one path every run takes, trained alone, packed with others
    in a worker process, or branched from a trunk.

    ``run(exp)``: claim the run's lock (another process holding it: skipped), re-read its record (another
    process finished it meanwhile: skipped), train it, write the record atomically, then delete its
    checkpoint unless it failed or ``keep_checkpoints``.
    """

    def __init__(self, rd: RunDir, cfg: TrainerConfig, trainer, *, retry_failed: bool, quiet: bool,
                 counts: dict | None = None, bar=None, world: distributed.World | None = None):
        self.rd, self.cfg, self.trainer = rd, cfg, trainer
        self.world = world or distributed.World()
        self.retry_failed, self.quiet, self.bar = retry_failed, quiet, bar
        self.counts = counts if counts is not None else dict.fromkeys(
            OUTCOMES + ("skipped_completed", "skipped_failed", "skipped_locked"), 0)
        self.locks = RunLocks(rd) if self.world.is_main else None  # rank 0 claims runs for all the ranks
        self.tracker, self.plan = None, None

    def track(self, tracker, plan: Mapping) -> None:
        """Log every run recorded from now on to ``tracker`` (:mod:`flops_fit.trackers`; None: none)."""
        self.tracker, self.plan = tracker, plan

    def task(self, task: Task) -> None:
        if task.trunk is not None:
            self.trainer.train_trunk(task, self)
        else:
            for exp in task.runs:
                self.run(exp)

    def run(self, exp: dict, train=None) -> None:
        """Train ``exp`` with ``train(exp) -> record`` (default: the sweep's trainer) unless it is taken or done."""
        with self.locks.claim(exp["id"]) if self.locks else contextlib.nullcontext(True) as mine_now:
            # another process holds it, or got there first (under DDP rank 0 decides for every rank)
            go = self.world.decide(lambda: mine_now and _todo(self.rd.read_run(exp["id"]), self.retry_failed,
                                                               self.counts))
            if go:
                self.record((train or self.trainer)(exp))
            elif not mine_now:
                self.counts["skipped_locked"] += 1
        self.tick()

    def record(self, record: dict) -> None:
        if self.world.is_main:
            self.rd.write_run(record)
            if record["status"] != "failed" and not self.cfg.keep_checkpoints:  # the record is safe now
                checkpoints.discard(self.rd.checkpoint_path(record["id"]))
            discard_heartbeat(self.rd, record["id"])
            if self.tracker is not None:
                self._log(record)
        self.counts[record["status"]] += 1
        if record["status"] == "failed" and self.world.enabled:  # the other workers may be stuck mid-step
            raise FlopsFitError(f"{record['id']} failed ({record.get('error')}); its record says so. The other "
                                f"workers cannot go on without rank 0: re-run to train the remaining runs "
                                f"(retry_failed=true retries this one)")
        if record["status"] == "failed" and not self.quiet:  # the loop prints its own line for the others
            self.note(f"{record['id']}: failed: {record.get('error')}")

    def stamps(self, runs: Iterable[Mapping]) -> dict:
        """With a tracker: each run record's modification time (None: no record yet), so that the records
        another process writes (packed workers, :mod:`flops_fit.training.packing`) are found and logged here."""
        if self.tracker is None:
            return {}
        out = {}
        for exp in runs:
            try:
                out[exp["id"]] = self.rd.run_path(exp["id"]).stat().st_mtime_ns
            except OSError:
                out[exp["id"]] = None
        return out

    def log_written(self, stamps: Mapping[str, Any]) -> None:
        """Log to the tracker the records written since ``stamps`` (:meth:`stamps`) by another process."""
        for run_id, before in stamps.items():
            try:
                now = self.rd.run_path(run_id).stat().st_mtime_ns
            except OSError:
                continue
            record = self.rd.read_run(run_id) if now != before else None
            if record is not None:
                self._log(record)

    def _log(self, record: dict) -> None:
        """The run in the tracker; a tracker that fails says so in one line and the sweep goes on (the record
        is written)."""
        from flops_fit.training.track import run_log

        try:
            self.tracker.log_run(record["id"], *run_log(record, self.plan))
        except Exception as e:  # noqa: BLE001 - a tracker's trouble never costs a trained run
            self.note(f"{record['id']}: not logged to {self.tracker.name} ({type(e).__name__}: "
                      f"{' '.join(str(e).split())[:160]})")

    def note(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def tick(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.locks:
            self.locks.close()
        if self.tracker is not None:
            self.tracker.close()  # runs opened live whose records were never written


def _todo(old: dict | None, retry_failed: bool, counts: dict) -> bool:
    """Whether a run with this record still needs training (else count why not)."""
    if old is None:
        return True
    if old.get("status") == "completed":
        counts["skipped_completed"] += 1
        return False
    if not retry_failed:
        counts["skipped_failed"] += 1
        return False
    return True


class RunLocks:
    """One lock per run, so two processes never train the same run, whatever their shards.

    POSIX: a byte-range lock on one shared file (``runs/.locks/runs.lock``), at an offset given by
    the run id: no file is created per run (mock sweeps write thousands of runs a second) and the
    kernel releases the locks of a killed process. Elsewhere: a lock file per run (``filelock``).
    """

    def __init__(self, rd: RunDir):
        rd.locks_dir.mkdir(parents=True, exist_ok=True)
        self.dir = rd.locks_dir
        self.fd = os.open(self.dir / "runs.lock", os.O_RDWR | os.O_CREAT, 0o666) if fcntl is not None else None

    @contextlib.contextmanager
    def claim(self, run_id: str) -> Iterator[bool]:
        """Hold the run's lock inside the block; yields False when another process holds it."""
        if self.fd is None:
            lock = FileLock(str(self.dir / f"{run_id}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                yield False
                return
            try:
                yield True
            finally:
                lock.release()
            return
        offset = zlib.crc32(run_id.encode())
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, offset)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# -------------------------------------------------------------------------------------------------
# trainers: experiment -> record


class _Trainer:
    def __init__(self, plan: Mapping, cfg: TrainerConfig):
        self.cfg = cfg
        self.convention = plan.get("flops_convention", "6nd")
        self.data_unit = plan.get("data_unit", "tokens")
        # what the run is trained with, so a later ff-train can refuse a different plan
        self.provenance = {"model": plan.get("model"), "dataset": plan.get("dataset")}

    def __call__(self, exp: dict, **details: Any) -> dict:
        """The run's record; ``details`` (a WSD branch's ``trunk``, ``branched_at``) are added to it."""
        started = time.time()
        try:
            return self.train(exp, **details)
        except FlopsFitError:
            raise
        except Exception as e:  # the run failed; record it and go on with the sweep
            return planned_record(exp, status="failed", trainer=self.cfg.kind, flops_convention=self.convention,
                                  data_unit=self.data_unit, loss=None, history=[],
                                  error=f"{type(e).__name__}: {e}", wall_time_s=time.time() - started,
                                  **self.provenance, **details)

    def train(self, exp: dict, **details: Any) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


class MockTrainer(_Trainer):
    """The closed-form ground truth: instant, deterministic per run and seed."""

    def train(self, exp: dict, **details: Any) -> dict:
        started = time.time()
        result = train_mock(exp, truth=self.cfg.ground_truth, noise=self.cfg.noise, seed=self.cfg.seed,
                            history_points=self.cfg.history_points)
        return planned_record(exp, flops_convention=self.convention, data_unit=self.data_unit,
                              wall_time_s=time.time() - started, trunk=exp.get("trunk"),
                              **{**result, **self.provenance, **details})


class RealTrainer(_Trainer):
    """Builds the dataset once and each model for real, then runs the shared training loop."""

    def __init__(self, plan: Mapping, cfg: TrainerConfig, data_path: str | None, rd: RunDir, *,
                 spec: ModelSpec | None = None, data: Any = None, loss_fn: Any = None,
                 world: distributed.World | None = None):
        super().__init__(plan, cfg)
        from flops_fit.data import build_data

        self.world = world or distributed.World()
        self.rd = rd
        self.loss_fn = loss_fn
        self.plan = plan
        # packed execution rebuilds the trainer in worker processes from plan.json: not for Python objects
        self.packable = spec is None and data is None and loss_fn is None and not self.world.enabled
        self.concurrent = 1  # runs this machine trains at once (packing.py sets it in its workers)
        self.bars = True  # a progress bar per run (trainer.progress); packed workers print one line per run
        dataset = dict(plan.get("dataset") or {})
        if (spec is None or data is None) and (plan["model"].get("target") is None or dataset.get("kind") == "python"):
            raise FlopsFitError(
                f"{rd.plan_path} was planned from Python objects (find_optimal(model_cls=..., dataset=...)); "
                f"train it from Python with the same call, which resumes where this run directory stopped"
            )
        self.spec = spec or ModelSpec.from_description(plan["model"])
        if data is None:
            if data_path:
                dataset["path"] = data_path
            if not dataset:
                raise FlopsFitError("plan.json records no dataset; re-run ff-plan with a dataset=... option")
            data = build_data(dataset)
        self.data = data

    def train(self, exp: dict, **details: Any) -> dict:
        from flops_fit.training.loop import train_run

        # a grid.repeat_epochs run trains on the data's first train_subset units (same held-out split)
        data = self.data.with_train_subset(exp["train_subset"]) if exp.get("train_subset") else self.data
        return train_run(exp, model=self.fresh_model(exp["size"]), data=data, trainer=self.run_cfg,
                         flops_convention=self.convention, loss_fn=self.loss_fn,
                         checkpoint_path=self.rd.checkpoint_path(exp["id"]),
                         provenance={**self.provenance, "concurrent_runs": self.concurrent, **details},
                         progress=self.cfg.progress and self.world.is_main, position=1,
                         heartbeat_path=heartbeat_path(self.rd, exp["id"]))

    def throughput(self, exp: dict) -> float:
        """FLOP/s of a few steps of ``exp``'s model (the probe behind the expected training time)."""
        from flops_fit.training.loop import measure_throughput

        if callable(getattr(self.data, "reset", None)):
            self.data.reset()
        return measure_throughput(exp, model=self.spec.build(exp["size"]), data=self.data, trainer=self.cfg,
                                  flops_convention=self.convention, loss_fn=self.loss_fn,
                                  steps=workload.PROBE_STEPS)

    @property
    def run_cfg(self) -> TrainerConfig:
        """The settings a run trains with (without its progress bar in a packed worker)."""
        return self.cfg if self.bars or not self.cfg.progress else dataclasses.replace(self.cfg, progress=False)

    def fresh_model(self, size):
        """The model of ``size`` built under the trainer's seed, the data order back at its start: every run
        (and every WSD trunk) starts from the same state, whatever trained before it in this process."""
        import torch

        torch.manual_seed(self.cfg.seed)
        if callable(getattr(self.data, "reset", None)):  # a stream starts over for each run (same data order)
            self.data.reset()
        return self.spec.build(size)

    def train_trunk(self, task: "Task", sweep: "Sweep") -> None:
        """A WSD trunk and its pending branches (training/wsd.py): the branches that have a checkpoint of their
        own resume from it; the trunk then runs (from its last checkpoint) to the remaining branch points,
        and each cooldown is trained and recorded as soon as its checkpoint is written."""
        from flops_fit.training.loop import resolve_device
        from flops_fit.training.wsd import branches_of, train_trunk

        if self.world.enabled:
            raise FlopsFitError("a shared-trunk WSD sweep trains each trunk on one device: drop trainer.devices "
                                "(or plan with schedule=cosine to train each run on several)")
        with sweep.locks.claim(task.trunk) as mine_now:
            if not mine_now:  # another process trains this trunk (and so its branches)
                sweep.counts["skipped_locked"] += len(task.runs)
                sweep.tick(len(task.runs))
                return
            branches = branches_of(task.trunk_runs, self.data, self.cfg, resolve_device(self.cfg.device))
            pending = {e["id"] for e in task.runs}
            need = []
            for b in branches:
                if b.id not in pending:
                    continue
                if self.rd.checkpoint_path(b.id).exists():
                    sweep.run(b.exp, lambda e, b=b: self(e, trunk=task.trunk, branched_at=b.branched_at))
                else:
                    need.append(b)
            still = [b for b in need if _todo(self.rd.read_run(b.id), sweep.retry_failed, sweep.counts)]
            sweep.tick(len(need) - len(still))  # finished by another process meanwhile (counted as skipped)
            need = still
            if need:
                train_trunk(task.trunk, branches, need, _BranchSink(self, sweep, task.trunk),
                            model=self.fresh_model(task.size), data=self.data, trainer=self.run_cfg,
                            flops_convention=self.convention, loss_fn=self.loss_fn,
                            trunk_checkpoint=self.rd.checkpoint_path(task.trunk),
                            branch_checkpoint=lambda run_id: self.rd.checkpoint_path(run_id),
                            provenance=self.provenance, progress=self.cfg.progress, position=1)
            done = all((self.rd.read_run(b.id) or {}).get("status") == "completed" for b in branches)
            if done and not self.cfg.keep_checkpoints:
                checkpoints.discard(self.rd.checkpoint_path(task.trunk))


class _BranchSink:
    """What a WSD trunk hands back: branches to cool down, to train alone, or that diverged with it."""

    def __init__(self, trainer: RealTrainer, sweep: "Sweep", trunk: str):
        self.trainer, self.sweep, self.trunk = trainer, sweep, trunk

    def branched(self, branch) -> None:
        self.sweep.run(branch.exp, lambda e: self.trainer(e, trunk=self.trunk, branched_at=branch.branched_at))

    def passed(self, branch) -> None:
        self.sweep.run(branch.exp, lambda e: self.trainer(e, trunk=self.trunk, trained_alone=True))

    def diverged(self, branch, record: dict) -> None:
        self.sweep.run(branch.exp, lambda e: record)


# -------------------------------------------------------------------------------------------------
# refusing a plan the runs were not trained with

_IGNORED = {"model": ("name", "size_range"), "dataset": ("name",)}


def refuse_mismatch(plan: Mapping, records: Iterable[Mapping], rd: RunDir, cfg: TrainerConfig | None = None) -> None:
    """Stop with one line when a completed run (of ``records``, those in ``rd``) was trained with another
    model, dataset, FLOPs convention or learning-rate schedule (cosine | wsd) than ``plan`` has, for
    another entry of the plan (its tokens, a WSD cooldown or warmup: ``planning.plan_differences``), or,
    when ``cfg`` is a real trainer's, with other ``trainer`` settings that decide what a run computes
    (``TrainerConfig.run_settings``). Records that do not say are not compared (mock records carry no
    schedule and no trainer settings; records from before a key was written lack it)."""
    planned = {"model": plan.get("model"), "dataset": plan.get("dataset"),
               "flops_convention": plan.get("flops_convention", "6nd"),
               "schedule": (plan.get("schedule") or {}).get("name", "cosine")}
    entries = {e["id"]: e for e in plan.get("experiments") or []}
    settings = cfg.run_settings() if cfg is not None and cfg.kind != "mock" else None
    for rec in records:
        if rec.get("status") != "completed":
            continue
        diff = [d for key, new in planned.items() if key in rec for d in _differences(key, rec[key], new)]
        if rec["id"] in entries:
            diff += [(f"{k}={old}", f"{k}={new}") for k, old, new in plan_differences(entries[rec["id"]], rec)]
        diff = [(was, f"{rd.plan_path} plans {now}") for was, now in diff]
        old = rec.get("trainer_settings")
        if settings is not None and isinstance(old, Mapping):
            names = {k: "trainer.dtype" if k == "amp_dtype" else f"trainer.{k}" for k in settings}
            diff += [(f"{names[k]}={old[k]}", f"this ff-train has {names[k]}={settings[k]}")
                     for k in settings if k in old and old[k] != settings[k]]
        if diff:
            was, now = diff[0]
            raise FlopsFitError(
                f"{rd.run_path(rec['id'])} was trained with {was} but {now}; train in a new run_dir (or with "
                f"what it was trained with), or pass allow_mismatch=true to mix them"
            )


def _differences(key: str, old: Any, new: Any) -> list[tuple[str, str]]:
    """[(old 'key=value', new 'key=value')] for each setting that differs (nested keys dotted)."""
    if key == "flops_convention":
        return [] if old == new else [(f"flops={old}", f"flops={new}")]
    if key == "schedule":
        return [] if old == new else [(f"schedule={old}", f"schedule={new}")]
    a, b = _flatten(old or {}, key), _flatten(new or {}, key)
    ignored = {f"{key}.{k}" for k in _IGNORED.get(key, ())}
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in ignored
                  and not any(k.startswith(i + ".") for i in ignored))
    return [(f"{k}={a.get(k)}", f"{k}={b.get(k)}") for k in keys]


def _flatten(d: Mapping, prefix: str) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}.{k}"))
        else:
            out[f"{prefix}.{k}"] = v
    return out


def summarize(counts: Mapping, run_dir: str) -> str:
    done = counts["completed"]
    parts = [f"trained {done} run{'s' if done != 1 else ''}"]
    if counts["failed"]:
        parts.append(f"{counts['failed']} failed")
    if counts["diverged"]:
        parts.append(f"{counts['diverged']} diverged")
    if counts["skipped_completed"]:
        parts.append(f"{counts['skipped_completed']} already completed")
    if counts["skipped_failed"]:
        parts.append(f"{counts['skipped_failed']} failed earlier (retry with retry_failed=true)")
    if counts["skipped_locked"]:
        parts.append(f"{counts['skipped_locked']} being trained by another process")
    return ", ".join(parts) + f"; records in {RunDir(run_dir).runs_dir}"
