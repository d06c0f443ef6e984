"""The demo sweep end to end: cosine vs shared-trunk WSD, one run at a time vs packed.

For each variant this plans the `make demo` study (GPT on BBC News, budgets=cpu_small, grid.points=5)
into ``--out/<variant>``, trains it with ``trainer=local`` and reports the FLOPs the sweep spent (6ND
of every step taken: a WSD trunk once), its wall time, and that as a fraction of the fp32 matmul
peak measured in this process right before and after (the larger), so a co-tenant that comes and
goes skews both alike. Then it fits each sweep (ff-analyze's defaults, 200 bootstrap replicates) and
prints the exponents a (N_opt ~ C^a) and b (D_opt ~ C^b) with their intervals, and how far each
variant's run losses are from the first variant's on the runs they share.

    PYTHONPATH=src python benchmarks/bench_sweep.py                        # four variants, tens of minutes
    PYTHONPATH=src python benchmarks/bench_sweep.py --variants cosine-packed wsd-packed
    PYTHONPATH=src python benchmarks/bench_sweep.py --budgets 1e11 2.5e11   # a quicker, smaller study
    PYTHONPATH=src python benchmarks/bench_sweep.py --efficiency           # per size, one core: minutes

``--efficiency`` instead times a few training steps of every model size of the demo plan on one
thread against the one-thread matmul peak measured right before and after (so a neighbour that takes
the core slows both alike), and prints the best end-to-end fraction of the peak a perfectly packed
sweep could reach: the FLOPs-weighted harmonic mean of the sizes' fractions (no evaluation, no
start-up, every core busy with runs as efficient as they are alone), both per core and against the
whole-machine peak that the end-to-end fractions use (one core's peak times the cores is more than
the whole machine's: the cores share caches and memory bandwidth).

A variant whose run directory already holds completed runs only trains what is missing (delete
``--out`` for a fresh measurement); its wall time then covers that part only. Report the machine's
load (``uptime``) beside the numbers: on a shared machine the wall time measures the neighbours too.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

VARIANTS = {  # name: (schedule, trainer.pack)
    "cosine-sequential": ("cosine", 1),
    "cosine-packed": ("cosine", None),
    "wsd-sequential": ("wsd", 1),
    "wsd-packed": ("wsd", None),
}


def matmul_peak(n: int = 2048, reps: int = 3) -> float:
    """Best-of-reps fp32 FLOP/s of an n x n x n matmul with torch's default threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t))
    return best


def spent_flops(records: list[dict]) -> float:
    """FLOPs of the steps a sweep took: each run's, except that the runs of a WSD trunk took the trunk's
    steps (to the latest branch point) once and their own cooldowns."""
    total, trunks = 0.0, {}
    for r in records:
        if r.get("trunk") and r.get("branched_at") is not None:
            trunks.setdefault(r["trunk"], []).append(r)
        else:
            total += r["flops"]
    for runs in trunks.values():
        fpt = runs[0]["flops_per_token"]
        total += fpt * (max(r["branched_at"] for r in runs) + sum(r["tokens"] - r["branched_at"] for r in runs))
    return total


def efficiency(plan: dict, steps: int = 4) -> int:
    """Each size's training FLOP/s on one thread as a fraction of the one-thread matmul peak."""
    from flops_fit.data import build_data
    from flops_fit.models import ModelSpec
    from flops_fit.training.loop import Runtime, _prepare_model, train_step
    from flops_fit.training.loss import resolve_loss
    from flops_fit.training.optim import build_optimizer

    cores = torch.get_num_threads()
    machine_peak = matmul_peak()  # every core, as the end-to-end fractions of make bench-sweep use
    torch.set_num_threads(1)
    data = build_data(dict(plan["dataset"]))
    spec = ModelSpec.from_config({**plan["model"], "_target_": plan["model"]["target"]})
    x, y = data.train_batch(32, torch.Generator().manual_seed(0))
    rt, loss_fn = Runtime(torch.device("cpu"), None), resolve_loss("cross_entropy")
    by_size = {}
    for e in plan["experiments"]:
        by_size.setdefault(e["size"], []).append(e)
    print(f"one thread; load average {os.getloadavg()}")
    print(f"{'d_model':>7s} {'params':>8s} {'GFLOP/s':>8s} {'peak':>6s} {'% peak':>7s}  runs' FLOPs")
    frac, rates = {}, {}
    for size, runs in sorted(by_size.items()):
        model = _prepare_model(spec.build(size), torch.device("cpu"), 0)
        opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
        params = list(model.parameters())
        train_step(model, opt, None, loss_fn, x, y, rt, params, 1.0)
        before = matmul_peak(reps=2)
        t = time.perf_counter()
        for _ in range(steps):
            train_step(model, opt, None, loss_fn, x, y, rt, params, 1.0)
        rate = steps * x.numel() * runs[0]["flops_per_token"] / (time.perf_counter() - t)
        peak = max(before, matmul_peak(reps=2))
        frac[size], rates[size] = rate / peak, rate
        print(f"{size:7d} {runs[0]['params']:8d} {rate / 1e9:8.1f} {peak / 1e9:6.1f} {frac[size]:7.1%}  "
              f"{sum(r['flops'] for r in runs):.3g}", flush=True)
    total = sum(e["flops"] for e in plan["experiments"])
    bound = total / sum(e["flops"] / frac[e["size"]] for e in plan["experiments"])
    per_core = total / sum(e["flops"] / rates[e["size"]] for e in plan["experiments"])
    torch.set_num_threads(cores)
    machine_peak = max(machine_peak, matmul_peak())
    print(f"perfectly packed ({cores} one-thread runs at a time, no evaluation, no start-up), the sweep's "
          f"training steps run at {bound:.1%} of the one-thread peak per core, i.e. {cores} x "
          f"{per_core / 1e9:.1f} GFLOP/s = {cores * per_core / machine_peak:.1%} of the {machine_peak / 1e9:.0f} "
          f"GFLOP/s whole-machine peak (the end-to-end measure's; upper bounds)")
    return 0


