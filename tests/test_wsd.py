"""Shared-trunk WSD sweeps: the plan shares sizes across budgets and counts each trunk once, a branch's
record is the standalone WSD run's, and a sweep killed mid-trunk loses no branch it had made."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flops_fit import stages
from flops_fit.artifacts import RunDir
from flops_fit.errors import FlopsFitError
from flops_fit.models import ModelSpec
from flops_fit.planning import Grid, format_plan, make_plan, sweep_flops
from flops_fit.training.optim import cooldown_start, lr_factor, wsd_lr_factor
from flops_fit.training.sweep import train_plan
from tests.conftest import REPO

TINY = ModelSpec(target="flops_fit.examples.GPT", size_param="d_model", size_range=(8, 64),
                 kwargs={"n_layer": 1, "head_dim": 8, "vocab_size": 256, "seq_len": 32})
SYNTHETIC = {"kind": "text", "source": "synthetic", "vocab_size": 256, "seq_len": 32, "eval_size": 1024}
LOCAL = {"kind": "local", "batch_size": 8, "threads": 1, "progress": False, "pack": 1}
# 2 budgets x 3 sizes, each size at both budgets: 3 trunks, 6 branches
GRID = Grid(points=3, span=2.0, tokens_per_param=5, min_tokens_per_param=0.5)
# the demo's model and budgets (counted on the meta device: no training)
DEMO_GPT = ModelSpec(target="flops_fit.examples.GPT", size_param="d_model", size_range=(8, 32768),
                     kwargs={"n_layer": 2, "n_heads": 2, "vocab_size": 512, "seq_len": 128})
DEMO_BUDGETS = [1.0e11, 2.5e11, 6.0e11, 1.5e12]


def _plan(root: Path, budgets=(2e9, 5e9), spec=TINY, schedule="wsd", **kw) -> RunDir:
    rd = RunDir(root)
    rd.write_plan(make_plan(spec, list(budgets), grid=kw.pop("grid", GRID), dataset=dict(SYNTHETIC),
                            schedule=schedule, **kw))
    return rd


# -- the schedule ---------------------------------------------------------------------------------

def test_wsd_schedule_warms_up_holds_then_cools_down_to_the_cosine_floor():
    steps, warmup, start = 100, 5, cooldown_start(100, 0.2)
    assert start == 80
    f = [wsd_lr_factor(s, steps, warmup, start, 0.1) for s in range(steps)]
    assert f[:warmup] == [(s + 1) / warmup for s in range(warmup)]
    assert set(f[warmup:start]) == {1.0}
    assert all(a > b for a, b in zip(f[start - 1:], f[start:]))  # strictly down through the cooldown
    assert f[-1] == pytest.approx(0.1) == lr_factor(steps - 1, steps, warmup, 0.1)
    # before its cooldown a step's factor ignores the run's length: what lets one trunk serve every run
    assert [wsd_lr_factor(s, 1000, warmup, 800, 0.1) for s in range(start)] == f[:start]


# -- the plan -------------------------------------------------------------------------------------

def test_a_wsd_plan_shares_sizes_across_budgets_and_counts_each_trunk_once():
    wsd = make_plan(DEMO_GPT, DEMO_BUDGETS, grid=Grid(points=5), schedule="wsd")
    runs = wsd["experiments"]
    sizes = sorted({e["size"] for e in runs})
    assert len(runs) == 20 and len(sizes) <= 7  # the cosine layout of this grid has 14 sizes
    for b in DEMO_BUDGETS:  # each budget takes consecutive sizes of the one ladder, around its optimum
        mine = sorted(e["size"] for e in runs if e["budget"] == b)
        i = sizes.index(mine[0])
        assert mine == sizes[i:i + len(mine)]
    trunks = {}
    for e in runs:
        assert e["schedule"] == "wsd" and e["cooldown_frac"] == 0.2 and e["trunk"] == f"trunk_d_model{e['size']}"
        trunks.setdefault(e["trunk"], []).append(e)
    expected = sum(r[0]["flops_per_token"] * (0.8 * max(x["tokens"] for x in r) + 0.2 * sum(x["tokens"] for x in r))
                   for r in trunks.values())
    assert wsd["sweep_flops"] == pytest.approx(expected) == pytest.approx(sweep_flops(runs))
    assert wsd["sweep_flops"] < 0.75 * wsd["runs_flops"]
    assert all(e["warmup_basis_tokens"] == min(x["tokens"] for x in trunks[e["trunk"]]) for e in runs)
    text = format_plan(wsd)
    assert f"{len(trunks)} trunks" in text and "trunks counted once" in text and "of the runs' budgets" in text


def test_ff_plan_prints_the_sweep_and_the_runs_flops(tmp_path):
    cfg = {"run_dir": str(tmp_path / "r"), "model": {"name": "gpt", "_target_": TINY.target, "size_param": "d_model",
                                                     "size_range": [8, 64], "kwargs": dict(TINY.kwargs)},
           "dataset": dict(SYNTHETIC, name="synthetic_text"), "budgets": {"name": "t", "values": [2e9, 5e9]},
           "grid": dict(points=3, span=2.0, tokens_per_param=5.0, min_tokens_per_param=0.5), "schedule": "wsd",
           "cooldown_frac": 0.25, "quiet": True}
    plan = stages.plan(cfg)
    assert plan["schedule"] == {"name": "wsd", "cooldown_frac": 0.25}
    cosine = stages.plan({**cfg, "run_dir": str(tmp_path / "c"), "schedule": "cosine"})
    assert cosine["sweep_flops"] == cosine["runs_flops"] == pytest.approx(sum(e["flops"] for e in cosine["experiments"]))
    assert plan["sweep_flops"] < plan["runs_flops"]
    assert "cooldown 25%" in format_plan(plan)


@pytest.mark.parametrize("kw, key", [({"schedule": "linear"}, "schedule='linear'"),
                                     ({"cooldown_frac": 1.5}, "cooldown_frac=1.5"),
                                     ({"cooldown_frac": 0}, "cooldown_frac=0")])
def test_a_bad_schedule_is_one_line_naming_the_key(kw, key):
    with pytest.raises(FlopsFitError) as e:
        make_plan(TINY, [2e9], grid=GRID, **{"schedule": "wsd", **kw})
    assert key in str(e.value) and "\n" not in str(e.value)


# -- branches are standalone WSD runs -------------------------------------------------------------

@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.slow
def test_a_branch_record_is_the_standalone_wsd_run_of_its_size_and_budget(tmp_path):
    from flops_fit.data import build_data
    from flops_fit.training.loop import train_run

    rd = _plan(tmp_path / "wsd", budgets=(1e9, 2.5e9), grid=Grid(points=1))  # one trunk, two branches
    plan = rd.read_plan()
    assert len({e["trunk"] for e in plan["experiments"]}) == 1
    trainer = {**LOCAL, "eval_batch_size": 4}
    counts = train_plan(str(rd.root), {**trainer, "checkpoint_every": 25}, quiet=True)
    assert counts["completed"] == 2
    assert not list((rd.root / "checkpoints").glob("*.pt"))  # branches' and trunks' checkpoints cleaned up
    data = build_data(SYNTHETIC)
    for exp in plan["experiments"]:
        rec = rd.read_run(exp["id"])
        alone = train_run(exp, model=TINY.build(exp["size"]), data=data, trainer=trainer, progress=False)
        assert rec["status"] == alone["status"] == "completed"
        assert rec["tokens"] == alone["tokens"] and rec["steps"] == alone["steps"]
        assert rec["loss"] == pytest.approx(alone["loss"], rel=1e-6)
        assert len(rec["history"]) == len(alone["history"]) >= 10
        for a, b in zip(rec["history"], alone["history"]):
            assert a["tokens"] == b["tokens"] and a["loss"] == pytest.approx(b["loss"], rel=1e-6)
        assert rec["trunk"] == exp["trunk"] and rec["schedule"] == "wsd"
        # trainer.eval_budget's cap, on the trunk's evaluations too: of the 8 held-out batches of 4 x 32 tokens, what
        # fits 9 history points in 5% of the shortest run's training (a forward pass a third of a step)
        fits = int(3 * 0.05 * exp["eval_basis_tokens"] / (9 * 4 * 32))
        assert rec["history_batches"] == alone["history_batches"] == fits and 1 <= fits < 8
        assert rec["resumed_from_step"] * 256 == rec["branched_at"]
        assert 0.75 * rec["tokens"] < rec["branched_at"] < 0.85 * rec["tokens"]
        assert any(s.get("trunk") == exp["trunk"] for s in rec["segments"])


@pytest.mark.usefixtures("one_torch_thread")
def test_the_runs_of_a_trunk_share_one_batch_that_gives_its_shortest_run_min_steps(tmp_path):
    from flops_fit.planning import batch_limit, run_batch_size

    demo = make_plan(DEMO_GPT, DEMO_BUDGETS, grid=Grid(points=5), schedule="wsd", dataset={"kind": "text", "seq_len": 128})
    trunks = {}
    for e in demo["experiments"]:
        trunks.setdefault(e["trunk"], []).append(e)
    for runs in trunks.values():
        assert len({x["max_batch_size"] for x in runs}) == 1
        assert math.ceil(min(x["tokens"] for x in runs) / (run_batch_size(32, runs[0]["max_batch_size"]) * 128)) >= 100
    # budgets share trunks, and each budget trains at one batch: the demo's WSD sweep is one group, at batch 8
    assert {x["max_batch_size"] for x in demo["experiments"]} == {8}

    rd = _plan(tmp_path / "wsd", budgets=(1e9, 2.5e9), grid=Grid(points=1))  # one trunk, two branches
    short, long = sorted(rd.read_plan()["experiments"], key=lambda e: e["tokens"])
    # alone, the longer run would train at 16 examples a step (trainer.batch_size=16): its trunk's shortest needs 8
    assert short["max_batch_size"] == long["max_batch_size"] == 8 and batch_limit(long["tokens"], 32, 100) == 16
    assert train_plan(str(rd.root), {**LOCAL, "batch_size": 16}, quiet=True)["completed"] == 2
    recs = [rd.read_run(e["id"]) for e in (short, long)]
    assert [(r["batch_size"], r["steps"]) for r in recs] == [(8, 127), (8, math.ceil(long["tokens"] / 256))]
    assert {r["warmup"] for r in recs} == {6} and {r["trainer_settings"]["batch_size"] for r in recs} == {16}
    assert all(r["resumed_from_step"] * 8 * 32 == r["branched_at"] for r in recs)  # branched off one trajectory


# -- kills ----------------------------------------------------------------------------------------

DRIVER = """
import sys, time
import flops_fit.training.wsd as wsd
from flops_fit.training.sweep import train_plan

