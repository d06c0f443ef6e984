"""Image data: CIFAR-10 python batches, (Fashion-)MNIST IDX files, seeded synthetic images.

The whole dataset lives as a uint8 tensor on the device; a training batch is a vectorised gather,
an optional augmentation (random crop with zero padding, horizontal flip) and per-channel
normalisation with statistics of the training set, all in plain torch. The held-out split is a
fixed (seeded) subset of ``eval_size`` test images, the same for every run.
"""

from __future__ import annotations

import copy

import gzip
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from flops_fit.data import cache
from flops_fit.data.base import DataSource, spread_batches
from flops_fit.errors import FlopsFitError

IDX_DEFAULT_DIRS = {
    "fashion_mnist": ["/usr/share/datasets/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist"],
}
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = "test_batch"


class ImageData(DataSource):
    kind = "image"
    data_unit = "images"

    def __init__(self, cfg: dict, train_x, train_y, eval_x, eval_y, *, device="cpu", info=None, mean=None, std=None):
        """``train_x``/``eval_x``: uint8 ``(N, C, H, W)`` (or None for generated training data)."""
        self.cfg = cfg
        self.name = cfg["name"]
        self.device = torch.device(device)
        self.num_classes = int(cfg["num_classes"])
        self.image_size = int(cfg["image_size"])
        self.channels = int(cfg["channels"])
        self.eval_size = int(cfg["eval_size"])
        self.augment = bool(cfg["augment"])
        self.crop_padding = cfg["crop_padding"] if cfg["crop_padding"] is not None else self.image_size // 8
        self.hflip = cfg["hflip"] if cfg["hflip"] is not None else cfg["source"] != "mnist"
        self._info = dict(info or {})
        what = self._info.get("corpus", self.name)
        for split, x, y in (("training", train_x, train_y), ("held-out", eval_x, eval_y)):
            if x is None:
                continue
            if x.shape[1] != self.channels:
                raise FlopsFitError(
                    f"dataset.channels={self.channels} but the {split} images of {what} have {x.shape[1]} channel(s); "
                    f"set dataset.channels={x.shape[1]}"
                )
            if y.numel() and int(y.min()) < 0:
                raise FlopsFitError(f"label {int(y.min())} of {what} is negative; labels must be 0..num_classes-1")
            if y.numel() and int(y.max()) >= self.num_classes:
                raise FlopsFitError(
                    f"label {int(y.max())} of {what} is out of range for dataset.num_classes={self.num_classes}; "
                    f"set dataset.num_classes={int(y.max()) + 1}"
                )
        self.train_x = None if train_x is None else _resize(train_x, self.image_size).to(self.device)
        self.train_y = None if train_y is None else train_y.long().to(self.device)
        self.eval_x = _resize(eval_x, self.image_size).to(self.device)
        self.eval_y = eval_y.long().to(self.device)
        if mean is None:
            mean, std = _channel_stats(self.train_x if self.train_x is not None else self.eval_x)
        shape = (1, self.channels, 1, 1)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).reshape(shape)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device).reshape(shape)

    # ------------------------------------------------------------------ contract

    @property
    def num_train(self) -> int | None:
        return None if self.train_x is None else int(self.train_x.shape[0])

    def _count_unique(self) -> int | None:
        return self.num_train  # None for images generated on the fly

    def with_train_subset(self, units: int) -> "ImageData":
        if self.train_x is None:
            return super().with_train_subset(units)
        sub = copy.copy(self)
        sub.cfg = {**self.cfg, "unique_units": None}
        sub.train_x, sub.train_y = self.train_x[: int(units)], self.train_y[: int(units)]
        return sub

    def examples_per_batch(self, batch_size: int) -> int:
        return int(batch_size)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or float in [0, 1]) images -> float, normalised per channel."""
        if x.dtype == torch.uint8:
            return x.float().div_(255.0).sub_(self.mean).div_(self.std)
        return (x - self.mean) / self.std

    def augment_batch(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop with zero padding and a random horizontal flip, vectorised over the batch."""
        B, C, H, W = x.shape
        gdev = getattr(generator, "device", torch.device("cpu"))
        p = int(self.crop_padding)
        if p > 0:
            Hp, Wp = H + 2 * p, W + 2 * p
            xp = F.pad(x, (p, p, p, p)).reshape(B, C, Hp * Wp)
            oy = torch.randint(0, 2 * p + 1, (B,), generator=generator, device=gdev).to(x.device)
            ox = torch.randint(0, 2 * p + 1, (B,), generator=generator, device=gdev).to(x.device)
            # flat index of every output pixel in the padded image, shifted per sample: one gather
            base = (torch.arange(H, device=x.device)[:, None] * Wp + torch.arange(W, device=x.device)).reshape(-1)
            idx = (oy * Wp + ox)[:, None] + base
            x = torch.gather(xp, 2, idx[:, None, :].expand(B, C, H * W)).reshape(B, C, H, W)
        if self.hflip:
            flip = torch.rand(B, generator=generator, device=gdev).to(x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x.contiguous()

    def _raw_train(self, batch_size: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        gdev = getattr(generator, "device", torch.device("cpu"))
        idx = torch.randint(0, self.train_x.shape[0], (int(batch_size),), generator=generator, device=gdev)
        idx = idx.to(self.device)
        return self.train_x[idx], self.train_y[idx]

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._raw_train(batch_size, generator)
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        if self.augment:
            x = self.augment_batch(x, generator)
        return x.sub_(self.mean).div_(self.std), y

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for rows in spread_batches(self.eval_x.shape[0], batch_size):
            yield self.normalize(self.eval_x[rows]), self.eval_y[rows]

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(
            num_classes=self.num_classes,
            image_size=self.image_size,
            channels=self.channels,
            train_images=self.num_train,
            eval_images=int(self.eval_x.shape[0]),
            augment=self.augment,
            mean=[round(float(v), 5) for v in self.mean.flatten()],
            std=[round(float(v), 5) for v in self.std.flatten()],
        )
        return out


class SyntheticImageData(ImageData):
    """Class-conditional images: a smooth random prototype per class, contrast jitter and pixel noise.

    Training images are generated on the fly from the caller's generator (unlimited data); the
    held-out images are generated once from ``dataset.seed``.
    """

    def __init__(self, cfg: dict, *, device="cpu"):
        K, C, S = int(cfg["num_classes"]), int(cfg["channels"]), int(cfg["image_size"])
        self.noise = float(cfg["options"]["noise"])
        g = torch.Generator().manual_seed(int(cfg["seed"]))
        low = torch.rand(K, C, 4, 4, generator=g)
        proto = F.interpolate(low, size=(S, S), mode="bilinear", align_corners=False)
        lo, hi = proto.amin(dim=(1, 2, 3), keepdim=True), proto.amax(dim=(1, 2, 3), keepdim=True)
        self.prototypes = (proto - lo) / (hi - lo + 1e-6)  # each in [0, 1]
        eval_gen = torch.Generator().manual_seed(int(cfg["seed"]) + 1)
        ex, ey = self._generate(int(cfg["eval_size"]), eval_gen)
        ex = (ex * 255).round().to(torch.uint8)
        n = S * S * C
        info = {"corpus": f"synthetic images (seed {cfg['seed']}, noise {self.noise})", "pixels": n}
        super().__init__(cfg, None, None, ex, ey, device=device, info=info)
        self.prototypes = self.prototypes.to(self.device)

    def _generate(self, n: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        K = self.prototypes.shape[0]
        gdev = getattr(generator, "device", torch.device("cpu"))
        y = torch.randint(0, K, (n,), generator=generator, device=gdev)
        contrast = 0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=generator, device=gdev)
        noise = torch.randn((n, *self.prototypes.shape[1:]), generator=generator, device=gdev)
        proto = self.prototypes.to(gdev)[y]
        x = (0.5 + contrast * (proto - 0.5) + self.noise * noise).clamp_(0.0, 1.0)
        return x, y

    def _raw_train(self, batch_size: int, generator):
        x, y = self._generate(int(batch_size), generator)
        return x.to(self.device), y.to(self.device)


# --------------------------------------------------------------------------- helpers


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, x.shape[0], 4096):
        chunk = x[i : i + 4096].float()
        r = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i : i + 4096] = r.round().clamp_(0, 255).to(torch.uint8)
    return out


