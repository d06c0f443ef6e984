"""The model contract, independent of any particular architecture.

A model is any class named by a dotted path (``_target_``) whose constructor takes a size
parameter (its name is ``size_param``) plus fixed keyword arguments, and whose instances
expose ``num_params()``. Optional hooks a class may define:

``num_params(non_embedding=True)``
    parameter count without embeddings (Kaplan's convention); defaults to the total.
``round_size(size) -> int`` (classmethod or staticmethod)
    the nearest size the class accepts (e.g. d_model a multiple of the head dimension).
``flops_per_token(convention) -> float``
    training FLOPs per token (or per image) under a convention (see :mod:`flops_fit.flops`);
    ``6nd`` and ``6nd_nonembedding`` default to 6 x the parameter count.
``data_unit`` (class attribute)
    what one training example counts as: ``"tokens"`` (default) or ``"images"``.

Parameter counts come from instantiating on torch's meta device, so nothing is allocated
however large the model is.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from flops_fit.errors import FlopsFitError
from flops_fit.targets import dotted_path
from flops_fit.targets import resolve_target as _resolve
from flops_fit.flops import (
    COUNTED_CONVENTIONS,
    count_flops_measured,
    count_params,
    flops_by_convention,
    hooked_flops_per_token,
)


def resolve_target(target: str, key: str = "model._target_") -> Callable:
    """Import ``package.module.Name`` and return ``Name``; errors name the config ``key``."""
    return _resolve(target, key)


@dataclass
class ModelSpec:
    """Plain description of a model family: class, size parameter and fixed arguments."""

    target: str | None  # dotted path; None for a callable that cannot be imported (e.g. defined in a notebook)
    size_param: str
    kwargs: dict = field(default_factory=dict)
    # inclusive bounds of the size parameter; None: found by the planner (see with_size_range_for)
    size_range: tuple[int, int] | None = None
    name: str = "model"
    factory: Callable | None = field(default=None, compare=False, repr=False)  # the callable itself, from Python

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "ModelSpec":
        kwargs = dict(cfg.get("kwargs") or {})
        return cls(
            target=cfg["_target_"],
            size_param=cfg["size_param"],
            kwargs=kwargs,
            size_range=_check_range(cfg.get("size_range")),
            name=cfg.get("name", "model"),
        )

    @classmethod
    def from_callable(cls, factory: Callable, size_param: str, *, kwargs: Mapping[str, Any] | None = None,
                      size_range=None, name: str | None = None) -> "ModelSpec":
        """A model family from a class or any callable (the Python API's ``model_cls``)."""
        if not callable(factory):
            raise FlopsFitError(f"model_cls={factory!r} is not callable: pass your model class (or a function returning one)")
        label = getattr(factory, "__qualname__", None) or type(factory).__name__
        return cls(target=dotted_path(factory), size_param=size_param, kwargs=dict(kwargs or {}),
                   size_range=_check_range(size_range), name=name or label, factory=factory)

    @property
    def cls(self) -> Callable:
        return self.factory if self.factory is not None else resolve_target(self.target)

    @property
    def label(self) -> str:
        """How errors name the model: its dotted path, or the callable's name."""
        return self.target or getattr(self.factory, "__qualname__", None) or repr(self.factory)

    def check_contract(self) -> None:
        """Probe builds on the meta device: the size parameter is taken, ``num_params()`` exists and
        grows with the size. Each broken promise is one FlopsFitError naming it and the fix."""
        fn, p = self.cls, self.size_param
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = None
        if params is not None and p not in params and not any(
                q.kind is inspect.Parameter.VAR_KEYWORD for q in params.values()):
            raise FlopsFitError(f"{self.label} takes no argument {p!r} (it takes: {', '.join(params) or 'nothing'}); "
                                f"set model_size_param to the argument that sets its size")
        lo, hi = self.size_range or (8, 64)
        a, b = self.round_size(max(lo, min(8, hi))), self.round_size(min(hi, max(64, lo)))
        if a == b:
            return
        model = self.build(a, device="meta")
        if not hasattr(model, "num_params"):
            raise FlopsFitError(f"{self.label} has no num_params() method: add `def num_params(self): "
                                f"return sum(p.numel() for p in self.parameters())` to the model")
        count_a, count_b = int(model.num_params()), int(self.build(b, device="meta").num_params())
        if count_b <= count_a:
            raise FlopsFitError(f"{self.label}.num_params() does not grow with {p} ({count_a} at {p}={a}, "
                                f"{count_b} at {p}={b}); {p} must set the model's size")

    def round_size(self, size: float) -> int:
        """Clamp into ``size_range``, then round to a size the class accepts (its ``round_size`` hook)."""
        lo, hi = self.size_range or (1, AUTO_MAX_SIZE)
        s = int(round(min(max(float(size), lo), hi)))
        hook = getattr(self.cls, "round_size", None)
        return int(hook(s, **_accepted_kwargs(hook, self.kwargs))) if hook is not None else s

    def build(self, size: int, device: str | None = None):
        """Instantiate the model at ``size``; ``device='meta'`` allocates nothing."""
        kwargs = {**self.kwargs, self.size_param: int(size)}
        cls = self.cls
        try:
            if device is None:
                return cls(**kwargs)
            import torch

            with torch.device(device):
                return cls(**kwargs)
        except TypeError as e:
            raise FlopsFitError(
                f"model {self.label} rejected its arguments {sorted(kwargs)}: {e}; check model.size_param and model.kwargs"
            ) from e

    def with_size_range_for(self, min_params: float, max_params: float) -> "ModelSpec":
        """This spec with ``size_range`` found from the parameter counts the sweep needs, when none was given:
        the sizes, by doubling from 1, whose exact counts bracket ``[min_params, max_params]``."""
        if self.size_range is not None:
            return self
        from dataclasses import replace

        probe = replace(self, size_range=(1, AUTO_MAX_SIZE))
        counter = ModelCounter(probe)
        lo = hi = 1
        while hi < AUTO_MAX_SIZE and counter.info(probe.round_size(hi)).params < max_params:
            if counter.info(probe.round_size(hi)).params <= min_params:
                lo = hi
            hi *= 2
        return replace(self, size_range=(lo, min(hi, AUTO_MAX_SIZE)))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "target": self.target,
            "size_param": self.size_param,
            "kwargs": {k: v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else repr(v)
                       for k, v in self.kwargs.items()},
            "size_range": list(self.size_range) if self.size_range else None,
        }


