"""A user's own torch data as a :class:`~flops_fit.data.base.DataSource`.

``TorchData(dataset)`` accepts what a notebook already has:

* a map-style ``Dataset`` whose items are ``(inputs, targets)``: training batches are drawn with
  replacement by the loop's seeded generator (stateless, so a resumed run draws exactly what an
  uninterrupted one would), held-out batches come from a fixed split;
* an ``IterableDataset`` of ``(inputs, targets)`` items, batched here;
* a ``DataLoader`` (or any re-iterable of ``(inputs, targets)`` batches), used batch by batch.

Held-out evaluation uses ``eval_dataset`` when given. Otherwise a deterministic hold-out that no
training batch touches: for a map-style dataset a seeded random ``eval_fraction`` of its items
(at most ``eval_size``, default 4096); for a DataLoader its first ``eval_batches`` batches
(default 8), for an IterableDataset its first ``eval_size`` items (default 512), which training
then skips on every pass.

The data unit is inferred from one batch: integer inputs of shape ``(B, T)`` are token sequences
(``tokens``: ``B * T`` per batch), anything else counts samples (``samples``: ``B`` per batch).
``data_unit=`` and ``units_per_example=`` override the inference.
"""

from __future__ import annotations

import copy

import itertools
from typing import Any, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset, default_collate

from flops_fit.data.base import DataSource, spread_batches
from flops_fit.errors import FlopsFitError

DATA_UNITS = ("tokens", "samples", "images")


def _pair(item: Any, where: str) -> tuple[Any, Any]:
    if isinstance(item, dict):
        keys = [k for k in ("inputs", "input_ids", "x", "image", "images") if k in item]
        tkeys = [k for k in ("targets", "labels", "label", "y") if k in item]
        if keys and tkeys:
            return item[keys[0]], item[tkeys[0]]
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    raise FlopsFitError(
        f"{where} yields {type(item).__name__} items; flops-fit needs (inputs, targets) pairs "
        f"(a tuple, or a dict with 'inputs'/'targets'): wrap your dataset so __getitem__ returns (x, y)"
    )


def _infer_unit(x: torch.Tensor, batched: bool) -> tuple[str, int]:
    """(data unit, units per example) from one input: int (T,) / (B, T) are token sequences."""
    if not isinstance(x, torch.Tensor):
        return "samples", 1
    seq_ndim = 2 if batched else 1
    if not x.is_floating_point() and not x.is_complex() and x.dim() == seq_ndim:
        return "tokens", int(x.shape[-1])
    return "samples", 1


