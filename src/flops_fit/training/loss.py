"""The training loss: one function for the training steps and the held-out evaluation alike.

``trainer.loss`` is

* ``"cross_entropy"`` (the default): mean cross-entropy of (..., classes) logits against (...)
  integer targets, computed in float32 (text: next-token prediction; images: classification).
  The logits are the model's output when it is a tensor, else its ``.logits`` (a ``transformers``
  ``ModelOutput``), its ``"logits"`` entry (a dict) or its first element (a tuple or list);
* ``"model"``: the model's own loss, for models that compute one when given labels, as every
  ``transformers`` model does: the loop calls ``model(inputs, labels=...)`` and uses ``.loss``
  (or ``["loss"]``, or the first element of a tuple). For next-token data (integer targets shaped
  like the inputs) the labels are the targets moved one step right, since a causal LM shifts its
  labels itself: its loss then covers each sequence's first T - 1 targets (the last has no label
  after the shift). Other targets (class ids) are passed as they are;
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

    output = logits_of(output)
    logits, targets = output.reshape(-1, output.shape[-1]), targets.reshape(-1)
    if (logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and targets.numel() and not torch.jit.is_scripting() and not torch.compiler.is_compiling()
            and bool(targets.min() >= 0)):
        return chunked_cross_entropy().apply(logits, targets)
    return F.cross_entropy(logits.float(), targets)


def _output_field(output, name: str):
    """``name`` of a model's output: its attribute (a ``ModelOutput``), its entry (a dict), else a tuple's or
    list's first element; None when there is none."""
    found = getattr(output, name, None)
    if found is None and isinstance(output, Mapping):
        found = output.get(name)
    if found is None and isinstance(output, (tuple, list)) and output:
        found = output[0]
    return found


def logits_of(output):
    """The logits in a model's output: a tensor as it is, a ``ModelOutput``'s ``.logits``, a dict's
    ``"logits"``, a tuple's or list's first element."""
    if hasattr(output, "reshape"):
        return output
    found = _output_field(output, "logits")
    if not hasattr(found, "reshape"):
        keys = f" with keys {sorted(map(str, output))}" if isinstance(output, Mapping) else ""
        raise FlopsFitError(
            f"the model returned a {type(output).__name__}{keys}, with no logits tensor: return the logits (or a "
            "'logits' entry), or set trainer.loss to {_target_: your.module.loss_fn} with loss_fn(output, targets) -> scalar"
        )
    return found


def model_loss(output, targets):
    """``trainer.loss=model``: the loss the model computed itself from the labels it was given."""
    loss = _output_field(output, "loss")
    if not (hasattr(loss, "ndim") and loss.ndim == 0):
        raise FlopsFitError(
            f"trainer.loss=model: the model returned a {type(output).__name__} with no scalar .loss when called with "
            "labels=; use trainer.loss=cross_entropy (the default) for a model that computes no loss of its own"
        )
    return loss


model_loss.takes_labels = True  # the loop passes the targets to the model as labels=


def call_model(model, x, y, loss_fn):
    """The model's output on inputs ``x``: ``model(x)``, or ``model(x, labels=...)`` for a loss that takes
    the model's own (see :func:`model_loss` for the labels a causal LM gets)."""
    if not getattr(loss_fn, "takes_labels", False):
        return model(x)
    labels = y
    if (hasattr(x, "shape") and hasattr(y, "shape") and x.shape == y.shape and y.ndim >= 1
            and not y.is_floating_point()):
        import torch

        # a causal LM pairs logits[t] with labels[t + 1]: this puts y[t] there (y[T-1] has no place)
        labels = torch.cat([x[..., :1], y[..., :-1]], dim=-1)
    try:
        return model(x, labels=labels)
    except TypeError as e:
        if "labels" not in str(e):
            raise
        raise FlopsFitError(f"trainer.loss=model: {type(getattr(model, 'module', model)).__name__}.forward takes no "
                            f"labels= argument; use trainer.loss=cross_entropy (the default)") from e


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
    if spec == "model":
        return model_loss
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
        f"trainer.loss={spec!r} is not a loss: use cross_entropy, model (the model's own), or {{_target_: pkg.module.fn}} "
        "naming fn(output, targets) -> scalar"
    )


def targets_in(targets) -> int:
    """How many targets a batch holds: the weight of its mean loss in the held-out mean."""
    if hasattr(targets, "numel"):
        return int(targets.numel())
    return len(targets)