def exponents(analysis: dict) -> dict:
    out = {}
    for approach in ("envelope", "isoflop", "parametric"):
        fit = (analysis.get("fits") or {}).get(approach) or {}
        out[approach] = {k: fit.get(k) for k in ("a", "a_ci", "b", "b_ci")}
    return out


def fmt_exp(v, ci) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default="outputs/bench-sweep")
    ap.add_argument("--budgets", nargs="+", type=float, default=None, help="default: budgets=cpu_small")
    ap.add_argument("--points", type=int, default=5)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--efficiency", action="store_true", help="per size on one thread against the matmul peak, only")
    args = ap.parse_args(argv)

    from flops_fit import stages
    from flops_fit.artifacts import RunDir
    from flops_fit.config.compose import compose

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()}")
    if args.efficiency:
        overrides = [f"run_dir={os.path.join(args.out, 'efficiency')}", f"grid.points={args.points}", "quiet=true"]
        if args.budgets:
            overrides.append("budgets.values=[" + ",".join(f"{b:g}" for b in args.budgets) + "]")
        return efficiency(stages.plan(compose("plan", overrides)))
    rows, fits, losses = [], {}, {}
    for name in args.variants:
        schedule, pack = VARIANTS[name]
        run_dir = os.path.join(args.out, name)
        overrides = [f"run_dir={run_dir}", f"grid.points={args.points}", f"schedule={schedule}", "quiet=true"]
        if args.budgets:
            overrides.append("budgets.values=[" + ",".join(f"{b:g}" for b in args.budgets) + "]")
        plan = stages.plan(compose("plan", overrides))
        train_cfg = compose("train", [f"run_dir={run_dir}", "trainer=local", "quiet=true", "trainer.progress=false",
                                      f"trainer.pack={'null' if pack is None else pack}"])
        before = matmul_peak()
        load0 = os.getloadavg()[0]
        start = time.perf_counter()
        counts = stages.train(train_cfg)
        wall = time.perf_counter() - start
        load1 = os.getloadavg()[0]
        peak = max(before, matmul_peak())
        records = [RunDir(run_dir).read_run(e["id"]) for e in plan["experiments"]]
        done = [r for r in records if r and r["status"] == "completed"]
        flops = spent_flops([r for r in records if r])
        rows.append({"variant": name, "runs": len(done), "trained": counts["completed"], "flops": flops,
                     "planned": plan["sweep_flops"], "runs_flops": plan["runs_flops"], "wall": wall,
                     "frac": flops / wall / peak, "peak": peak, "load": (load0, load1)})
        r = rows[-1]
        print(f"{name:18s} {r['runs']} runs ({r['trained']} trained now), {flops:.3g} FLOPs spent "
              f"({flops / plan['runs_flops']:.1%} of the runs' budgets), {wall:.0f} s, {flops / wall / 1e9:.1f} GFLOP/s "
              f"= {r['frac']:.1%} of the fp32 peak {peak / 1e9:.0f} GFLOP/s (load {load0:.1f} -> {load1:.1f})", flush=True)
        losses[name] = {x["id"]: x["loss"] for x in done}
        analysis = stages.analyze({"run_dir": run_dir, "bootstrap": args.bootstrap, "quiet": True,
                                   "table_max_budget": 1e16})
        fits[name] = exponents(analysis)

    print("\nvariant              runs  sweep FLOPs  / runs' budgets   wall s   GFLOP/s  % fp32 peak  load")
    for r in rows:
        print(f"{r['variant']:20s} {r['runs']:4d}  {r['flops']:11.3g}  {r['flops'] / r['runs_flops']:15.1%}  {r['wall']:7.0f}  "
              f"{r['flops'] / r['wall'] / 1e9:8.1f}  {r['frac']:11.1%}  {r['load'][0]:.1f}-{r['load'][1]:.1f}")
    first = args.variants[0]
    print(f"\nrun losses against {first} (the runs both have):")
    for name in args.variants[1:]:
        shared = sorted(set(losses[name]) & set(losses[first]))
        rel = [abs(losses[name][i] / losses[first][i] - 1) for i in shared]
        print(f"  {name:18s} {len(shared)} shared runs, max relative difference "
              f"{max(rel) if rel else math.nan:.2e}")
    print("\nexponents (N_opt ~ C^a, D_opt ~ C^b) with intervals")
    for approach in ("envelope", "isoflop", "parametric"):
        for name in args.variants:
            e = fits[name][approach]
            print(f"  {approach:10s} {name:18s} a {fmt_exp(e['a'], e['a_ci']):26s} b {fmt_exp(e['b'], e['b_ci'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
