"""ff-train's core: train every experiment of a plan, one record per run.

* Completed runs are skipped, so re-running (or resuming after a kill) is safe.
* ``shard``/``num_shards`` split one plan across parallel jobs (e.g. Hydra's joblib or
  submitit launcher): job k trains experiments i with i % num_shards == k, so no two jobs
  ever write the same file. A per-run file lock also keeps two unsharded processes apart.
* A run that raises is recorded as ``failed`` with its error and the sweep goes on; bad
  input (a missing plan, a wrong trainer setting) stops it with a FlopsFitError.
"""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Any, Mapping

from filelock import FileLock, Timeout

from flops_fit.artifacts import RunDir, now_iso
from flops_fit.errors import FlopsFitError
from flops_fit.models import ModelSpec
from flops_fit.training.mock import GroundTruth, train_mock

TRAINER_KINDS = ("mock", "local", "gpu")


def _ground_truth(trainer: Mapping) -> GroundTruth:
    gt = dict(trainer.get("ground_truth") or {})
    known = {f.name for f in fields(GroundTruth)}
    unknown = set(gt) - known
    if unknown:
        raise FlopsFitError(f"trainer.ground_truth has unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    truth = GroundTruth(**{k: float(v) for k, v in gt.items()})
    truth.validate()
    return truth


class _RealTrainer:
    """Builds the dataset once and each model for real, then runs the shared training loop."""

    def __init__(self, plan: Mapping, trainer: Mapping, data_path: str | None):
        from flops_fit.data import build_data

        self.spec = ModelSpec.from_config({**plan["model"], "_target_": plan["model"]["target"]})
        dataset = dict(plan.get("dataset") or {})
        if data_path:
            dataset["path"] = data_path
        if not dataset:
            raise FlopsFitError("plan.json records no dataset; re-run ff-plan with a dataset=... option")
        self.trainer = dict(trainer)
        self.convention = plan.get("flops_convention", "6nd")
        self.data = build_data(dataset)

    def __call__(self, experiment: dict, position: int) -> dict:
        import torch

        from flops_fit.training.loop import train_run

        torch.manual_seed(int(self.trainer.get("seed", 0)))
        model = self.spec.build(experiment["size"])
        return train_run(
            experiment,
            model=model,
            data=self.data,
            trainer=self.trainer,
            flops_convention=self.convention,
            progress=bool(self.trainer.get("progress", True)),
            position=position,
        )


def train_plan(
    run_dir: str,
    trainer: Mapping[str, Any],
    *,
    shard: int = 0,
    num_shards: int = 1,
    retry_failed: bool = False,
    limit: int | None = None,
    data_path: str | None = None,
    quiet: bool = False,
) -> dict:
    """Train the pending runs of ``run_dir``'s plan. Returns counts per outcome."""
    rd = RunDir(run_dir)
    plan = rd.read_plan()
    if num_shards < 1:
        raise FlopsFitError(f"num_shards={num_shards} must be at least 1")
    if not 0 <= shard < num_shards:
        raise FlopsFitError(f"shard={shard} must be in 0..{num_shards - 1} (num_shards={num_shards})")
    kind = trainer.get("kind", "mock")
    if kind not in TRAINER_KINDS:
        raise FlopsFitError(f"trainer.kind={kind!r} is not a trainer; choose one of: {', '.join(TRAINER_KINDS)}")

    mine = [e for i, e in enumerate(plan["experiments"]) if i % num_shards == shard]
    counts = {"completed": 0, "failed": 0, "diverged": 0, "skipped_completed": 0, "skipped_failed": 0,
              "skipped_locked": 0}
    pending = []
    for exp in mine:
        old = rd.read_run(exp["id"])
        if old is not None and old.get("status") == "completed":
            counts["skipped_completed"] += 1
        elif old is not None and not retry_failed:
            counts["skipped_failed"] += 1
        else:
            pending.append(exp)
    if limit is not None:
        pending = pending[: max(int(limit), 0)]

    if kind == "mock":
        truth = _ground_truth(trainer)
        noise, seed, points = float(trainer.get("noise", 0.005)), int(trainer.get("seed", 0)), int(trainer.get("history_points", 20))

        def run_one(exp: dict, position: int) -> dict:
            return train_mock(exp, truth=truth, noise=noise, seed=seed, history_points=points)
    else:
        run_one = _RealTrainer(plan, trainer, data_path) if pending else None

    rd.runs_dir.mkdir(parents=True, exist_ok=True)
    if kind != "mock":
        rd.locks_dir.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    bar = tqdm(pending, desc=f"sweep (shard {shard}/{num_shards})" if num_shards > 1 else "sweep",
               unit="run", disable=True if quiet or not pending else None, position=0, dynamic_ncols=True)
    # Real runs take a lock so two unsharded processes never train the same run; mock runs are
    # deterministic and written atomically, so a lock would only slow them down.
    locking = kind != "mock"
    for exp in bar:
        lock = FileLock(str(rd.locks_dir / f"{exp['id']}.lock")) if locking else None
        if lock is not None:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                counts["skipped_locked"] += 1
                continue
        try:
            old = rd.read_run(exp["id"]) if locking else None  # another process may have finished it
            if old is not None and old.get("status") == "completed":
                counts["skipped_completed"] += 1
                continue
            started = time.time()
            try:
                result = run_one(exp, 1)
            except FlopsFitError:
                raise
            except Exception as e:  # the run failed; record it and go on with the sweep
                result = {"status": "failed", "loss": None, "history": [], "error": f"{type(e).__name__}: {e}"}
            record = _record(exp, plan, result, kind, started)
            rd.write_run(record)
            counts[record["status"]] += 1
            if record["status"] == "failed" and not quiet:  # the loop prints its own line for the others
                bar.write(f"{record['id']}: failed: {record.get('error')}")
        finally:
            if lock is not None:
                lock.release()
    bar.close()
    counts["pending_before"] = len(pending)
    counts["shard_size"] = len(mine)
    return counts


def _record(exp: Mapping, plan: Mapping, result: Mapping, kind: str, started: float) -> dict:
    """Merge the plan entry and the trainer's result into the runs/<id>.json record."""
    base = {
        "id": exp["id"],
        "budget": exp["budget"],
        "size": exp["size"],
        "params": exp["params"],
        "non_embedding_params": exp.get("non_embedding_params", exp["params"]),
        "tokens": exp["tokens"],
        "flops": exp["flops"],
        "flops_per_token": exp.get("flops_per_token"),
        "flops_convention": plan.get("flops_convention", "6nd"),
        "data_unit": plan.get("data_unit", "tokens"),
        "trainer": kind,
        "finished": now_iso(),
    }
    record = {**base, **dict(result)}
    record.setdefault("flops_by_convention", {"6nd": 6.0 * exp["params"] * record["tokens"],
                                              "6nd_nonembedding": 6.0 * base["non_embedding_params"] * record["tokens"]})
    record.setdefault("wall_time_s", time.time() - started)
    record["status"] = record.get("status", "completed")
    return record


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
