"""Hugging Face models (``model=hf``) and datasets (``dataset=hf``) through the command line, as a user runs them:
architectures by name, built from their configs (never downloaded), data made here in the formats users hold."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.conftest import REPO, run_cli

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

VOCAB, T = 64, 16
# a tiny text sweep: the hf.yaml defaults (hidden_size in 16s, 16-wide heads, 4x MLP) on one layer
TEXT = ["dataset=synthetic_text", f"dataset.vocab_size={VOCAB}", f"dataset.seq_len={T}", "dataset.eval_size=512",
        "dataset.options.num_tokens=65536", "model.kwargs.num_hidden_layers=1"]


def _records(run):
    return [json.loads(p.read_text()) for p in sorted((run / "runs").glob("*.json"))]


def _reference_count(architecture: str, size: int) -> int:
    """The parameter count of the architecture at hidden size ``size``, built here from transformers alone."""
    if architecture == "LlamaForCausalLM":
        cfg = transformers.LlamaConfig(hidden_size=size, num_attention_heads=size // 16, intermediate_size=4 * size,
                                       num_hidden_layers=1, vocab_size=VOCAB, max_position_embeddings=T)
        return transformers.LlamaForCausalLM(cfg).num_parameters()
    cfg = transformers.GPT2Config(n_embd=size, n_head=size // 16, n_layer=1, vocab_size=VOCAB, n_positions=T)
    return transformers.GPT2LMHeadModel(cfg).num_parameters()


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "GPT2LMHeadModel"])
@pytest.mark.slow
def test_hf_architecture_plans_trains_and_analyzes_through_the_cli(tmp_path, architecture):
    run = tmp_path / "run"
    run_cli("ff-plan", f"run_dir={run}", "model=hf", f"model.architecture={architecture}", "model.size_multiple=16",
            *TEXT, "budgets.values=[3e10,1e11,3e11,1e12]", "grid.points=5", "quiet=true", cwd=REPO)
    plan = json.loads((run / "plan.json").read_text())
    assert plan["model"]["kwargs"]["architecture"] == architecture and plan["model"]["size_param"] == "hidden_size"
    sizes = sorted({e["size"] for e in plan["experiments"]})
    assert len(sizes) >= 5 and all(s % 16 == 0 for s in sizes)
    for e in plan["experiments"][:: max(1, len(plan["experiments"]) // 4)]:
        # the planned count is the architecture's own, and FLOPs follow the 6ND convention as for GPT
        assert e["params"] == _reference_count(architecture, e["size"])
        assert e["flops_per_token"] == pytest.approx(6 * e["params"])
    run_cli("ff-train", f"run_dir={run}", "trainer=mock", cwd=REPO)
    recs = _records(run)
    assert len(recs) == len(plan["experiments"]) and {r["status"] for r in recs} == {"completed"}
    out = run_cli("ff-analyze", f"run_dir={run}", "bootstrap=10", cwd=REPO).stdout
    analysis = json.loads((run / "analysis.json").read_text())
    assert analysis["table"] and "compute-optimal table" in out


@pytest.mark.slow
def test_hf_llama_trains_for_real_through_the_cli(tmp_path):
    run = tmp_path / "run"
    env = {"FLOPS_FIT_CACHE": str(tmp_path / "cache")}
    run_cli("ff-plan", f"run_dir={run}", "model=hf", "model.architecture=LlamaForCausalLM", "model.size_multiple=8",
            "model.tie.num_attention_heads=size // 8", "model.size_range=[8,32]", *TEXT, "budgets.values=[3e8,1e9]",
            "grid.points=3", "grid.min_steps=0", "quiet=true", cwd=REPO, env=env)
    plan = json.loads((run / "plan.json").read_text())
    run_cli("ff-train", f"run_dir={run}", "trainer=local", "trainer.batch_size=16", "trainer.threads=1",
            "trainer.progress=false", cwd=REPO, env=env)
    recs = _records(run)
    assert len(recs) == len(plan["experiments"]) >= 3
    for r in recs:
        assert r["status"] == "completed", r.get("error")
        assert r["trainer"] == "local" and len(r["history"]) >= 2
        assert r["history"][-1]["loss"] < r["history"][0]["loss"] < 1.5 * math.log(VOCAB)  # it learns the chain
        assert 0 < r["non_embedding_params"] < r["params"]


def _image_rows(n: int, seed: int = 0):
    """Three classes of 8x8 RGB images: a brighter channel per class under heavy noise (learnable, not trivial)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 160, (n, 8, 8, 3))
    images[np.arange(n), :, :, labels] += 60
    return images.astype(np.uint8), labels