AUTO_MAX_SIZE = 1 << 24  # the largest size parameter an automatic size range reaches


def _check_range(rng) -> tuple[int, int] | None:
    if rng is None:
        return None
    if len(rng) != 2 or int(rng[0]) < 1 or int(rng[1]) < int(rng[0]):
        raise FlopsFitError(f"model.size_range={list(rng)} must be [min, max] with 1 <= min <= max")
    return int(rng[0]), int(rng[1])


def _accepted_kwargs(fn: Callable, kwargs: dict) -> dict:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}



@dataclass(frozen=True)
class SizeInfo:
    """What the planner needs to know about one model size."""

    size: int
    params: int
    non_embedding_params: int
    flops_per_token: dict  # convention -> FLOPs per token (or per image); missing where not available
    data_unit: str


class ModelCounter:
    """Counts parameters and FLOPs per token of a model family, caching per size."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self._cache: dict[int, SizeInfo] = {}
        self._table: tuple[np.ndarray, np.ndarray] | None = None

    def _size_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact counts at ~48 log-spaced accepted sizes: the planner's map from params to size."""
        if self._table is None:
            lo, hi = self.spec.size_range
            sizes = sorted({self.spec.round_size(s) for s in np.geomspace(lo, hi, 48)})
            params = [self.info(s).params for s in sizes]
            self._table = (np.asarray(sizes, dtype=float), np.asarray(params, dtype=float))
        return self._table

    def info(self, size: int) -> SizeInfo:
        size = int(size)
        if size not in self._cache:
            self._cache[size] = self._measure(size)
        return self._cache[size]

    def _measure(self, size: int) -> SizeInfo:
        model = self.spec.build(size, device="meta")
        if not hasattr(model, "num_params"):
            raise FlopsFitError(f"model {self.spec.label} has no num_params() method; the model contract requires one")
        params, non_emb = count_params(model)
        # "measured" runs a forward + backward, so only on demand (measured_flops_per_token)
        fpt = flops_by_convention(model, conventions=COUNTED_CONVENTIONS)
        return SizeInfo(
            size=size,
            params=params,
            non_embedding_params=non_emb,
            flops_per_token=fpt,
            data_unit=str(getattr(model, "data_unit", "tokens")),
        )

    def measured_flops_per_token(self, size: int, dataset: Mapping | None = None) -> float:
        """FLOPs per token (or image) counted by torch's FLOP counter on one training step.

        Uses the model's own ``flops_per_token("measured")`` when it has one; otherwise counts
        a forward + backward pass of a meta-device twin (nothing is allocated).
        """
        own = hooked_flops_per_token(self.spec.build(size, device="meta"), ("measured",))
        if "measured" in own:
            return own["measured"]
        import torch

        dataset = dict(dataset or {})
        unit = self.info(size).data_unit
        if unit == "images":
            side = int(dataset.get("image_size", 32))
            x = torch.zeros(2, int(dataset.get("channels", 3)), side, side, device="meta")
        else:
            x = torch.zeros(2, int(dataset.get("seq_len", 128)), dtype=torch.long, device="meta")
        return count_flops_measured(lambda: self.spec.build(size), x, data_unit=unit)

    def size_for_params(self, target_params: float) -> int:
        """The accepted size whose parameter count is closest (in log) to ``target_params``.

        Interpolates log(size) against log(params) over a table of exact counts (parameter
        counts grow smoothly with the size parameter), then compares the exact counts of the
        accepted sizes around that estimate. A few model constructions per target, however
        wide the size range.
        """
        sizes, params = self._size_table()
        if target_params <= params[0]:
            return int(sizes[0])
        if target_params >= params[-1]:
            return int(sizes[-1])
        estimate = float(np.exp(np.interp(np.log(target_params), np.log(params), np.log(sizes))))
        rnd = self.spec.round_size
        candidates = {rnd(estimate * f) for f in (0.97, 1.0, 1.03)}
        return min(candidates, key=lambda s: abs(math.log(self.info(s).params / target_params)))
