"""Resolving a ``_target_``: the dotted path of a user's class or function, named in a config."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from flops_fit.errors import FlopsFitError


def resolve_target(target: Any, key: str = "_target_") -> Callable:
    """Import ``package.module.Name`` and return ``Name``; ``key`` names the config key in errors."""
    if callable(target):
        return target
    if not isinstance(target, str) or "." not in target:
        raise FlopsFitError(f"{key}={target!r} is not a dotted path like 'mypkg.module.Name'")
    module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise FlopsFitError(f"{key}={target}: cannot import module {module_name!r} ({e}); "
                            f"is its folder on PYTHONPATH or hydra.searchpath?") from e
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise FlopsFitError(f"{key}={target}: module {module_name!r} has no attribute {attr!r}") from e
    return obj


def dotted_path(obj: Any) -> str | None:
    """``module.qualname`` of a class or function when importing it gives back the same object."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname:
        return None
    try:
        return f"{module}.{qualname}" if resolve_target(f"{module}.{qualname}") is obj else None
    except FlopsFitError:
        return None
