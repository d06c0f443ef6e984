"""Mid-run checkpoints: what an interrupted run needs to continue exactly where it was.

One file per run, ``<run_dir>/checkpoints/<id>.pt``, written atomically (a temporary file in the
same folder, then ``os.replace``), so a killed process leaves either the previous checkpoint or
the new one, never half of one. The format is a contract (docs/checkpoints.md): a ``torch.save``d
dict whose ``format`` is ``"flops-fit-checkpoint"`` and ``version`` is :data:`VERSION`.

:class:`Checkpointer` decides *when* (every ``every_steps`` steps and/or ``every_minutes`` minutes
of wall time since the segment started or the last save), :func:`save` and :func:`load` read and
write the file, and :func:`discard` removes it once the run's record is safely written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from flops_fit.errors import FlopsFitError

FORMAT = "flops-fit-checkpoint"
VERSION = 1


class Checkpointer:
    """When to save: every ``every_steps`` steps and/or every ``every_minutes`` minutes (0/None: off)."""

    def __init__(self, path: str | os.PathLike, every_steps: int | None = None, every_minutes: float | None = None):
        self.path = Path(path)
        self.every_steps = int(every_steps or 0)
        self.every_s = float(every_minutes or 0) * 60.0
        self._last = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.every_steps > 0 or self.every_s > 0

    def due(self, step: int) -> bool:
        if self.every_steps > 0 and step % self.every_steps == 0:
            return True
        return self.every_s > 0 and time.monotonic() - self._last >= self.every_s

    def saved(self) -> None:
        self._last = time.monotonic()


def save(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (plus the format header) to ``path`` atomically (the package's one atomic writer)."""
    import torch

    from flops_fit.artifacts import atomic_path

    with atomic_path(Path(path)) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)


def load(path: str | os.PathLike) -> dict | None:
    """The checkpoint at ``path``, or None when there is none."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated, foreign or unsafe file (weights_only: loading runs no code)
        detail = (str(e).strip().splitlines() or [""])[0][:160]
        raise FlopsFitError(f"checkpoint {path} cannot be read ({type(e).__name__}: {detail}); delete it to restart "
                            f"the run from step 0") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise FlopsFitError(f"{path} is not a flops-fit checkpoint; delete it to restart the run from step 0")
    if int(payload.get("version", 0)) > VERSION:
        raise FlopsFitError(f"checkpoint {path} has version {payload['version']}, newer than this flops-fit's "
                            f"{VERSION}; upgrade flops-fit or delete it to restart the run from step 0")
    return payload


def discard(path: str | os.PathLike) -> None:
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass


def rng_states(generator) -> dict:
    """Every random state a training step draws from: torch's CPU and CUDA ones, the data generator's."""
    import torch

    return {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "data_generator": generator.get_state(),
    }


def set_rng_states(states: Mapping, generator) -> None:
    import torch

    torch.set_rng_state(states["torch_cpu"])
    if states.get("torch_cuda") is not None and torch.cuda.is_available():
        cuda = states["torch_cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    generator.set_state(states["data_generator"])

