"""The model contract, independent of any particular architecture.

A model is any class (or factory) named by a dotted path (``_target_``) whose constructor takes a
size parameter (its name is ``size_param``) plus fixed keyword arguments, and returns an
``nn.Module``: a plain module or a Hugging Face ``transformers`` model works as it is.

Parameter counts (:func:`flops_fit.flops.count_params`): the model's ``num_params()`` when it has
one, else ``num_parameters()`` (every ``transformers`` model), else the sum over its parameters.
The non-embedding count leaves out the lookup tables: the input embeddings
(``get_input_embeddings()`` when the model has it) and any other ``nn.Embedding`` (position
tables); an output head stays in (it is a real matmul), unless it is tied to the input
embeddings, whose weight is then counted once and left out once.

Size rules, so the planner only builds sizes the architecture accepts:

``size_multiple`` (``model.size_multiple``; ``find_optimal(size_multiple=...)``)
    every planned size is a multiple of it (e.g. 64 for a transformer's head dimension).
``tie`` (``model.tie``; ``find_optimal(tie=...)``)
    other constructor arguments computed from the size: ``{num_attention_heads: "size // 64",
    intermediate_size: "4 * size"}``. An expression is an integer formula of ``size`` with
    ``+ - * //``, parentheses, integers and ``min``/``max`` (parsed, never evaluated as Python);
    from Python a callable ``size -> value`` also works. A tied argument replaces the same one in
    ``kwargs`` (a model config's fixed value, say).

A build that fails at some size is one :class:`FlopsFitError` naming the size and these rules.

Optional hooks a class may define:

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

import ast
import contextlib
import inspect
import json
import math
import operator
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



@contextlib.contextmanager
def _no_init():
    """Skip ``torch.nn.init``'s initialisers while a model is built on the meta device, where they
    change nothing and cost ~1 ms each through the device context (5 of ff-plan's 7 s on a
    Chinchilla-budget GPT grid); a model that calls them under another name is only slower."""
    import torch

    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")
             and callable(getattr(torch.nn.init, n))]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)

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
    size_multiple: int = 1  # every planned size is a multiple of this
    # constructor argument -> expression of ``size`` (or int, or callable); replaces the same key in kwargs
    tie: dict = field(default_factory=dict)
    _rules: dict = field(default_factory=dict, init=False, compare=False, repr=False)  # tie, compiled

    def __post_init__(self):
        m = self.size_multiple
        if isinstance(m, bool) or not isinstance(m, (int, float)) or m != int(m) or int(m) < 1:
            raise FlopsFitError(f"model.size_multiple={m!r} must be a positive integer (e.g. 64: sizes step by 64)")
        self.size_multiple = int(m)
        self.tie = dict(self.tie or {})
        for key in self.tie:
            if key == self.size_param:
                raise FlopsFitError(f"model.tie.{key}: {key} is the size parameter itself; tie other arguments to it")
        self._rules = {k: size_rule(v, f"model.tie.{k}") for k, v in self.tie.items()}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "ModelSpec":
        kwargs = dict(cfg.get("kwargs") or {})
        return cls(
            target=cfg["_target_"],
            size_param=cfg["size_param"],
            kwargs=kwargs,
            size_range=_check_range(cfg.get("size_range")),
            name=cfg.get("name", "model"),
            size_multiple=cfg.get("size_multiple") or 1,
            tie=dict(cfg.get("tie") or {}),
        )

    @classmethod
    def from_description(cls, described: Mapping[str, Any]) -> "ModelSpec":
        """The spec a plan recorded with :meth:`describe` (plan.json's ``model``), rebuilt."""
        return cls.from_config({**described, "_target_": described["target"]})

    @classmethod
    def from_callable(cls, factory: Callable, size_param: str, *, kwargs: Mapping[str, Any] | None = None,
                      size_range=None, name: str | None = None, size_multiple: int | None = None,
                      tie: Mapping[str, Any] | None = None) -> "ModelSpec":
        """A model family from a class or any callable (the Python API's ``model_cls``)."""
        if not callable(factory):
            raise FlopsFitError(f"model_cls={factory!r} is not callable: pass your model class (or a function returning one)")
        label = getattr(factory, "__qualname__", None) or type(factory).__name__
        return cls(target=dotted_path(factory), size_param=size_param, kwargs=dict(kwargs or {}),
                   size_range=_check_range(size_range), name=name or label, factory=factory,
                   size_multiple=1 if size_multiple is None else size_multiple, tie=dict(tie or {}))

    @property
    def cls(self) -> Callable:
        return self.factory if self.factory is not None else resolve_target(self.target)

    @property
    def label(self) -> str:
        """How errors name the model: its dotted path, or the callable's name."""
        return self.target or getattr(self.factory, "__qualname__", None) or repr(self.factory)

    def check_contract(self) -> None:
        """Probe builds on the meta device: the size parameter is taken, every rule gives a size the model
        accepts and the parameter count grows with the size. Each broken promise is one FlopsFitError
        naming it and the fix."""
        from flops_fit.flops import count_params

        fn, p = self.cls, self.size_param
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = None
        if params is not None and not any(q.kind is inspect.Parameter.VAR_KEYWORD for q in params.values()):
            if p not in params:
                raise FlopsFitError(f"{self.label} takes no argument {p!r} (it takes: {', '.join(params) or 'nothing'}); "
                                    f"set model_size_param to the argument that sets its size")
            for key in self.tie:
                if key not in params:
                    raise FlopsFitError(f"model.tie.{key}: {self.label} takes no argument {key!r} "
                                        f"(it takes: {', '.join(params)}); tie one of those to the size")
        lo, hi = self.size_range or (1, AUTO_MAX_SIZE)
        a = self.round_size(max(lo, min(8, hi)))
        b = self.round_size(min(hi, max(64, lo, 4 * a)))
        if a == b:
            return
        count_a, count_b = count_params(self.build(a, device="meta"))[0], count_params(self.build(b, device="meta"))[0]
        if count_b <= count_a:
            raise FlopsFitError(f"{self.label}'s parameter count does not grow with {p} ({count_a} at {p}={a}, "
                                f"{count_b} at {p}={b}); {p} must set the model's size")

    def round_size(self, size: float) -> int:
        """Clamp into ``size_range``, round to a multiple of ``size_multiple``, then to a size the class
        accepts (its ``round_size`` hook, when it has one)."""
        lo, hi = self.size_range or (1, AUTO_MAX_SIZE)
        s = int(round(min(max(float(size), lo), hi)))
        m = self.size_multiple
        if m > 1:
            first, last = m * -(-lo // m), m * (hi // m)
            if first > last:
                raise FlopsFitError(f"model.size_range={[lo, hi]} holds no multiple of model.size_multiple={m}; "
                                    f"widen the range or lower the multiple")
            s = min(max(m * int(round(s / m)), first), last)
        hook = getattr(self.cls, "round_size", None)
        return int(hook(s, **_accepted_kwargs(hook, self.kwargs))) if hook is not None else s

    def tied(self, size: int) -> dict:
        """The constructor arguments ``tie`` computes at ``size``."""
        return {k: rule(int(size)) for k, rule in self._rules.items()}

    def build(self, size: int, device: str | None = None):
        """Instantiate the model at ``size``; ``device='meta'`` allocates nothing.

        A constructor that refuses the size (or the values ``tie`` gives at it) is one FlopsFitError
        naming the size and the rules that keep the planner to sizes the model accepts."""
        kwargs = {**self.kwargs, **self.tied(size), self.size_param: int(size)}
        cls = self.cls
        try:
            if device is None:
                return cls(**kwargs)
            import torch

            with torch.device(device), (_no_init() if str(device) == "meta" else contextlib.nullcontext()):
                return cls(**kwargs)
        except FlopsFitError:
            raise
        except TypeError as e:
            raise FlopsFitError(
                f"model {self.label} rejected its arguments {sorted(kwargs)}: {_one_line(e)}; check model.size_param, "
                f"model.kwargs and model.tie"
            ) from e
        except Exception as e:
            if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
                raise
            tied = ", ".join(f"{k}={v}" for k, v in self.tied(size).items())
            raise FlopsFitError(
                f"model {self.label} could not be built at {self.size_param}={int(size)}"
                f"{f' ({tied})' if tied else ''}: {_one_line(e)}; set model.size_multiple (find_optimal's "
                f"size_multiple=) so every planned {self.size_param} is one it accepts, and model.tie (tie=) for the "
                f"arguments that must follow it (e.g. tie={{'num_attention_heads': 'size // 64'}})"
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
            # the size rules, only when set: plans and records without them stay as they were
            **({"size_multiple": self.size_multiple} if self.size_multiple != 1 else {}),
            **({"tie": {k: v if isinstance(v, (str, int)) else repr(v) for k, v in self.tie.items()}}
               if self.tie else {}),
        }


AUTO_MAX_SIZE = 1 << 24  # the largest size parameter an automatic size range reaches


def _check_range(rng) -> tuple[int, int] | None:
    if rng is None:
        return None
    if len(rng) != 2 or int(rng[0]) < 1 or int(rng[1]) < int(rng[0]):
        raise FlopsFitError(f"model.size_range={list(rng)} must be [min, max] with 1 <= min <= max")
    return int(rng[0]), int(rng[1])


def _one_line(e: BaseException, limit: int = 240) -> str:
    """An exception as one short line (transformers' config validators write several)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------- size rules

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}
_CALLS = {"min": min, "max": max}
RULE_SYNTAX = "an integer formula of size with + - * //, parentheses, integers and min()/max(), e.g. 'size // 64'"


def size_rule(value: Any, key: str) -> Callable[[int], int]:
    """``value`` (an int, an expression of ``size``, or a callable) as a function of the size.

    Expressions are parsed with :mod:`ast` and walked here: only the operations in ``RULE_SYNTAX``
    exist, so a config can name no other Python."""
    if callable(value):
        return value
    if isinstance(value, bool):
        raise FlopsFitError(f"{key}={value!r} is not a size rule: give {RULE_SYNTAX}")
    if isinstance(value, int):
        return lambda size: value
    if not isinstance(value, str):
        raise FlopsFitError(f"{key}={value!r} is not a size rule: give {RULE_SYNTAX}")
    try:
        tree = ast.parse(value.strip(), mode="eval").body
    except SyntaxError:
        raise FlopsFitError(f"{key}={value!r} is not a size rule: give {RULE_SYNTAX}") from None
    _check_rule(tree, key, value)
    return lambda size: _evaluate(tree, int(size), key, value)


def _check_rule(node, key: str, text: str) -> None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return
    if isinstance(node, ast.Name) and node.id == "size":
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check_rule(node.left, key, text)
        _check_rule(node.right, key, text)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        _check_rule(node.operand, key, text)
        return
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS
            and node.args and not node.keywords):
        for arg in node.args:
            _check_rule(arg, key, text)
        return
    raise FlopsFitError(f"{key}={text!r} is not a size rule: give {RULE_SYNTAX}")


def _evaluate(node, size: int, key: str, text: str) -> int:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return size
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand, size, key, text)
    if isinstance(node, ast.Call):
        return _CALLS[node.func.id](*(_evaluate(a, size, key, text) for a in node.args))
    left, right = _evaluate(node.left, size, key, text), _evaluate(node.right, size, key, text)
    if isinstance(node.op, ast.FloorDiv) and right == 0:
        raise FlopsFitError(f"{key}={text!r} divides by zero at size={size}")
    return _BINARY[type(node.op)](left, right)


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


# counts per (model family, size), shared by every ModelCounter of one process: ff-plan's layouts (a sequential
# design lays out dozens of candidate grids, each with its own counter) and find_optimal's loops build each size once
_SHARED_COUNTS: dict[tuple, SizeInfo] = {}
_SHARED_MAX = 20000


def _family_key(spec: ModelSpec) -> tuple | None:
    """What decides a size's counts: the class (its path, or the callable itself), the size parameter, the fixed
    arguments and the tie rules; None (no sharing) when an argument or rule is not plain JSON data."""
    try:
        fixed = json.dumps([spec.kwargs, spec.tie], sort_keys=True)
    except (TypeError, ValueError):
        return None
    return (spec.target, spec.factory, spec.size_param, fixed, _files_read(spec.kwargs))


def _files_read(value) -> tuple:
    """(path, modification time) of every existing file an argument names (e.g. a Hugging Face config.json): a file
    edited between two plans in one process is another family."""
    import os

    if isinstance(value, Mapping):
        return tuple(x for v in value.values() for x in _files_read(v))
    if isinstance(value, (list, tuple)):
        return tuple(x for v in value for x in _files_read(v))
    if isinstance(value, str) and len(value) < 4096 and os.path.isfile(value):
        return ((value, os.stat(value).st_mtime_ns),)
    return ()


class ModelCounter:
    """Counts parameters and FLOPs per token of a model family, caching per size (within the process, for every
    counter of the same family)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self._cache: dict[int, SizeInfo] = {}
        self._table: tuple[np.ndarray, np.ndarray] | None = None
        try:
            self._family = _family_key(spec)
            hash(self._family)
        except TypeError:  # an unhashable callable
            self._family = None

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
            key = None if self._family is None else (self._family, size)
            found = _SHARED_COUNTS.get(key) if key is not None else None
            if found is None:
                found = self._measure(size)
                if key is not None:
                    if len(_SHARED_COUNTS) >= _SHARED_MAX:
                        _SHARED_COUNTS.clear()
                    _SHARED_COUNTS[key] = found
            self._cache[size] = found
        return self._cache[size]

    def _measure(self, size: int) -> SizeInfo:
        model = self.spec.build(size, device="meta")
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
