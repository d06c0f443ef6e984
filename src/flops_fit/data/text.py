"""Text data: a token stream tokenized once, cached on disk and memory-mapped.

Layout of a cache entry ``<cache>/text/<name>-<tokenizer>-<key>``:
``.bin`` (the tokens, uint16 or uint32), ``.docs.npy`` (int64 document start offsets) and ``.json``
(metadata, written last: an entry without it is incomplete and rebuilt). ``key`` hashes the corpus
identity (file paths, sizes and mtimes, or the HF dataset name/split), the tokenizer identity and
the read limits, so changing any of them makes a new entry; a cache hit reads no text and imports
no tokenizer.

Held-out split: the documents of an explicit evaluation split (an HF ``validation`` split), else a
fixed tail of the stream starting at a document boundary. Training windows never reach into it.
"""

from __future__ import annotations

import copy

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from flops_fit.data import cache
from flops_fit.data.base import DataSource, spread_batches
from flops_fit.data.corpora import Corpus, Piece, text_corpus
from flops_fit.data.tokenization import Encoder, TokenizerSpec
from flops_fit.errors import FlopsFitError

_BATCH_PIECES = 256
_BATCH_CHARS = 1 << 23


class TextData(DataSource):
    """A token stream split into a training region and a fixed held-out region."""

    kind = "text"
    data_unit = "tokens"

    def __init__(
        self,
        tokens: np.ndarray,
        doc_starts: np.ndarray,
        cfg: dict,
        *,
        heldout_start: int | None = None,
        tokenizer_vocab_size: int | None = None,
        max_id: int | None = None,
        device: str | torch.device = "cpu",
        info: dict | None = None,
    ):
        self.name = cfg["name"]
        self.cfg = cfg
        self.tokens = tokens
        self.seq_len = T = int(cfg["seq_len"])
        self.vocab_size = int(cfg["vocab_size"])
        self.eval_size = E = int(cfg["eval_size"])
        self.device = torch.device(device)
        self._info = dict(info or {})
        n = int(tokens.shape[0])
        what = self._info.get("corpus", self.name)

        if tokenizer_vocab_size is not None and tokenizer_vocab_size > self.vocab_size:
            raise FlopsFitError(
                f"dataset.vocab_size={self.vocab_size} is smaller than the {cfg['tokenizer']} tokenizer's vocabulary "
                f"({tokenizer_vocab_size} ids); set dataset.vocab_size={tokenizer_vocab_size} or larger"
            )
        if max_id is None:
            max_id = int(tokens.max()) if n else -1
        if max_id >= self.vocab_size:
            raise FlopsFitError(
                f"token id {max_id} in {what} is out of range for dataset.vocab_size={self.vocab_size}; "
                f"set dataset.vocab_size={max_id + 1} or larger (the model's vocabulary must cover every token)"
            )

        need = E + 1  # E targets need E + 1 tokens
        if heldout_start is not None:  # explicit held-out documents after the training ones
            if n - heldout_start < need:
                raise FlopsFitError(
                    f"dataset.eval_size={E} exceeds the {n - heldout_start - 1} tokens of the held-out split of {what}; "
                    f"lower dataset.eval_size to at most {max(n - heldout_start - 1, 0)}"
                )
            eval_start = train_end = int(heldout_start)
        else:
            latest = n - need
            if latest < T + 1:
                raise FlopsFitError(
                    f"{what} has only {n} tokens: too few for dataset.eval_size={E} held-out tokens plus training "
                    f"windows of dataset.seq_len+1={T + 1}; lower dataset.eval_size or use more text"
                )
            starts = doc_starts[(doc_starts <= latest) & (doc_starts >= T + 1)]
            eval_start = train_end = int(starts.max()) if starts.size else int(latest)
        if train_end < T + 1:
            raise FlopsFitError(
                f"{what} has only {train_end} training tokens, fewer than dataset.seq_len+1={T + 1}; "
                "lower dataset.seq_len or use more text"
            )
        subset = (cfg.get("options") or {}).get("train_subset")
        if subset is not None:  # a data-constrained study: the first `subset` training tokens, same held-out split
            if isinstance(subset, bool) or not isinstance(subset, int) or subset < T + 1:
                raise FlopsFitError(f"dataset.options.train_subset={subset!r} must be a whole number of tokens >= "
                                    f"dataset.seq_len+1={T + 1}")
            train_end = min(train_end, int(subset))
        self.train_range = (0, train_end)
        self.eval_range = (eval_start, eval_start + need)
        self.num_eval_windows = E // T

        preload = cfg["options"]["preload"]
        if preload == "auto":
            preload = self.device.type != "cpu" and n <= (1 << 28)
        self._dev_tokens = None
        if preload:
            self._dev_tokens = torch.from_numpy(np.asarray(tokens[:train_end]).astype(np.int32)).to(self.device)
        self._offsets_np = np.arange(T + 1, dtype=np.int64)
        self._offsets = torch.arange(T + 1, device=self.device)
        ev = np.asarray(tokens[eval_start : eval_start + need]).astype(np.int64)
        idx = (np.arange(self.num_eval_windows, dtype=np.int64) * T)[:, None] + self._offsets_np
        self._eval_windows = torch.from_numpy(ev[idx]).to(self.device)

    # ------------------------------------------------------------------ contract

    @property
    def train_tokens(self) -> int:
        return self.train_range[1] - self.train_range[0]

    def _count_unique(self) -> int:
        return self.train_tokens

    def with_train_subset(self, units: int) -> "TextData":
        if int(units) < self.seq_len + 1:
            raise FlopsFitError(f"a training subset of {units} tokens is shorter than one window of "
                                f"dataset.seq_len+1={self.seq_len + 1} tokens")
        sub = copy.copy(self)
        sub.cfg = {**self.cfg, "unique_units": None}
        sub.train_range = (0, min(self.train_range[1], int(units)))
        return sub

    @property
    def eval_tokens(self) -> int:
        return self.num_eval_windows * self.seq_len

    def examples_per_batch(self, batch_size: int) -> int:
        return int(batch_size) * self.seq_len

    def sample_starts(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Start offsets of ``batch_size`` random training windows of ``seq_len + 1`` tokens."""
        high = self.train_range[1] - self.seq_len  # last start: train_end - T - 1
        gdev = getattr(generator, "device", torch.device("cpu"))
        return torch.randint(0, high, (int(batch_size),), generator=generator, device=gdev)

    def windows(self, starts: torch.Tensor) -> torch.Tensor:
        """``(B, T + 1)`` LongTensor of the tokens at ``starts[i] .. starts[i] + T`` on the device."""
        if self._dev_tokens is not None:
            idx = starts.to(self.device)[:, None] + self._offsets
            return self._dev_tokens[idx].long()
        idx = starts.cpu().numpy()[:, None] + self._offsets_np
        w = torch.from_numpy(np.asarray(self.tokens[idx]).astype(np.int64))
        return w if self.device.type == "cpu" else w.to(self.device, non_blocking=True)

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.windows(self.sample_starts(batch_size, generator))
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        W = self._eval_windows
        for rows in spread_batches(W.shape[0], batch_size):
            w = W[rows]
            yield w[:, :-1].contiguous(), w[:, 1:].contiguous()

    def decode(self, ids) -> str:
        """Token ids back to text (loads the tokenizer; for inspection, not for training)."""
        enc = self._info.get("_encoder_factory")
        if enc is None:
            raise FlopsFitError(f"{self.name} has no tokenizer to decode with (synthetic tokens)")
        return enc().decode(ids)

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(
            tokenizer=self.cfg["tokenizer"] if self.cfg["source"] != "synthetic" else None,
            vocab_size=self.vocab_size,
            seq_len=self.seq_len,
            total_tokens=int(self.tokens.shape[0]),
            train_tokens=self.train_tokens,
            eval_tokens=self.eval_tokens,
            eval_start=self.eval_range[0],
        )
        return out


# --------------------------------------------------------------------------- synthetic


def synthetic_tokens(cfg: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """Seeded tokens: ``markov`` (a sparse random Markov chain: learnable, known entropy floor) or ``uniform``."""
    opts = cfg["options"]
    V, seed = int(cfg["vocab_size"]), int(cfg["seed"])
    total = int(opts["num_tokens"]) + int(cfg["eval_size"]) + 1
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if V <= 1 << 16 else np.uint32
    process = opts["process"]
    if process == "uniform":
        toks = rng.integers(0, V, total, dtype=np.int64).astype(dtype)
        return toks, np.zeros(1, np.int64), {"process": "uniform", "entropy_floor": math.log(V)}
    if process != "markov":
        raise FlopsFitError(f"dataset.options.process={process!r} must be 'markov' or 'uniform'")
    k = int(opts["branching"])
    if not 1 <= k <= V:
        raise FlopsFitError(f"dataset.options.branching={k} must be between 1 and dataset.vocab_size={V}")
    p = 1.0 / np.arange(1, k + 1)
    p /= p.sum()
    succ = rng.integers(0, V, (V, k), dtype=np.int64)
    chains = 1024
    length = -(-total // chains)
    choice = rng.choice(k, size=(length, chains), p=p)
    state = rng.integers(0, V, chains, dtype=np.int64)
    out = np.empty((length, chains), dtype=np.int64)
    for t in range(length):  # vectorised over chains: `length` small steps, not one per token
        state = succ[state, choice[t]]
        out[t] = state
    toks = out.T.reshape(-1)[:total].astype(dtype)  # each chain is one document
    doc_starts = np.arange(0, total, length, dtype=np.int64)
    floor = float(-(p * np.log(p)).sum())
    return toks, doc_starts, {"process": "markov", "branching": k, "entropy_floor": floor}


# --------------------------------------------------------------------------- cached streams


def _batched(pieces: Iterator[Piece]) -> Iterator[list[Piece]]:
    batch, chars = [], 0
    for piece in pieces:
        batch.append(piece)
        chars += len(piece[0])
        if len(batch) >= _BATCH_PIECES or chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


class _StreamWriter:
    def __init__(self, f, enc: Encoder, dtype):
        self.f, self.enc, self.dtype = f, enc, dtype
        self.n = 0
        self.doc_starts: list[int] = []
        self.max_id = -1
        self._at_doc_start = True

    def write(self, pieces: Iterator[Piece]) -> None:
        sep = self.enc.separator
        for batch in _batched(pieces):
            arrays = self.enc.encode_batch([t for t, _ in batch])
            parts, pos = [], self.n
            for (text, end), arr in zip(batch, arrays):
                if self._at_doc_start:
                    if arr.size == 0 and end:
                        continue
                    self.doc_starts.append(pos)
                    self._at_doc_start = False
                parts.append(arr)
                pos += arr.size
                if end:
                    parts.append(sep)
                    pos += sep.size
                    self._at_doc_start = True
            if not parts:
                continue
            chunk = np.concatenate(parts)
            if chunk.size:
                self.max_id = max(self.max_id, int(chunk.max()))
                self.f.write(chunk.astype(self.dtype).tobytes())
            self.n = pos


def _entry_ok(meta: dict | None, bin_path: Path, key: str) -> bool:
    if not meta or meta.get("key") != key or meta.get("version") != cache.CACHE_VERSION:
        return False
    try:
        size = bin_path.stat().st_size
    except OSError:
        return False
    return size == meta["n_tokens"] * np.dtype(meta["dtype"]).itemsize


def token_stream(
    cfg: dict, root: Path, log: Callable[[str], None] | None = None
) -> tuple[np.ndarray, np.ndarray, dict, Corpus, TokenizerSpec]:
    """The cached token stream for ``cfg`` (built under a file lock on a miss)."""
    corpus = text_corpus(cfg)
    spec = TokenizerSpec(cfg, root, corpus)
    key = cache.stable_hash(
        {"v": cache.CACHE_VERSION, "corpus": corpus.identity(), "tokenizer": spec.identity()}, 24
    )
    folder = root / "text"
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / f"{cache.slug(cfg['name'])}-{spec.name}-{key}"
    bin_path, docs_path, meta_path = (base.with_name(base.name + s) for s in (".bin", ".docs.npy", ".json"))

    meta = cache.read_json(meta_path)
    hit = _entry_ok(meta, bin_path, key)
    if not hit:
        with cache.locked(base):
            meta = cache.read_json(meta_path)
            hit = _entry_ok(meta, bin_path, key)
            if not hit:
                meta = _build_stream(corpus, spec, cfg, key, bin_path, docs_path, meta_path, log)
    tokens = np.memmap(bin_path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["n_tokens"],))
    doc_starts = np.load(docs_path)
    meta = dict(meta, cache_hit=hit, cache_path=str(bin_path))
    return tokens, doc_starts, meta, corpus, spec


def _build_stream(corpus, spec, cfg, key, bin_path, docs_path, meta_path, log) -> dict:
    t0 = time.time()
    enc = spec.load(log)
    dtype = np.uint16 if enc.vocab_size <= 1 << 16 else np.uint32
    with cache.atomic_path(bin_path) as tmp:
        with open(tmp, "wb") as f:
            w = _StreamWriter(f, enc, dtype)
            w.write(corpus.train_texts())
            heldout_start = None
            ev = corpus.eval_texts() if corpus.has_eval_split() else None
            if ev is not None:
                heldout_start = w.n
                w.write(ev)
        if w.n == 0:
            raise FlopsFitError(f"{corpus.description} produced no tokens; check dataset.path and dataset.text_field")
    with cache.atomic_path(docs_path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(w.doc_starts, dtype=np.int64))
    meta = {
        "version": cache.CACHE_VERSION,
        "key": key,
        "name": cfg["name"],
        "corpus": corpus.description,
        "corpus_identity": corpus.identity(),
        "tokenizer": spec.identity(),
        "tokenizer_vocab_size": enc.vocab_size,
        "eot_id": enc.eot_id,
        "dtype": np.dtype(dtype).name,
        "n_tokens": w.n,
        "n_docs": len(w.doc_starts),
        "max_id": w.max_id,
        "heldout_start": heldout_start,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "tokenize_seconds": round(time.time() - t0, 3),
    }
    cache.write_json_atomic(meta_path, meta)
    if log:
        log(f"tokenized {corpus.description} with {spec.name}: {w.n:,} tokens in {time.time() - t0:.1f}s -> {bin_path}")
    return meta


def build_text(cfg: dict, *, cache_dir=None, device="cpu", log=None) -> TextData:
    if cfg["source"] == "synthetic":
        toks, starts, extra = synthetic_tokens(cfg)
        info = {"corpus": f"synthetic {extra['process']} tokens (seed {cfg['seed']})", **extra}
        return TextData(toks, starts, cfg, device=device, info=info, max_id=None)
    root = cache.cache_root(cache_dir)
    tokens, doc_starts, meta, corpus, spec = token_stream(cfg, root, log)
    info = {
        "corpus": meta["corpus"],
        "cache_hit": meta["cache_hit"],
        "cache_path": meta["cache_path"],
        "tokenizer_vocab_size": meta["tokenizer_vocab_size"],
        "_encoder_factory": lambda: spec.load(),
    }
    return TextData(
        tokens,
        doc_starts,
        cfg,
        heldout_start=meta["heldout_start"],
        tokenizer_vocab_size=meta["tokenizer_vocab_size"],
        max_id=meta["max_id"],
        device=device,
        info=info,
    )