@pytest.mark.slow
def test_hf_image_classifier_trains_on_a_local_parquet_dataset(tmp_path):
    from PIL import Image

    images, labels = _image_rows(240)
    rows = datasets.Dataset.from_dict({"picture": [Image.fromarray(a) for a in images], "cls": labels.tolist()})
    rows.cast_column("picture", datasets.Image()).to_parquet(str(tmp_path / "images.parquet"))
    run, env = tmp_path / "run", {"FLOPS_FIT_CACHE": str(tmp_path / "cache")}
    run_cli("ff-plan", f"run_dir={run}", "model=hf", "model.architecture=ViTForImageClassification",
            "model.kwargs.num_hidden_layers=1", "+model.kwargs.patch_size=4", "model.size_range=[16,32]",
            "dataset=hf", "dataset.kind=image", f"dataset.path={tmp_path / 'images.parquet'}",
            "dataset.input_column=picture", "dataset.label_column=cls", "dataset.num_classes=3",
            "dataset.image_size=8", "dataset.eval_size=48", "budgets.values=[5e7]", "grid.points=2",
            "grid.min_tokens_per_param=0.1",
            "grid.min_steps=0", "quiet=true", cwd=REPO, env=env)
    plan = json.loads((run / "plan.json").read_text())
    assert plan["data_unit"] == "images"
    run_cli("ff-train", f"run_dir={run}", "trainer=local", "trainer.batch_size=16", "trainer.threads=1",
            "trainer.progress=false", cwd=REPO, env=env)
    recs = _records(run)
    assert recs and all(r["status"] == "completed" and r["data_unit"] == "images" for r in recs)
    # it learned the classes: the held-out loss ends below chance (log 3)
    assert min(r["loss"] for r in recs) < 0.9 * math.log(3)


# ----------------------------------------------------------------------------------------- dataset=hf data


def _texts(n=300, seed=0):
    rng = np.random.default_rng(seed)
    words = "the cat sat on a mat while dogs ran far away from home and back again".split()
    return [" ".join(rng.choice(words, 30)) for _ in range(n)]


def _text_cfg(path, **extra):
    return {"name": "hf", "kind": "text", "source": "hf", "path": str(path), "text_field": "body",
            "tokenizer": "bytes", "vocab_size": 256, "seq_len": 32, "eval_size": 512, **extra}


def test_text_dataset_reads_every_local_format_alike_and_caches(tmp_path):
    from flops_fit.data import build_data

    texts = _texts()
    rows = datasets.Dataset.from_dict({"body": texts, "other": list(range(len(texts)))})
    rows.to_parquet(str(tmp_path / "t.parquet"))
    rows.to_json(str(tmp_path / "t.jsonl"))
    rows.to_csv(str(tmp_path / "t.csv"), index=False)
    rows.save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    streams = {}
    for name in ("t.parquet", "t.jsonl", "t.csv", "saved", arrow.relative_to(tmp_path)):
        data = build_data(_text_cfg(tmp_path / name), cache_dir=tmp_path / "cache")
        streams[str(name)] = np.asarray(data.tokens)
    expected = np.concatenate([np.frombuffer(t.encode() + b"\n\n", dtype=np.uint8) for t in texts])
    for name, tokens in streams.items():
        assert np.array_equal(tokens, expected), name  # every document, in order, each followed by the separator
    again = build_data(_text_cfg(tmp_path / "t.parquet"), cache_dir=tmp_path / "cache")
    assert again.info()["cache_hit"] is True
    streamed = build_data(_text_cfg(tmp_path / "t.parquet", options={"streaming": True}), cache_dir=tmp_path / "c2")
    assert np.array_equal(np.asarray(streamed.tokens), expected)


