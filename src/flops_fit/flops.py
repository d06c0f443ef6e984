"""FLOPs conventions and counting: the one owner of "how many FLOPs per token".

A bottom module: it imports nothing from flops-fit but its error type, and torch only inside
the functions that measure, so ``import flops_fit.flops`` never loads torch (ff-analyze and
ff-plot must start without it).

Conventions (training FLOPs = forward + backward, per token; per image for image models)::

    6nd               6 x parameters                 (Kaplan et al. 2020; C = 6 N D)
    6nd_nonembedding  6 x non-embedding parameters
    chinchilla        the model's own count, Hoffmann et al. (2022) appendix F
    measured          torch's FlopCounterMode over one real forward + backward step

``flops_per_token_6n(params)`` is the 6 x params fallback, written once: use it wherever a
count under ``6nd`` is needed and the model gives none (records, plans, external results).

``measure_flops_per_token`` runs one forward + backward under ``FlopCounterMode`` and divides
by the data units in the batch (tokens for integer (B, T) inputs, images otherwise). It works on
any device, the meta device included, where it costs nothing. Matrix multiplies, convolutions
and attention are counted; element-wise work (norms, activations, the loss, the optimizer) is
not, as usual for FLOP accounting. torch counts attention over the full T x T score matrix even
when it is causal.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

FLOP_CONVENTIONS = ("6nd", "6nd_nonembedding", "chinchilla", "measured")
# what a planner can afford to ask of every size: all but "measured" (a real forward + backward)
COUNTED_CONVENTIONS = tuple(c for c in FLOP_CONVENTIONS if c != "measured")


SIX_ND = 6.0  # training FLOPs per parameter per token under C = 6 N D (2 forward + 4 backward per weight)


def flops_per_token_6n(params):
    """Training FLOPs per token under C = 6 N D: 6 x ``params``.

    ``params`` may be a number or a numpy array (the fits call it on arrays)."""
    return SIX_ND * params


def count_params(model) -> tuple[int, int]:
    """(total, non-embedding) parameters of any module.

    From the model's ``num_params()`` when it has one (``num_params(non_embedding=True)`` for the
    second count, the total when it takes no such argument); else from ``num_parameters()`` and
    ``num_parameters(exclude_embeddings=True)`` (Hugging Face ``transformers`` models); else counted
    here, each parameter once (tied weights are one parameter), the non-embedding count leaving out
    :func:`embedding_params`."""
    if hasattr(model, "num_params"):
        total = int(model.num_params())
        try:
            non_emb = int(model.num_params(non_embedding=True))
        except TypeError:
            non_emb = total
        return total, non_emb
    if callable(getattr(model, "num_parameters", None)):
        total = int(model.num_parameters())
        try:
            non_emb = int(model.num_parameters(exclude_embeddings=True))
        except TypeError:
            non_emb = total - embedding_params(model)
        return total, non_emb
    total = sum(p.numel() for p in model.parameters())
    return total, total - embedding_params(model)


def embedding_params(model) -> int:
    """Parameters of the model's lookup tables, each counted once: its input embeddings
    (``get_input_embeddings()`` when it has one) and every ``nn.Embedding`` (position tables too).

    An output head is a matmul, not a lookup, and stays out of this count, unless it is tied to
    the input embeddings: the shared weight is then one parameter, counted here once."""
    from torch import nn

    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    get_input = getattr(model, "get_input_embeddings", None)
    if callable(get_input):
        try:
            found = get_input()
        except (NotImplementedError, AttributeError):
            found = None
        if isinstance(found, nn.Module):
            tables.append(found)
    seen: dict[int, int] = {}
    for table in tables:
        for p in table.parameters():
            seen[id(p)] = p.numel()
    return sum(seen.values())


def hooked_flops_per_token(model, conventions: Iterable[str] = FLOP_CONVENTIONS) -> dict[str, float]:
    """FLOPs per token from the model's ``flops_per_token`` hook, for the conventions it gives."""
    hook = getattr(model, "flops_per_token", None)
    out: dict[str, float] = {}
    if hook is None:
        return out
    for conv in conventions:
        try:
            value = hook(conv)
        except (NotImplementedError, ValueError, KeyError):
            continue
        if value is not None and math.isfinite(float(value)) and float(value) > 0:
            out[conv] = float(value)
    return out


