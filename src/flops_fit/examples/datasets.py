"""Example dataset wrappers: TinyStories (text) and CIFAR-10 (images) as torch datasets.

Both are lazy: constructing one reads nothing; the data is built (and, for text, tokenized once
and cached) on first use. Besides the torch ``Dataset`` protocol they expose the flops-fit data
contract (``kind``, ``data_unit``, ``train_batch``, ``eval_batches``, ``examples_per_batch``), so
either can be handed to the training loop directly.

>>> from flops_fit.examples import TinyStoriesDataset
>>> ds = TinyStoriesDataset(path="~/data/tinystories_saved", seq_len=256)  # doctest: +SKIP
>>> x, y = ds.train_batch(32, torch.Generator().manual_seed(0))              # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from flops_fit.data import DataSource, build_data


class _Lazy:
    """Builds the DataSource on first use and forwards the data contract to it."""

    _cfg: dict
    _cache_dir: Any
    _device: Any
    _source: DataSource | None

    @property
    def source(self) -> DataSource:
        if self._source is None:
            self._source = build_data(self._cfg, cache_dir=self._cache_dir, device=self._device)
        return self._source

    @property
    def config(self) -> dict:
        return dict(self._cfg)

    def train_batch(self, batch_size: int, generator: torch.Generator):
        return self.source.train_batch(batch_size, generator)

    def eval_batches(self, batch_size: int):
        return self.source.eval_batches(batch_size)

    def examples_per_batch(self, batch_size: int) -> int:
        return self.source.examples_per_batch(batch_size)

    def info(self) -> dict:
        return self.source.info()


class TinyStoriesDataset(_Lazy, IterableDataset):
    """TinyStories as a stream of ``(x, y)`` next-token windows of ``seq_len`` tokens.

    ``path``: a ``save_to_disk`` folder or local ``.txt``/``.jsonl`` files; ``None`` loads
    ``hf_name`` with ``datasets.load_dataset`` (set ``HF_DATASETS_OFFLINE=1`` to use only the HF cache).
    Iterating gives single windows: endless random training windows (``split="train"``), or the
    fixed held-out windows (``split="eval"``). Batches are cheaper through ``train_batch``.
    """

    kind = "text"
    data_unit = "tokens"

    def __init__(
        self,
        path: str | None = None,
        *,
        tokenizer: str = "gpt2",
        vocab_size: int = 50257,
        seq_len: int = 256,
        eval_size: int = 65536,
        split: str = "train",
        seed: int = 0,
        max_train_bytes: int | None = None,
        hf_name: str = "roneneldan/TinyStories",
        cache_dir: str | None = None,
        device: Any = "cpu",
        **options: Any,
    ):
        if split not in ("train", "eval"):
            raise ValueError(f"split={split!r} must be 'train' or 'eval'")
        self._cfg = dict(
            name="tinystories",
            kind="text",
            source="tinystories",
            path=path,
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            seq_len=seq_len,
            eval_size=eval_size,
            seed=seed,
            max_train_bytes=max_train_bytes,
            hf_name=hf_name,
            options=options,
        )
        self.vocab_size, self.seq_len, self.split, self.seed = vocab_size, seq_len, split, seed
        self._cache_dir, self._device, self._source = cache_dir, device, None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        src = self.source
        if self.split == "eval":
            for x, y in src.eval_batches(256):
                yield from zip(x, y)
            return
        worker = get_worker_info()
        g = torch.Generator().manual_seed(self.seed * 1009 + (worker.id + 1 if worker else 0))
        while True:
            x, y = src.train_batch(256, g)
            yield from zip(x, y)


class CIFAR10Dataset(_Lazy, Dataset):
    """CIFAR-10 from the python pickle batches (``data_batch_1..5``, ``test_batch``) in ``path``.

    Map-style: ``ds[i]`` is ``(image float (3, H, W) normalised, label)``, from the 50,000 training
    images (``train=True``, augmented when ``augment``) or the fixed held-out subset of ``eval_size``
    test images (``train=False``).
    """

    kind = "image"
    data_unit = "images"
    num_classes = 10
    channels = 3

    def __init__(
        self,
        path: str | None = None,
        *,
        train: bool = True,
        augment: bool = False,
        image_size: int = 32,
        eval_size: int = 10000,
        seed: int = 0,
        download: bool = True,
        cache_dir: str | None = None,
        device: Any = "cpu",
        **options: Any,
    ):
        self._cfg = dict(
            name="cifar10",
            kind="image",
            source="cifar10",
            path=path,
            num_classes=10,
            image_size=image_size,
            channels=3,
            augment=augment,
            eval_size=eval_size,
            seed=seed,
            download=download,
            options=options,
        )
        self.image_size, self.train, self.augment = image_size, train, augment
        self._cache_dir, self._device, self._source = cache_dir, device, None
        self._gen = torch.Generator().manual_seed(seed)

    def _split(self):
        src = self.source
        return (src.train_x, src.train_y) if self.train else (src.eval_x, src.eval_y)

    def __len__(self) -> int:
        return int(self._split()[0].shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self._split()
        n = int(x.shape[0])
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        i = i % n
        img = x[i : i + 1].float().div_(255.0)
        if self.train and self.augment:
            img = self.source.augment_batch(img, self._gen)
        return self.source.normalize(img)[0], int(y[i])
