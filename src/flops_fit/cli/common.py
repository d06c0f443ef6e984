"""Shared plumbing for the thin ``ff-*`` entry points.

Each entry point composes its stage's config with Hydra, calls the stage function from the
core with a plain dict, and prints. User errors (a wrong override, a missing plan, an empty
budget list) come out as one line on stderr and a non-zero exit, never a traceback:

* before handing over to ``@hydra.main``, the overrides are composed once with Hydra's compose
  API (for ``-m``, with the first value of each sweep) so a composition error can be reported
  as one line naming the key;
* inside the task, a :class:`~flops_fit.errors.FlopsFitError` is printed as one line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from flops_fit.errors import FlopsFitError

EXIT_USAGE = 2
EXIT_ERROR = 1

_PASSTHROUGH_FLAGS = {
    "--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
    "--shell-completion", "-sc", "--resolve", "--package", "-p",
}


def config_dir() -> str:
    """The config tree: ``flops_fit/conf`` inside an installed wheel, else the repo's ``conf/``."""
    import flops_fit

    pkg_dir = Path(flops_fit.__file__).resolve().parent
    for candidate in (pkg_dir / "conf", pkg_dir.parent.parent / "conf"):
        if (candidate / "plan.yaml").is_file():
            return str(candidate)
    raise FlopsFitError(f"cannot find the flops-fit config tree (looked in {pkg_dir / 'conf'}); reinstall flops-fit")


def fail(prog: str, message: str, code: int = EXIT_ERROR) -> "None":
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return str(text).strip()


def describe_config_error(exc: BaseException) -> str:
    """Turn a Hydra/OmegaConf composition error into one line naming the key and the fix."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

    chain = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__

    for err in chain:
        if isinstance(err, MissingConfigException):
            msg = str(err)
            group = None
            options = getattr(err, "options", None)
            missing = getattr(err, "missing_cfg_file", None)
            if missing and "/" in str(missing):
                group = str(missing).rsplit("/", 1)[0]
            name = str(missing).rsplit("/", 1)[-1] if missing else None
            options = [o for o in (options or []) if not o.endswith("_schema")]
            if group and options:
                return f"{group}={name} is not an option of group '{group}'; choose one of: {', '.join(sorted(options))}"
            return _first_line(msg)
    for err in chain:
        if isinstance(err, OmegaConfBaseException):
            key = getattr(err, "full_key", None)
            msg = _first_line(getattr(err, "msg", None) or str(err))
            if isinstance(err, MissingMandatoryValue):
                return f"{key} is required but not set; pass {key}=..."
            if isinstance(err, ConfigKeyError) and key:
                return f"unknown config key '{key}' ({msg}); check the spelling (ff-<stage> --cfg job lists every key)"
            if key:
                return f"{key}: {msg}"
            return msg
    text = _first_line(str(exc))
    if any("Could not override" in str(err) or "is not in struct" in str(err) for err in chain):
        text += "; check the key's spelling (ff-<stage> --cfg job lists every key)"
    return text


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
    """Compose the stage config once with the user's overrides; raise on any composition error."""
    from hydra import compose, initialize_config_dir

    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if not a.startswith("-")]
    if multirun:
        overrides = _first_of_sweeps(overrides)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name=stage):
        cfg = compose(config_name=stage, overrides=overrides)
        from omegaconf import OmegaConf

        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def run_stage(stage: str, task: Callable[[dict], int | None]) -> None:
    """Entry point body shared by ff-plan/ff-train/ff-analyze/ff-plot."""
    prog = f"ff-{stage}"
    from flops_fit.config.schema import register_configs

    register_configs()
    argv = sys.argv[1:]
    if not any(a.split("=")[0] in _PASSTHROUGH_FLAGS for a in argv) and not os.environ.get("FLOPS_FIT_SKIP_VALIDATION"):
        try:
            validate_overrides(stage, argv)
        except FlopsFitError as e:
            fail(prog, str(e), EXIT_USAGE)
        except Exception as e:  # Hydra / OmegaConf composition and parse errors
            fail(prog, describe_config_error(e), EXIT_USAGE)

    import hydra
    from omegaconf import DictConfig, OmegaConf

    def _task(cfg: DictConfig) -> None:
        try:
            task(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
        except FlopsFitError as e:
            fail(prog, str(e), EXIT_ERROR)
        except KeyboardInterrupt:
            fail(prog, "interrupted; completed artifacts are kept, re-run the same command to resume", 130)

    main = hydra.main(config_path=config_dir(), config_name=stage, version_base="1.3")(_task)
    try:
        main()
    except FlopsFitError as e:
        fail(prog, str(e), EXIT_ERROR)
