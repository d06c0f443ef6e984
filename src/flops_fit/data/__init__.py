"""Training data for flops-fit: text token streams, tokenizers and image datasets.

>>> from flops_fit.data import build_data
>>> data = build_data({"kind": "text", "source": "synthetic", "vocab_size": 256, "seq_len": 64,
...                    "eval_size": 4096})
>>> import torch
>>> x, y = data.train_batch(8, torch.Generator().manual_seed(0))
>>> tuple(x.shape), data.examples_per_batch(8)
((8, 64), 512)

``build_data(cfg)`` takes ``DatasetConfig`` as a plain dict and returns a :class:`DataSource` (see
``flops_fit.data.base`` for the contract). Text is tokenized once and cached as a memory-mapped
array under ``cache_dir`` (default ``$FLOPS_FIT_CACHE`` or ``~/.cache/flops_fit``); importing this
package loads neither ``datasets`` nor ``transformers`` nor ``tokenizers``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from flops_fit.data.base import DataSource

__all__ = ["DataSource", "ImageData", "TextData", "build_data", "normalize_config"]

_LAZY = {"TextData": "flops_fit.data.text", "ImageData": "flops_fit.data.image",
         "SyntheticImageData": "flops_fit.data.image"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flops_fit.data' has no attribute {name!r}")


def normalize_config(cfg: Any) -> dict:
    """``cfg`` with defaults filled in and validated (raises FlopsFitError naming the bad key)."""
    from flops_fit.data.config import normalize

    return normalize(cfg)


def build_data(
    cfg: Any,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: Any = "cpu",
    log: Callable[[str], None] | None = None,
) -> DataSource:
    """Build the data source described by ``cfg`` (``DatasetConfig`` as a dict, a DictConfig or the dataclass).

    ``device``: where batches are produced (``"cpu"``, ``"cuda"``, a ``torch.device``).
    ``log``: called with one-line progress messages (tokenizing, training a BPE), if given.
    """
    conf = normalize_config(cfg)
    if conf["kind"] == "torch":
        from flops_fit.data.torch_data import build_torch

        return build_torch(conf)
    if conf["kind"] == "text":
        from flops_fit.data.text import build_text

        return build_text(conf, cache_dir=cache_dir, device=device, log=log)
    if conf["source"] == "hf":
        from flops_fit.data.hf import build_hf_images

        return build_hf_images(conf, cache_dir=cache_dir, device=device, log=log)
    from flops_fit.data.image import build_image

    return build_image(conf, cache_dir=cache_dir, device=device, log=log)