class TorchData(DataSource):
    """A user's ``Dataset``, ``IterableDataset`` or ``DataLoader`` behind the training loop's contract."""

    kind = "torch"

    def __init__(
        self,
        dataset: Any,
        *,
        eval_dataset: Any = None,
        eval_fraction: float = 0.1,
        eval_size: int | None = None,
        eval_batches: int = 8,
        data_unit: str | None = None,
        units_per_example: int | None = None,
        seed: int = 0,
        name: str | None = None,
        unique_units: int | None = None,
    ):
        if isinstance(dataset, (str, bytes)) or dataset is None:
            raise FlopsFitError(f"dataset={dataset!r}: give a torch Dataset, IterableDataset or DataLoader of (inputs, targets)")
        if not 0 < float(eval_fraction) < 1:
            raise FlopsFitError(f"eval_fraction={eval_fraction} must be between 0 and 1")
        if unique_units is not None and not (isinstance(unique_units, (int, float)) and unique_units > 0):
            raise FlopsFitError(f"unique_units={unique_units!r} must be a positive number of tokens or samples")
        self._stated_unique = unique_units
        self.dataset = dataset
        self.name = name or type(dataset).__name__
        self.seed = int(seed)
        self.mode = self._mode(dataset)
        self._eval_loader_batches = int(eval_batches)
        self._eval_stream_items = int(eval_size or 512)
        self.eval_dataset = eval_dataset
        self._stream_pos = 0  # batches (DataLoader) or items (IterableDataset) consumed by training
        self._stream: Iterator | None = None
        if self.mode == "map":
            n = len(dataset)
            if n < 2 and eval_dataset is None:
                raise FlopsFitError(f"dataset has {n} items: it needs at least 2 to keep a held-out split")
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
            n_eval = 0 if eval_dataset is not None else max(1, min(int(eval_size or 4096), int(round(eval_fraction * n))))
            self._eval_idx = perm[:n_eval]
            self._train_idx = torch.sort(perm[n_eval:]).values
            if self._train_idx.numel() == 0:
                raise FlopsFitError("dataset: nothing is left for training after the held-out split; lower eval_fraction")
            sample = _pair(dataset[int(self._train_idx[0])], "dataset")[0]
            unit, per = _infer_unit(sample, batched=False)
        else:
            first = next(iter(self._skip_eval(self._raw_stream())), None)
            if first is None:
                raise FlopsFitError("dataset yielded nothing after its held-out batches: give more data or eval_dataset=...")
            x = _pair(first, "dataset")[0]
            unit, per = _infer_unit(x, batched=self.mode == "loader")
            self._loader_batch = int(x.shape[0]) if self.mode == "loader" and isinstance(x, torch.Tensor) else None
        if data_unit is not None:
            if data_unit not in DATA_UNITS:
                raise FlopsFitError(f"data_unit={data_unit!r} must be one of {', '.join(DATA_UNITS)}")
            unit = data_unit
            per = int(units_per_example) if units_per_example else (per if unit == "tokens" else 1)
        elif units_per_example:
            per = int(units_per_example)
        self.data_unit = unit
        self.units_per_example = per
        self._info = {"mode": self.mode, "units_per_example": per,
                      "eval": "eval_dataset" if eval_dataset is not None else f"held-out split (seed {self.seed})"}
        if self.mode == "map":
            self._info.update(train_examples=int(self._train_idx.numel()), eval_examples=int(self._eval_idx.numel()))

    def with_train_subset(self, units: int) -> "TorchData":
        if self.mode != "map":
            return super().with_train_subset(units)
        sub = copy.copy(self)
        sub._stated_unique = None
        sub._train_idx = self._train_idx[: max(1, int(units) // int(self.units_per_example))]
        return sub

    def _count_unique(self) -> int | None:
        """A map-style dataset's training examples x units per example; a stream's is unknown."""
        return int(self._train_idx.numel()) * int(self.units_per_example) if self.mode == "map" else None

    @staticmethod
    def _mode(dataset: Any) -> str:
        if isinstance(dataset, DataLoader):
            return "loader"
        if isinstance(dataset, IterableDataset):
            return "stream"
        if isinstance(dataset, Dataset) or (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            return "map"
        if isinstance(dataset, Iterable):
            return "loader"
        raise FlopsFitError(f"dataset of type {type(dataset).__name__} is not a torch Dataset, IterableDataset or DataLoader")

    # ---- the contract ---------------------------------------------------------------
    def examples_per_batch(self, batch_size: int) -> int:
        b = self._loader_batch if self.mode == "loader" and self._loader_batch else int(batch_size)
        return b * self.units_per_example

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Any, Any]:
        if self.mode == "map":
            pick = torch.randint(0, self._train_idx.numel(), (int(batch_size),), generator=generator)
            return self._fetch(self._train_idx[pick])
        if self.mode == "loader":
            return _pair(self._next_stream_item(), "dataset")
        items = [_pair(self._next_stream_item(), "dataset") for _ in range(int(batch_size))]
        return default_collate(items)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[Any, Any]]:
        if self.eval_dataset is not None:
            yield from self._batched(self.eval_dataset, batch_size)
        elif self.mode == "map":
            for start in range(0, self._eval_idx.numel(), int(batch_size)):
                yield self._fetch(self._eval_idx[start:start + int(batch_size)])
        else:
            yield from self._held_out_of_stream(batch_size)

    def _fetch(self, idx: torch.Tensor) -> tuple[Any, Any]:
        """The items at ``idx`` as one batch: tensors sliced at once when the dataset allows it."""
        ds = self.dataset
        if isinstance(ds, TensorDataset) and len(ds.tensors) == 2:
            return ds.tensors[0][idx], ds.tensors[1][idx]
        getitems = getattr(ds, "__getitems__", None)
        items = getitems(idx.tolist()) if callable(getitems) else [ds[i] for i in idx.tolist()]
        return default_collate([_pair(item, "dataset") for item in items])

    # ---- position, for checkpoints ----------------------------------------------------
    def state_dict(self) -> dict:
        return {"stream_pos": self._stream_pos}

    def reset(self) -> None:
        """Back to the start of the training stream: every run of a sweep sees the same data order."""
        self._stream_pos, self._stream = 0, None

    def load_state_dict(self, state: dict) -> None:
        self._stream_pos = int(state.get("stream_pos", 0))
        self._stream = None

    # ---- streams ----------------------------------------------------------------------
    def _raw_stream(self) -> Iterator:
        return iter(self.dataset)

    def _n_eval_items(self) -> int:
        """Items of the stream kept for evaluation (loader: batches; iterable: items)."""
        if self.eval_dataset is not None:
            return 0
        return self._eval_loader_batches if self.mode == "loader" else self._eval_stream_items

    def _skip_eval(self, it: Iterator) -> Iterator:
        for _ in range(self._n_eval_items()):
            if next(it, None) is None:
                return iter(())
        return it

    def _next_stream_item(self) -> Any:
        if self._stream is None:
            self._stream = self._skip_eval(self._raw_stream())
            for _ in range(self._stream_pos):  # resume: skip what training already consumed
                if next(self._stream, None) is None:
                    self._stream = self._skip_eval(self._raw_stream())
        item = next(self._stream, None)
        if item is None:  # a new pass over the data
            self._stream = self._skip_eval(self._raw_stream())
            item = next(self._stream, None)
            if item is None:
                raise FlopsFitError("dataset yields nothing beyond its held-out part; give more data or eval_dataset=...")
        self._stream_pos += 1
        return item

    def _held_out_of_stream(self, batch_size: int) -> Iterator[tuple[Any, Any]]:
        head = itertools.islice(self._raw_stream(), self._n_eval_items())
        if self.mode == "loader":
            yield from (_pair(item, "dataset") for item in head)
        else:
            yield from _collated(head, batch_size, "dataset")

    @staticmethod
    def _batched(data: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
        if isinstance(data, DataLoader) or (not hasattr(data, "__getitem__") and isinstance(data, Iterable)
                                            and not isinstance(data, IterableDataset)):
            yield from (_pair(item, "eval_dataset") for item in data)
        elif isinstance(data, IterableDataset):
            yield from _collated(iter(data), batch_size, "eval_dataset")
        else:
            for rows in spread_batches(len(data), batch_size):
                yield default_collate([_pair(data[i], "eval_dataset") for i in range(len(data))[rows]])


def _collated(items: Iterator, batch_size: int, where: str) -> Iterator[tuple[Any, Any]]:
    """Batches of ``batch_size`` (inputs, targets) items (the last one shorter), collated by torch."""
    while True:
        chunk = [_pair(item, where) for item in itertools.islice(items, int(batch_size))]
        if not chunk:
            return
        yield default_collate(chunk)


def build_torch(conf: dict) -> TorchData:
    """``dataset.kind=torch``: call the user's factories (``_target_``, ``eval_target``) with ``kwargs``."""
    from flops_fit.targets import resolve_target

    kwargs = dict(conf.get("kwargs") or {})
    train = resolve_target(conf["_target_"], "dataset._target_")(**kwargs)
    evald = resolve_target(conf["eval_target"], "dataset.eval_target")(**kwargs) if conf.get("eval_target") else None
    return TorchData(train, eval_dataset=evald, data_unit=conf.get("data_unit"), seed=int(conf.get("seed", 0)),
                     eval_size=conf.get("eval_size"), name=conf.get("name"), unique_units=conf.get("unique_units"))
