"""The data contract the training loop uses, independent of where the data comes from.

A :class:`DataSource` has

``kind``            ``"text"`` or ``"image"``
``data_unit``       ``"tokens"`` or ``"images"``: what ``examples_per_batch`` counts
``vocab_size``      text: every token id is below it (the model's vocabulary)
``num_classes``, ``image_size``, ``channels``   image data
``train_batch(batch_size, generator) -> (x, y)``
    text: ``x``, ``y`` LongTensor ``(B, T)``, ``y`` the next tokens of ``x`` (a random contiguous window
    of ``T + 1`` tokens from the training split); image: ``x`` float ``(B, C, H, W)`` normalised
    (augmented when enabled), ``y`` LongTensor ``(B,)``.
``eval_batches(batch_size)``
    iterates the fixed held-out split (``eval_size`` tokens or images), the same for every run, each
    batch a sample spread over the whole split (:func:`spread_batches`): the loss curve's evaluations
    use its first batches (``trainer.eval_budget``).
``examples_per_batch(batch_size)``
    tokens (``B * T``) or images (``B``) one training batch holds.
``unique_units``
    U, the distinct training units (tokens or samples) the source holds: counted (a text stream's
    training tokens, a dataset's length x units per example), or stated by the user
    (``dataset.unique_units``) for a stream; None when unknown. ff-plan turns it into each run's epochs.
``info()``
    a JSON-able description (sizes, cache entry) to record next to results.
"""

from __future__ import annotations

from typing import Any, Iterator

from flops_fit.errors import FlopsFitError


def spread_batches(n: int, batch_size: int) -> Iterator[slice]:
    """The ``n`` examples of a held-out split as batches of at most ``batch_size``, each spread evenly over
    the whole split (of ``k`` batches, batch ``j`` holds examples ``j, j + k, j + 2k, ...``): the first batches,
    which the loss curve's evaluations use (``trainer.eval_budget``), sample all of the split rather than its
    beginning (the first articles of a corpus), and all of them together are the split."""
    k = -(-int(n) // int(batch_size))
    for j in range(k):
        yield slice(j, int(n), k)


class DataSource:
    kind: str = "text"
    data_unit: str = "tokens"
    name: str = "data"

    def train_batch(self, batch_size: int, generator) -> tuple[Any, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def eval_batches(self, batch_size: int) -> Iterator[tuple[Any, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def examples_per_batch(self, batch_size: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def unique_units(self) -> int | None:
        """U: what the user stated (``dataset.unique_units``), else what the source counts, else None."""
        return self._unique()[0]

    @property
    def unique_source(self) -> str | None:
        """Where :attr:`unique_units` comes from: "stated", "counted", or None (unknown)."""
        return self._unique()[1]

    def _unique(self) -> tuple[int | None, str | None]:
        stated = (getattr(self, "cfg", None) or {}).get("unique_units") or getattr(self, "_stated_unique", None)
        if stated:
            return int(stated), "stated"
        n = self._count_unique()
        return (int(n), "counted") if n else (None, None)

    def _count_unique(self) -> int | None:
        return None  # a stream of unknown length

    def with_train_subset(self, units: int) -> "DataSource":
        """The same source trained on only its first ``units`` training units, the held-out split unchanged
        (a repetition run of a data-constrained study, ``grid.repeat_epochs``)."""
        raise FlopsFitError(f"{self.name}: grid.repeat_epochs trains runs on a subset of the data, which this "
                            f"source cannot give (a stream); plan without grid.repeat_epochs")

    def info(self) -> dict[str, Any]:
        """Public entries of ``self._info`` (set by subclasses) plus what every source has."""
        out = {k: v for k, v in getattr(self, "_info", {}).items() if not k.startswith("_")}
        out.update(name=self.name, kind=self.kind, data_unit=self.data_unit, unique_units=self.unique_units)
        cfg = getattr(self, "cfg", None)
        if cfg:
            out["source"] = cfg["source"]
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.info().items() if not isinstance(v, (dict, list)))
        return f"{type(self).__name__}({fields})"
