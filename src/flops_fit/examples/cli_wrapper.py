"""A team's own command line around flops-fit (argparse), calling find_optimal with its objects.

    python -m flops_fit.examples.cli_wrapper --budgets 1e18 1e19 1e20                  # mock, seconds
    python -m flops_fit.examples.cli_wrapper --model gpt --budgets 1e11 3e11 --mode local --layers 2

The wrapper builds the model class, data and loss itself (here flops-fit's example GPT on
synthetic Markov text or the ViT on synthetic images) and hands them to the same pipeline the
ff-* commands run; every artifact lands in --output-dir.
"""

import argparse
import sys

import flops_fit
from flops_fit import FlopsFitError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["gpt", "vit"], default="gpt")
    ap.add_argument("--budgets", type=float, nargs="+", required=True, help="FLOP budgets")
    ap.add_argument("--mode", default="mock", choices=["mock", "local", "gpu"])
    ap.add_argument("--layers", type=int, default=2, help="transformer blocks (fixed across the sweep)")
    ap.add_argument("--points", type=int, default=7, help="model sizes per budget")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--output-dir", default="outputs/cli_wrapper")
    args = ap.parse_args(argv)

    from flops_fit.data import build_data
    from flops_fit.examples import GPT, VisionTransformer, gpt_loss_fn, vit_loss_fn

    if args.model == "gpt":
        cls, size_param, loss = GPT, "d_model", gpt_loss_fn
        kwargs = {"n_layer": args.layers, "n_heads": 2, "vocab_size": 256, "seq_len": 64}
        data_cfg = {"name": "synthetic_text", "kind": "text", "source": "synthetic", "vocab_size": 256,
                    "seq_len": 64, "eval_size": 16384}
    else:
        cls, size_param, loss = VisionTransformer, "embed_dim", vit_loss_fn
        kwargs = {"depth": args.layers, "head_dim": 8, "patch_size": 4, "num_classes": 10, "image_size": 16,
                  "channels": 3}
        data_cfg = {"name": "synthetic_images", "kind": "image", "source": "synthetic", "num_classes": 10,
                    "image_size": 16, "channels": 3, "eval_size": 2048}
    try:
        result = flops_fit.find_optimal(
            model_cls=cls, model_size_param=size_param, model_kwargs=kwargs,
            dataset=build_data(data_cfg) if args.mode != "mock" else None, loss_fn=loss,
            compute_budgets=args.budgets, mode=args.mode, output_dir=args.output_dir,
            points=args.points, bootstrap=args.bootstrap,
        )
    except FlopsFitError as e:
        print(f"cli_wrapper: error: {e}", file=sys.stderr)
        return 1
    print(result.chinchilla_table())
    print(f"figures and report.html in {args.output_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
