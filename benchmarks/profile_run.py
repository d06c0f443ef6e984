"""Where one planned run's time goes: setup, training steps, data, evaluation, logging, the record.

    PYTHONPATH=src python benchmarks/profile_run.py RUN_DIR                 # the plan's smallest model
    PYTHONPATH=src python benchmarks/profile_run.py RUN_DIR --id C1e11_d_model8 --steps 60 --ops

Trains the run (capped at ``--steps`` steps, the rest of its settings as planned: evaluation every
10% of those steps over the whole held-out split, ...) under cProfile with a *CPU-time* clock, so
the shares hold on a machine shared with other jobs (wall time there measures the neighbours too),
and prints each phase's share of the run. ``--ops`` adds torch.profiler's table of the operators
inside the training steps (evaluation off), the step's own anatomy. One torch thread by default
(``--threads``): with more, OpenMP threads that spin while waiting count as CPU time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import sys
import time

import torch

PHASES = {  # phase: functions (file suffix, name) whose cumulative time it is
    "setup: measured FLOPs per token": [("flops.py", "flops_by_convention")],
    "setup: model, optimizer": [("loop.py", "_prepare_model"), ("optim.py", "build_optimizer")],
    "step: forward+loss+backward+update": [("loop.py", "train_step")],
    "step: batch (data loading)": [("text.py", "train_batch"), ("image.py", "train_batch"),
                                   ("torch_data.py", "train_batch")],
    "step: lr schedule": [("optim.py", "set_lr")],
    "step: divergence watch": [("loop.py", "add")],
    "logging: progress bar": [("loop.py", "advance")],
    "evaluation (history + final)": [("loop.py", "evaluate_split")],
    "checkpoints": [("loop.py", "_save")],
    "record": [("loop.py", "_record")],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--id", default=None, help="the run (default: the plan's smallest model at its smallest budget)")
    ap.add_argument("--steps", type=int, default=100, help="cap on training steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ops", action="store_true", help="also torch.profiler's operator table of the steps")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from flops_fit.artifacts import RunDir
    from flops_fit.data import build_data
    from flops_fit.models import ModelSpec
    from flops_fit.training.loop import train_run

    plan = RunDir(args.run_dir).read_plan()
    exps = plan["experiments"]
    exp = next(e for e in exps if e["id"] == args.id) if args.id else min(exps, key=lambda e: (e["params"], e["budget"]))
    data = build_data(dict(plan["dataset"]))
    spec = ModelSpec.from_config({**plan["model"], "_target_": plan["model"]["target"]})
    trainer = {"kind": "local", "threads": args.threads, "progress": True}
    per_batch = data.examples_per_batch(32)
    exp = dict(exp, tokens=min(int(exp["tokens"]), args.steps * per_batch))
    train_run(dict(exp, tokens=2 * per_batch), model=spec.build(exp["size"]), data=data,  # warm caches, kernels
              trainer={**trainer, "progress": False}, progress=False)

    prof = cProfile.Profile(time.process_time)
    cpu0, wall0, faults0 = time.process_time(), time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    prof.enable()
    record = train_run(exp, model=spec.build(exp["size"]), data=data, trainer=trainer, progress=True, position=0)
    prof.disable()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    print(f"{exp['id']}: {record['params']} params, {record['steps']} steps of {per_batch} tokens, "
          f"{torch.get_num_threads()} thread(s); CPU time {cpu:.2f} s (wall {wall:.2f} s), loss {record['loss']:.4f}; "
          f"{faults / max(1, record['steps']):.0f} minor page faults per step (evaluation included)")
    print(f"{'phase':40s} {'CPU s':>8s} {'share':>7s}")
    for phase, funcs in PHASES.items():
        t = sum(v[3] for (f, _, name), v in stats.items() if any(f.endswith(s) and name == n for s, n in funcs))
        print(f"{phase:40s} {t:8.3f} {100 * t / cpu:6.1f}%")
    print(f"{'(whole run)':40s} {cpu:8.3f} {100.0:6.1f}%")

    if args.ops:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as p:
            train_run(dict(exp, tokens=min(exp["tokens"], 20 * per_batch)), model=spec.build(exp["size"]), data=data,
                      trainer={**trainer, "progress": False, "eval_every_frac": 0.0, "eval_max_batches": 1},
                      progress=False)
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=50))
    return 0


if __name__ == "__main__":
    sys.exit(main())
