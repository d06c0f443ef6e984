"""Packing: small runs trained several at once in worker processes give the records a one-at-a-time
sweep gives, respect the per-run locks, and are chosen from a throughput probe."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from flops_fit.artifacts import RunDir
from flops_fit.models import ModelSpec
from flops_fit.planning import Grid, make_plan
from flops_fit.training import packing
from flops_fit.training.config import TrainerConfig
from flops_fit.training.sweep import RunLocks, Task, train_plan

TINY = ModelSpec(target="flops_fit.examples.GPT", size_param="d_model", size_range=(8, 64),
                 kwargs={"n_layer": 1, "head_dim": 8, "vocab_size": 256, "seq_len": 32})
SYNTHETIC = {"kind": "text", "source": "synthetic", "vocab_size": 256, "seq_len": 32, "eval_size": 1024}
LOCAL = {"kind": "local", "batch_size": 8, "threads": 1, "progress": False}
GRID = Grid(points=2, span=2.0, tokens_per_param=5, min_tokens_per_param=0.5)  # 2 sizes per budget


def _plan(root: Path, schedule: str) -> RunDir:
    rd = RunDir(root)
    rd.write_plan(make_plan(TINY, [5e8, 1.2e9], grid=GRID, dataset=dict(SYNTHETIC), schedule=schedule))
    return rd


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_packed_and_sequential_execution_give_the_same_runs(tmp_path, schedule):
    one = _plan(tmp_path / "one", schedule)
    packed = _plan(tmp_path / "packed", schedule)
    assert train_plan(str(one.root), {**LOCAL, "pack": 1}, quiet=True)["completed"] == 4
    counts = train_plan(str(packed.root), {**LOCAL, "pack": 2}, quiet=True)
    assert counts["completed"] == 4 and counts["pending_before"] == 4
    for exp in one.read_plan()["experiments"]:
        a, b = one.read_run(exp["id"]), packed.read_run(exp["id"])
        assert a["concurrent_runs"] == 1 and b["concurrent_runs"] == 2 and a["threads"] == b["threads"] == 1
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
        assert [h["loss"] for h in b["history"]] == pytest.approx([h["loss"] for h in a["history"]], rel=1e-6)
        assert (a["tokens"], a["steps"], a.get("trunk")) == (b["tokens"], b["steps"], b.get("trunk"))
    assert not list((packed.root / "checkpoints").glob("*.pt"))  # cleaned up as a sequential sweep does
    again = train_plan(str(packed.root), {**LOCAL, "pack": 2}, quiet=True)  # nothing left: nothing trained
    assert again["completed"] == 0 and again["skipped_completed"] == 4


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_packed_workers_skip_a_run_another_process_holds(tmp_path):
    rd = _plan(tmp_path / "r", "cosine")
    held = rd.read_plan()["experiments"][0]["id"]
    locks = RunLocks(rd)  # this process plays a concurrent ff-train training `held`
    with locks.claim(held) as mine:
        assert mine
        counts = train_plan(str(rd.root), {**LOCAL, "pack": 2}, quiet=True)
    locks.close()
    assert counts["skipped_locked"] == 1 and counts["completed"] == 3 and rd.read_run(held) is None
    assert train_plan(str(rd.root), {**LOCAL, "pack": 2}, quiet=True)["completed"] == 1


def _fake(sizes_params: dict, pack=None, device="cpu", packable=True):
    cfg = TrainerConfig.from_mapping({**LOCAL, "threads": None, "pack": pack, "device": device})
    data = SimpleNamespace(examples_per_batch=lambda b: b * 32)
    tasks = [Task([{"id": f"C{b}_{s}", "size": s, "params": n, "tokens": 4e7 * b, "flops": 2.4e8 * b * n}])
             for s, n in sizes_params.items() for b in (1, 2)]
    return SimpleNamespace(cfg=cfg, data=data, packable=packable), tasks


def test_the_probe_packs_the_sizes_that_gain_and_keeps_the_machine_for_the_others(monkeypatch):
    sizes = {8: 5_000, 16: 12_000, 32: 30_000, 64: 90_000, 128: 300_000, 256: 1_000_000}
    trainer, tasks = _fake(sizes)
    probed = []

    def fake_probe(trainer, size, threads):  # small models gain from packing, large ones use both cores
        probed.append(size)
        return {2: 1.0, 1: 0.9 if size <= 32 else 0.5}

    monkeypatch.setattr(packing, "probe", fake_probe)
    monkeypatch.setattr(packing, "available_cores", lambda: 2)
    plan = packing.choose_packing(tasks, trainer, quiet=True)
    assert plan.workers == 2 and plan.threads == 1
    assert {t.size for t in plan.packed} == {8, 16, 32} and {t.size for t in plan.alone} == {64, 128, 256}
    assert len(probed) <= 4 < len(sizes)  # bisection, not every size (and a first look at the smallest)
    assert [t.runs[0]["flops"] for t in plan.packed] == sorted((t.runs[0]["flops"] for t in plan.packed),
                                                               reverse=True)  # longest first

    monkeypatch.setattr(packing, "probe", lambda *a: {1: 1e6, 2: 1e6})  # a few seconds of work: not worth it
    assert packing.choose_packing(tasks, trainer, quiet=True) is None


def test_packing_is_as_asked_and_off_for_python_objects(monkeypatch):
    monkeypatch.setattr(packing, "available_cores", lambda: 4)
    monkeypatch.setattr(packing, "probe", lambda *a: pytest.fail("no probe when the packing is given"))
    sizes = {8: 5_000, 16: 12_000}
    trainer, tasks = _fake(sizes, pack=1)
    assert packing.choose_packing(tasks, trainer, quiet=True) is None
    trainer, tasks = _fake(sizes, pack=2)
    forced = packing.choose_packing(tasks, trainer, quiet=True)
    assert forced.workers == 2 and forced.threads == 2 and len(forced.packed) == 4 and not forced.alone
    trainer, tasks = _fake(sizes, pack=2, packable=False)  # find_optimal's objects: workers cannot rebuild them
    assert packing.choose_packing(tasks, trainer, quiet=True) is None


def test_the_expected_time_of_a_packing_deals_its_tasks_to_the_workers(monkeypatch):
    """ff-train's estimate after choosing the packing: packed tasks at one thread's speed, dealt longest first
    to the worker that frees first, then the rest one at a time with the whole machine."""
    sizes = {8: 5_000, 16: 12_000, 32: 30_000, 64: 90_000}
    trainer, tasks = _fake(sizes)
    monkeypatch.setattr(packing, "probe", lambda trainer, size, threads: {2: 1.0, 1: 0.8 if size <= 32 else 0.5})
    monkeypatch.setattr(packing, "available_cores", lambda: 2)
    rate = 2.4e8 * 1_000 / 1.0  # FLOP/s (whole machine) at every size: a task takes (budget x params) / 1000 s
    plan = packing.choose_packing(tasks, trainer, quiet=True, rates={5_000: rate, 90_000: rate})
    assert {t.size for t in plan.packed} == {8, 16, 32} and {t.size for t in plan.alone} == {64}
    # packed, whole-machine seconds 5, 10, 12, 24, 30, 60, each 1.25x slower on one thread; dealt longest first:
    # 60 | 30, 24 -> 54 | 12 -> 66 | 10 -> 70 | 5 -> 71: the packed phase ends at 71 x 1.25; then 90 + 180 alone
    assert plan.expected_s == pytest.approx(71 * 1.25 + 90 + 180)
    assert "expected training time so packed about" in plan.describe()
    assert packing.choose_packing(tasks, trainer, quiet=True).expected_s is None  # no probe rates, no estimate


def test_the_expected_time_counts_a_wsd_trunk_once():
    from flops_fit.planning import sweep_flops
    from flops_fit.training import workload
    from flops_fit.units import sci

    plan = make_plan(TINY, [5e8, 1.2e9], grid=GRID, dataset=dict(SYNTHETIC), schedule="wsd")
    runs = plan["experiments"]
    rates = {float(min(e["params"] for e in runs)): 1e9, float(max(e["params"] for e in runs)): 1e9}
    assert len(workload.work_units(runs)) == len({e["trunk"] for e in runs}) < len(runs)
    assert workload.expected_seconds(runs, rates) == pytest.approx(sweep_flops(runs) / 1e9)
    assert sweep_flops(runs) < 0.95 * sum(e["flops"] for e in runs)  # what counting each run alone would say
    line = workload.announce(plan, runs, 0, 1)  # the line ff-train starts with
    assert line.startswith(f"plan: {len(runs)} runs, {sci(sweep_flops(runs))} FLOPs (WSD trunks counted once")
    assert f"this job: {len(runs)} to train, {sci(sweep_flops(runs))} FLOPs" in line
