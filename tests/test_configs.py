"""Every option of every config group composes, for every stage that uses it."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from flops_fit.config.compose import config_dir
from flops_fit.config.schema import register_configs

CONF = Path(config_dir())
STAGE_GROUPS = {"plan": ["model", "dataset", "budgets"], "train": ["trainer", "logger"], "analyze": ["logger"],
                "plot": ["logger"]}


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(stage, overrides=()):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name=stage):
        cfg = compose(config_name=stage, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("stage", ["plan", "train", "analyze", "plot"])
def test_default_config_composes(stage):
    cfg = _compose(stage)
    assert cfg["run_dir"]


CASES = [(stage, group, opt) for stage, groups in STAGE_GROUPS.items() for group in groups for opt in options(group)]


@pytest.mark.parametrize("stage, group, option", CASES, ids=[f"{s}-{g}={o}" for s, g, o in CASES])
def test_every_group_option_composes(stage, group, option):
    cfg = _compose(stage, [f"{group}={option}"])
    node = cfg[group]
    assert isinstance(node, dict) and node.get("name") == option


@pytest.mark.slow
def test_every_model_composes_with_every_dataset_of_its_kind():
    for model in options("model"):
        for dataset in options("dataset"):
            cfg = _compose("plan", [f"model={model}", f"dataset={dataset}"])
            assert cfg["model"]["_target_"]


def test_every_group_yaml_says_what_it_is_for():
    for path in sorted(CONF.rglob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and len(first) > 20, f"{path} should start with a one-line comment saying what it is for"


def test_group_schemas_reject_typos():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as typo:
        _compose("plan", ["grid.pionts=3"])
    assert "pionts" in str(typo.value) + str(typo.value.__cause__)
    with pytest.raises(ConfigCompositionException) as wrong_type:
        _compose("plan", ["grid.points=abc"])
    assert "grid.points" in str(wrong_type.value) + str(wrong_type.value.__cause__)
    with pytest.raises(ConfigCompositionException):  # a typo inside a group's YAML node
        _compose("train", ["trainer.lerning_rate=1e-3"])


def test_hf_options_compose_from_the_command_line():
    """model=hf and dataset=hf take their keys as the README writes them, and the dataset fills the model's config."""
    cfg = _compose("plan", ["model=hf", "model.architecture=LlamaForCausalLM", "model.size_multiple=16",
                            "model.kwargs.num_hidden_layers=4", "dataset=hf", "dataset.path=/data/train.parquet",
                            "dataset.text_field=story", "dataset.options.streaming=true"])
    kwargs = cfg["model"]["kwargs"]
    assert kwargs["architecture"] == "LlamaForCausalLM" and kwargs["num_hidden_layers"] == 4
    assert kwargs["data"] == {"kind": "text", "vocab_size": cfg["dataset"]["vocab_size"], "seq_len": cfg["dataset"]["seq_len"],
                              "num_classes": 10, "image_size": 32, "channels": 3}
    assert cfg["model"]["size_multiple"] == 16 and cfg["dataset"]["options"]["streaming"] is True
    image = _compose("plan", ["model=hf", "model.config=/m/config.json", "dataset=hf", "dataset.kind=image",
                              "dataset.input_column=img", "dataset.label_column=y", "dataset.num_classes=3"])
    assert image["model"]["kwargs"]["config"] == "/m/config.json"
    assert image["model"]["kwargs"]["data"]["kind"] == "image" and image["model"]["kwargs"]["data"]["num_classes"] == 3
    logged = _compose("train", ["logger=mlflow", "logger.tracking_uri=http://localhost:5000", "logger.project=mine"])
    assert logged["logger"] == {"name": "mlflow", "save_dir": None, "project": "mine", "group": None,
                                "tracking_uri": "http://localhost:5000", "mode": "offline"}
