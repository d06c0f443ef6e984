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


def make_token_windows(n: int = 512, seq_len: int = 16, vocab_size: int = 32, seed: int = 0):
    """A user's data factory for ``dataset=torch``: a TensorDataset of next-token windows of a learnable
    sequence (each token is the previous one plus 1 or 2, mod vocab_size)."""
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(seed)
    steps = torch.randint(1, 3, (n, seq_len + 1), generator=g)
    start = torch.randint(0, vocab_size, (n, 1), generator=g)
    seq = (start + torch.cumsum(steps, dim=1)) % vocab_size
    return TensorDataset(seq[:, :-1].contiguous(), seq[:, 1:].contiguous())


def smoothed_ce(output, targets):
    """A user's loss for ``trainer.loss``: cross-entropy with a little label smoothing."""
    return torch.nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), targets.reshape(-1),
                                             label_smoothing=0.01)
