"""The training loss: one function for the training steps and the held-out evaluation alike.

``trainer.loss`` is

* ``"cross_entropy"`` (the default): mean cross-entropy of (..., classes) logits against (...)
  integer targets, computed in float32 (text: next-token prediction; images: classification);
* ``pkg.module.fn``, or ``{_target_: pkg.module.fn, **kwargs}``: ``fn(output, targets, **kwargs) -> scalar tensor``,
  for a model whose forward returns something else (a tuple, a dict, an object);
* or, from Python, the callable itself (``train_run(..., loss_fn=fn)``).

The loss must be a *mean* over the batch's targets; the held-out loss weights each batch by
its number of targets (tokens for text, images for image data), so it is the mean over the
whole held-out split.

On the CPU the default cross-entropy runs in row chunks that stay in cache (:func:`chunked_cross_entropy`):
one pass computes the loss and, when the logits need a gradient, the gradient itself, which the
backward then hands back. ``F.cross_entropy`` instead writes the log-probabilities, reads them back
in the backward and scatters into a zeroed tensor the size of the logits: three passes over a
tensor that, for a small language model, is far larger than the model (4096 x 512 floats per batch
for the demo's GPT, whose largest weight is 512 x 8). Values and gradients agree with
``F.cross_entropy`` to float32 rounding (tests/test_loss.py); other devices, ignored targets
(negative ids) and double precision take ``F.cross_entropy``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

from flops_fit.errors import FlopsFitError
from flops_fit.models import resolve_target

LossFn = Callable[[Any, Any], Any]


def cross_entropy_loss(output, targets):
    """Mean cross-entropy for (..., classes) logits and (...) integer targets, in float32."""
    import torch
    import torch.nn.functional as F

    if not hasattr(output, "reshape"):
        raise FlopsFitError(
            f"the model returned a {type(output).__name__}, not a logits tensor: set trainer.loss to "
            "{_target_: your.module.loss_fn} with loss_fn(output, targets) -> scalar"
        )
    logits, targets = output.reshape(-1, output.shape[-1]), targets.reshape(-1)
    if (logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and targets.numel() and not torch.jit.is_scripting() and not torch.compiler.is_compiling()
            and bool(targets.min() >= 0)):
        return chunked_cross_entropy().apply(logits, targets)
    return F.cross_entropy(logits.float(), targets)


CHUNK_BYTES = 512 * 1024  # float32 logits per chunk: about half a core's L2 cache


@functools.cache
def chunked_cross_entropy():
    """The autograd Function (built on first use: importing this module loads no torch)."""
    import torch

    softmax_out = torch.ops.aten._softmax.out  # softmax written into a given chunk (torch.softmax has no out=)
    TINY = torch.finfo(torch.float32).tiny

    class ChunkedCrossEntropy(torch.autograd.Function):
        """Mean cross-entropy of (N, C) logits against (N,) class ids, and its gradient, in one pass
        over row chunks: per chunk torch's fused softmax ``p`` (one kernel), the loss ``-log p[target]``
        and the gradient ``(p - onehot(target)) / N``, written straight into the gradient buffer for
        float32 logits and through a float32 chunk for half precisions. A row whose target probability
        underflows in float32 (a logit gap above about 87) takes ``logsumexp(z) - z[target]``."""

        @staticmethod
        def forward(ctx, logits, targets):
            n, classes = logits.shape
            grad = torch.empty_like(logits) if ctx.needs_input_grad[0] else None
            direct = grad is not None and logits.dtype == torch.float32
            rows = max(1, CHUNK_BYTES // (4 * classes))
            work = None if direct else torch.empty((min(rows, n), classes), dtype=torch.float32)
            total = torch.zeros((), dtype=torch.float32)
            for start in range(0, n, rows):
                z = logits[start:start + rows].float()
                t = targets[start:start + rows, None]
                e = grad[start:start + rows] if direct else work[: z.shape[0]]
                softmax_out(z, -1, False, out=e)
                picked = e.gather(1, t)
                if bool((picked < TINY).any()):  # p[target] 0 or subnormal in float32: the exact form
                    nll = torch.logsumexp(z, -1, keepdim=True) - z.gather(1, t)
                else:
                    nll = picked.log_().neg_()
                total += nll.sum()
                if grad is not None:
                    e.mul_(1.0 / n)
                    e.scatter_add_(1, t, e.new_full(t.shape, -1.0 / n))
                    if not direct:
                        grad[start:start + rows] = e
            ctx.save_for_backward(grad if grad is not None else logits.new_empty(0))
            return total / n

        @staticmethod
        def backward(ctx, grad_loss):
            (grad,) = ctx.saved_tensors
            if grad.numel() == 0:
                return None, None
            # d loss / d logits was computed in the forward; the saved reference keeps autograd from
            # accumulating into it in place, so handing it on as it is (the usual grad_loss 1) is safe
            return (grad if bool(grad_loss == 1) else grad * grad_loss.to(grad.dtype)), None

    return ChunkedCrossEntropy


def resolve_loss(spec: str | Mapping | LossFn | None) -> LossFn:
    """The loss function that ``trainer.loss`` (or ``loss_fn=``) names."""
    if spec is None or spec in ("cross_entropy", "ce"):
        return cross_entropy_loss
    if callable(spec):
        return spec
    if isinstance(spec, str) and "." in spec:  # trainer.loss=pkg.module.fn
        spec = {"_target_": spec}
    if isinstance(spec, Mapping) and "_target_" in spec:
        fn = resolve_target(spec["_target_"], key="trainer.loss._target_")
        kwargs = {k: v for k, v in spec.items() if k != "_target_"}
        if not callable(fn):
            raise FlopsFitError(f"trainer.loss._target_={spec['_target_']} is not callable")
        return functools.partial(fn, **kwargs) if kwargs else fn
    raise FlopsFitError(
        f"trainer.loss={spec!r} is not a loss: use cross_entropy, or {{_target_: pkg.module.fn}} "
        "naming fn(output, targets) -> scalar"
    )


def targets_in(targets) -> int:
    """How many targets a batch holds: the weight of its mean loss in the held-out mean."""
    if hasattr(targets, "numel"):
        return int(targets.numel())
    return len(targets)
