"""One run on several devices: DistributedDataParallel, started by torch's own launcher.

Two ways in, one code path:

* ``ff-train trainer=local|gpu trainer.devices=N``: the CLI composes the config once and calls
  :func:`launch`, which starts N workers through ``torch.distributed.run`` (what ``torchrun``
  runs). Each worker is ``python -m flops_fit.cli.train`` with the resolved config in the
  environment (:data:`WORKER_CONFIG_ENV`): no worker composes a config or makes a Hydra folder.
* ``torchrun --nproc_per_node=N $(which ff-train) ...`` (or a Python script under torchrun):
  each process finds torchrun's ``RANK``/``WORLD_SIZE`` in its environment.

Either way :func:`join` initialises the process group (NCCL on CUDA, gloo on the CPU) and returns
a :class:`World`, which the sweep and the training loop ask everything distributed of:

* **the same global batch whatever N is**: every rank draws the whole batch from the same seeded
  generator and trains on its slice ``rank*B/N .. (rank+1)*B/N`` (:meth:`World.local`); DDP averages
  the gradients, so an optimizer step sees the gradient of the mean loss over the global batch,
  as one process would. Steps, tokens, FLOPs and the schedule depend on the global batch only.
* **one decision, taken once**: rank 0 decides (which run is next, whether a checkpoint is due)
  and the others follow (:meth:`World.decide`, :meth:`World.agree`); only rank 0 writes records,
  checkpoints and heartbeats.
* the training loss and the held-out loss are averaged over the ranks, so every rank stops a
  diverging run at the same step.

torch is imported inside functions: ``flops_fit.cli.train`` imports this module to decide whether
to launch, before any torch is needed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from flops_fit.errors import FlopsFitError

# the resolved ff-train config handed to the workers ff-train starts (JSON: {"stage", "config"})
WORKER_CONFIG_ENV = "FLOPS_FIT_WORKER_CONFIG"

_CONTROL: Any = None  # a gloo group for host-side decisions (rank 0 tells the others what to do)
# how long the others wait for rank 0's decisions: it may first build a dataset (tokenizing a corpus
# into the cache) while they wait; a worker that dies is noticed by the launcher, not by this timeout
CONTROL_TIMEOUT_S = 6 * 3600


def env_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0") or 0)


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """Whether this process writes artifacts and prints (rank 0, or no torchrun at all)."""
    return env_rank() == 0


def devices_of(trainer) -> int:
    """``trainer.devices`` of a trainer dict or TrainerConfig (1 when unset)."""
    n = trainer.get("devices") if isinstance(trainer, Mapping) else getattr(trainer, "devices", None)
    return int(n or 1)


def launches_workers(trainer) -> bool:
    """Whether ff-train must start ``trainer.devices`` workers itself (not when torchrun already did)."""
    return devices_of(trainer) > 1 and "WORLD_SIZE" not in os.environ


def reported(message: str, rank: int) -> FlopsFitError:
    """A FlopsFitError that every rank raises alike; only rank 0 prints it (the CLI reads ``reported``)."""
    err = FlopsFitError(message)
    err.reported = rank != 0  # type: ignore[attr-defined]
    return err


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says another worker went away (killed, preempted, crashed) rather than that this
    worker's run is broken: such a run is not recorded as failed, it resumes when re-run."""
    try:
        from torch.distributed import DistError
    except ImportError:  # pragma: no cover - older torch
        DistError = ()
    if isinstance(exc, DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        mark in text for mark in ("gloo", "NCCL", "Connection reset by peer", "Connection closed by peer"))


# -------------------------------------------------------------------------------------------------
# the world of one process


