"""A compute-optimal study of GPT on TinyStories, from Python.

    python -m flops_fit.examples.gpt_tinystories                 # offline: mock trainer, seconds
    python -m flops_fit.examples.gpt_tinystories --real          # real CPU/GPU training on TinyStories
    python -m flops_fit.examples.gpt_tinystories --real --data /path/to/TinyStories   # a local copy

``--real`` loads roneneldan/TinyStories through `datasets` (honouring HF_HOME and
HF_DATASETS_OFFLINE) with the GPT-2 tokenizer, tokenizes it once into a memory-mapped cache,
and trains every planned GPT with the local (CPU) or gpu trainer. Without ``--real`` the same
plan is trained by the closed-form mock trainer, so the script runs anywhere.
"""

import argparse

import flops_fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", action="store_true", help="train for real on TinyStories (default: mock trainer)")
    ap.add_argument("--data", default=None, help="local TinyStories copy (save_to_disk folder or json/txt files)")
    ap.add_argument("--gpu", action="store_true", help="with --real: the gpu trainer (bf16, fused AdamW)")
    ap.add_argument("--budgets", type=float, nargs="+", default=None,
                    help="FLOP budgets (default: 1e15..1e17 real on GPU, 1e12..1e13 real on CPU, Chinchilla's with mock)")
    ap.add_argument("--run-dir", default="outputs/gpt_tinystories")
    args = ap.parse_args()

    plan_overrides = ["model.kwargs.n_layer=4", "model.size_range=[16,8192]"]
    if args.data:
        plan_overrides.append(f"dataset.path={args.data}")
    if args.real:
        trainer = "gpu" if args.gpu else "local"
        budgets = args.budgets or ([1e15, 3e15, 1e16, 3e16, 1e17] if args.gpu else [1e12, 3e12, 1e13])
    else:
        trainer = "mock"
        budgets = args.budgets or "chinchilla"
    result = flops_fit.find_optimal(
        run_dir=args.run_dir,
        model="gpt",
        dataset="tinystories",
        budgets=budgets,
        trainer=trainer,
        plan_overrides=plan_overrides,
        analyze_overrides=["bootstrap=200"],
    )
    print(result.table())
    print(f"figures and report.html in {args.run_dir}/")


if __name__ == "__main__":
    main()
