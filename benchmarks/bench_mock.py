"""Mock sweep throughput: runs trained (records written) per second by ff-train's core.

    python benchmarks/bench_mock.py [--runs 5000]
"""

import argparse
import tempfile
import time

from flops_fit.artifacts import RunDir
from flops_fit.training.sweep import train_plan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5000)
    n = ap.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        rd = RunDir(tmp)
        exps = [{"id": f"r{i}", "budget": 1e20, "size": i, "params": 1e6 + i * 1e4, "tokens": 1e9,
                 "flops_per_token": 6e6, "flops": 6e15} for i in range(n)]
        rd.write_plan({"model": {"name": "bench"}, "experiments": exps, "budgets": [1e20]})
        t = time.perf_counter()
        counts = train_plan(tmp, {"kind": "mock", "noise": 0.005, "history_points": 20}, quiet=True)
        dt = time.perf_counter() - t
        assert counts["completed"] == n
        print(f"mock trainer: {n} runs in {dt:.2f} s = {n / dt:,.0f} runs/s (records with 20-point histories written to disk)")


if __name__ == "__main__":
    main()