def flops_by_convention(
    model,
    data_unit: str = "tokens",
    example_batch: tuple[Any, Any] | None = None,
    loss_fn: Callable | None = None,
    conventions: Iterable[str] = FLOP_CONVENTIONS,
) -> dict[str, float]:
    """Training FLOPs per token (per image) under every convention in ``conventions`` the model gives.

    ``6nd`` and ``6nd_nonembedding`` fall back to 6 x the parameter counts; ``chinchilla`` and
    ``measured`` come from the model's ``flops_per_token`` hook. When the hook cannot give
    ``measured`` and an ``example_batch`` is passed, it is measured on that batch.
    """
    conventions = tuple(conventions)
    out = hooked_flops_per_token(model, conventions)
    fallback = [c for c in ("6nd", "6nd_nonembedding") if c in conventions and c not in out]
    if fallback:
        counts = dict(zip(("6nd", "6nd_nonembedding"), count_params(model)))
        for c in fallback:
            out[c] = flops_per_token_6n(counts[c])
    if "measured" in conventions and "measured" not in out and example_batch is not None:
        out["measured"] = measure_flops_per_token(model, example_batch, loss_fn, data_unit)
    return out


def units_in_batch(x, data_unit: str | None = None) -> int:
    """Tokens in an integer (B, T) batch, images in a (B, C, H, W) one."""
    if data_unit == "images" or (data_unit is None and x.is_floating_point()):
        return int(x.shape[0])
    return int(x.numel())


def _scalar_of(output):
    """A scalar to differentiate when no loss is given. Counted FLOPs depend on shapes only, so
    the backward pass through the model costs what it costs under the real loss."""
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return sum(_scalar_of(o) for o in output if hasattr(o, "is_floating_point") and o.is_floating_point())
    return output.float().sum()


def _sdpa_cpu_forward(q, k, v, *args, out_shape=None, **kwargs) -> int:
    from torch.utils import flop_counter

    return flop_counter.sdpa_flop_count(q, k, v)


def _sdpa_cpu_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    from torch.utils import flop_counter

    return flop_counter.sdpa_backward_flop_count(grad_out, q, k, v)


def _extra_formulas() -> dict:
    """torch's counter misses the CPU flash-attention kernels; count them like the CUDA ones."""
    import torch

    aten = torch.ops.aten
    extra = {}
    for name, fn in (
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_forward),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_backward),
    ):
        op = getattr(aten, name, None)
        if op is not None:
            extra[op] = fn
    return extra


def measure_flops_per_token(
    model,
    example_batch: tuple[Any, Any],
    loss_fn: Callable | None = None,
    data_unit: str | None = None,
) -> float:
    """Counted FLOPs of one forward + backward step, per token (per image for image data).

    ``loss_fn(output, targets)`` defaults to a plain sum of the output (the count is the same).
    ``data_unit`` defaults to the model's ``data_unit`` attribute. Gradients the step leaves
    on the model are cleared again.
    """
    from torch.utils import flop_counter

    x, y = example_batch
    unit = data_unit or getattr(model, "data_unit", None)
    was_training = model.training
    model.train()
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    try:
        with counter:
            output = model(x)
            loss = loss_fn(output, y) if loss_fn is not None else _scalar_of(output)
            loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return float(counter.get_total_flops()) / units_in_batch(x, unit)


def count_flops_measured(build: Callable[[], Any], example, targets=None, data_unit: str | None = None) -> float:
    """Training FLOPs per data unit of a meta-device model made by ``build()`` (nothing is allocated).

    ``example`` (and ``targets``) may live anywhere; they are moved to the meta device.
    """
    import torch

    with torch.device("meta"):
        twin = build()
        x = example.to("meta")
        y = targets.to("meta") if targets is not None else None
    return measure_flops_per_token(twin, (x, y), None, data_unit)
