"""FLOPs per token (or per image), by convention and measured.

``measure_flops_per_token`` runs one real forward + backward step under
``torch.utils.flop_counter.FlopCounterMode`` and divides by the data units in the batch
(tokens for integer (B, T) inputs, images otherwise). It works on any device, the meta device
included, where it costs nothing. Matrix multiplies and attention are counted; element-wise
work (norms, activations, the optimizer) is not, as usual for FLOP accounting. torch counts
attention over the full T x T score matrix even when it is causal.

``flops_by_convention`` gathers every convention a model can give into one dict.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils import flop_counter

from flops_fit.models import FLOP_CONVENTIONS, hooked_flops_per_token

CONVENTIONS = FLOP_CONVENTIONS


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy for (..., classes) logits and (...) integer targets."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def _sdpa_cpu_forward(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(q, k, v)


def _sdpa_cpu_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, q, k, v)


def _extra_formulas() -> dict:
    """torch's counter misses the CPU flash-attention kernels; count them like the CUDA ones."""
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


def units_in_batch(x: torch.Tensor, data_unit: str | None = None) -> int:
    """Tokens in an integer (B, T) batch, images in a (B, C, H, W) one."""
    if data_unit == "images" or (data_unit is None and x.is_floating_point()):
        return int(x.shape[0])
    return int(x.numel())


def measure_flops_per_token(
    model: torch.nn.Module,
    example_batch: tuple[torch.Tensor, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    data_unit: str | None = None,
) -> float:
    """Counted FLOPs of one forward + backward step, per token (per image for image data).

    ``data_unit`` defaults to the model's ``data_unit`` attribute. Gradients the step leaves
    on the model are cleared again.
    """
    x, y = example_batch
    loss_fn = loss_fn or cross_entropy_loss
    unit = data_unit or getattr(model, "data_unit", None)
    was_training = model.training
    model.train()
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    try:
        with counter:
            loss = loss_fn(model(x), y)
            loss.backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return float(counter.get_total_flops()) / units_in_batch(x, unit)


def flops_by_convention(
    model: torch.nn.Module,
    data_unit: str = "tokens",
    example_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    loss_fn: Callable | None = None,
) -> dict[str, float]:
    """Training FLOPs per token (per image) under every convention the model can give.

    ``6nd`` and ``6nd_nonembedding`` fall back to 6 x the parameter counts; ``chinchilla`` and
    ``measured`` come from the model's ``flops_per_token`` hook. When the hook cannot give
    ``measured`` and an ``example_batch`` is passed, it is measured on that batch.
    """
    out = hooked_flops_per_token(model, CONVENTIONS)
    if "6nd" not in out or "6nd_nonembedding" not in out:
        params, non_emb = count_params(model)
        out.setdefault("6nd", 6.0 * params)
        out.setdefault("6nd_nonembedding", 6.0 * non_emb)
    if "measured" not in out and example_batch is not None:
        out["measured"] = measure_flops_per_token(model, example_batch, loss_fn, data_unit)
    return out


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(total, non-embedding) parameters, from the model's ``num_params`` when it has one."""
    if hasattr(model, "num_params"):
        total = int(model.num_params())
        try:
            non_emb = int(model.num_params(non_embedding=True))
        except TypeError:
            non_emb = total
        return total, non_emb
    total = sum(p.numel() for p in model.parameters())
    return total, total
