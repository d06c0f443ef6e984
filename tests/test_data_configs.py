"""conf/dataset/*.yaml: headed, typed against DatasetConfig, consistent shapes, and the file-free ones build."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from flops_fit.data.config import DatasetConfig
from flops_fit.errors import FlopsFitError
from flops_fit.data import build_data, normalize_config

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"
FILES = sorted(CONF.glob("*.yaml"))
EXPECTED = {"bbc_news", "tinystories", "text_files", "synthetic_text", "cifar10", "fashion_mnist", "mnist",
            "synthetic_images"}


def _load(path: Path) -> dict:
    raw = yaml.safe_load(path.read_text())
    assert raw.pop("defaults") == ["dataset_schema", "_self_"]
    merged = OmegaConf.merge(OmegaConf.structured(DatasetConfig), raw)  # what the Hydra schema checks
    return OmegaConf.to_container(merged, resolve=True)


def test_all_dataset_configs_exist():
    assert {p.stem for p in FILES} >= EXPECTED


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_dataset_config_is_headed_typed_and_consistent(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and "ff-" in lines[0], "first line: what it is for and the command using it"
    assert lines[1] == "defaults: [dataset_schema, _self_]"
    raw = yaml.safe_load(path.read_text())
    cfg = _load(path)
    assert cfg["name"] == path.stem
    if cfg["kind"] == "torch":  # the user's factory gives the shapes; it must be named before planning
        with pytest.raises(FlopsFitError, match=r"dataset\._target_ is required"):
            normalize_config(cfg)
        return
    shape_keys = ("vocab_size", "seq_len") if cfg["kind"] == "text" else ("num_classes", "image_size", "channels")
    for key in shape_keys:  # model configs interpolate ${dataset.<key>}: each file states them
        assert key in raw, f"{path.name} must set {key}"
    if cfg["source"] == "hf":  # which dataset is the user's to name: a local path or a Hub name
        with pytest.raises(FlopsFitError, match=r"dataset=hf needs dataset\.path=.* or dataset\.hf_name="):
            normalize_config(cfg)
        cfg["path"] = str(path)  # any existing path: normalizing reads nothing
    conf = normalize_config(cfg)
    if conf["kind"] == "text" and conf["tokenizer"] == "gpt2":
        assert conf["vocab_size"] >= 50257


@pytest.mark.parametrize("name", ["synthetic_text", "synthetic_images"])
def test_file_free_configs_build(name):
    cfg = _load(CONF / f"{name}.yaml")
    cfg["eval_size"] = min(cfg["eval_size"], 1024)
    if cfg["kind"] == "text":
        cfg["options"]["num_tokens"] = 1 << 15
    data = build_data(cfg)
    x, y = data.train_batch(4, torch.Generator().manual_seed(0))
    if cfg["kind"] == "text":
        assert x.shape == (4, cfg["seq_len"]) and int(x.max()) < cfg["vocab_size"]
    else:
        assert x.shape == (4, cfg["channels"], cfg["image_size"], cfg["image_size"])
        assert int(y.max()) < cfg["num_classes"]
