"""One run on several devices: ff-train trainer.devices=2 runs two real DDP workers (gloo, CPU).

Tolerance: a run trained by 2 workers (each on half of every global batch) follows the loss curve
of the same run trained by one process within 1e-4 nats at every evaluation (measured: ~1e-7; the
only difference is the order in which gradients and losses are summed).
"""

import json
import os
from pathlib import Path

import pytest

from flops_fit import stages
from flops_fit.errors import FlopsFitError
from flops_fit.training import distributed
from flops_fit.training.config import TrainerConfig
from flops_fit.training.distributed import World
from flops_fit.training.sweep import train_plan
from tests.conftest import REPO, run_cli, script
from tests.test_sweep import _plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 1e-4  # nats, at every evaluation point of the loss curve
TRAINER = ["trainer=local", "trainer.batch_size=8", "trainer.threads=1", "trainer.progress=false"]
LOCAL = {"kind": "local", "batch_size": 8, "threads": 1, "progress": False}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _curves(rd) -> dict:
    return {r["id"]: r for r in rd.iter_runs()}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the same plan trained by one process with the same global batch."""
    rd = _plan(tmp_path_factory.mktemp("one") / "run", budgets=(1e9, 2e9))
    train_plan(str(rd.root), LOCAL, quiet=True)
    return rd


@pytest.mark.slow
def test_two_workers_follow_the_single_process_loss_curve(tmp_path, one_process):
    rd = _plan(tmp_path / "run", budgets=(1e9, 2e9))
    proc = run_cli("ff-train", f"run_dir={rd.root}", *TRAINER, "trainer.devices=2", cwd=tmp_path)

    one, two = _curves(one_process), _curves(rd)
    assert sorted(two) == sorted(one) and len(two) == 2
    for rid, r in two.items():
        ref = one[rid]
        assert r["status"] == "completed" and r["world_size"] == 2 and ref["world_size"] == 1
        # the global batch, tokens, FLOPs and schedule do not depend on the number of workers
        assert (r["steps"], r["tokens"], r["flops"], r["batch_size"]) == (ref["steps"], ref["tokens"], ref["flops"],
                                                                        ref["batch_size"])
        assert [p["tokens"] for p in r["history"]] == [p["tokens"] for p in ref["history"]]
        assert [p["loss"] for p in r["history"]] == pytest.approx([p["loss"] for p in ref["history"]], abs=TOL)
        assert r["loss"] == pytest.approx(ref["loss"], abs=TOL)
        assert r["tokens_per_s_per_device"] == pytest.approx(r["tokens_per_s"] / 2)
        assert r["achieved_flops_per_s_per_device"] > 0

    # exactly one set of artifacts: one record per run, one config, nothing from Hydra or the workers
    assert _files(tmp_path) == sorted(["run/plan.json", "run/configs/train.yaml", "run/runs/.locks/runs.lock",
                                       *(f"run/runs/{rid}.json" for rid in two)])
    # rank 0 speaks for both: one announcement (with the probe's estimate), one summary
    out = proc.stdout
    assert out.count("plan: 2 runs") == 1 and out.count("expected training time") == 1, out
    assert out.count("trained 2 runs") == 1 and "cpu x 2" in out and proc.stderr == "", proc.stderr


@pytest.mark.slow
def test_torchrun_on_the_ff_train_entry_point(tmp_path, one_process):
    """torchrun starts the workers itself: each is a whole ff-train that composes alike, and rank 0 alone
    writes and speaks."""
    rd = _plan(tmp_path / "run", budgets=(1e9,))
    rid = rd.read_plan()["experiments"][0]["id"]
    proc = run_cli("torchrun", "--standalone", "--nproc_per_node=2", script("ff-train"), f"run_dir={rd.root}",
                   *TRAINER, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    r, ref = rd.read_run(rid), _curves(one_process)[rid]
    assert r["world_size"] == 2 and r["steps"] == ref["steps"]
    assert [p["loss"] for p in r["history"]] == pytest.approx([p["loss"] for p in ref["history"]], abs=TOL)
    assert _files(tmp_path) == sorted(["run/plan.json", "run/configs/train.yaml", "run/runs/.locks/runs.lock",
                                       f"run/runs/{rid}.json"])
    assert proc.stdout.count("trained 1 run") == 1, proc.stdout


KILL_AFTER_SAVES = '''
import os, signal
import flops_fit.training.checkpoints as checkpoints

_save = checkpoints.save
_saves = 0


def save(path, payload):
    global _saves
    _save(path, payload)
    _saves += 1
    if _saves == int(os.environ["FF_TEST_KILL_AFTER_SAVES"]):
        os.kill(os.getpid(), signal.SIGKILL)  # rank 0 dies right after its second checkpoint


checkpoints.save = save
'''


@pytest.mark.slow
def test_a_killed_two_worker_run_resumes_from_its_checkpoint(tmp_path, one_process):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_AFTER_SAVES)
    rd = _plan(tmp_path / "run", budgets=(1e9, 2e9))  # the reference's plan: one batch for both runs
    # the 2e9 run, trained first (largest first): 212 steps; checkpoints at 40 and 80, then killed
    rid = next(e["id"] for e in rd.read_plan()["experiments"] if e["budget"] == 2e9)
    env = {"PYTHONPATH": os.pathsep.join([str(hook), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "FF_TEST_KILL_AFTER_SAVES": "2"}
    args = [f"run_dir={rd.root}", *TRAINER, "trainer.checkpoint_every=40", "quiet=true"]
    proc = run_cli("ff-train", *args, "trainer.devices=2", cwd=tmp_path, env=env, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ff-train: error: training worker rank "), proc.stderr  # rank 0's SIGKILL, or rank 1's
    assert "resume" in last                                                        # lost peer
    assert not rd.run_path(rid).exists() and (rd.root / "checkpoints" / f"{rid}.pt").is_file()

    # the checkpoint holds the global state: the same run continues on one process or on two
    run_cli("ff-train", *args, cwd=tmp_path)
    r, ref = rd.read_run(rid), _curves(one_process)[rid]
    assert r["status"] == "completed" and r["resumed_from_step"] == 80 and r["steps"] == ref["steps"]
    assert [(s["start_step"], s["end_step"]) for s in r["segments"]] == [(0, 80), (80, ref["steps"])]
    assert [p["loss"] for p in r["history"]] == pytest.approx([p["loss"] for p in ref["history"]], abs=TOL)
    assert not (rd.root / "checkpoints" / f"{rid}.pt").exists()


# -- the pieces, without processes ------------------------------------------------------------------

def test_each_rank_takes_its_slice_of_the_global_batch():
    import torch

    x, y = torch.arange(8).reshape(4, 2), torch.arange(4)
    assert World().local((x, y)) == (x, y)
    a, b = World(0, 2).local((x, y)), World(1, 2).local({"x": x, "y": y})
    assert a[0].tolist() == [[0, 1], [2, 3]] and a[1].tolist() == [0, 1]
    assert b["x"].tolist() == [[4, 5], [6, 7]] and b["y"].tolist() == [2, 3]
    with pytest.raises(FlopsFitError, match="does not split evenly over 3 devices"):
        World(0, 3).local((x, y))
    assert [i for i in range(7) if World(1, 3).owns(i)] == [1, 4]


@pytest.mark.parametrize("settings, message", [
    ({"kind": "mock", "devices": 2}, "mock runs train on no device"),
    ({"kind": "local", "devices": 3, "batch_size": 8}, "must split evenly over the devices"),
    ({"kind": "local", "devices": 0}, "a positive number of devices"),
])
def test_bad_devices_are_one_line(settings, message):
    with pytest.raises(FlopsFitError, match=rf"^trainer\.devices=\S+ is not valid: .*{message}"):
        TrainerConfig.from_mapping(settings)


def test_several_devices_from_python_say_how_to_launch(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rd = _plan(tmp_path / "run", budgets=(1e9,))
    with pytest.raises(FlopsFitError, match=r"torchrun --nproc_per_node=2"):
        stages.train({"run_dir": str(rd.root), "trainer": {**LOCAL, "devices": 2}})
    assert not rd.runs_dir.exists()
    assert distributed.launches_workers({"devices": 2})
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: the workers exist already
    assert not distributed.launches_workers({"devices": 2})


def test_a_missing_plan_is_one_line_before_any_worker_starts(tmp_path):
    proc = run_cli("ff-train", f"run_dir={tmp_path / 'nowhere'}", *TRAINER, "trainer.devices=2", cwd=tmp_path,
                   check=False)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "no plan" in proc.stderr and not (tmp_path / "nowhere").exists()


def test_more_gpu_workers_than_gpus_is_one_line_before_any_starts(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(FlopsFitError, match=r"^trainer\.devices=4 but this machine has 2 GPUs"):
        distributed.check_devices({"devices": 4, "device": "cuda"})
    distributed.check_devices({"devices": 2, "device": "cuda"})
    distributed.check_devices({"devices": 4, "device": "cpu"})  # CPU workers: as many as asked
