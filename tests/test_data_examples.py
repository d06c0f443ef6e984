"""flops_fit.examples.datasets: lazy TinyStories and CIFAR-10 wrappers over the data contract."""

from __future__ import annotations

import pickle
from itertools import islice

import numpy as np
import pytest
import torch

from flops_fit.errors import FlopsFitError
from flops_fit.examples.datasets import CIFAR10Dataset, TinyStoriesDataset
from tests.conftest import held_out


def test_tinystories_dataset_is_lazy_and_streams_windows(tmp_path):
    datasets = pytest.importorskip("datasets")
    missing = TinyStoriesDataset(str(tmp_path / "not-there"), tokenizer="bytes", vocab_size=256)
    assert missing.kind == "text" and missing.vocab_size == 256  # constructing reads nothing
    with pytest.raises(FlopsFitError, match="does not exist"):
        missing.train_batch(2, torch.Generator())

    rng = np.random.default_rng(0)
    words = np.array("once upon a time there was a little fox who liked to run".split())
    stories = [" ".join(rng.choice(words, 50)) for _ in range(60)]
    saved = tmp_path / "ts"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": stories[:50]}),
        "validation": datasets.Dataset.from_dict({"text": stories[50:]}),
    }).save_to_disk(str(saved))
    ds = TinyStoriesDataset(str(saved), tokenizer="bytes", vocab_size=256, seq_len=16, eval_size=256,
                            cache_dir=str(tmp_path / "cache"))
    x, y = next(iter(ds))
    assert x.shape == y.shape == (16,) and torch.equal(x[1:], y[:-1])
    bx, by = ds.train_batch(4, torch.Generator().manual_seed(0))
    assert bx.shape == (4, 16) and ds.examples_per_batch(4) == 64 and ds.data_unit == "tokens"
    held = list(TinyStoriesDataset(str(saved), tokenizer="bytes", vocab_size=256, seq_len=16, eval_size=256,
                                   split="eval", cache_dir=str(tmp_path / "cache")))
    assert len(held) == 256 // 16
    assert torch.equal(torch.stack([h[0] for h in held]), held_out(ds, 5)[0])
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    lx, _ = next(iter(loader))
    assert lx.shape == (8, 16)
    assert list(islice(iter(ds), 3))


def test_cifar10_dataset_map_style(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 8) for i in range(1, 6)] + [("test_batch", 10)]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"labels": rng.integers(0, 10, n).tolist(),
                         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}, f)
    lazy = CIFAR10Dataset(str(tmp_path / "elsewhere"))
    assert lazy.kind == "image" and lazy.num_classes == 10  # nothing read yet
    with pytest.raises(FlopsFitError, match="does not exist"):
        len(lazy)
    train = CIFAR10Dataset(str(folder), augment=True, eval_size=10)
    assert len(train) == 40
    img, label = train[3]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and 0 <= label < 10
    assert train[-1][0].shape == (3, 32, 32)
    with pytest.raises(IndexError):
        train[40]
    test = CIFAR10Dataset(str(folder), train=False, eval_size=10)
    assert len(test) == 10 and torch.equal(test[0][0], next(test.eval_batches(4))[0][0])
    x, y = train.train_batch(6, torch.Generator().manual_seed(0))
    assert x.shape == (6, 3, 32, 32) and train.examples_per_batch(6) == 6
