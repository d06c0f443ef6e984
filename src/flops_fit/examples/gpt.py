"""A small GPT (decoder-only transformer) that follows the flops-fit model contract.

Architecture (nanoGPT-sized, one file)::

    tokens -> embedding -> n_layer x [x + Attn(RMSNorm(x)); x + SwiGLU(RMSNorm(x))] -> RMSNorm -> head -> logits

* pre-norm residual blocks with RMSNorm (learned gain, no bias anywhere);
* causal self-attention through ``F.scaled_dot_product_attention`` with rotary position
  embeddings (RoPE) on queries and keys, so there is no position-embedding table;
* SwiGLU MLP ``down(silu(gate(x)) * up(x))`` whose hidden size is ``mlp_ratio x d_model``
  (8/3 keeps the parameter count of a 4x GELU MLP) rounded up to ``ffn_multiple_of``;
* **untied** input embedding and output head. Under μP the two play different roles (an
  input layer whose learning rate stays fixed and a readout whose logits are scaled by
  ``base_width / d_model``), which a shared matrix cannot satisfy at once.

The size parameter is ``d_model``; the number of heads is ``d_model // head_dim`` (the head
dimension stays fixed as the model widens; or set ``n_heads`` to fix the head count and let
head_dim = d_model / n_heads grow instead), so ``d_model`` must be a multiple of ``head_dim``
(``GPT.round_size`` gives the nearest one).

Parameter counts. ``num_params(non_embedding=True)`` leaves out the input embedding table
only: it is a lookup with no FLOPs. The output head is a real ``d_model x vocab`` matmul and
stays in, so ``6 x non-embedding params`` tracks the compute actually spent.

Initialisation (both parametrizations): embedding and output head N(0, init_std^2); hidden
matrices N(0, init_gain^2 / fan_in), the residual output projections (attention ``proj``, MLP
``down``) additionally / sqrt(2 n_layer); RMSNorm gains 1. The 1/fan_in variance is what μP
prescribes for hidden weights (and what PyTorch's default init does). The defaults
(``init_gain`` 0.3, ``init_std`` 0.05) beat a GPT-2-style constant 0.02 everywhere by 0.05-0.15
nats/byte at widths 32-128 in scripts/mup_lr_sweep.py ablations.

Parametrizations (``parametrization=``):

``"sp"`` standard parametrization: one learning rate for all weights, attention logits scaled
    by 1/sqrt(head_dim), no output multiplier. The best learning rate drifts as the model widens.
``"mup"`` maximal-update parametrization (Yang et al. 2022, "Tensor Programs V"), in its
    Adam form, with ``m = d_model / base_width``:

    ============== ============================ ===================
    weights         init std                     Adam learning rate
    ============== ============================ ===================
    embedding       init_std                     lr
    hidden matrices init_gain / sqrt(fan_in)     lr / m
    output head     init_std, logits x 1/m       lr
    gains (norms)   1                            lr
    ============== ============================ ===================

    and attention logits scaled like 1/head_dim instead of 1/sqrt(head_dim):
    ``attn_mult x sqrt(base_head_dim) / head_dim``, calibrated so that at ``head_dim ==
    base_head_dim`` (default: head_dim itself) it equals SP's 1/sqrt(head_dim). Here the head
    dimension stays fixed as the model widens (more heads), so the scale is constant across the
    sweep; it only matters when head_dim itself is varied. At ``d_model == base_width`` init,
    learning rates and attention equal SP's, so a learning rate tuned on the base model carries
    over to every width. (A bare 1/head_dim with head_dim 16 makes attention 4x softer than SP at
    every width and costs loss in the scripts/mup_lr_sweep.py runs.)

The per-layer learning rates live in ``param_groups(lr, weight_decay)`` (built by
``flops_fit.examples.mup.mup_param_groups``); the flops-fit loop
hands those groups to AdamW. Weight decay applies to every matrix (embedding, hidden, head),
not to gains.

FLOPs per token (``flops_per_token(convention)``), training = forward + backward:

``6nd`` / ``6nd_nonembedding``  6 x total / non-embedding parameters.
``chinchilla``  Hoffmann et al. (2022), appendix F: embeddings, attention (QKV projections,
    QK^T logits over the full context, softmax, softmax-weighted sum of values, output
    projection), dense block, final logits; backward = 2 x forward. The SwiGLU block has three
    matrices, so its dense term is ``2 x 3 x d_model x ffn_dim`` instead of ``2 x 2 x ...``.
``measured``  torch's FlopCounterMode over one forward + backward of a twin built on the
    meta device (no memory, no time), per token.
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
class GPTConfig:
    d_model: int = 256
    n_layer: int = 4
    head_dim: int = 32
    vocab_size: int = 256
    seq_len: int = 128
    mlp_ratio: float = 8 / 3
    ffn_multiple_of: int = 32
    parametrization: str = "mup"  # mup | sp
    base_width: int = 32  # μP: the width where μP equals SP; tuned hyper-parameters transfer from it (ignored under sp)
    init_std: float = 0.05  # embedding and output head
    init_gain: float = 0.3  # hidden matrices: std init_gain / sqrt(fan_in)
    output_mult: float = 1.0  # μP: logits multiplier at the base width
    attn_mult: float = 1.0  # μP: attention logits are attn_mult * sqrt(base_head_dim) / head_dim
    base_head_dim: int | None = None  # μP: the head_dim where that equals 1/sqrt(head_dim) (None: head_dim)
    # A fixed head count instead of a fixed head_dim: head_dim = d_model / n_heads grows with the
    # width (None: head_dim stays fixed and the head count grows). Tiny CPU models run much faster
    # with few wide heads than with many narrow ones.
    n_heads: int | None = None
    rope_base: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self):
        if self.n_heads is not None:
            step = 2 * int(self.n_heads)
            if self.n_heads < 1 or self.d_model < step or self.d_model % step:
                raise ValueError(
                    f"GPT d_model={self.d_model} must be a positive multiple of 2 x n_heads={self.n_heads}; "
                    f"GPT.round_size({self.d_model}, n_heads={self.n_heads}) = {GPT.round_size(self.d_model, n_heads=self.n_heads)}"
                )
            self.head_dim = self.d_model // int(self.n_heads)
            if self.base_head_dim is None:  # μP: attention equals SP's at the base width
                self.base_head_dim = max(2, self.base_width // int(self.n_heads))
        if self.head_dim < 2 or self.head_dim % 2:
            raise ValueError(f"GPT head_dim={self.head_dim} must be an even number >= 2 (rotary embeddings rotate pairs)")
        if self.d_model < self.head_dim or self.d_model % self.head_dim:
            raise ValueError(
                f"GPT d_model={self.d_model} must be a positive multiple of head_dim={self.head_dim}; "
                f"GPT.round_size({self.d_model}, head_dim={self.head_dim}) = {GPT.round_size(self.d_model, head_dim=self.head_dim)}"
            )
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"GPT parametrization={self.parametrization!r} must be one of {PARAMETRIZATIONS}")
        for name in ("n_layer", "vocab_size", "seq_len", "base_width", "ffn_multiple_of"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GPT {name}={getattr(self, name)} must be >= 1")

    @property
    def n_head(self) -> int:
        return self.d_model // self.head_dim

    @property
    def ffn_dim(self) -> int:
        m = self.ffn_multiple_of
        return m * math.ceil(self.mlp_ratio * self.d_model / m)

    @property
    def width_mult(self) -> float:
        """m = d_model / base_width under μP; 1 under SP."""
        return self.d_model / self.base_width if self.parametrization == "mup" else 1.0


# --------------------------------------------------------------------------------------
# building blocks


def rotary_tables(seq_len: int, head_dim: int, base: float, device) -> torch.Tensor:
    """Rotation angles (seq_len, head_dim // 2): position t turns pair i by t * base^(-2i/head_dim)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    return torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate (..., T, n, D) queries/keys (T the third axis from the end) by position.

    Pairs are adjacent coordinates (x[2i], x[2i+1]). In float32 the rotation is one complex
    multiply (one pass over memory, forward and backward); other dtypes, and torch.compile (which
    fuses the element-wise ops anyway), take the equivalent real form.
    """
    T, half = angles.shape
    if x.dtype == torch.float32 and x.device.type != "meta" and not torch.compiler.is_compiling():
        rot = torch.polar(torch.ones_like(angles), angles)[:, None, :]  # (T, 1, D/2) unit complex numbers
        return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (half, 2))) * rot).flatten(-2)
    cos = angles.cos().to(x.dtype)[:, None, :]
    sin = angles.sin().to(x.dtype)[:, None, :]
    x_even, x_odd = x.unflatten(-1, (half, 2)).unbind(-1)
    return torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1).flatten(-2)


class _Readout(torch.autograd.Function):
    """``x @ weight.T`` whose weight gradient is computed as ``(x.T @ grad).T``.

    Autograd's linear backward asks for ``grad.T @ x``: for a narrow model (d_model 8) and a wide
    vocabulary, a (vocab x tokens) @ (tokens x 8) product that MKL runs about 4x slower on this
    project's CPUs than the same sum laid out as (8 x tokens) @ (tokens x vocab), and it is a large
    share of a small model's step (docs/performance.md). Same products, same sums; float rounding
    may differ from ``F.linear``'s in the last bits.
    """

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad2 = grad.reshape(-1, grad.shape[-1])
        grad_x = torch.mm(grad2, weight).view(x.shape) if ctx.needs_input_grad[0] else None
        grad_w = torch.mm(x.reshape(-1, x.shape[-1]).t(), grad2).t() if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


def readout(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The output head's ``F.linear(x, weight)``; float32 training on the CPU takes :class:`_Readout`."""
    if (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()):
        return _Readout.apply(x, weight)
    return F.linear(x, weight)


CPU_MIN_HEAD_DIM = 16


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal ``F.scaled_dot_product_attention`` of (B, H, T, D) heads, with an explicit ``scale``.

    On the CPU, heads narrower than :data:`CPU_MIN_HEAD_DIM` are zero-padded to it and the output
    cut back: torch's CPU flash attention runs head_dim 4-14 slower than 16 itself (forward and
    backward of the demo's (32, 2, 128, D) heads: about 10 ms at D = 4-10 against 7.5 ms padded to
    16, docs/performance.md). The zeros add nothing to the query-key products and give zero output
    columns, so the result and its gradients are those of the unpadded call up to float rounding.
    Not on the meta device (the measured FLOPs convention counts the model's own shapes).
    """
    D = q.shape[-1]
    if q.device.type == "cpu" and D < CPU_MIN_HEAD_DIM and not torch.compiler.is_compiling():
        pad = (0, CPU_MIN_HEAD_DIM - D)
        y = F.scaled_dot_product_attention(F.pad(q, pad), F.pad(k, pad), F.pad(v, pad), is_causal=True, scale=scale)
        return y[..., :D]
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        if cfg.parametrization == "mup":
            self.scale = cfg.attn_mult * math.sqrt(cfg.base_head_dim or cfg.head_dim) / cfg.head_dim
        else:
            self.scale = 1.0 / math.sqrt(cfg.head_dim)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim)
        qk = apply_rotary(qkv[:, :, :2].transpose(1, 2), angles)  # queries and keys in one pass: (B, 2, T, H, D)
        q, k = qk.unbind(dim=1)
        v = qkv[:, :, 2]
        y = causal_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), self.scale)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.hidden = cfg.ffn_dim
        self.gate_up = nn.Linear(cfg.d_model, 2 * self.hidden, bias=False)  # [gate; up] in one matmul
        self.down = nn.Linear(self.hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).split(self.hidden, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), angles)
        return x + self.mlp(self.mlp_norm(x))


# --------------------------------------------------------------------------------------
# the model


class GPT(nn.Module):
    """Decoder-only transformer; ``GPT(GPTConfig(...))`` or ``GPT(d_model=..., n_layer=..., ...)``."""

    data_unit = "tokens"

    def __init__(self, config: GPTConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = GPTConfig(**kwargs)
        elif kwargs:
            config = replace(config, **kwargs)
        self.config = cfg = config
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        # μP readout multiplier, applied to the head's input (cheaper than to the logits; same gradients)
        self.output_scale = cfg.output_mult / cfg.width_mult if cfg.parametrization == "mup" else 1.0
        self.reset_parameters()

    # -- contract hooks -------------------------------------------------------------------

    @classmethod
    def round_size(cls, size, head_dim: int = GPTConfig.head_dim, n_heads: int | None = None, **_) -> int:
        """The nearest accepted d_model: a multiple of ``head_dim`` (at least ``head_dim``), or of
        ``2 x n_heads`` when the head count is fixed (each head's dimension must be even)."""
        step = 2 * int(n_heads) if n_heads else int(head_dim)
        return max(step, step * int(round(float(size) / step)))

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def flops_per_token(self, convention: str = "6nd") -> float:
        if convention == "6nd":
            return flops_per_token_6n(self.num_params())
        if convention == "6nd_nonembedding":
            return flops_per_token_6n(self.num_params(non_embedding=True))
        if convention == "chinchilla":
            return chinchilla_flops_per_token(
                d_model=self.config.d_model,
                n_layer=self.config.n_layer,
                n_head=self.config.n_head,
                head_dim=self.config.head_dim,
                ffn_dim=self.config.ffn_dim,
                vocab_size=self.config.vocab_size,
                seq_len=self.config.seq_len,
                ffn_matrices=3,
            )
        if convention == "measured":
            x = torch.zeros(1, self.config.seq_len, dtype=torch.long)
            return count_flops_measured(lambda: type(self)(self.config), x, x)
        raise NotImplementedError(f"GPT has no FLOPs convention {convention!r}")

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups; μP learning rates (hidden matrices at lr x base_width/d_model) under mup."""
        return mup_param_groups(self._roles(), lr, weight_decay, self.config.width_mult)

    def _roles(self):
        for name, p in self.named_parameters():
            if name.startswith("embed."):
                role = "input"
            elif name.startswith("head."):
                role = "output"
            elif p.ndim >= 2:
                role = "hidden"
            else:
                role = "vector"
            yield name, p, role

    # -- init and forward -----------------------------------------------------------------

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """(Re)initialise every weight from the global RNG; works on the meta device (no-op)."""
        cfg = self.config
        depth = math.sqrt(2 * cfg.n_layer)
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        nn.init.normal_(self.head.weight, std=cfg.init_std)
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=cfg.init_gain / math.sqrt(cfg.d_model))
            nn.init.normal_(block.attn.proj.weight, std=cfg.init_gain / math.sqrt(cfg.d_model) / depth)
            nn.init.normal_(block.mlp.gate_up.weight, std=cfg.init_gain / math.sqrt(cfg.d_model))
            nn.init.normal_(block.mlp.down.weight, std=cfg.init_gain / math.sqrt(cfg.ffn_dim) / depth)
        for m in self.modules():
            if isinstance(m, nn.RMSNorm):
                nn.init.ones_(m.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, vocab_size) logits."""
        T = idx.shape[1]
        if T > self.config.seq_len:
            raise ValueError(f"GPT got a sequence of {T} tokens; seq_len={self.config.seq_len}")
        x = self.embed(idx)
        angles = rotary_tables(T, self.config.head_dim, self.config.rope_base, x.device)
        for block in self.blocks:
            x = block(x, angles)
        x = self.norm(x)
        if self.output_scale == 1.0:
            return readout(x, self.head.weight)
        # μP readout multiplier: scale whichever of the head's weight and its input is smaller
        if self.head.weight.numel() < x.numel():
            return readout(x, self.head.weight * self.output_scale)
        return readout(x * self.output_scale, self.head.weight)

    def extra_repr(self) -> str:
        c = self.config
        return f"d_model={c.d_model}, n_layer={c.n_layer}, n_head={c.n_head}, parametrization={c.parametrization}"


def chinchilla_flops_per_token(
    *,
    d_model: int,
    n_layer: int,
    n_head: int,
    head_dim: int,
    ffn_dim: int,
    vocab_size: int,
    seq_len: int,
    ffn_matrices: int = 2,
    embedding: bool = True,
) -> float:
    """Training FLOPs per token, Hoffmann et al. (2022) appendix F (forward x 3).

    Per sequence of length T, with d_attn = n_head x head_dim:
    embeddings 2 T V d; QKV 2 x 3 T d d_attn; QK^T 2 T^2 d_attn; softmax 3 n_head T^2;
    weighted sum 2 T^2 d_attn; output projection 2 T d_attn d; dense 2 T x (ffn_matrices x d x ffn);
    logits 2 T d V. Divided by T here.
    """
    T, d, d_attn = seq_len, d_model, n_head * head_dim
    attention = 2 * 3 * d * d_attn + 2 * T * d_attn + 3 * n_head * T + 2 * T * d_attn + 2 * d_attn * d
    dense = 2 * ffn_matrices * d * ffn_dim
    forward = n_layer * (attention + dense) + 2 * d * vocab_size
    if embedding:
        forward += 2 * vocab_size * d
    return 3.0 * float(forward)


__all__ = ["GPT", "GPTConfig", "chinchilla_flops_per_token"]
