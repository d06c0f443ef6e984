"""A team's own command line around flops-fit (argparse), calling the stages as functions.

    python -m flops_fit.examples.cli_wrapper --budgets 1e18 1e19 1e20 --trainer mock
    python -m flops_fit.examples.cli_wrapper --model vit --dataset fashion_mnist --budgets 1e11 3e11 --trainer local

Each flag maps onto the same config the ff-* commands compose, so anything ff-plan accepts
can also be passed through with --set KEY=VALUE.
"""

import argparse
import sys

from flops_fit import FlopsFitError, stages
from flops_fit.analysis import summary_lines
from flops_fit.config.compose import compose
from flops_fit.planning import format_plan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="outputs/cli_wrapper")
    ap.add_argument("--model", default="gpt")
    ap.add_argument("--dataset", default="synthetic_text")
    ap.add_argument("--budgets", type=float, nargs="+", required=True, help="FLOP budgets")
    ap.add_argument("--trainer", default="mock", choices=["mock", "local", "gpu"])
    ap.add_argument("--points", type=int, default=7, help="model sizes per budget")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra ff-plan override")
    args = ap.parse_args(argv)
    try:
        plan_cfg = compose("plan", [f"run_dir={args.run_dir}", f"model={args.model}", f"dataset={args.dataset}",
                                    f"grid.points={args.points}", "quiet=true", *args.set])
        plan_cfg["budgets"] = {"name": "cli", "values": args.budgets}
        print(format_plan(stages.plan(plan_cfg)))
        stages.train(compose("train", [f"run_dir={args.run_dir}", f"trainer={args.trainer}"]))
        analysis = stages.analyze(compose("analyze", [f"run_dir={args.run_dir}", f"bootstrap={args.bootstrap}", "quiet=true"]))
        print("\n".join(summary_lines(analysis)))
        stages.plot(compose("plot", [f"run_dir={args.run_dir}"]))
    except FlopsFitError as e:
        print(f"cli_wrapper: error: {e}", file=sys.stderr)
        return 1
    print(f"figures and report.html in {args.run_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