_step = wsd.train_step
def slow_step(*a, **k):  # only the trunk's steps: the sweep spends its time mid-trunk
    time.sleep(0.02)
    return _step(*a, **k)
wsd.train_step = slow_step
train_plan(sys.argv[1], {"kind": "local", "batch_size": 8, "threads": 1, "progress": False, "pack": 1}, quiet=True)
"""


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_killing_a_sweep_mid_trunk_loses_no_branch_already_made(tmp_path):
    one_size = ModelSpec(target=TINY.target, size_param="d_model", size_range=(8, 8), kwargs=TINY.kwargs)
    whole = _plan(tmp_path / "whole", budgets=(2e9, 6e9), spec=one_size, grid=Grid(points=1))
    train_plan(str(whole.root), LOCAL, quiet=True)
    first, second = whole.read_plan()["experiments"]

    killed = _plan(tmp_path / "killed", budgets=(2e9, 6e9), spec=one_size, grid=Grid(points=1))
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(killed.root)], env=env)
    deadline = time.time() + 300
    while killed.read_run(first["id"]) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # ... the trunk goes on towards the second branch point: kill it there
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    made = killed.read_run(first["id"])
    assert made is not None and made["status"] == "completed", "the first branch was not made before the kill"
    assert killed.read_run(second["id"]) is None, "the sweep ended before it was killed"
    trunk_ckpt = killed.root / "checkpoints" / f"{first['trunk']}.pt"
    assert trunk_ckpt.exists()  # written at the first branch point

    counts = train_plan(str(killed.root), LOCAL, quiet=True)
    assert counts["completed"] == 1 and counts["skipped_completed"] == 1
    assert killed.read_run(first["id"]) == made  # not retrained, not rewritten
    resumed = killed.read_run(second["id"])
    trunk_starts = [s["start_step"] for s in resumed["segments"] if s.get("trunk")]
    assert trunk_starts[0] == 0 and trunk_starts[-1] >= made["resumed_from_step"]  # the trunk went on from its checkpoint
    for exp in (first, second):
        a, b = killed.read_run(exp["id"]), whole.read_run(exp["id"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
        assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], rel=1e-6)
    assert not trunk_ckpt.exists()  # every branch done: the trunk's checkpoint is cleaned up


@pytest.mark.usefixtures("one_torch_thread")
def test_a_wsd_plan_over_completed_cosine_runs_is_refused(tmp_path):
    rd = _plan(tmp_path / "r", budgets=(1e9,), grid=Grid(points=1), schedule="cosine")
    train_plan(str(rd.root), LOCAL, quiet=True)
    _plan(rd.root, budgets=(1e9,), grid=Grid(points=1), schedule="wsd")  # the same run ids, now WSD branches
    with pytest.raises(FlopsFitError) as e:
        train_plan(str(rd.root), LOCAL, quiet=True)
    assert "trained with schedule=cosine but" in str(e.value) and "plans schedule=wsd" in str(e.value)
