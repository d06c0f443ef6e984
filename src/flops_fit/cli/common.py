"""Shared plumbing for the thin ``ff-*`` entry points.

Each entry point composes its stage's config with Hydra, calls the stage function from the
core with a plain dict, and prints. User errors (a wrong override, a missing plan, an empty
budget list) come out as one line on stderr and a non-zero exit, never a traceback:

* before handing over to ``@hydra.main``, the overrides are composed once with Hydra's compose
  API (for ``-m``, with the first value of each sweep) so a composition error can be reported
  as one line naming the key;
* inside the task, a :class:`~flops_fit.errors.FlopsFitError` is printed as one line.

A worker that ``ff-train trainer.devices=N`` started (:mod:`flops_fit.training.distributed`)
receives the resolved config from its parent and runs the task without Hydra: the config is
composed once, and no worker makes a Hydra folder. Among torch.distributed workers an error every
rank meets alike is printed by rank 0 only.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from flops_fit.config.compose import _first_line, config_dir, describe_config_error
from flops_fit.errors import FlopsFitError

EXIT_USAGE = 2
EXIT_ERROR = 1

_PASSTHROUGH_FLAGS = {
    "--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
    "--shell-completion", "-sc", "--resolve", "--package", "-p",
}


def fail(prog: str, message: str, code: int = EXIT_ERROR, show: bool = True) -> "None":
    if show:
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _rank() -> int:
    from flops_fit.training.distributed import env_rank

    return env_rank()


def _first_of_sweeps(overrides: list[str]) -> list[str]:
    """For ``-m`` runs: replace each sweep (a,b,c / range / glob) by its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides=overrides)
    out = []
    for ov in parsed:
        if ov.is_sweep_override():
            first = next(iter(ov.sweep_string_iterator()), None)
            if first is None:
                continue
            out.append(f"{ov.get_key_element()}={first}")
        else:
            out.append(ov.input_line)
    return out


def validate_overrides(stage: str, argv: list[str]) -> None:
    """Compose the stage config once with the user's overrides and check its values; raise on any error."""
    from flops_fit import stages
    from flops_fit.config.compose import compose

    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if not a.startswith("-")]
    if multirun:
        overrides = _first_of_sweeps(overrides)
    stages.check(stage, compose(stage, overrides))


def call_task(prog: str, task: Callable[[dict], int | None], cfg: dict) -> None:
    """Run ``task(cfg)``: a FlopsFitError is one line, anything else one line naming it (debug=true: the traceback)."""
    debug = bool(cfg.get("debug", False))
    rank = _rank()
    try:
        code = task(cfg)
    except FlopsFitError as e:
        if debug:
            raise
        fail(prog, str(e), EXIT_ERROR, show=not getattr(e, "reported", False))
    except KeyboardInterrupt:
        fail(prog, "interrupted; completed artifacts are kept, re-run the same command to resume", 130,
             show=rank == 0)
    except Exception as e:  # a bug, or an error flops-fit does not know how to explain yet
        if debug:
            raise
        from flops_fit.training.distributed import is_peer_failure

        where = f"[rank {rank}] " if rank else ""
        if is_peer_failure(e):  # the worker that went away says why (or its launcher does)
            fail(prog, f"{where}lost contact with another training worker; stopping", EXIT_ERROR)
        fail(prog, f"{where}{type(e).__name__}: {_first_line(str(e))} (re-run with debug=true for the traceback)",
             EXIT_ERROR)
    if code:
        sys.exit(code)


def run_stage(stage: str, task: Callable[[dict], int | None]) -> None:
    """Entry point body shared by ff-plan/ff-train/ff-analyze/ff-plot."""
    prog = f"ff-{stage}"
    from flops_fit.config.schema import register_configs

    from flops_fit.training.distributed import worker_config

    resolved = worker_config(stage)
    if resolved is not None:  # a worker ff-train started: its parent composed the config
        call_task(prog, task, resolved)
        return
    register_configs()
    argv = sys.argv[1:]
    if not any(a.split("=")[0] in _PASSTHROUGH_FLAGS for a in argv) and not os.environ.get("FLOPS_FIT_SKIP_VALIDATION"):
        try:
            validate_overrides(stage, argv)
        except FlopsFitError as e:  # under torchrun every rank composes alike: rank 0 says it
            fail(prog, str(e), EXIT_USAGE, show=_rank() == 0)
        except Exception as e:  # Hydra / OmegaConf composition and parse errors
            fail(prog, describe_config_error(e), EXIT_USAGE, show=_rank() == 0)

    import hydra
    from omegaconf import DictConfig, OmegaConf

    def _task(cfg: DictConfig) -> None:
        call_task(prog, task, OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))

    main = hydra.main(config_path=config_dir(), config_name=stage, version_base="1.3")(_task)
    try:
        main()
    except FlopsFitError as e:
        fail(prog, str(e), EXIT_ERROR)
