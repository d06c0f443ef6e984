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
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

from flops_fit.errors import FlopsFitError
from flops_fit.models import resolve_target

LossFn = Callable[[Any, Any], Any]


def cross_entropy_loss(output, targets):
    """Mean cross-entropy for (..., classes) logits and (...) integer targets, in float32."""
    import torch.nn.functional as F

    if not hasattr(output, "reshape"):
        raise FlopsFitError(
            f"the model returned a {type(output).__name__}, not a logits tensor: set trainer.loss to "
            "{_target_: your.module.loss_fn} with loss_fn(output, targets) -> scalar"
        )
    return F.cross_entropy(output.reshape(-1, output.shape[-1]).float(), targets.reshape(-1))


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
