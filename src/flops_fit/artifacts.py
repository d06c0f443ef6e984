"""The one owner of the run-directory layout and of JSON reading and writing.

A run directory is the contract between stages::

    run_dir/
      plan.json            ff-plan     the IsoFLOP grid (schema_version, experiments, dropped, ...)
      runs/<id>.json       ff-train    one record per experiment (status, params, tokens, flops, loss, history)
      analysis.json        ff-analyze  fits, compute-optimal table, diagnostics
      plots/*.png          ff-plot     figures
      report.html          ff-plot     self-contained report
      configs/<stage>.yaml every stage  the resolved config it last ran with

Every write goes to a temporary file in the same folder and is moved into place with
``os.replace``, so a killed process never leaves a half-written artifact. (There is no fsync:
that guards against power loss, not a killed process, and would cap mock sweeps at a few
hundred runs per second.)
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from flops_fit.errors import FlopsFitError

SCHEMA_VERSION = 1
RUN_STATUSES = ("completed", "failed", "diverged")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sanitize(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as null so every JSON reader can load the file."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _sanitize(obj.item())
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays
        return _sanitize(obj.tolist())
    return obj


def ensure_dir(folder: Path) -> Path:
    """Create ``folder`` (and its parents), or say in one line why it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise FlopsFitError(f"cannot create the folder {folder}: {blocker} is a file, not a folder; "
                            f"choose another run_dir=...") from None
    except PermissionError:
        raise FlopsFitError(f"cannot create the folder {folder}: permission denied; choose a writable run_dir=...") from None
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step.

    The one atomic writer of the package: a killed process leaves either the old file or the
    new one, never half of one. The new file gets the permissions the user's umask gives any
    new file (``mkstemp`` alone would leave it 0600, unreadable by teammates on a shared disk).
    """
    path = Path(path)
    ensure_dir(path.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except PermissionError:
        raise FlopsFitError(f"cannot write in {path.parent}: permission denied; choose a writable run_dir=...") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")


def dumps(obj: Any, compact: bool = False) -> str:
    """JSON text; NaN/inf and numpy scalars are converted only when present (the fast path)."""
    indent = None if compact else 2
    try:
        return json.dumps(obj, indent=indent, allow_nan=False)
    except (ValueError, TypeError):
        return json.dumps(_sanitize(obj), indent=indent)


def write_json(path: Path, obj: Any, compact: bool = False) -> None:
    atomic_write_text(Path(path), dumps(obj, compact) + "\n")


def read_json(path: Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FlopsFitError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise FlopsFitError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); delete it and re-run the stage that writes it") from e


def check_schema_version(obj: Any, path: Path) -> None:
    """Refuse an artifact written by a newer flops-fit: its keys may mean something else."""
    version = obj.get("schema_version") if isinstance(obj, dict) else None
    if version is None:
        return
    try:
        newer = int(version) > SCHEMA_VERSION
    except (TypeError, ValueError):
        raise FlopsFitError(f"{path} has schema_version={version!r}, not a number; re-run the stage that writes it") from None
    if newer:
        raise FlopsFitError(
            f"{path} has schema_version {version}, newer than this flops-fit's {SCHEMA_VERSION}; "
            f"upgrade flops-fit (pip install -U flops-fit) or re-run the stage that writes it"
        )


@functools.lru_cache(maxsize=None)
def _provenance(cwd: str) -> tuple:
    return tuple(_collect_provenance(cwd).items())


def provenance() -> dict:
    """Who wrote an artifact: versions, the git commit of the working directory, the host (looked up
    once per process and working directory)."""
    return dict(_provenance(os.getcwd()))


def _collect_provenance(cwd: str) -> dict:
    import platform
    import subprocess
    import sys
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    commit = None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "flops_fit": version("flops-fit"),
        "torch": version("torch"),
        "python": sys.version.split()[0],
        "git_commit": commit,
        "host": platform.node(),
        "cwd": cwd,
    }


@dataclass(frozen=True)
class RunDir:
    """Paths and readers/writers for one run directory."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    # ---- paths ---------------------------------------------------------------------
    @property
    def plan_path(self) -> Path:
        return self.root / "plan.json"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def locks_dir(self) -> Path:
        return self.runs_dir / ".locks"

    def run_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint_path(self, run_id: str) -> Path:
        """A real run's mid-run checkpoint (docs/checkpoints.md)."""
        return self.checkpoints_dir / f"{run_id}.pt"

    @property
    def analysis_path(self) -> Path:
        return self.root / "analysis.json"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    @property
    def report_path(self) -> Path:
        return self.root / "report.html"

    def config_path(self, stage: str) -> Path:
        return self.root / "configs" / f"{stage}.yaml"

    # ---- plan ----------------------------------------------------------------------
    def write_plan(self, plan: dict) -> None:
        plan = {"schema_version": SCHEMA_VERSION, "created": now_iso(), "provenance": provenance(), **plan}
        write_json(self.plan_path, plan)

    def has_plan(self) -> bool:
        return self.plan_path.is_file()

    def read_plan(self) -> dict:
        if not self.plan_path.is_file():
            raise FlopsFitError(
                f"no plan at {self.plan_path}: run `ff-plan run_dir={self.root}` first (or pass the run_dir you planned into)"
            )
        plan = read_json(self.plan_path, "plan")
        check_schema_version(plan, self.plan_path)
        if not isinstance(plan, dict) or "experiments" not in plan:
            raise FlopsFitError(f"{self.plan_path} has no 'experiments' list; re-run ff-plan run_dir={self.root}")
        return plan

    # ---- runs ----------------------------------------------------------------------
    def write_run(self, record: dict) -> None:
        if record.get("status") not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, got {record.get('status')!r}")
        record = record if "provenance" in record else {**record, "provenance": provenance()}
        # one line per record: thousands of mock runs a second, and still `jq`-readable
        write_json(self.run_path(record["id"]), record, compact=True)

    def read_run(self, run_id: str) -> dict | None:
        path = self.run_path(run_id)
        if not path.is_file():
            return None
        return read_json(path, "run record")

    def iter_runs(self) -> Iterator[dict]:
        if not self.runs_dir.is_dir():
            return
        for path in sorted(self.runs_dir.glob("*.json")):
            yield read_json(path, "run record")

    # ---- analysis ------------------------------------------------------------------
    def write_analysis(self, analysis: dict) -> None:
        write_json(self.analysis_path, {"schema_version": SCHEMA_VERSION, "created": now_iso(),
                                        "provenance": provenance(), **analysis})

    def read_analysis(self) -> dict:
        if not self.analysis_path.is_file():
            raise FlopsFitError(
                f"no analysis at {self.analysis_path}: run `ff-analyze run_dir={self.root}` first"
            )
        analysis = read_json(self.analysis_path, "analysis")
        check_schema_version(analysis, self.analysis_path)
        return analysis

    # ---- configs -------------------------------------------------------------------
    def write_config(self, stage: str, yaml_text: str) -> None:
        atomic_write_text(self.config_path(stage), yaml_text)
