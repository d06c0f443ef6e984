"""Image data: CIFAR-10 pickle batches, IDX files, synthetic images, normalisation and augmentation."""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from flops_fit.data import build_data
from flops_fit.data.image import read_idx
from flops_fit.errors import FlopsFitError
from tests.conftest import held_out

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_cifar(folder: Path, per_batch: int = 20, n_test: int = 30, seed: int = 0) -> Path:
    """CIFAR-10 python batches in the real layout: {b'batch_label', b'labels', b'data' (N, 3072) uint8, b'filenames'}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def batch(name, n):
        labels = rng.integers(0, 10, n).tolist()
        # class-dependent brightness per channel, so labels are visible in the pixels
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        d = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)

    for i in range(1, 6):
        batch(f"data_batch_{i}", per_batch)
    batch("test_batch", n_test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane"] * 10, b"num_vis": 3072}, f)
    return folder


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file: magic 0x00000800 | type 0x08 (ubyte) << 0 | ndim, big-endian dims, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(folder: Path, n_train: int = 50, n_test: int = 20, gz: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for pre, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{pre}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{pre}-labels-idx1-ubyte{ext}", rng.integers(0, 10, n, dtype=np.uint8))
    return folder


def cifar_cfg(path, **kw):
    cfg = dict(kind="image", source="cifar10", path=str(path), num_classes=10, image_size=32, channels=3,
               eval_size=30, download=False)
    cfg.update(kw)
    return cfg


def mnist_cfg(path, **kw):
    cfg = dict(kind="image", source="mnist", path=str(path), num_classes=10, image_size=28, channels=1, eval_size=20)
    cfg.update(kw)
    return cfg


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_batches_shapes_and_normalisation(tmp_path):
    folder = write_cifar(tmp_path / "cifar-10-batches-py")
    data = build_data(cifar_cfg(folder))
    assert (data.kind, data.data_unit, data.num_classes, data.image_size, data.channels) == ("image", "images", 10, 32, 3)
    assert data.num_train == 100 and data.examples_per_batch(16) == 16
    x, y = data.train_batch(16, torch.Generator().manual_seed(0))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (16,) and y.dtype == torch.long
    # the pixels are those of the pickled rows, normalised with the training set's channel statistics
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    first = torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(data.normalize(data.train_x[:1])[0], (first - data.mean[0]) / data.std[0], atol=1e-5)
    assert data.train_y[:20].tolist() == raw[b"labels"]
    everything = data.normalize(data.train_x)
    assert torch.allclose(everything.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(everything.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2)
    # the parent folder (holding cifar-10-batches-py) and the .tar.gz itself work too
    assert build_data(cifar_cfg(tmp_path)).num_train == 100
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    from_tar = build_data(cifar_cfg(tgz))
    assert torch.equal(from_tar.train_x, data.train_x) and torch.equal(from_tar.eval_y, data.eval_y)


def test_cifar10_held_out_subset_is_fixed(tmp_path):
    folder = write_cifar(tmp_path / "c")
    a = build_data(cifar_cfg(folder, eval_size=12))
    b = build_data(cifar_cfg(folder, eval_size=12))
    (xa, ya), (xb, _) = held_out(a, 5), held_out(b, 7)
    assert xa.shape == (12, 3, 32, 32) and torch.equal(xa, xb)
    assert torch.equal(ya, b.eval_y)
    with pytest.raises(FlopsFitError, match=r"dataset\.eval_size=31 exceeds the 30 test images"):
        build_data(cifar_cfg(folder, eval_size=31))


def test_cifar10_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(FlopsFitError, match=r"^dataset\.path=.*missing does not exist"):
        build_data(cifar_cfg(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlopsFitError, match=r"data_batch_1\.\.5 and test_batch"):
        build_data(cifar_cfg(tmp_path / "empty"))
    with pytest.raises(FlopsFitError, match=r"CIFAR-10 not found: extract cifar-10-python\.tar\.gz.*into .*cifar10"):
        build_data(dict(cifar_cfg(tmp_path), path=None), cache_dir=tmp_path / "cache")


def test_augmentation_is_random_crop_with_padding_and_flip(tmp_path):
    folder = write_cifar(tmp_path / "c")
    plain = build_data(cifar_cfg(folder))
    aug = build_data(cifar_cfg(folder, augment=True, crop_padding=4, hflip=True))
    x = torch.rand(64, 3, 32, 32)
    out = aug.augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    kinds = set()
    for i in range(64):
        found = None
        for flip in (False, True):
            src = padded[i].flip(-1) if flip else padded[i]
            for dy in range(9):
                for dx in range(9):
                    if torch.equal(out[i], src[:, dy : dy + 32, dx : dx + 32]):
                        found = (flip, dy, dx)
                        break
                if found:
                    break
            if found:
                break
        assert found is not None, f"sample {i} is not a padded crop (or its mirror) of its input"
        kinds.add(found)
    assert len(kinds) > 10 and {k[0] for k in kinds} == {False, True}
    # training batches of the augmented source differ from plain ones; held-out batches never augment
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert not torch.equal(aug.train_batch(32, g1)[0], plain.train_batch(32, g2)[0])
    assert torch.equal(next(aug.eval_batches(8))[0], next(plain.eval_batches(8))[0])


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_gz_or_not(tmp_path, gz):
    folder = write_mnist(tmp_path / "mnist", gz=gz)
    arr = read_idx(next(folder.glob("train-images*")))
    assert arr.shape == (50, 28, 28) and arr.dtype == np.uint8
    data = build_data(mnist_cfg(folder))
    assert data.num_train == 50 and not data.hflip  # mnist digits are never mirrored
    x, y = data.train_batch(8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 1, 28, 28) and y.dtype == torch.long and int(y.max()) < 10
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(arr.copy()))
    resized = build_data(mnist_cfg(folder, image_size=32))
    assert resized.train_batch(4, torch.Generator().manual_seed(0))[0].shape == (4, 1, 32, 32)


def test_idx_errors(tmp_path):
    folder = write_mnist(tmp_path / "m")
    with pytest.raises(FlopsFitError, match=r"dataset\.channels=3 .* have 1 channel\(s\); set dataset\.channels=1"):
        build_data(mnist_cfg(folder, channels=3))
    with pytest.raises(FlopsFitError, match=r"out of range for dataset\.num_classes=3; set dataset\.num_classes=10"):
        build_data(mnist_cfg(folder, num_classes=3))
    with pytest.raises(FlopsFitError, match=r"mnist IDX files not found in dataset\.path="):
        build_data(mnist_cfg(tmp_path))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(FlopsFitError, match="not an IDX file"):
        read_idx(bad / "x-idx3-ubyte")


@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_the_debian_path():
    data = build_data(dict(kind="image", source="fashion_mnist", num_classes=10, image_size=28, channels=1,
                           eval_size=1000, augment=True))
    assert data.num_train == 60000 and data.eval_x.shape == (1000, 1, 28, 28)
    x, y = data.train_batch(32, torch.Generator().manual_seed(0))
    assert x.shape == (32, 1, 28, 28) and set(y.tolist()) <= set(range(10))
    assert 0.2 < data.info()["mean"][0] < 0.4  # Fashion-MNIST's mean pixel is about 0.286


# --------------------------------------------------------------------------- synthetic


def test_synthetic_images_are_learnable_and_fixed():
    cfg = dict(kind="image", source="synthetic", num_classes=10, image_size=16, channels=3, eval_size=500)
    data = build_data(cfg)
    x, y = data.train_batch(64, torch.Generator().manual_seed(0))
    assert x.shape == (64, 3, 16, 16) and y.shape == (64,) and data.num_train is None
    ex = held_out(data, 128)[0]
    assert torch.equal(ex, held_out(build_data(cfg), 100)[0])
    assert abs(float(ex.mean())) < 0.2 and 0.8 < float(ex.std()) < 1.2  # normalised
    # nearest-prototype classification is far above chance: the labels are in the pixels
    protos = data.normalize(data.prototypes)
    pred = ((ex[:, None] - protos[None]) ** 2).flatten(2).sum(-1).argmin(1)
    assert (pred == data.eval_y).float().mean() > 0.8
    x2, _ = data.train_batch(64, torch.Generator().manual_seed(1))
    assert not torch.equal(x, x2)
