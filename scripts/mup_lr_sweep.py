"""μP learning-rate transfer check: sweep the peak learning rate at three widths spanning 4x.

Trains a tiny GPT with the flops-fit training loop (AdamW, warmup + cosine) for a fixed
number of steps at every (width, learning rate) pair and prints the final held-out loss,
marking the best learning rate per width. Under μP the best learning rate should stay put
as the width grows; under SP it drifts down.

Data: byte-level text (the Python standard library's own source files: offline, always
there) or a seeded sparse Markov chain (``--data markov``).

    PYTHONPATH=src python scripts/mup_lr_sweep.py                    # μP: 21 runs, ~8 min on one core
    PYTHONPATH=src python scripts/mup_lr_sweep.py --param both --threads 1   # μP and the SP contrast
    PYTHONPATH=src python scripts/mup_lr_sweep.py --steps 100 --widths 32 64 128 --lrs 4e-3 8e-3 1.6e-2

On a machine shared with other jobs pass ``--threads 1``: OpenMP threads waiting on a busy core
slow every step many times over.
"""

from __future__ import annotations

import argparse
import math
import sys
import sysconfig
import time
from pathlib import Path

import torch

from flops_fit.examples import GPT
from flops_fit.training.loop import train_run


class TokenStream:
    """The data contract over one 1-D token tensor: random training windows, a fixed held-out tail."""

    kind, data_unit = "text", "tokens"

    def __init__(self, tokens: torch.Tensor, seq_len: int, eval_tokens: int, vocab_size: int):
        self.seq_len, self.vocab_size = seq_len, vocab_size
        n_eval = (eval_tokens // seq_len) * seq_len + 1
        self.train, self.held_out = tokens[:-n_eval], tokens[-n_eval:]

    def train_batch(self, batch_size: int, generator: torch.Generator):
        starts = torch.randint(len(self.train) - self.seq_len - 1, (batch_size,), generator=generator)
        idx = starts[:, None] + torch.arange(self.seq_len + 1)
        w = self.train[idx]
        return w[:, :-1], w[:, 1:]

    def eval_batches(self, batch_size: int):
        T = self.seq_len
        n = (len(self.held_out) - 1) // T
        x = self.held_out[: n * T].view(n, T)
        y = self.held_out[1 : n * T + 1].view(n, T)
        for i in range(0, n, batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]

    def examples_per_batch(self, batch_size: int) -> int:
        return batch_size * self.seq_len


def stdlib_bytes(max_bytes: int) -> torch.Tensor:
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, total = [], 0
    for path in sorted(root.glob("*.py")):
        data = path.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    raw = b"\n".join(chunks)[:max_bytes]
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()


def markov_tokens(n: int, vocab: int = 256, branching: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    table = torch.randint(vocab, (vocab, branching), generator=g)
    choice = torch.randint(branching, (n,), generator=g)
    out = torch.empty(n, dtype=torch.long)
    out[0] = 0
    for i in range(1, n):  # a Python loop over ~1M tokens takes a few seconds; fine for a script
        out[i] = table[out[i - 1], choice[i]]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--param", choices=["mup", "sp", "both"], default="mup")
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--base-width", type=int, default=32)
    ap.add_argument("--lrs", type=float, nargs="+", default=None, help="default: 2^k x 1e-3, k = 0..6")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=16)
    ap.add_argument("--n-heads", type=int, default=None, help="fix the head count instead (head_dim = width / n_heads)")
    ap.add_argument("--data", choices=["bytes", "markov"], default="bytes")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    lrs = args.lrs or [1e-3 * 2**k for k in range(7)]
    tokens = stdlib_bytes(4_000_000) if args.data == "bytes" else markov_tokens(1_000_000)
    data = TokenStream(tokens, args.seq_len, eval_tokens=16384, vocab_size=256)
    per_step = data.examples_per_batch(args.batch_size)
    trainer = {"kind": "local", "device": "cpu", "batch_size": args.batch_size, "warmup_frac": 0.05,
               "min_lr_ratio": 0.1, "weight_decay": 0.1, "grad_clip": 1.0, "eval_every_frac": 0.0,
               "eval_batch_size": 64, "seed": args.seed, "threads": args.threads, "progress": False,
               "diverge_factor": 3.0}
    params = ["mup", "sp"] if args.param == "both" else [args.param]
    print(f"data={args.data} ({len(tokens) / 1e6:.1f}M tokens), n_layer={args.n_layer}, head_dim={args.head_dim}, n_heads={args.n_heads}, "
          f"seq_len={args.seq_len}, batch={args.batch_size}, steps={args.steps} ({per_step * args.steps / 1e6:.2f}M tokens), "
          f"base_width={args.base_width}", flush=True)

    for param in params:
        table: dict[int, dict[float, float]] = {}
        t0 = time.perf_counter()
        for width in args.widths:
            table[width] = {}
            for lr in lrs:
                model = GPT(d_model=width, n_layer=args.n_layer, head_dim=args.head_dim, n_heads=args.n_heads, vocab_size=256,
                            seq_len=args.seq_len, parametrization=param, base_width=args.base_width)
                r = train_run({"id": f"{param}-w{width}-lr{lr:.2g}", "tokens": per_step * args.steps},
                              model=model, data=data, trainer=dict(trainer, lr=lr), progress=False)
                table[width][lr] = r["loss"] if r["status"] == "completed" else math.nan
                print(f"  {param} width={width:4d} lr={lr:.2e}: {r['status']:9s} loss={table[width][lr]:.4f} "
                      f"({r['wall_time_s']:.0f}s)", flush=True)
        print(f"\n{param.upper()}: final held-out loss (nats/byte) by width x peak lr; * = best lr per width "
              f"({time.perf_counter() - t0:.0f}s)")
        print("width  " + " ".join(f"{lr:>9.1e}" for lr in lrs) + "   best lr")
        for width in args.widths:
            row = table[width]
            finite = {lr: v for lr, v in row.items() if math.isfinite(v)}
            best = min(finite, key=finite.get) if finite else None
            cells = " ".join(
                f"{'    div' if not math.isfinite(v) else f'{v:7.4f}'}{'*' if lr == best else ' '} " for lr, v in row.items()
            )
            print(f"{width:5d}  {cells}  {best if best is None else f'{best:.1e}'}")
        print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
