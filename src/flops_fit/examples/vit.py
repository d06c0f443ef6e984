"""A small Vision Transformer (ViT) that follows the flops-fit model contract.

Architecture::

    image (B, C, H, W) -> non-overlapping patches -> linear patch embedding + learned position embedding
    -> depth x [x + Attn(LayerNorm(x)); x + MLP(LayerNorm(x))] -> mean over patches -> LayerNorm -> head
    -> (B, classes)

Pre-norm blocks with bidirectional multi-head attention (``F.scaled_dot_product_attention``)
and a GELU MLP of ``mlp_ratio x embed_dim``. The size parameter is ``embed_dim``, a multiple of
``head_dim`` (``VisionTransformer.round_size`` gives the nearest one); heads = embed_dim / head_dim.

Pooling is a global average over the patch tokens (as in Beyer et al. 2022, "Better plain ViT
baselines"), not a cls token: with a cls token only one position of the last block receives
gradient, and under μP the other positions' updates then shrink with width in the coordinate
check (tests/test_mup.py); averaging keeps every position in the loss.

Counting. One data unit is one **image** (``data_unit = "images"``). Each image is
``T = (image_size / patch_size)^2`` patch tokens, and every weight but the head acts on every token,
so the ``6nd`` convention is ``6 x params x T`` FLOPs per image (``6nd_nonembedding``:
``6 x non-embedding params x T``). ``num_params(non_embedding=True)`` leaves out the position
embedding (added, never multiplied); the patch embedding is a matmul and counts.
``chinchilla`` adapts Hoffmann et al. appendix F to T tokens per image (patch embedding matmul
instead of the vocabulary embedding, logits once per image);
``measured`` counts a meta-device forward + backward with FlopCounterMode.

μP (``parametrization="mup"``, ``m = embed_dim / base_width``) as in ``flops_fit.examples.gpt``
(groups from ``flops_fit.examples.mup``):
hidden matrices (attention and MLP) init ``init_gain / sqrt(fan_in)`` (both parametrizations) and
learning rate ``lr / m``;
the patch embedding (input), position table, gains and biases keep ``lr``; the head
keeps ``lr`` with its logits multiplied by ``output_mult / m``; attention logits scale
``attn_mult x sqrt(base_head_dim) / head_dim`` (equal to SP's at the base head dimension, which
defaults to head_dim: see the GPT's notes). ``"sp"``: one learning rate, 1/sqrt(head_dim), no output multiplier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from flops_fit.examples.mup import PARAMETRIZATIONS, mup_param_groups
from flops_fit.flops import count_flops_measured, flops_per_token_6n


@dataclass
class ViTConfig:
    embed_dim: int = 128
    depth: int = 4
    head_dim: int = 32
    mlp_ratio: float = 4.0
    image_size: int = 32
    patch_size: int = 4
    channels: int = 3
    num_classes: int = 10
    parametrization: str = "mup"  # mup | sp
    base_width: int = 32
    init_std: float = 0.02  # position table and head
    init_gain: float = 0.3  # hidden matrices: std init_gain / sqrt(fan_in)
    output_mult: float = 1.0
    attn_mult: float = 1.0
    base_head_dim: int | None = None
    norm_eps: float = 1e-6

    def __post_init__(self):
        if self.embed_dim < self.head_dim or self.embed_dim % self.head_dim:
            raise ValueError(
                f"ViT embed_dim={self.embed_dim} must be a positive multiple of head_dim={self.head_dim}; "
                f"VisionTransformer.round_size gives {VisionTransformer.round_size(self.embed_dim, head_dim=self.head_dim)}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"ViT image_size={self.image_size} must be a multiple of patch_size={self.patch_size}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"ViT parametrization={self.parametrization!r} must be one of {PARAMETRIZATIONS}")

    @property
    def n_head(self) -> int:
        return self.embed_dim // self.head_dim

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens_per_image(self) -> int:
        return self.num_patches

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch_size**2

    @property
    def mlp_dim(self) -> int:
        return int(round(self.mlp_ratio * self.embed_dim))

    @property
    def width_mult(self) -> float:
        return self.embed_dim / self.base_width if self.parametrization == "mup" else 1.0


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=False)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim, bias=False)
        if cfg.parametrization == "mup":
            self.scale = cfg.attn_mult * math.sqrt(cfg.base_head_dim or cfg.head_dim) / cfg.head_dim
        else:
            self.scale = 1.0 / math.sqrt(cfg.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.embed_dim, cfg.mlp_dim, bias=False)
        self.out = nn.Linear(cfg.mlp_dim, cfg.embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class VisionTransformer(nn.Module):
    """``VisionTransformer(ViTConfig(...))`` or ``VisionTransformer(embed_dim=..., depth=..., ...)``."""

    data_unit = "images"

    def __init__(self, config: ViTConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = ViTConfig(**kwargs)
        elif kwargs:
            config = replace(config, **kwargs)
        self.config = cfg = config
        self.patch_embed = nn.Linear(cfg.patch_dim, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.empty(1, cfg.tokens_per_image, cfg.embed_dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self.output_scale = cfg.output_mult / cfg.width_mult if cfg.parametrization == "mup" else 1.0
        self.reset_parameters()

    # -- contract hooks -------------------------------------------------------------------

    @classmethod
    def round_size(cls, size, head_dim: int = ViTConfig.head_dim, **_) -> int:
        """The multiple of ``head_dim`` nearest to ``size`` (at least ``head_dim``)."""
        head_dim = int(head_dim)
        return max(head_dim, head_dim * int(round(float(size) / head_dim)))

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.pos_embed.numel()
        return n

    def flops_per_token(self, convention: str = "6nd") -> float:
        """Training FLOPs per image."""
        cfg = self.config
        T = cfg.tokens_per_image
        if convention == "6nd":
            return flops_per_token_6n(self.num_params()) * T
        if convention == "6nd_nonembedding":
            return flops_per_token_6n(self.num_params(non_embedding=True)) * T
        if convention == "chinchilla":
            d, H = cfg.embed_dim, cfg.n_head
            d_attn = H * cfg.head_dim
            attention = 2 * 3 * T * d * d_attn + 2 * T * T * d_attn + 3 * H * T * T + 2 * T * T * d_attn + 2 * T * d_attn * d
            dense = 2 * 2 * T * d * cfg.mlp_dim
            forward = 2 * cfg.num_patches * cfg.patch_dim * d + cfg.depth * (attention + dense) + 2 * d * cfg.num_classes
            return 3.0 * float(forward)
        if convention == "measured":
            x = torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size)
            return count_flops_measured(lambda: type(self)(cfg), x, torch.zeros(1, dtype=torch.long))
        raise NotImplementedError(f"VisionTransformer has no FLOPs convention {convention!r}")

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups; μP learning rates (hidden matrices at lr x base_width/embed_dim) under mup."""
        return mup_param_groups(self._roles(), lr, weight_decay, self.config.width_mult)

    def _roles(self):
        for name, p in self.named_parameters():
            if name == "patch_embed.weight":
                role = "input"
            elif name == "head.weight":
                role = "output"
            elif name.startswith("blocks.") and p.ndim >= 2:
                role = "hidden"
            else:  # biases, gains, position table
                role = "vector"
            yield name, p, role

    # -- init and forward -----------------------------------------------------------------

    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.config
        depth = math.sqrt(2 * cfg.depth)
        nn.init.normal_(self.patch_embed.weight, std=1.0 / math.sqrt(cfg.patch_dim))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.pos_embed, std=cfg.init_std)
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=cfg.init_gain / math.sqrt(cfg.embed_dim))
            nn.init.normal_(block.attn.proj.weight, std=cfg.init_gain / math.sqrt(cfg.embed_dim) / depth)
            nn.init.normal_(block.mlp.fc.weight, std=cfg.init_gain / math.sqrt(cfg.embed_dim))
            nn.init.normal_(block.mlp.out.weight, std=cfg.init_gain / math.sqrt(cfg.mlp_dim) / depth)
        nn.init.normal_(self.head.weight, std=cfg.init_std)
        nn.init.zeros_(self.head.bias)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, patches, C x p x p)."""
        B, C, H, W = images.shape
        p = self.config.patch_size
        x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B, (H // p) * (W // p), C * p * p)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float images -> (B, num_classes) logits."""
        cfg = self.config
        if images.shape[1:] != (cfg.channels, cfg.image_size, cfg.image_size):
            raise ValueError(
                f"ViT expects images of shape (B, {cfg.channels}, {cfg.image_size}, {cfg.image_size}), got {tuple(images.shape)}"
            )
        x = self.patch_embed(self.patchify(images)) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x.mean(dim=1))
        if self.output_scale != 1.0:
            x = x * self.output_scale
        return self.head(x)

    def extra_repr(self) -> str:
        c = self.config
        return f"embed_dim={c.embed_dim}, depth={c.depth}, n_head={c.n_head}, parametrization={c.parametrization}"


__all__ = ["VisionTransformer", "ViTConfig"]
