"""A user's own model class, as a researcher would write it: no flops-fit base class.

It only follows the contract: a size parameter (``width``) and ``num_params()``.
"""

import torch
from torch import nn


class BagOfWordsLM(nn.Module):
    def __init__(self, width: int, vocab_size: int = 256, depth: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.body = nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.GELU()) for _ in range(depth)])
        self.head = nn.Linear(width, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(x)))

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n
