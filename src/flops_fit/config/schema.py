"""Hydra's view of the settings: registers the core's dataclasses in the ConfigStore.

Each stage's primary YAML (conf/plan.yaml, ...) names its schema in its defaults list, so a
typo in a key or a value of the wrong type fails at composition with one line naming the key.
The dataclasses and their defaults belong to the core (``flops_fit.settings`` and the modules it
imports); this module only registers them. Only ``flops_fit.config`` and ``flops_fit.cli``
import Hydra.
"""

from __future__ import annotations

from flops_fit.settings import (
    AnalyzeSettings,
    BudgetsConfig,
    DatasetConfig,
    ModelConfig,
    PlanSettings,
    PlotSettings,
    StatusSettings,
    TrainerConfig,
    TrainSettings,
)
from flops_fit.trackers import LoggerConfig

# the group nodes a Python caller may give as whole dicts (flops_fit.config.compose)
GROUP_SCHEMAS = {"model": ModelConfig, "dataset": DatasetConfig, "trainer": TrainerConfig, "budgets": BudgetsConfig}


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="plan_schema", node=PlanSettings)
    cs.store(name="train_schema", node=TrainSettings)
    cs.store(name="analyze_schema", node=AnalyzeSettings)
    cs.store(name="plot_schema", node=PlotSettings)
    cs.store(name="status_schema", node=StatusSettings)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="budgets", name="budgets_schema", node=BudgetsConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
