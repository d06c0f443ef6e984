"""find_optimal from Python, on the mock trainer (seconds, offline).

    python -m flops_fit.examples.find_optimal_mock [--run-dir outputs/find_optimal_mock]

The mock trainer's ground truth is Hoffmann et al.'s published fit (alpha=0.34, beta=0.28),
so the fitted exponent a should come out near beta / (alpha + beta) = 0.452.
"""

import argparse

import flops_fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="outputs/find_optimal_mock")
    parser.add_argument("--budget", type=float, default=1e22, help="budget to predict for (FLOPs)")
    args = parser.parse_args()

    result = flops_fit.find_optimal(
        run_dir=args.run_dir,
        model="gpt",
        dataset="synthetic_text",
        budgets="chinchilla",
        trainer={"kind": "mock", "noise": 0.005,
                 "ground_truth": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}},
        # Chinchilla-scale budgets need widths far beyond a CPU's: allow d_model up to 32768
        # (parameters are counted on the meta device, so nothing is allocated)
        plan_overrides=["model.size_range=[16,32768]"],
        analyze_overrides=["bootstrap=100"],
    )
    print(result.table())
    p = result.predict(args.budget)
    print(f"\nAt {p['budget']:.1e} FLOPs: {p['params']:.3g} parameters, {p['tokens']:.3g} tokens "
          f"({p['tokens_per_param']:.1f} per parameter), predicted loss {p['loss']:.3f}")
    print(f"figures and report in {args.run_dir}/")


if __name__ == "__main__":
    main()
