"""One training loop for any model in the contract (CPU or GPU).

``train_run(experiment, model=..., data=..., trainer=...)`` trains ``model`` on ``data`` for the
experiment's token budget and returns its run record (the ``runs/<id>.json`` shape in
docs/architecture.md).

Data contract (``flops_fit.data`` provides these; anything with the same shape works):

``kind``                      ``"text"`` or ``"image"``
``data_unit``                 ``"tokens"`` or ``"images"``
``train_batch(batch_size, generator) -> (x, y)``
                              text: LongTensor (B, T) inputs and (B, T) next-token targets;
                              image: float (B, C, H, W) and long (B,)
``eval_batches(batch_size)``  iterator of (x, y) over a fixed held-out split
``examples_per_batch(batch_size)``  tokens (text) or images (image) in one batch

What the loop does:

* seeds torch with ``trainer.seed`` and, when the model has ``reset_parameters()``,
  re-initialises it under that seed, so the same config and seed give identical losses (on CPU)
  whoever built the model. A model built on the meta device is materialised on the training
  device first (it then needs ``reset_parameters``).
* AdamW over ``model.param_groups(lr, weight_decay)`` when the model has the hook (μP), else
  weight decay on matrices only; fused kernels on CUDA.
* ``steps = ceil(tokens / examples_per_batch)``; linear warmup over ``warmup_frac`` of them, then
  cosine decay reaching ``min_lr_ratio x lr`` at the last step; gradient-norm clipping.
* held-out loss every ``eval_every_frac`` of the run (``history``: tokens, FLOPs, loss) and a
  final held-out ``loss`` over the whole held-out split.
* a run whose training or held-out loss is not finite or exceeds ``diverge_factor x`` the
  first training loss stops with status ``diverged``.
* GPU: ``device=auto|cuda`` picks CUDA when present (cuda without CUDA falls back to CPU with
  one warning line), bf16 autocast for ``dtype=bfloat16``, TF32 matmuls, optional
  ``torch.compile``, pinned host memory and non-blocking copies.
* a tqdm bar per run (loss, tokens/s, achieved FLOP/s) and a one-line summary at the end.

Throughput figures (``tokens_per_s``, ``achieved_flops_per_s``) use the training time only
(evaluation excluded); achieved FLOP/s counts ``measured`` FLOPs (what the hardware executes)
when the model can give them, else the run's convention.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import fields
from typing import Any, Mapping

import torch

from flops_fit.errors import FlopsFitError
from flops_fit.training.flops import cross_entropy_loss, flops_by_convention
from flops_fit.training.optim import build_optimizer, lr_factor, set_lr, warmup_steps_for

_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _settings(trainer: Mapping[str, Any]) -> dict:
    """The trainer dict over TrainerConf's defaults (so a partial dict works)."""
    from dataclasses import MISSING

    from flops_fit.training.config import TrainerConfig as TrainerConf

    out: dict = {}
    for f in fields(TrainerConf):
        if f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            continue
        if value != "???":  # omegaconf's MISSING
            out[f.name] = value
    out.update(dict(trainer or {}))
    if out.get("kind") in (None, "mock"):
        out["kind"] = "local"
    return out


def resolve_device(requested: str | None) -> torch.device:
    requested = (requested or "auto").lower()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            _warn_once("no-cuda", f"trainer.device={requested} but CUDA is not available here; training on the CPU instead")
            return torch.device("cpu")
        return torch.device(requested)
    if requested in ("cpu", "mps"):
        return torch.device(requested)
    raise FlopsFitError(f"trainer.device={requested!r} must be auto, cpu or cuda")


def resolve_dtype(name: str | None) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32."""
    name = (name or "float32").lower()
    if name in ("float32", "fp32", "32"):
        return None
    if name in ("bfloat16", "bf16"):
        return torch.bfloat16
    if name in ("float16", "fp16", "16"):
        return torch.float16
    raise FlopsFitError(f"trainer.dtype={name!r} must be float32 or bfloat16")


def _loss_fn(name: str):
    if name in ("cross_entropy", "ce"):
        return cross_entropy_loss
    raise FlopsFitError(f"trainer.loss={name!r} is not supported; use cross_entropy")


def _prepare_model(model: torch.nn.Module, device: torch.device, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    on_meta = any(p.is_meta for p in model.parameters()) or any(b.is_meta for b in model.buffers())
    has_reset = callable(getattr(model, "reset_parameters", None))
    if on_meta:
        if not has_reset:
            raise FlopsFitError(
                f"{type(model).__name__} was built on the meta device but has no reset_parameters() to initialise it"
            )
        model.to_empty(device=device)
    if has_reset:
        model.reset_parameters()
    return model.to(device)


class _Batches:
    """Moves batches to the device (pinned, non-blocking on CUDA)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cuda:
            if x.device.type == "cpu":
                x, y = x.pin_memory(), y.pin_memory()
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)


