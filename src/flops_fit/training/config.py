"""Every trainer setting and its default, in one dataclass.

``TrainerConfig`` is the single source of the trainer's defaults: the training loop reads it,
``config/schema.py`` registers it as the Hydra schema of the ``trainer`` group, and the YAML files
under ``conf/trainer/`` override only what differs (``gpu.yaml``: CUDA, bf16, bigger batches;
``mock.yaml``: the closed-form trainer). The defaults are those of real training on a CPU
(``trainer=local``).

``TrainerConfig.from_mapping(d)`` builds one from a (partial) dict and validates it;
``validate()`` raises one :class:`~flops_fit.errors.FlopsFitError` line naming the key
(``trainer.lr``, ...) and the fix, before any data or model is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

from flops_fit.errors import FlopsFitError
from flops_fit.training.mock import GroundTruth

TRAINER_KINDS = ("mock", "local", "gpu")
DTYPES = {"float32": "float32", "fp32": "float32", "32": "float32",
          "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "16": "float16"}


@dataclass
class TrainerConfig:
    name: str = "local"
    kind: str = "local"  # mock | local | gpu
    seed: int = 0  # model init, data order, mock noise

    # -- mock (closed-form ground truth) ----------------------------------------------------------
    ground_truth: GroundTruth = field(default_factory=GroundTruth)
    noise: float = 0.005  # relative (multiplicative) noise on each run's final loss
    history_points: int = 20  # evaluation points along each mock run (for the envelope approach)

    # -- local / gpu: where and how ---------------------------------------------------------------
    device: str = "cpu"  # auto | cpu | cuda (cuda without CUDA falls back to the CPU with one warning line)
    dtype: str = "float32"  # float32 | bfloat16 (autocast) | float16 (autocast + gradient scaling)
    compile: bool = False  # torch.compile each model (faster steps, ~1 min compile per run)
    threads: Optional[int] = None  # torch CPU threads (None: torch's default, one per core)
    # workers (GPUs, or CPU processes) training each run together with DistributedDataParallel:
    # ff-train starts them itself (docs/scaling-out.md); the global batch stays trainer.batch_size
    devices: int = 1
    # CPU runs trained at once, each in its own process with cores / pack threads (docs/performance.md):
    # None: chosen per model size by a short throughput probe (large models keep the whole machine);
    # 1: one run at a time, as before; k: every run packed k at a time
    pack: Optional[int] = None

    # -- optimisation -----------------------------------------------------------------------------
    # examples per optimizer step; under the plan's grid.min_steps (docs/short-runs.md) a budget whose shortest
    # run would get too few steps trains with a smaller power of two (the records' batch_size): this is the cap
    batch_size: int = 32
    lr: float = 8.0e-3  # peak AdamW lr; best at every width 32-128 for the μP GPT (scripts/mup_lr_sweep.py)
    warmup_frac: float = 0.05  # linear warmup over this fraction of the steps, then cosine decay
    min_lr_ratio: float = 0.1  # ... down to lr x min_lr_ratio exactly at the run's token budget
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # gradient-norm clipping (0: off)
    # "cross_entropy", "model" (the model's own loss given labels=, e.g. a transformers causal LM's), "pkg.mod.fn",
    # or {_target_: pkg.mod.fn, ...kwargs}: fn(output, targets) -> scalar, used for training and the held-out loss
    # alike (training/loss.py)
    loss: Any = "cross_entropy"

    # -- evaluation and divergence ----------------------------------------------------------------
    eval_every_frac: float = 0.1  # held-out loss every 10% of the run (the history curve; 0: at the end only)
    eval_batch_size: int = 64
    # the loss curve's evaluations (every point, the last included) on the first batches of the held-out split
    # that fit in eval_budget x the sweep's shortest run's training compute (a forward pass costing a third of
    # a training step), the same batches for every run of the sweep; the final loss always uses the whole
    # split (one pass gives both). null: every point on the whole split (docs/performance.md)
    eval_budget: Optional[float] = 0.05
    eval_max_batches: Optional[int] = None  # a fixed number of batches instead (overrides eval_budget)
    diverge_factor: float = 3.0  # loss above this x the first loss (or NaN) stops the run as "diverged"

    # -- checkpoints (see docs/checkpoints.md) ----------------------------------------------------
    checkpoint_every: Optional[int] = None  # every this many steps (None/0: off)
    checkpoint_minutes: Optional[float] = 15.0  # every this many minutes of training (None/0: off)
    keep_checkpoints: bool = False  # keep a completed run's last checkpoint (e.g. to branch from it)

    progress: bool = True

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any] | "TrainerConfig" | None) -> "TrainerConfig":
        """A validated config from a (partial) dict over the defaults; unknown keys are refused."""
        if isinstance(settings, cls):
            settings.validate()
            return settings
        given = dict(settings or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise FlopsFitError(f"trainer.{unknown[0]} is not a trainer setting; known: {', '.join(sorted(known))}")
        gt = given.get("ground_truth")
        if gt is not None and not isinstance(gt, GroundTruth):
            given["ground_truth"] = _ground_truth(gt)
        cfg = cls(**given)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """One FlopsFitError line naming the first bad key and the fix."""
        if self.kind not in TRAINER_KINDS:
            _bad("kind", self.kind, f"choose one of: {', '.join(TRAINER_KINDS)}")
        _number("lr", self.lr, "a positive learning rate, e.g. trainer.lr=8e-3", lambda v: v > 0)
        _integer("batch_size", self.batch_size, "a positive number of examples, e.g. trainer.batch_size=32", 1)
        _number("warmup_frac", self.warmup_frac, "a fraction of the steps in [0, 1), e.g. 0.05",
                lambda v: 0 <= v < 1)
        _number("min_lr_ratio", self.min_lr_ratio, "a fraction of the peak lr in [0, 1]", lambda v: 0 <= v <= 1)
        _number("weight_decay", self.weight_decay, "a number >= 0", lambda v: v >= 0)
        for key in ("beta1", "beta2"):
            _number(key, getattr(self, key), "an Adam beta in [0, 1)", lambda v: 0 <= v < 1)
        _number("grad_clip", self.grad_clip or 0, "a gradient norm >= 0 (0: no clipping)", lambda v: v >= 0)
        _number("eval_every_frac", self.eval_every_frac or 0, "a fraction in [0, 1] (0: at the end only)",
                lambda v: 0 <= v <= 1)
        _integer("eval_batch_size", self.eval_batch_size, "a positive batch size", 1, optional=True)
        if self.eval_budget is not None:
            _number("eval_budget", self.eval_budget, "a positive fraction of the shortest run's training compute "
                    "(e.g. 0.05), or null to evaluate every history point on the whole held-out split",
                    lambda v: v > 0)
        _integer("eval_max_batches", self.eval_max_batches, "a positive number of batches, or null", 1, optional=True)
        _number("diverge_factor", self.diverge_factor, "a factor > 1 (e.g. 3), or .inf to never stop",
                lambda v: v > 1)
        _integer("checkpoint_every", self.checkpoint_every, "a number of steps >= 0 (0 or null: off)", 0,
                 optional=True)
        _number("checkpoint_minutes", self.checkpoint_minutes or 0, "minutes >= 0 (0 or null: off)",
                lambda v: v >= 0)
        _integer("threads", self.threads, "a positive thread count, or null", 1, optional=True)
        _integer("devices", self.devices, "a positive number of devices, e.g. trainer.devices=2", 1)
        if self.devices > 1 and self.kind == "mock":
            _bad("devices", self.devices, "mock runs train on no device; use trainer=local or trainer=gpu to "
                                          "train each run on several")
        if self.batch_size % self.devices:
            _bad("devices", self.devices, f"trainer.batch_size={self.batch_size} (the global batch) must split "
                                          f"evenly over the devices; make it a multiple of {self.devices}")
        _integer("pack", self.pack, "a number of runs trained at once (1: one at a time), or null to choose "
                 "from a throughput probe", 1, optional=True)
        _integer("history_points", self.history_points, "a positive number of points", 1)
        _number("noise", self.noise, "a relative noise >= 0", lambda v: v >= 0)
        loss = self.loss
        if not (callable(loss) or loss in ("cross_entropy", "ce", "model") or (isinstance(loss, str) and "." in loss)
                or (isinstance(loss, Mapping) and "_target_" in loss)):
            _bad("loss", loss, "use cross_entropy, model (the model's own loss, given labels=), pkg.module.fn, or "
                               "{_target_: pkg.module.fn} naming fn(output, targets) -> scalar")
        if str(self.dtype).lower() not in DTYPES:
            _bad("dtype", self.dtype, "use float32, bfloat16 or float16")
        if str(self.device).lower() not in ("auto", "cpu", "mps") and not str(self.device).lower().startswith("cuda"):
            _bad("device", self.device, "use auto, cpu or cuda")
        self.ground_truth.validate()

    def history_batches(self, basis: float | None, units_per_eval_batch: float) -> int | None:
        """How many held-out batches each history point evaluates (None: the whole split).

        ``trainer.eval_max_batches`` when given; else as many batches as let the history points of a run of
        ``basis`` data units (the sweep's shortest, plan.json's ``eval_basis_tokens``) cost ``eval_budget`` of
        its training compute, a forward pass costing a third of a training step; at least one. Without a
        basis (a plan from before this setting) or a budget, or without history points: the whole split."""
        if self.eval_max_batches is not None:
            return int(self.eval_max_batches)
        if not basis or self.eval_budget is None or not self.eval_every_frac:
            return None
        points = max(1, round(1 / self.eval_every_frac) - 1)  # history evaluations before the final pass
        return max(1, int(3 * float(self.eval_budget) * float(basis) / (points * float(units_per_eval_batch))))

    def run_settings(self) -> dict:
        """The settings that decide what a run computes (its checkpoints' fingerprint holds them, and its
        record as ``trainer_settings``): a completed run trained with other values is another experiment.
        Where and how fast it runs (device, threads, packing, checkpoints, progress) is not among them."""
        return {k: getattr(self, k) for k in RUN_SETTINGS}

    @property
    def amp_dtype(self) -> str:
        """float32, bfloat16 or float16, whatever alias was given."""
        return DTYPES[str(self.dtype).lower()]


# TrainerConfig.run_settings; warmup_frac and eval_every_frac reach checkpoints' fingerprints as the steps they give
RUN_SETTINGS = ("seed", "batch_size", "lr", "min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip", "amp_dtype",
                "diverge_factor", "warmup_frac", "eval_every_frac")
FINGERPRINT_SETTINGS = RUN_SETTINGS[:10]  # (the checkpoint format's keys since version 1)


def _ground_truth(gt: Mapping) -> GroundTruth:
    known = {f.name for f in fields(GroundTruth)}
    unknown = set(gt) - known
    if unknown:
        raise FlopsFitError(f"trainer.ground_truth has unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    return GroundTruth(**{k: float(v) for k, v in dict(gt).items()})


def _bad(key: str, value: Any, fix: str) -> None:
    raise FlopsFitError(f"trainer.{key}={value!r} is not valid: {fix}")


def _number(key: str, value: Any, fix: str, ok) -> None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        _bad(key, value, fix)
    if math.isnan(v) or not ok(v):
        _bad(key, value, fix)


def _integer(key: str, value: Any, fix: str, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _bad(key, value, fix)



def check_trainer(settings: Mapping[str, Any] | TrainerConfig | None) -> None:
    """Refuse bad trainer settings with one line, before any data or model is built (ff-train calls
    this right after composing its config)."""
    TrainerConfig.from_mapping(settings)
