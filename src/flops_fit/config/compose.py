"""Composing a stage's config: the one place the command line and the Python API get their settings.

``ff-<stage> <overrides>`` and :func:`flops_fit.find_optimal` both call :func:`compose` on the
same YAML tree (``conf/``, shipped as ``flops_fit/conf``), so they see the same defaults.
Composition errors become one :class:`FlopsFitError` line naming the key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from flops_fit.errors import FlopsFitError


def config_dir() -> str:
    """The config tree: ``flops_fit/conf`` inside an installed wheel, else the repo's ``conf/``."""
    pkg_dir = Path(__file__).resolve().parents[1]  # the flops_fit package folder
    for candidate in (pkg_dir / "conf", pkg_dir.parent.parent / "conf"):
        if (candidate / "plan.yaml").is_file():
            return str(candidate)
    raise FlopsFitError(f"cannot find the flops-fit config tree (looked in {pkg_dir / 'conf'}); reinstall flops-fit")


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


def group_options(group: str) -> list[str]:
    """The option names of a config group (``conf/<group>/*.yaml``)."""
    return sorted(p.stem for p in Path(config_dir(), group).glob("*.yaml"))


def _base_option(group: str, node: Mapping[str, Any]) -> str | None:
    """The group option a dict builds on: the one it names (``kind`` for trainers, else ``name``)."""
    key = node.get("kind") if group == "trainer" else node.get("name")
    return key if isinstance(key, str) and key in group_options(group) else None


def compose(stage: str, overrides: Sequence[str] = (), nodes: Mapping[str, Mapping] | None = None) -> dict:
    """The resolved config of a stage as a plain dict, as ``ff-<stage> <overrides>`` would see it.

    ``nodes`` gives whole group nodes as dicts (the Python API's ``trainer={"kind": "local", ...}``):
    a dict that names an option of its group (``kind: local``, ``name: gpt``) is merged onto that
    option, any other dict onto the schema's defaults, and both are type-checked by the schema
    exactly as command-line overrides are.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from flops_fit.config.schema import GROUP_SCHEMAS, register_configs

    register_configs()
    nodes = {k: dict(v) for k, v in (nodes or {}).items()}
    overrides = list(overrides)
    for group, node in nodes.items():
        base = _base_option(group, node)
        if base is not None:
            overrides.append(f"{group}={base}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name=stage):
            cfg = hydra_compose(config_name=stage, overrides=overrides)
            for group, node in nodes.items():
                start = cfg[group] if _base_option(group, node) is not None else OmegaConf.structured(GROUP_SCHEMAS[group])
                merged = OmegaConf.merge(start, node)
                with open_dict(cfg):
                    cfg[group] = merged
            return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except FlopsFitError:
        raise
    except Exception as e:
        raise FlopsFitError(describe_config_error(e)) from e