@dataclass(frozen=True)
class World:
    """This process's place among the workers training one run (rank 0 of 1 without torch.distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> "World":
        """The world of the initialised process group, or a single process."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0") or 0))

    # ---- devices and the model ----------------------------------------------------------------
    def device(self, device):
        """``cuda`` means this worker's own GPU (``cuda:LOCAL_RANK``)."""
        import torch

        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def models(self, model, compile: bool):
        """(the model a step trains, the model the held-out loss is computed with).

        One process: the model (or its ``torch.compile``d twin) for both. Several: the step model is
        ``DistributedDataParallel`` (compiled after wrapping, so DDP's buckets overlap the backward),
        and evaluation uses the plain module: each rank evaluates its own share of the held-out
        batches, and a plain module runs no collective that the others would wait for.
        """
        import torch

        if not self.enabled:
            step = torch.compile(model) if compile else model
            return step, step
        from torch.nn.parallel import DistributedDataParallel as DDP

        device = next(model.parameters()).device
        ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        return (torch.compile(ddp) if compile else ddp), model

    # ---- data ---------------------------------------------------------------------------------
    def local(self, batch):
        """This rank's share of a global batch: the slice ``rank*B/N .. (rank+1)*B/N`` along the
        first dimension of every tensor in it (tuples, lists and dicts are followed)."""
        if not self.enabled:
            return batch
        n = _leading(batch)
        if n is None or n % self.size:
            raise reported(f"a training batch of {n} examples does not split evenly over {self.size} devices; "
                           f"make trainer.batch_size a multiple of {self.size}", self.rank)
        share = n // self.size
        return _slice(batch, self.rank * share, (self.rank + 1) * share)

    def owns(self, index: int) -> bool:
        """Whether this rank evaluates held-out batch ``index`` (batches are dealt round-robin)."""
        return index % self.size == self.rank

    # ---- collectives --------------------------------------------------------------------------
    def mean(self, tensor):
        """The mean of ``tensor`` over the ranks (a new tensor; ``tensor`` itself on one process)."""
        if not self.enabled:
            return tensor
        import torch.distributed as dist

        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.size

    def sum(self, tensor):
        """The sum of ``tensor`` over the ranks, in place."""
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def checkpoint_due(self, ckpt, step: int, check_every: int) -> bool:
        """Whether every rank saves at ``step``: the step trigger is the same everywhere; the time
        trigger is rank 0's clock, shared at steps where the loss is read anyway (``check_every``)."""
        if not self.enabled:
            return ckpt.due(step)
        if step % check_every:
            return ckpt.every_steps > 0 and step % ckpt.every_steps == 0
        return self.agree_flag(ckpt.due(step))

    def agree_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (one small broadcast between hosts)."""
        if not self.enabled:
            return bool(flag)
        import torch
        import torch.distributed as dist

        box = torch.tensor([int(bool(flag)) if self.is_main else 0])
        dist.broadcast(box, src=0, group=_CONTROL)
        return bool(box.item())

    def agree(self, value):
        """Rank 0's ``value`` on every rank (any picklable value)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=_CONTROL)
        return box[0]

    def decide(self, fn: Callable[[], Any]):
        """Run ``fn`` on rank 0 only and return its result on every rank.

        A :class:`FlopsFitError` that ``fn`` raises on rank 0 is raised on every rank (printed once).
        """
        if not self.enabled:
            return fn()
        outcome = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except FlopsFitError as e:
                self.agree(("error", str(e)))
                raise
        outcome = self.agree(outcome)
        if outcome[0] == "error":
            raise reported(outcome[1], self.rank)
        return outcome[1]

    def main_first(self, fn: Callable[[], Any]):
        """``fn()`` on rank 0 first (e.g. building a dataset that fills a cache), then on the others."""
        if not self.enabled:
            return fn()
        result = None
        if self.is_main:
            try:
                result = fn()
            except FlopsFitError as e:
                self.agree(("error", str(e)))
                raise
            self.agree(("ok", None))
            return result
        status = self.agree(None)
        if status[0] == "error":
            raise reported(status[1], self.rank)
        return fn()


def _leading(batch):
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else None
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            n = _leading(item)
            if n is not None:
                return n
    return None


