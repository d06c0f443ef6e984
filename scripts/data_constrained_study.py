"""A data-constrained study on this machine's CPU: the demo's GPT on BBC News cut to a few unique-token sizes,
each trained from 1 to 32 epochs (Muennighoff et al. 2023's design, docs/data-constrained.md).

    python scripts/data_constrained_study.py --out outputs/dc-study            # ~5 min on 2 cores
    ff-analyze run_dir=outputs/dc-study input=outputs/dc-study/runs.csv        # the full analysis of its runs

Every run trains a GPT (d_model in --sizes, 2 layers, 512-token BPE, seq_len 128) on the first U tokens of BBC
News (``dataset.options.train_subset``: the held-out split is the same for every run) for epochs x U tokens.
Then R_D*, R_N* are fitted (over a surface refitted on the single-epoch runs) on the runs of at most
--fit-max-epochs epochs, and the law predicts the held-out runs' losses; the table of those errors is printed and
written to study.md. Runs still queued at --max-minutes are skipped (and said so).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

DATASET = {"name": "bbc_news", "kind": "text", "source": "bbc_news", "tokenizer": "bpe", "vocab_size": 512,
           "seq_len": 128}


def _train(exp: dict, batch_size: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from flops_fit.data import build_data
    from flops_fit.examples import GPT
    from flops_fit.training.loop import train_run

    data = build_data({**DATASET, "options": {"train_subset": int(exp["unique_units"])}})
    torch.manual_seed(0)
    model = GPT(d_model=exp["size"], n_layer=2, n_heads=2, vocab_size=512, seq_len=128)
    return train_run(exp, model=model, data=data, progress=False,
                     trainer={"batch_size": batch_size, "progress": False, "eval_every_frac": 0.0})


def plan(sizes, uniques, epochs, single, max_run_tokens) -> list[dict]:
    from flops_fit.examples import GPT

    out = []
    for d in sizes:
        params = sum(p.numel() for p in GPT(d_model=d, n_layer=2, n_heads=2, vocab_size=512, seq_len=128).parameters())
        for U in [*uniques, *single]:
            for e in epochs:
                if (U in single and e > 1) or U * e > max_run_tokens:
                    continue
                out.append({"id": f"d{d}_U{U}_e{e}", "budget": None, "size": d, "params": params,
                            "tokens": int(U * e), "unique_units": int(U)})
    return sorted(out, key=lambda x: -x["tokens"] * x["params"])  # longest first: the pool ends together


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/dc-study")
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--unique", type=int, nargs="+", default=[25_000, 100_000], help="unique-token sizes")
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--single", type=int, nargs="+", default=[400_000], help="sizes trained for one epoch only")
    ap.add_argument("--max-run-tokens", type=float, default=1.6e6, help="skip runs longer than this")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=8.0)
    ap.add_argument("--fit-max-epochs", type=float, default=8.0, help="fit on runs up to this many epochs")
    args = ap.parse_args()

    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    todo = plan(args.sizes, args.unique, args.epochs, args.single, args.max_run_tokens)
    done = {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}
    todo = [e for e in todo if e["id"] not in done]
    print(f"{len(todo)} runs to train ({len(done)} already done), {sum(e['tokens'] for e in todo) / 1e6:.1f}M tokens")
    t0, skipped = time.time(), []
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {}
        queue = list(todo)
        while queue or futures:
            while queue and len(futures) < args.workers:
                if time.time() - t0 > 60 * args.max_minutes:
                    skipped += [e["id"] for e in queue]
                    queue = []
                    break
                e = queue.pop(0)
                futures[pool.submit(_train, e, args.batch_size)] = e
            if not futures:
                break
            fut = next(as_completed(futures))
            e = futures.pop(fut)
            rec = fut.result()
            tmp = out / "runs" / f".{e['id']}.tmp"
            tmp.write_text(json.dumps(rec))
            os.replace(tmp, out / "runs" / f"{e['id']}.json")
            done[e["id"]] = rec
            print(f"  {e['id']:>22}: loss {rec['loss']:.4f}  ({rec['epochs']:.0f} epochs, {time.time() - t0:.0f}s)")
    if skipped:
        print(f"skipped at --max-minutes={args.max_minutes}: {', '.join(skipped)}")
    runs = [r for r in done.values() if r.get("status") == "completed"]
    with (out / "runs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "params", "tokens", "unique_tokens", "epochs", "loss"])
        w.writeheader()
        for r in sorted(runs, key=lambda r: r["id"]):
            w.writerow({"id": r["id"], "params": r["params"], "tokens": r["tokens"], "unique_tokens": r["unique_units"],
                        "epochs": r["epochs"], "loss": r["loss"]})
    report(runs, args.fit_max_epochs, out)


def report(runs, fit_max_epochs: float, out: Path) -> None:
    """Fit on the runs up to fit_max_epochs, predict the rest; print and write the table (study.md, study.json)."""
    from flops_fit.analysis.data_constrained import DataConstrainedLaw, fit_data_constrained, single_epoch_surface
    from flops_fit.law import ChinchillaLaw

    N, D, U, L, E = (np.array([r[k] for r in runs], dtype=float)
                     for k in ("params", "tokens", "unique_units", "loss", "epochs"))
    ids = [r["id"] for r in runs]
    planned = np.array([r["planned_tokens"] / r["unique_units"] for r in runs])  # whole batches train a bit more
    fit_idx = planned <= fit_max_epochs * (1 + 1e-9)
    surface, where = single_epoch_surface(N[fit_idx], D[fit_idx], U[fit_idx], L[fit_idx], ChinchillaLaw(),
                                          objective="sse")
    fit = fit_data_constrained(N[fit_idx], D[fit_idx], U[fit_idx], L[fit_idx], surface, n_bootstrap=200, seed=0)
    law = fit.law
    plain = DataConstrainedLaw(surface, R_D_star=1e12, R_N_star=1e12)  # repeats worth new data: the Chinchilla law
    lines = [f"# Data-constrained study: GPT on BBC News subsets ({len(runs)} runs)", "",
             f"Surface from {where}: E={surface.E:.3f}, A={surface.A:.4g}, B={surface.B:.4g}, "
             f"alpha={surface.alpha:.3f}, beta={surface.beta:.3f}", "",
             f"Fitted on {int(fit_idx.sum())} runs of at most {fit_max_epochs:g} epochs: R_D* = {fit.R_D_star:.3g} "
             f"{fit.R_D_star_ci}, R_N* = {fit.R_N_star:.3g} {fit.R_N_star_ci}"
             + (f"; lower bound only: {list(fit.lower_bound_only)}" if fit.lower_bound_only else ""), "",
             "| run | params | unique tokens | epochs | loss | predicted (data-constrained) | error | "
             "predicted (repeats = new data) | error | in fit |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for i in sorted(range(len(runs)), key=lambda i: (U[i], N[i], E[i])):
        p, q = float(law.loss(N[i], D[i], U[i])), float(plain.loss(N[i], D[i], U[i]))
        rows.append({"id": ids[i], "params": N[i], "unique_tokens": U[i], "epochs": E[i], "loss": L[i],
                     "planned_epochs": planned[i],
                     "predicted": p, "error": p / L[i] - 1, "predicted_no_decay": q, "error_no_decay": q / L[i] - 1,
                     "in_fit": bool(fit_idx[i])})
        lines.append(f"| {ids[i]} | {N[i]:.0f} | {U[i]:.0f} | {E[i]:.2f} | {L[i]:.4f} | {p:.4f} | {p / L[i] - 1:+.2%} | "
                     f"{q:.4f} | {q / L[i] - 1:+.2%} | {'yes' if fit_idx[i] else '**held out**'} |")
    held = [r for r in rows if not r["in_fit"]]
    if held:
        mae = np.mean([abs(r["error"]) for r in held])
        mae0 = np.mean([abs(r["error_no_decay"]) for r in held])
        lines += ["", f"Held-out runs ({len(held)}, more than {fit_max_epochs:g} epochs): mean |error| {mae:.2%} with the "
                  f"data-constrained law, {mae0:.2%} if repeated tokens were worth new ones; worst "
                  f"{max(abs(r['error']) for r in held):.2%}."]
    lines += ["", "Value of a repeated token at the fitted R_D*: " + ", ".join(
        f"epoch {e}: {float(law.repeat_value(e)):.2f}" for e in (2, 4, 8, 16, 32))]
    text = "\n".join(lines)
    print(text)
    (out / "study.md").write_text(text + "\n")
    (out / "study.json").write_text(json.dumps({"fit": fit.to_json(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
