"""Any Hugging Face ``datasets`` dataset (``dataset=hf``): from the Hub by name, or from local files.

Where the rows come from (:func:`load_splits`):

* ``dataset.path`` a ``save_to_disk`` folder: ``datasets.load_from_disk``;
* ``dataset.path`` a file, a folder or a glob of ``.parquet``, ``.json``/``.jsonl``, ``.csv`` or ``.arrow``
  files: ``datasets.load_dataset(<format>, data_files=...)``;
* no path: ``datasets.load_dataset(dataset.hf_name, name=options.hf_config, revision=options.revision)``
  (honours ``HF_DATASETS_OFFLINE`` and the HF cache).

``dataset.options.split`` names the training split and ``options.eval_split`` the held-out one, when the
dataset has it (else text keeps a tail of the stream, images a seeded subset of the training rows).
``options.streaming=true`` reads rows as they come (``streaming=True``) instead of materialising the
dataset first: for corpora larger than the disk cache wants twice.

Text (``dataset.kind=text``) names its column ``dataset.text_field`` and is tokenized and cached by the
text sources' machinery (``flops_fit.data.text``, through ``corpora.HFDatasetCorpus``). Images (``dataset.kind=image``)
name ``dataset.input_column`` (PIL images, arrays or nested lists) and ``dataset.label_column`` (integer
class ids); they are decoded once, resized to ``image_size`` and cached as one ``.npz`` under
``<cache>/images``, keyed by the files (or Hub name), the columns and the shape.

``datasets`` is imported only here, and only when rows are actually read.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from flops_fit.data import cache
from flops_fit.errors import FlopsFitError

FORMATS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


def import_datasets(what: str = "dataset=hf"):
    try:
        import datasets
    except ImportError as e:
        raise FlopsFitError(f"{what} needs the datasets package ({e}); pip install 'datasets>=2.18' "
                            "(or pip install 'flops-fit[text]')") from None
    return datasets


def is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in ("dataset_dict.json", "state.json", "dataset_info.json"))


def data_files(path: str) -> tuple[str, list[Path]]:
    """(the ``load_dataset`` builder, the files) for a file, folder or glob of one of :data:`FORMATS`."""
    p = os.path.expanduser(str(path))
    if any(c in p for c in "*?["):
        files = [Path(f) for f in sorted(glob.glob(p, recursive=True)) if Path(f).is_file()]
    elif Path(p).is_dir():
        files = sorted(f for f in Path(p).rglob("*") if f.is_file() and not f.name.startswith(".")
                       and _suffix(f) in FORMATS)
    else:
        files = [Path(p)] if Path(p).is_file() else []
    kinds = {FORMATS.get(_suffix(f)) for f in files}
    if not files or None in kinds:
        raise FlopsFitError(
            f"dataset.path={path} holds no {', '.join(FORMATS)} files (nor a save_to_disk folder); point it at one of "
            "those (a file, a folder or a glob)")
    if len(kinds) > 1:
        raise FlopsFitError(f"dataset.path={path} mixes formats ({', '.join(sorted(kinds))}); point it at one kind")
    return kinds.pop(), files


def _suffix(f: Path) -> str:
    s = f.suffix.lower()
    return Path(f.stem).suffix.lower() if s == ".gz" else s


def identity(cfg: dict) -> dict:
    """What the rows are, cheaply (no row is read): files with sizes and mtimes, or the Hub coordinates."""
    opts = cfg["options"]
    ident = {"split": opts["split"], "eval_split": opts["eval_split"]}
    if cfg.get("path"):
        p = Path(os.path.expanduser(str(cfg["path"])))
        files = sorted(f for f in p.rglob("*") if f.is_file()) if is_saved_dataset(p) else data_files(cfg["path"])[1]
        ident["files"] = cache.stable_hash(cache.file_identity(files), 32)
    else:
        ident.update(hub=cfg["hf_name"], config=opts["hf_config"], revision=opts["revision"])
    return ident


def describe(cfg: dict) -> str:
    return str(cfg["path"]) if cfg.get("path") else f"hf:{cfg['hf_name']}"


@contextlib.contextmanager
def _quiet(datasets):
    """No ``datasets`` progress bars while flops-fit reads (its own log line says what was read)."""
    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def load_splits(cfg: dict) -> dict:
    """``{"train": rows, "eval": rows or None}``: ``datasets`` Datasets (IterableDatasets when streaming)."""
    source = cfg.get("source")
    datasets = import_datasets("dataset=hf" if source in (None, "hf") else f"dataset.source={source}")
    with _quiet(datasets):
        return _load_splits(datasets, cfg)


def _load_splits(datasets, cfg: dict) -> dict:
    opts = cfg["options"]
    split, eval_split, streaming = opts["split"], opts["eval_split"], bool(opts.get("streaming"))
    path = cfg.get("path")
    if path and is_saved_dataset(Path(os.path.expanduser(str(path)))):
        try:
            obj = datasets.load_from_disk(os.path.expanduser(str(path)))
        except Exception as e:  # noqa: BLE001 - any failure to read the folder is the user's to fix
            raise FlopsFitError(f"dataset.path={path} could not be read with datasets.load_from_disk ({_line(e)})") from None
        if isinstance(obj, datasets.DatasetDict):
            if split not in obj:
                raise FlopsFitError(f"dataset.path={path} has no split '{split}' (splits: {', '.join(obj)}); "
                                    "set dataset.options.split")
            splits = {"train": obj[split], "eval": obj[eval_split] if eval_split and eval_split in obj else None}
        else:
            splits = {"train": obj, "eval": None}
        if streaming:
            splits = {k: None if v is None else v.to_iterable_dataset() for k, v in splits.items()}
        return splits
    if path:
        builder, files = data_files(path)
        try:
            train = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train",
                                          streaming=streaming)
        except Exception as e:  # noqa: BLE001
            raise FlopsFitError(f"dataset.path={path} could not be read as {builder} ({_line(e)}); check the files") from None
        return {"train": train, "eval": None}
    name = cfg.get("hf_name")
    if not name:
        raise FlopsFitError("dataset=hf needs dataset.hf_name=<a Hub dataset> or dataset.path=<a local folder or files>")
    kw = dict(name=opts["hf_config"], revision=opts["revision"], streaming=streaming)
    try:
        train = datasets.load_dataset(name, split=split, **kw)
    except Exception as e:  # noqa: BLE001
        raise FlopsFitError(
            f"dataset.hf_name={name} could not be loaded ({_line(e)[:200]}); offline, set HF_DATASETS_OFFLINE=1 with "
            "the dataset in the HF cache, or set dataset.path to a local copy (a save_to_disk folder or files)"
        ) from None
    ev = None
    if eval_split:
        try:
            ev = datasets.load_dataset(name, split=eval_split, **kw)
        except Exception:  # noqa: BLE001 - no such split: a tail (text) or a subset (images) is held out
            ev = None
    return {"train": train, "eval": ev}


def _line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def columns_of(ds) -> list[str] | None:
    names = getattr(ds, "column_names", None)
    if names is None and getattr(ds, "features", None) is not None:
        names = list(ds.features)
    return list(names) if names is not None else None


def check_columns(ds, wanted: dict[str, str], what: str) -> None:
    """Each ``dataset.<key>=<column>`` in ``wanted`` names a column of ``ds`` (when it can say, streaming or not)."""
    names = columns_of(ds)
    if names is None:
        try:
            names = list(next(iter(ds)))
        except StopIteration:
            raise FlopsFitError(f"{what} has no rows; check dataset.path or dataset.hf_name") from None
    for key, col in wanted.items():
        if col not in names:
            raise FlopsFitError(f"dataset.{key}={col!r} is not a column of {what} (columns: {', '.join(names)}); "
                                f"set dataset.{key}")


def rows(ds, column: str, batch_size: int = 1024) -> Iterator[Any]:
    """The values of ``column``, in order, batched where the dataset allows it."""
    it = getattr(ds, "iter", None)
    if callable(it):
        for batch in it(batch_size=batch_size):
            yield from batch[column]
    else:
        for row in ds:
            yield row[column]


# --------------------------------------------------------------------------------------------- images


def _to_array(value: Any, channels: int, size: int, where: str) -> np.ndarray:
    """One image (PIL, array, nested list; HWC, CHW or HW) as uint8 (channels, size, size)."""
    from PIL import Image

    if isinstance(value, dict) and ("bytes" in value or "path" in value):  # an undecoded Image feature
        import io

        value = Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
    if not isinstance(value, Image.Image):
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr * 255.0 if arr.max(initial=0.0) <= 1.0 else arr
        arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):  # CHW -> HWC
            arr = arr.transpose(1, 2, 0)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3):
            raise FlopsFitError(f"{where} is not an image (shape {arr.shape}); set dataset.input_column to the image column")
        value = Image.fromarray(arr)
    value = value.convert("L" if channels == 1 else "RGB")
    if value.size != (size, size):
        value = value.resize((size, size), Image.BILINEAR)
    arr = np.asarray(value, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _image_arrays(ds, cfg: dict, what: str) -> tuple[np.ndarray, np.ndarray]:
    xcol, ycol = cfg["input_column"], cfg["label_column"]
    C, S = int(cfg["channels"]), int(cfg["image_size"])
    xs, ys = [], []
    it = getattr(ds, "iter", None)
    batches = it(batch_size=256) if callable(it) else ({xcol: [r[xcol]], ycol: [r[ycol]]} for r in ds)
    for batch in batches:
        for x, y in zip(batch[xcol], batch[ycol]):
            xs.append(_to_array(x, C, S, f"a row of {what}'s column {xcol!r}"))
            try:
                ys.append(int(y))
            except (TypeError, ValueError):
                raise FlopsFitError(f"dataset.label_column={ycol!r} of {what} holds {y!r}, not an integer class id; "
                                    "set dataset.label_column to the label column") from None
    if not xs:
        raise FlopsFitError(f"{what} has no rows; check dataset.path or dataset.hf_name")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _build_images(cfg: dict, what: str, log) -> dict:
    t0 = time.time()
    splits = load_splits(cfg)
    wanted = {"input_column": cfg["input_column"], "label_column": cfg["label_column"]}
    for ds in splits.values():
        if ds is not None:
            check_columns(ds, wanted, what)
    tx, ty = _image_arrays(splits["train"], cfg, what)
    if splits["eval"] is not None:
        ex, ey = _image_arrays(splits["eval"], cfg, what)
    else:  # a seeded subset of the rows is held out, and left out of training
        E = int(cfg["eval_size"])
        if E >= tx.shape[0]:
            raise FlopsFitError(f"dataset.eval_size={E} leaves none of the {tx.shape[0]} images of {what} to train on; "
                                f"lower dataset.eval_size (below {tx.shape[0]})")
        order = np.random.default_rng(int(cfg["seed"])).permutation(tx.shape[0])
        held, kept = np.sort(order[:E]), np.sort(order[E:])
        tx, ty, ex, ey = tx[kept], ty[kept], tx[held], ty[held]
    if log:
        log(f"decoded {tx.shape[0] + ex.shape[0]:,} images of {what} in {time.time() - t0:.1f}s")
    return {"train_x": tx, "train_y": ty, "eval_x": ex, "eval_y": ey}


def build_hf_images(cfg: dict, *, cache_dir=None, device="cpu", log: Callable[[str], None] | None = None):
    """``dataset=hf dataset.kind=image``: an :class:`~flops_fit.data.image.ImageData` from the named columns."""
    import torch

    from flops_fit.data.image import ImageData, _eval_subset

    what = describe(cfg)
    key = cache.stable_hash({"v": cache.CACHE_VERSION, "rows": identity(cfg), "input": cfg["input_column"],
                             "label": cfg["label_column"], "size": cfg["image_size"], "channels": cfg["channels"],
                             "eval_size": cfg["eval_size"], "seed": cfg["seed"]}, 24)
    folder = cache.cache_root(cache_dir) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cache.slug(cfg['name'])}-{key}.npz"
    hit = path.is_file()
    if not hit:
        with cache.locked(path):
            if not path.is_file():
                arrays = _build_images(cfg, what, log)
                with cache.atomic_path(path) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, **arrays)
    with np.load(path) as z:
        arrays = {k: torch.from_numpy(z[k]) for k in z.files}
    ex, ey = arrays["eval_x"], arrays["eval_y"]
    if ex.shape[0] > int(cfg["eval_size"]):  # an explicit eval split: the same seeded subset for every run
        ex, ey = _eval_subset(ex, ey, cfg, what)
    info = {"corpus": what, "cache_hit": hit, "cache_path": str(path)}
    return ImageData(cfg, arrays["train_x"], arrays["train_y"], ex, ey, device=device, info=info)
