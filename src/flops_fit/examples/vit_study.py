"""A compute-optimal study of a Vision Transformer, from Python, through the objects API.

    python -m flops_fit.examples.vit_study                  # offline, seconds: the closed-form mock trainer
    python -m flops_fit.examples.vit_study --real           # real CPU training on Fashion-MNIST (~12 min)
    python -m flops_fit.examples.vit_study --real --cifar10 --data ~/data/cifar-10-batches-py

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package (apt-get install
dataset-fashion-mnist). The "tokens" of an image model are images: each budget becomes a number
of training images through the ViT's FLOPs per image, and the table answers in images.
"""

import argparse

import flops_fit
from flops_fit.examples import CIFAR10Dataset, VisionTransformer, vit_loss_fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", action="store_true", help="train for real (default: the mock trainer)")
    ap.add_argument("--gpu", action="store_true", help="with --real: train on a CUDA GPU (bf16)")
    ap.add_argument("--cifar10", action="store_true", help="CIFAR-10 from --data instead of Fashion-MNIST")
    ap.add_argument("--data", default=None, help="with --cifar10: the folder with data_batch_1..5 and test_batch")
    ap.add_argument("--budgets", type=float, nargs="+", default=None, help="FLOP budgets")
    ap.add_argument("--output-dir", default="outputs/vit_study")
    args = ap.parse_args()

    if args.cifar10:
        data, shape = CIFAR10Dataset(path=args.data), {"image_size": 32, "channels": 3, "patch_size": 4}
    else:
        from flops_fit.data import build_data

        data = None
        if args.real:
            data = build_data({"name": "fashion_mnist", "kind": "image", "source": "fashion_mnist",
                               "num_classes": 10, "image_size": 28, "channels": 1, "eval_size": 10000})
        shape = {"image_size": 28, "channels": 1, "patch_size": 7}
    real = args.real
    budgets = args.budgets or ([1e11, 2.5e11, 6e11, 1.5e12] if real else [1e15, 1e16, 1e17, 1e18])
    result = flops_fit.find_optimal(
        model_cls=VisionTransformer,
        model_size_param="embed_dim",
        model_kwargs={"depth": 2, "head_dim": 4, "num_classes": 10, **shape},
        dataset=data if real else None,
        loss_fn=vit_loss_fn,
        compute_budgets=budgets,
        mode=("gpu" if args.gpu else "local") if real else "mock",
        output_dir=args.output_dir,
        size_range=[8, 4096] if real else [8, 65536],
        points=5,
        batch_size=256,
        bootstrap=200,
    )
    print(result.chinchilla_table())
    print(f"figures and report.html in {args.output_dir}/")


if __name__ == "__main__":
    main()