def test_text_dataset_uses_the_held_out_split_of_a_saved_dataset_dict(tmp_path):
    from flops_fit.data import build_data

    train, held = _texts(200, seed=0), _texts(40, seed=1)
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": train}),
                          "validation": datasets.Dataset.from_dict({"body": held})}).save_to_disk(str(tmp_path / "dd"))
    data = build_data(_text_cfg(tmp_path / "dd"), cache_dir=tmp_path / "cache")
    n_train = sum(len(t.encode()) + 2 for t in train)
    assert data.train_range == (0, n_train)  # training stops where the validation documents begin
    assert bytes(np.asarray(data.tokens[n_train:n_train + 20]).astype(np.uint8)) == held[0].encode()[:20]


def test_text_dataset_tokenizes_with_a_local_transformers_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from flops_fit.data import build_data

    texts = _texts()
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]", "</s>"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="[UNK]")
    fast.save_pretrained(str(tmp_path / "tok"))
    datasets.Dataset.from_dict({"body": texts}).to_parquet(str(tmp_path / "t.parquet"))
    data = build_data(_text_cfg(tmp_path / "t.parquet", tokenizer="hf", tokenizer_path=str(tmp_path / "tok"),
                                vocab_size=64), cache_dir=tmp_path / "cache")
    eos = fast.eos_token_id
    expected = [i for t in texts for i in fast(t, add_special_tokens=False)["input_ids"] + [eos]]
    assert np.asarray(data.tokens).tolist() == expected


def test_image_dataset_from_a_saved_arrow_folder_holds_out_a_seeded_subset(tmp_path):
    from flops_fit.data import build_data

    images, labels = _image_rows(60)
    datasets.Dataset.from_dict({"img": [a.tolist() for a in images], "label": labels.tolist()}).save_to_disk(
        str(tmp_path / "imgs"))
    cfg = {"name": "hf", "kind": "image", "source": "hf", "path": str(tmp_path / "imgs"), "input_column": "img",
           "num_classes": 3, "image_size": 8, "channels": 3, "eval_size": 12}
    data = build_data(cfg, cache_dir=tmp_path / "cache")
    assert data.num_train == 48 and data.eval_x.shape == (12, 3, 8, 8)
    # every image is one of the rows, channels first, with its own label
    x = np.concatenate([data.train_x.numpy(), data.eval_x.numpy()])
    y = np.concatenate([data.train_y.numpy(), data.eval_y.numpy()])
    flat = {a.transpose(2, 0, 1).tobytes(): int(k) for a, k in zip(images, labels)}
    assert all(flat[img.tobytes()] == int(k) for img, k in zip(x, y)) and len(x) == 60


# ----------------------------------------------------------------------------------------- bad input


def _one_line(proc):
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


def test_unknown_architecture_is_one_line_naming_the_key(tmp_path):
    proc = run_cli("ff-plan", f"run_dir={tmp_path / 'r'}", "model=hf", "model.architecture=LlamaForCasualLM", *TEXT,
                   "budgets.values=[1e11]", cwd=REPO, check=False)
    err = _one_line(proc)
    assert "model.architecture='LlamaForCasualLM'" in err and "LlamaForCausalLM" in err
    assert not (tmp_path / "r" / "plan.json").exists()


@pytest.mark.slow
def test_missing_column_is_one_line_naming_the_key(tmp_path):
    datasets.Dataset.from_dict({"body": _texts(50)}).to_parquet(str(tmp_path / "t.parquet"))
    run, env = tmp_path / "r", {"FLOPS_FIT_CACHE": str(tmp_path / "cache")}
    args = ["model=hf", "model.architecture=LlamaForCausalLM", "model.kwargs.num_hidden_layers=1", "dataset=hf",
            f"dataset.path={tmp_path / 't.parquet'}", "dataset.tokenizer=bytes", "dataset.vocab_size=256",
            "dataset.seq_len=16", "dataset.eval_size=256", "budgets.values=[1e9]", "grid.points=2", "quiet=true"]
    proc = run_cli("ff-plan", f"run_dir={run}", *args, cwd=REPO, env=env, check=False)
    if proc.returncode == 0:  # the data is read when the runs train
        proc = run_cli("ff-train", f"run_dir={run}", "trainer=local", "trainer.threads=1", cwd=REPO, env=env,
                       check=False)
    err = _one_line(proc)
    assert "dataset.text_field='text' is not a column" in err and "body" in err