def _slice(batch, start: int, stop: int):
    import torch

    if isinstance(batch, torch.Tensor):
        return batch[start:stop] if batch.dim() else batch
    if isinstance(batch, Mapping):
        return type(batch)((k, _slice(v, start, stop)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(_slice(v, start, stop) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_slice(v, start, stop) for v in batch)
    return batch


# -------------------------------------------------------------------------------------------------
# joining and leaving the process group


def join(cfg) -> tuple[World, bool]:
    """The world of this process, initialising torch.distributed from torchrun's environment when
    it is not yet. Returns ``(world, created)``; pass ``created`` to :func:`leave`.

    ``cfg`` is the :class:`~flops_fit.training.config.TrainerConfig`: CUDA devices train over NCCL,
    the CPU over gloo. Outside torchrun (no ``WORLD_SIZE``) this is one process and nothing happens.
    """
    global _CONTROL
    import torch
    import torch.distributed as dist

    if env_world_size() <= 1 and not (dist.is_available() and dist.is_initialized()):
        return World(), False
    created = False
    if not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
        cuda = _wants_cuda(cfg)
        if cuda:
            local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
            if torch.cuda.device_count() < local_size:
                raise reported(f"torchrun started {local_size} workers on this machine but it has "
                               f"{torch.cuda.device_count()} GPUs; start at most that many "
                               f"(trainer.devices / --nproc_per_node)", env_rank())
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
        created = True
    if _CONTROL is None:  # decisions travel between hosts, not GPUs, and may wait long for rank 0
        from datetime import timedelta

        _CONTROL = dist.new_group(backend="gloo", timeout=timedelta(seconds=CONTROL_TIMEOUT_S))
    return World.current(), created


def leave(created: bool) -> None:
    global _CONTROL
    if not created:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _CONTROL = None


def _wants_cuda(cfg) -> bool:
    import torch

    device = str(getattr(cfg, "device", "cpu") or "cpu").lower()
    return (device == "auto" or device.startswith("cuda")) and torch.cuda.is_available()


# -------------------------------------------------------------------------------------------------
# starting the workers


def check_devices(trainer) -> None:
    """Before starting workers: refuse more GPU workers than this machine has GPUs (one line)."""
    import torch

    n = devices_of(trainer)
    device = str((trainer.get("device") if isinstance(trainer, Mapping) else getattr(trainer, "device", None))
                 or "cpu").lower()
    if (device == "auto" or device.startswith("cuda")) and torch.cuda.is_available() and torch.cuda.device_count() < n:
        raise FlopsFitError(f"trainer.devices={n} but this machine has {torch.cuda.device_count()} GPUs; use at most "
                            f"that many (several machines: torchrun --nnodes, see docs/scaling-out.md)")


def launch(nprocs: int, module: str, stage: str, config: Mapping[str, Any]) -> int:
    """Start ``nprocs`` workers running ``python -m module`` through ``torch.distributed.run``
    (torchrun's own code, a standalone rendezvous on this machine) with the resolved ``config`` in
    their environment. Returns 0, or the exit code of a worker that failed after printing its own
    one-line error; raises a FlopsFitError for a worker that died without one.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    env = {WORKER_CONFIG_ENV: json.dumps({"stage": stage, "config": dict(config)})}
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores (torchrun's default would be 1 thread each)
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nprocs))
    args = parse_args(["--standalone", f"--nproc-per-node={nprocs}", "--max-restarts=0", "--module", module])
    saved = {k: os.environ.get(k) for k in env}
    quiet = [logging.getLogger(name) for name in ("torch.distributed.run", "torch.distributed.elastic")]
    levels = [log.level for log in quiet]
    os.environ.update(env)
    for log in quiet:  # the workers say what went wrong; the agent's own log lines repeat it
        log.setLevel(logging.CRITICAL)
    try:
        sys.stdout.flush()
        run(args)
        return 0
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        if rank == 0 and code in (1, 2, 130):  # rank 0 printed its one line (flops_fit.cli.common.fail)
            return code
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        raise FlopsFitError(f"training worker rank {rank} ended with {how} (its own error, if any, is above); "
                            f"re-run the same command to resume from the checkpoints") from None
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def worker_config(stage: str) -> dict | None:
    """In a worker that :func:`launch` started: the resolved config (taken out of the environment,
    so processes the worker starts do not see it). None elsewhere."""
    text = os.environ.get(WORKER_CONFIG_ENV)
    if text is None:
        return None
    payload = json.loads(text)
    if payload.get("stage") != stage:
        return None
    os.environ.pop(WORKER_CONFIG_ENV, None)
    return payload["config"]
