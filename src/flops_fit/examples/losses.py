"""The example models' losses, as ``loss_fn(output, targets)`` for ``find_optimal(..., loss_fn=...)``.

Both are plain cross-entropy (what flops-fit uses by default); they are spelled out so a user can
see the signature a loss of their own needs, and start from them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gpt_loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: ``logits (B, T, vocab)``, ``targets (B, T)`` -> mean over tokens."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def vit_loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Image classification cross-entropy: ``logits (B, classes)``, ``labels (B,)`` -> mean over images."""
    return F.cross_entropy(logits.float(), labels)