# ----------------------------------------------------------------------------------------- model=hf from Python


def test_a_local_config_json_names_the_architecture_and_its_fields(tmp_path):
    from flops_fit.config.compose import compose
    from flops_fit.models import ModelSpec

    saved = transformers.LlamaConfig(num_hidden_layers=3, rms_norm_eps=1e-3, tie_word_embeddings=True)
    saved.architectures = ["LlamaForCausalLM"]
    saved.save_pretrained(str(tmp_path / "cfg"))
    cfg = compose("plan", ["model=hf", f"model.config={tmp_path / 'cfg'}", *TEXT[:-1]])
    model = ModelSpec.from_config(cfg["model"]).build(32, device="meta")
    assert type(model).__name__ == "LlamaForCausalLM"
    c = model.config
    assert (c.num_hidden_layers, c.rms_norm_eps, c.tie_word_embeddings) == (3, 1e-3, True)  # the file's values
    assert (c.hidden_size, c.num_attention_heads, c.intermediate_size) == (32, 2, 128)  # the size rules
    assert (c.vocab_size, c.max_position_embeddings) == (VOCAB, T)  # the dataset's
    # a config class or model_type alone gets the head the data asks for
    lm = ModelSpec.from_config(compose("plan", ["model=hf", "model.architecture=llama", *TEXT])["model"])
    assert type(lm.build(16, device="meta")).__name__ == "LlamaForCausalLM"
    image = compose("plan", ["model=hf", "model.architecture=ViTConfig", "dataset=synthetic_images",
                             "+model.kwargs.patch_size=4"])
    vit = ModelSpec.from_config(image["model"]).build(16, device="meta")
    assert type(vit).__name__ == "ViTForImageClassification" and vit.data_unit == "images"
    assert (vit.config.image_size, vit.config.num_labels) == (16, 10)


def test_measured_flops_work_on_an_hf_model(tmp_path):
    from flops_fit import stages
    from flops_fit.config.compose import compose

    plan = stages.plan(compose("plan", [f"run_dir={tmp_path}", "model=hf", "model.architecture=LlamaForCausalLM",
                                        *TEXT, "budgets.values=[1e11,1e12]", "grid.points=3", "flops=measured",
                                        "quiet=true"]))
    runs = sorted({e["size"]: e for e in plan["experiments"]}.values(), key=lambda e: e["size"])
    ratios = [e["flops_per_token"] / e["params"] for e in runs]
    # counted matmuls: below 6N (the embedding lookup is no matmul), nearer 6N as the lookup's share shrinks
    assert all(4.5 < r < 6.5 for r in ratios) and ratios == sorted(ratios) and len(runs) >= 3


def test_a_sweep_whose_loss_ignores_data_is_reported_through_the_cli(tmp_path):
    """B = 0 (a sweep on random tokens): ff-analyze names the degenerate fit, writes analysis.json and ends with
    one line and exit code 1 when no approach leaves a table, never a traceback."""
    from tests.test_hf_models import _flat_in_data

    lines = ["params,tokens,loss,budget"] + [f"{r['params']},{r['tokens']},{r['loss']},{r['budget']}"
                                             for r in _flat_in_data()]
    (tmp_path / "runs.csv").write_text("\n".join(lines) + "\n")
    proc = run_cli("ff-analyze", f"run_dir={tmp_path / 'out'}", f"input={tmp_path / 'runs.csv'}", "bootstrap=20",
                   cwd=REPO, check=False)
    analysis = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert any(d["code"] == "parametric_degenerate" for d in analysis["diagnostics"])
    assert "parametric_degenerate" in proc.stdout and "does not fall with data" in proc.stdout
    if analysis["table"]:
        assert proc.returncode == 0
    else:
        assert "no compute-optimal table" in _one_line(proc) and proc.returncode == 1