def _channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    C = x.shape[1]
    s = torch.zeros(C, dtype=torch.float64)
    s2 = torch.zeros(C, dtype=torch.float64)
    n = 0
    for i in range(0, x.shape[0], 8192):
        c = x[i : i + 8192].to("cpu", torch.float64) / 255.0
        s += c.sum(dim=(0, 2, 3))
        s2 += (c * c).sum(dim=(0, 2, 3))
        n += c.shape[0] * c.shape[2] * c.shape[3]
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(1e-12).sqrt()
    return mean.tolist(), std.clamp_min(1e-3).tolist()


def _eval_subset(x: torch.Tensor, y: torch.Tensor, cfg: dict, what: str):
    n, E = x.shape[0], int(cfg["eval_size"])
    if E > n:
        raise FlopsFitError(
            f"dataset.eval_size={E} exceeds the {n} test images of {what}; set dataset.eval_size={n} or less"
        )
    if E == n:
        return x, y
    idx = np.sort(np.random.default_rng(int(cfg["seed"])).permutation(n)[:E])
    idx_t = torch.from_numpy(idx)
    return x[idx_t], y[idx_t]


# --------------------------------------------------------------------------- CIFAR-10


def _unpickle(f) -> dict:
    try:
        d = pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file
        raise FlopsFitError(f"a CIFAR-10 batch could not be unpickled ({e}); re-extract cifar-10-python.tar.gz") from None
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_arrays(batches: list[dict], where: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for d in batches:
        if "data" not in d or "labels" not in d:
            raise FlopsFitError(f"{where}: a batch lacks b'data'/b'labels'; these are not CIFAR-10 python batches")
        data = np.asarray(d["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise FlopsFitError(f"{where}: b'data' has shape {data.shape}, expected (N, 3072) uint8 (CIFAR-10 python)")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d["labels"], dtype=np.int64))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _find_cifar_dir(folder: Path) -> Path | None:
    for cand in (folder, folder / "cifar-10-batches-py"):
        if all((cand / n).is_file() for n in CIFAR_TRAIN + [CIFAR_TEST]):
            return cand
    return None


def _torchvision_download(root: Path) -> bool:
    try:
        import torchvision  # noqa: F401
        from torchvision.datasets import CIFAR10
    except Exception:  # noqa: BLE001 - torchvision absent or broken: no download
        return False
    try:
        CIFAR10(root=str(root), train=True, download=True)
    except Exception as e:  # noqa: BLE001
        raise FlopsFitError(
            f"downloading CIFAR-10 into {root} through torchvision failed ({e}); put the extracted "
            "cifar-10-batches-py folder there or set dataset.path"
        ) from None
    return True


def load_cifar10(cfg: dict, cache_dir=None) -> tuple[torch.Tensor, ...]:
    path = cfg["path"]
    if path:
        p = Path(os.path.expanduser(str(path)))
        if p.is_file() and p.name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(p) as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                missing = [n for n in CIFAR_TRAIN + [CIFAR_TEST] if n not in members]
                if missing:
                    raise FlopsFitError(f"dataset.path={path} lacks {', '.join(missing)}; use cifar-10-python.tar.gz")
                train = [_unpickle(tar.extractfile(members[n])) for n in CIFAR_TRAIN]
                test = [_unpickle(tar.extractfile(members[CIFAR_TEST]))]
            return (*_cifar_arrays(train, str(p)), *_cifar_arrays(test, str(p)))
        if not p.exists():
            raise FlopsFitError(
                f"dataset.path={path} does not exist; set it to the folder holding the CIFAR-10 python batches "
                "(data_batch_1..5, test_batch from cifar-10-python.tar.gz) or to the .tar.gz itself"
            )
        folder = _find_cifar_dir(p)
        if folder is None:
            raise FlopsFitError(
                f"dataset.path={path} has no CIFAR-10 python batches (data_batch_1..5 and test_batch, or a "
                "cifar-10-batches-py subfolder); extract cifar-10-python.tar.gz there"
            )
    else:
        root = cache.cache_root(cache_dir) / "cifar10"
        folder = _find_cifar_dir(root)
        if folder is None and cfg["download"] and _torchvision_download(root):
            folder = _find_cifar_dir(root)
        if folder is None:
            raise FlopsFitError(
                f"CIFAR-10 not found: extract cifar-10-python.tar.gz (the python batches data_batch_1..5, "
                f"test_batch) into {root} or set dataset.path=/folder/with/cifar-10-batches-py "
                "(automatic download needs torchvision)"
            )
    train, test = [], []
    for n in CIFAR_TRAIN:
        with open(folder / n, "rb") as f:
            train.append(_unpickle(f))
    with open(folder / CIFAR_TEST, "rb") as f:
        test.append(_unpickle(f))
    return (*_cifar_arrays(train, str(folder)), *_cifar_arrays(test, str(folder)))


# --------------------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or not) as a numpy array (uint8 payloads, as MNIST and Fashion-MNIST use)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise FlopsFitError(f"{path} could not be read ({e}); re-download or decompress it") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise FlopsFitError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise FlopsFitError(f"{path}: unknown IDX data type 0x{data[2]:02x}")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    dt = np.dtype(dtypes[data[2]])
    count = int(np.prod(dims)) if dims else 0
    if len(data) - offset < count * dt.itemsize:
        raise FlopsFitError(f"{path} is truncated: header says {dims}, file has {len(data) - offset} payload bytes")
    return np.frombuffer(data, dtype=dt, count=count, offset=offset).reshape(dims)


def _find_idx(folder: Path, prefix: str, kind: str) -> Path | None:
    # train-images-idx3-ubyte[.gz], also train-images.idx3-ubyte and similar spellings
    cands = sorted(folder.glob(f"{prefix}-{kind}*idx{3 if kind == 'images' else 1}*"))
    return cands[0] if cands else None


def load_idx_dataset(cfg: dict) -> tuple[torch.Tensor, ...]:
    source = cfg["source"]
    names = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (.gz or not)"
    if cfg["path"]:
        p = Path(os.path.expanduser(str(cfg["path"])))
        if not p.is_dir():
            raise FlopsFitError(f"dataset.path={cfg['path']} does not exist or is not a folder; point it at the folder with {names}")
        dirs, key = [p], f"dataset.path={cfg['path']}"
    else:
        dirs = [Path(d) for d in IDX_DEFAULT_DIRS.get(source, [])]
        key = f"the default folder {', '.join(map(str, dirs))}"
    for d in dirs:
        files = {(pre, kind): _find_idx(d, pre, kind) for pre in ("train", "t10k") for kind in ("images", "labels")}
        if all(files.values()):
            break
    else:
        hint = " (apt-get install dataset-fashion-mnist)" if source == "fashion_mnist" else ""
        raise FlopsFitError(f"{source} IDX files not found in {key}; need {names}{hint}, or set dataset.path=/folder/with/them")
    out = []
    for pre in ("train", "t10k"):
        x = read_idx(files[(pre, "images")])
        y = read_idx(files[(pre, "labels")])
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise FlopsFitError(f"{files[(pre, 'images')]}: images {x.shape} and labels {y.shape} do not match")
        out += [torch.from_numpy(x.astype(np.uint8)[:, None]), torch.from_numpy(y.astype(np.int64))]
    return tuple(out)


# --------------------------------------------------------------------------- entry


def build_image(cfg: dict, *, cache_dir=None, device="cpu", log=None) -> ImageData:
    source = cfg["source"]
    if source == "synthetic":
        return SyntheticImageData(cfg, device=device)
    if source == "cifar10":
        tx, ty, ex, ey = load_cifar10(cfg, cache_dir)
    else:
        tx, ty, ex, ey = load_idx_dataset(cfg)
    ex, ey = _eval_subset(ex, ey, cfg, source)
    info = {"corpus": source, "native_size": int(tx.shape[-1])}
    return ImageData(cfg, tx, ty, ex, ey, device=device, info=info)
