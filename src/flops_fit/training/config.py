"""The trainer's settings and their defaults (temporary home; the training engineer owns this file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from flops_fit.errors import FlopsFitError
from flops_fit.training.mock import GroundTruth


@dataclass
class TrainerConfig:
    name: str = "???"
    kind: str = "mock"  # mock | local | gpu
    seed: int = 0
    # mock
    ground_truth: GroundTruth = field(default_factory=GroundTruth)
    noise: float = 0.005  # relative (multiplicative) noise on the final loss
    history_points: int = 20
    # local / gpu
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "float32"  # float32 | bfloat16
    compile: bool = False
    batch_size: int = 32
    lr: float = 8e-3  # peak AdamW lr; best at every width 32-128 for the μP GPT (scripts/mup_lr_sweep.py)
    warmup_frac: float = 0.05  # linear warmup over this fraction of the steps, then cosine decay
    min_lr_ratio: float = 0.1  # ... down to lr x min_lr_ratio exactly at the run's token budget
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every_frac: float = 0.1
    eval_batch_size: int = 64
    # cap on held-out batches for the intermediate (history) evaluations; the final loss always
    # uses the whole held-out split (None: no cap)
    eval_max_batches: Optional[int] = None
    loss: str = "cross_entropy"
    num_workers: int = 0
    diverge_factor: float = 3.0  # loss above this x the initial loss marks a run diverged
    threads: Optional[int] = None
    progress: bool = True


def check_trainer(trainer) -> None:
    """Refuse trainer settings that could only fail later (or train silently wrong), one line each."""
    t = dict(trainer or {})
    kind = t.get("kind", "mock")
    if kind not in ("mock", "local", "gpu"):
        raise FlopsFitError(f"trainer.kind={kind!r} must be mock, local or gpu (e.g. trainer=local)")
    for key in ("lr", "batch_size", "eval_batch_size"):
        if key in t and t[key] is not None and not float(t[key]) > 0:
            raise FlopsFitError(f"trainer.{key}={t[key]} must be positive")
    if "warmup_frac" in t and not 0 <= float(t["warmup_frac"]) < 1:
        raise FlopsFitError(f"trainer.warmup_frac={t['warmup_frac']} must be in [0, 1): the fraction of steps spent warming up")
    if "min_lr_ratio" in t and not 0 <= float(t["min_lr_ratio"]) <= 1:
        raise FlopsFitError(f"trainer.min_lr_ratio={t['min_lr_ratio']} must be in [0, 1]")
    if "noise" in t and not float(t["noise"]) >= 0:
        raise FlopsFitError(f"trainer.noise={t['noise']} must be >= 0")