@torch.no_grad()
def evaluate(model, data, batch_size: int, to_device, autocast, max_batches: int | None = None) -> float:
    """Mean held-out loss over ``data.eval_batches`` (the first ``max_batches`` when given)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=to_device.device)
    count = 0
    try:
        for i, (x, y) in enumerate(data.eval_batches(batch_size)):
            if max_batches and i >= max_batches:
                break
            x, y = to_device(x, y)
            with autocast():
                logits = model(x)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum"
            )
            total += loss.double()
            count += y.numel()
    finally:
        model.train(was_training)
    if count == 0:
        raise FlopsFitError("the dataset's held-out split is empty (eval_batches yielded nothing)")
    return float(total.item() / count)


def train_run(
    experiment: Mapping[str, Any],
    *,
    model: torch.nn.Module,
    data,
    trainer: Mapping[str, Any],
    flops_convention: str = "6nd",
    progress: bool = True,
    position: int = 0,
) -> dict:
    """Train ``model`` on ``data`` for ``experiment['tokens']`` data units; return the run record."""
    t_start = time.perf_counter()
    cfg = _settings(trainer)
    seed = int(cfg.get("seed") or 0)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = resolve_device(cfg.get("device"))
    amp_dtype = resolve_dtype(cfg.get("dtype"))
    loss_fn = _loss_fn(str(cfg.get("loss") or "cross_entropy"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    data_unit = str(getattr(data, "data_unit", None) or getattr(model, "data_unit", "tokens"))
    model_unit = str(getattr(model, "data_unit", data_unit))
    if model_unit != data_unit:
        raise FlopsFitError(f"model counts {model_unit} but the dataset yields {data_unit}")

    model = _prepare_model(model, device, seed)
    model.train()
    fpt = flops_by_convention(model, data_unit)
    if flops_convention not in fpt:
        planned = experiment.get("flops_per_token")
        if planned is None:
            raise FlopsFitError(
                f"{type(model).__name__} cannot give FLOPs under convention {flops_convention!r} "
                f"(it gives {sorted(fpt)}) and the experiment has no flops_per_token"
            )
        fpt[flops_convention] = float(planned)
    throughput_fpt = fpt.get("measured", fpt[flops_convention])
    total_params, non_emb = _param_counts(model)

    batch_size = int(cfg["batch_size"])
    per_batch = int(data.examples_per_batch(batch_size))
    if per_batch <= 0:
        raise FlopsFitError(f"dataset gives {per_batch} {data_unit} per batch of {batch_size}")
    target = float(experiment["tokens"])
    steps = max(1, math.ceil(target / per_batch))
    warmup = warmup_steps_for(steps, float(cfg["warmup_frac"]))
    min_ratio = float(cfg["min_lr_ratio"])
    eval_every = max(1, int(round(float(cfg["eval_every_frac"]) * steps))) if cfg.get("eval_every_frac") else steps
    eval_bs = int(cfg.get("eval_batch_size") or batch_size)
    eval_max = cfg.get("eval_max_batches")
    diverge_factor = float(cfg.get("diverge_factor") or math.inf)
    grad_clip = float(cfg.get("grad_clip") or 0.0)

    optimizer = build_optimizer(
        model,
        lr=float(cfg["lr"]),
        weight_decay=float(cfg["weight_decay"]),
        betas=(float(cfg["beta1"]), float(cfg["beta2"])),
        device_type=device.type,
    )
    step_model = torch.compile(model) if cfg.get("compile") else model
    to_device = _Batches(device)
    generator = torch.Generator().manual_seed(seed)
    check_every = 1 if device.type == "cpu" else 10

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    show_bar = bool(progress and cfg.get("progress", True))
    bar = _make_bar(experiment, steps * per_batch, data_unit, position, show_bar)

    status, reason = "completed", None
    history: list[dict] = []
    first_loss: float | None = None
    last_loss = math.nan
    train_time = 0.0
    done = 0  # steps taken
    pending = []  # loss tensors not yet synced (CUDA)
    t_train = time.perf_counter()
    try:
        for step in range(steps):
            set_lr(optimizer, lr_factor(step, steps, warmup, min_ratio))
            x, y = to_device(*data.train_batch(batch_size, generator))
            with autocast():
                logits = step_model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            pending.append(loss.detach())
            if done % check_every == 0 or done == steps or first_loss is None or done % eval_every == 0:
                values = torch.stack(pending).float().cpu().tolist()
                pending.clear()
                if first_loss is None:
                    first_loss = values[0]
                    if not math.isfinite(first_loss):
                        status, reason = "diverged", f"non-finite loss at step {done}"
                        break
                last_loss = values[-1]
                bad = next((v for v in values if not math.isfinite(v) or v > diverge_factor * first_loss), None)
                if bad is not None:
                    status = "diverged"
                    reason = f"training loss {bad:.4g} at step {done} (first loss {first_loss:.4g}, diverge_factor {diverge_factor:g})"
                    break
            if done % eval_every == 0 and done < steps:
                sync()
                train_time += time.perf_counter() - t_train
                ev = evaluate(step_model, data, eval_bs, to_device, autocast, eval_max)
                t_train = time.perf_counter()
                history.append(_point(done * per_batch, fpt[flops_convention], ev))
                if not math.isfinite(ev) or (first_loss is not None and ev > diverge_factor * first_loss):
                    status, reason = "diverged", f"held-out loss {ev:.4g} at step {done}"
                    break
            if show_bar:
                elapsed = train_time + (time.perf_counter() - t_train)
                rate = done * per_batch / max(elapsed, 1e-9)
                bar.update(per_batch)
                if done % check_every == 0 or done == steps:
                    bar.set_postfix_str(
                        f"loss={last_loss:.3f} {_si(rate)}{'tok' if data_unit == 'tokens' else 'img'}/s "
                        f"{_si(rate * throughput_fpt)}FLOP/s",
                        refresh=False,
                    )
        sync()
        train_time += time.perf_counter() - t_train
        final_loss = None
        if status == "completed":
            final_loss = evaluate(step_model, data, eval_bs, to_device, autocast, None)
            if not math.isfinite(final_loss):
                status, reason = "diverged", "non-finite final held-out loss"
                final_loss = None
            else:
                history.append(_point(done * per_batch, fpt[flops_convention], final_loss))
    finally:
        bar.close()

    tokens = done * per_batch
    wall = time.perf_counter() - t_start
    rate = tokens / train_time if train_time > 0 else 0.0
    record = {
        "id": experiment.get("id"),
        "status": status,
        "budget": experiment.get("budget"),
        "size": experiment.get("size"),
        "params": total_params,
        "non_embedding_params": non_emb,
        "tokens": int(tokens),
        "planned_tokens": experiment.get("tokens"),
        "flops": fpt[flops_convention] * tokens,
        "flops_convention": flops_convention,
        "flops_by_convention": {k: v * tokens for k, v in fpt.items()},
        "loss": final_loss,
        "history": history,
        "trainer": cfg.get("kind", "local"),
        "device": str(device),
        "dtype": "float32" if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
        "seed": seed,
        "lr": float(cfg["lr"]),
        "batch_size": batch_size,
        "steps": done,
        "wall_time_s": wall,
        "train_time_s": train_time,
        "tokens_per_s": rate,
        "achieved_flops_per_s": rate * throughput_fpt,
        "data_unit": data_unit,
    }
    if reason:
        record["reason"] = reason
    if progress:
        _summary(record, stream_bar=show_bar)
    return record


def _param_counts(model) -> tuple[int, int]:
    from flops_fit.training.flops import count_params

    return count_params(model)


def _point(tokens: int, fpt: float, loss: float) -> dict:
    return {"tokens": int(tokens), "flops": float(fpt) * tokens, "loss": float(loss)}


def _si(x: float) -> str:
    for scale, s in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{s}"
    return f"{x:.3g}"


def _make_bar(experiment, total, unit, position, enabled):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=str(experiment.get("id", "run")),
        unit="tok" if unit == "tokens" else "img",
        unit_scale=True,
        position=position,
        leave=False,
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def _summary(r: dict, stream_bar: bool) -> None:
    unit = "tok" if r["data_unit"] == "tokens" else "img"
    loss = f"{r['loss']:.4f}" if r.get("loss") is not None else "n/a"
    line = (
        f"[{r['id']}] {r['status']}: loss {loss}, {_si(r['params'])} params, {_si(r['tokens'])} {unit} in "
        f"{r['steps']} steps, {r['wall_time_s']:.1f} s, {_si(r['tokens_per_s'])} {unit}/s, "
        f"{_si(r['achieved_flops_per_s'])}FLOP/s on {r['device']}"
    )
    if r.get("reason"):
        line += f" ({r['reason']})"
    if stream_bar:
        from tqdm.auto import tqdm

        tqdm.write(line)
    else:
        print(line, flush=True)
