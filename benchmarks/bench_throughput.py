"""Achieved training FLOP/s of the flops-fit loop against the machine's matmul peak.

Measures, in this process, the peak of a large square matmul (fp32, bf16) and then trains
small / medium / large GPTs with ``flops_fit.training.loop.train_run`` for a few steps,
reporting achieved FLOP/s (FLOPs counted by torch's FlopCounterMode, i.e. matmuls and
attention, over training time excluding evaluation) as a fraction of the peak of the same
dtype. On CUDA the models are larger and the reference is the bf16 peak.

    PYTHONPATH=src python benchmarks/bench_throughput.py                 # CPU, fp32 (+ bf16 autocast)
    PYTHONPATH=src python benchmarks/bench_throughput.py --dtypes float32 --steps 6
    PYTHONPATH=src python benchmarks/bench_throughput.py --device cuda    # GPU sizes, bf16

Each model runs once for ``--warmup-steps`` (allocator, kernels, thread pools) and then
``--repeat`` times for ``--steps`` timed steps; the best timed run is reported, against the
matmul peak measured right before and after it (the larger of the two), so a co-tenant that
comes and goes skews both alike. On a machine shared with other jobs pass ``--threads 1``:
OpenMP threads waiting for a busy core stall every step.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from flops_fit.examples import GPT
from flops_fit.training.loop import train_run

CPU_MODELS = {  # name: (d_model, n_layer, batch_size[, head_dim])
    "demo-largest": (112, 2, 32, 56),  # the largest model `make demo` trains (gpt.yaml: n_heads 2, so head_dim 56)
    "small": (128, 4, 16),
    "medium": (256, 4, 16),
    "large": (512, 4, 16),
}
CUDA_MODELS = {
    "small": (512, 8, 32),
    "medium": (1024, 12, 32),
    "large": (2048, 16, 16),
}


class RandomTokens:
    """Uniform random tokens: the data contract with no I/O cost (loss values are irrelevant here)."""

    kind, data_unit = "text", "tokens"

    def __init__(self, vocab: int, seq_len: int):
        self.vocab, self.seq_len = vocab, seq_len
        g = torch.Generator().manual_seed(1)
        self.held_out = torch.randint(vocab, (8, seq_len + 1), generator=g)

    def train_batch(self, batch_size, generator):
        w = torch.randint(self.vocab, (batch_size, self.seq_len + 1), generator=generator)
        return w[:, :-1], w[:, 1:]

    def eval_batches(self, batch_size):
        yield self.held_out[:, :-1], self.held_out[:, 1:]

    def examples_per_batch(self, batch_size):
        return batch_size * self.seq_len


def matmul_peak(dtype: torch.dtype, device: str, n: int, reps: int) -> float:
    """Best-of-reps FLOP/s of an n x n x n matmul."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(3):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtypes", nargs="+", default=None, help="default: float32 bfloat16 on CPU, bfloat16 on CUDA")
    ap.add_argument("--models", nargs="+", default=None, help="default: all sizes of the device")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 CPU, 50 CUDA)")
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    dtypes = args.dtypes or (["bfloat16"] if cuda else ["float32", "bfloat16"])
    steps = args.steps or (50 if cuda else 10)
    models = CUDA_MODELS if cuda else CPU_MODELS
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True

    n = 8192 if cuda else 2048
    peaks = {}
    for dt in dtypes:
        peaks[dt] = matmul_peak(getattr(torch, dt), args.device, n, reps=5)
    device_name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {device_name}")
    for dt, p in peaks.items():
        print(f"  {dt} matmul peak ({n}^3): {p / 1e9:.1f} GFLOP/s")
    print()

    rows = []
    for name in args.models or list(models):
        d, L, bs, *hd = models[name]
        head_dim = hd[0] if hd else (64 if cuda else 32)
        for dt in dtypes:
            model = GPT(d_model=d, n_layer=L, head_dim=head_dim, vocab_size=args.vocab, seq_len=args.seq_len)
            data = RandomTokens(args.vocab, args.seq_len)
            per_step = data.examples_per_batch(bs)
            trainer = {"kind": "gpu" if cuda else "local", "device": args.device, "dtype": dt, "batch_size": bs,
                       "lr": 1e-3, "eval_every_frac": 0.0, "progress": False, "diverge_factor": 1e9,
                       "compile": args.compile}
            train_run({"id": "warmup", "tokens": per_step * args.warmup_steps}, model=model, data=data,
                      trainer=trainer, progress=False)
            best, peak = None, 0.0
            for _ in range(args.repeat):
                before = matmul_peak(getattr(torch, dt), args.device, n, reps=2)
                r = train_run({"id": f"{name}-{dt}", "tokens": per_step * steps}, model=model, data=data,
                              trainer=trainer, progress=False)
                after = matmul_peak(getattr(torch, dt), args.device, n, reps=2)
                if best is None or r["achieved_flops_per_s"] > best["achieved_flops_per_s"]:
                    best, peak = r, max(before, after)
            r = best
            measured = r["flops_by_convention"]["measured"] / r["tokens"]
            rows.append({
                "model": name, "d_model": d, "n_layer": L, "params": r["params"], "batch": f"{bs}x{args.seq_len}",
                "dtype": dt, "tok_s": r["tokens_per_s"], "flops_s": r["achieved_flops_per_s"],
                "peak": peak, "frac": r["achieved_flops_per_s"] / peak,
                "measured_over_6n": measured / (6 * r["params"]),
            })
            row = rows[-1]
            print(f"  {name:6s} {dt:8s} {row['tok_s']:9.0f} tok/s  {row['flops_s'] / 1e9:7.1f} GFLOP/s  "
                  f"{100 * row['frac']:5.1f}% of {dt} peak ({peak / 1e9:.1f} GFLOP/s)", flush=True)

    print("\nmodel   d_model layers  params    batch    dtype      tokens/s   GFLOP/s  peak GFLOP/s  % of peak  measured/6N")
    for r in rows:
        print(f"{r['model']:7s} {r['d_model']:7d} {r['n_layer']:6d} {r['params'] / 1e6:6.2f}M {r['batch']:>8s}  "
              f"{r['dtype']:9s} {r['tok_s']:9.0f} {r['flops_s'] / 1e9:9.1f}  {r['peak'] / 1e9:12.1f}  "
              f"{100 * r['frac']:8.1f}%  {r['measured_over_6n']:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
