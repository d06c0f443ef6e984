"""A compute-optimal study of a Vision Transformer on CIFAR-10, from Python.

    python -m flops_fit.examples.vit_cifar10                        # offline: synthetic images, real CPU training
    python -m flops_fit.examples.vit_cifar10 --real --data ~/data/cifar-10-batches-py
    python -m flops_fit.examples.vit_cifar10 --mock                 # closed-form mock trainer, seconds

The "tokens" of an image model are images: the planner turns each budget into a number of
training images with the ViT's FLOPs per image, and the table answers in images.
"""

import argparse

import flops_fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", action="store_true", help="CIFAR-10 from --data (python pickle batches)")
    ap.add_argument("--data", default=None, help="folder with data_batch_1..5 and test_batch (or the .tar.gz)")
    ap.add_argument("--mock", action="store_true", help="mock trainer instead of real training")
    ap.add_argument("--gpu", action="store_true", help="the gpu trainer")
    ap.add_argument("--budgets", type=float, nargs="+", default=None)
    ap.add_argument("--run-dir", default="outputs/vit_cifar10")
    args = ap.parse_args()

    if args.real:
        dataset, overrides = "cifar10", ([f"dataset.path={args.data}"] if args.data else [])
        budgets = args.budgets or [3e12, 1e13, 3e13]
    else:  # small synthetic class-conditional images: learnable, no files needed
        dataset, overrides = "synthetic_images", ["model.kwargs.depth=2", "model.kwargs.patch_size=4"]
        budgets = args.budgets or [3e10, 1e11, 3e11]
    trainer = "mock" if args.mock else ("gpu" if args.gpu else "local")
    result = flops_fit.find_optimal(
        run_dir=args.run_dir,
        model="vit",
        dataset=dataset,
        budgets=budgets,
        trainer=trainer,
        plan_overrides=[*overrides, "grid.points=5"],
        analyze_overrides=["bootstrap=100"],
    )
    print(result.table())
    print(f"figures and report.html in {args.run_dir}/")


if __name__ == "__main__":
    main()
