"""ff-status: every planned run by state, with the progress of running runs read from their heartbeats."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from flops_fit import stages
from flops_fit.artifacts import RunDir, write_json
from flops_fit.errors import FlopsFitError
from flops_fit.training import status as status_mod
from flops_fit.training.status import checkpoint_path, format_status, heartbeat_path, sweep_status
from tests.conftest import REPO

HERE = socket.gethostname()


def _exp(i: int) -> dict:
    return {"id": f"r{i}", "budget": 1e18, "size": 64 * (i + 1), "params": 1e6 * (i + 1), "tokens": 1e9,
            "flops": 6e15 * (i + 1)}


def _record(rid: str, status: str, **kw) -> dict:
    return {"id": rid, "status": status, "params": 1, "tokens": 1, "flops": 1, "loss": kw.pop("loss", None),
            "history": [], **kw}


def _beat(rd: RunDir, rid: str, *, step: int, host: str = HERE, pid: int | None = None, age: float = 1.0,
          checkpoint_step=None):
    write_json(heartbeat_path(rd, rid), {
        "id": rid, "phase": "training", "step": step, "steps": 100, "tokens": step * 1e7, "planned_tokens": 1e9,
        "loss": 3.2, "tokens_per_s": 2e6, "elapsed_s": 5.0, "checkpoint_step": checkpoint_step, "world_size": 2,
        "host": host, "pid": os.getpid() if pid is None else pid, "updated_unix": time.time() - age})


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def sweep(tmp_path) -> RunDir:
    """Nine planned runs, one in each situation ff-status tells apart."""
    rd = RunDir(tmp_path / "run")
    rd.write_plan({"experiments": [_exp(i) for i in range(9)]})
    rd.write_run(_record("r0", "completed", loss=2.5, wall_time_s=75.0))
    rd.write_run(_record("r1", "failed", error="RuntimeError: CUDA out of memory"))
    rd.write_run(_record("r2", "diverged", reason="training loss 9.1 at step 40"))
    _beat(rd, "r3", step=50)  # this process: alive
    _beat(rd, "r4", step=20, host="node-7", age=30)  # another host, fresh
    _beat(rd, "r5", step=70, host="node-7", age=3600, checkpoint_step=60)  # another host, silent for an hour
    checkpoint_path(rd, "r5").parent.mkdir(parents=True, exist_ok=True)
    checkpoint_path(rd, "r5").write_bytes(b"ckpt")
    os.utime(checkpoint_path(rd, "r5"), (time.time() - 4000, time.time() - 4000))  # before that heartbeat
    _beat(rd, "r6", step=10, pid=_dead_pid())  # this host, its process is gone
    checkpoint_path(rd, "r7").write_bytes(b"ckpt")  # a checkpoint and no heartbeat
    return rd  # r8: not started


def test_every_run_gets_its_state_and_running_runs_their_progress(sweep):
    st = sweep_status(sweep.root)
    assert st["counts"] == {"completed": 1, "failed": 1, "diverged": 1, "running": 2, "pending": 4}
    by_id = {r["id"]: r for r in st["runs"]}
    assert [by_id[f"r{i}"]["state"] for i in range(9)] == ["completed", "failed", "diverged", "running", "running",
                                                          "pending", "pending", "pending", "pending"]
    r3 = by_id["r3"]
    assert (r3["step"], r3["steps"], r3["world_size"]) == (50, 100, 2)
    assert r3["eta_s"] == pytest.approx((1e9 - 5e8) / 2e6)
    assert by_id["r5"]["checkpoint"] and by_id["r5"]["checkpoint_step"] == 60
    assert not by_id["r6"]["checkpoint"] and by_id["r7"]["checkpoint"] and not by_id["r8"]["checkpoint"]

    text = format_status(st)
    lines = {line.split()[0]: line for line in text.splitlines()[1:] if line.startswith("  ")}
    assert text.splitlines()[0].endswith("9 runs planned: 1 completed, 1 failed, 1 diverged, 2 running, 4 pending")
    assert "step 50/100 (50%)" in lines["r3"] and "about 4 min 10 s left" in lines["r3"] and "x2" in lines["r3"]
    assert "on node-7" in lines["r4"]
    assert "interrupted at step 70/100" in lines["r5"] and "checkpoint at step 60" in lines["r5"]
    assert "interrupted at step 10/100" in lines["r6"] and "restarts from step 0" in lines["r6"]
    assert "resumes from its checkpoint" in lines["r7"] and "not started" in lines["r8"]
    assert "CUDA out of memory" in lines["r1"] and "training loss 9.1" in lines["r2"] and "loss 2.5000" in lines["r0"]
    # the sections, in the order a person looks for them
    heads = [line for line in text.splitlines() if line.endswith(":")]
    assert heads == ["running:", "pending:", "failed:", "diverged:", "completed:"]


def test_a_checkpoint_newer_than_the_last_heartbeat_is_not_given_its_step(sweep):
    os.utime(checkpoint_path(sweep, "r5"))  # saved just now, after the heartbeat of an hour ago
    r5 = next(r for r in sweep_status(sweep.root)["runs"] if r["id"] == "r5")
    assert r5["checkpoint_step"] is None and "resumes from its last checkpoint" in format_status(
        {"run_dir": "x", "planned": 1, "counts": dict.fromkeys(status_mod.STATES, 0), "runs": [r5]})


def test_long_lists_are_cut_unless_all(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.write_plan({"experiments": [_exp(i) for i in range(30)]})
    st = sweep_status(rd.root)
    assert "... and 10 more (all=true lists every run)" in format_status(st)
    assert len(format_status(st, show_all=True).splitlines()) == 1 + 1 + 30


def _status_cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO),
                                                                      os.environ.get("PYTHONPATH", "")]))}
    return subprocess.run([sys.executable, "-m", "flops_fit.cli.status", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_ff_status_through_the_cli(sweep, tmp_path):
    proc = _status_cli(f"run_dir={sweep.root}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 running" in proc.stdout and "step 50/100" in proc.stdout
    proc = _status_cli(f"run_dir={sweep.root}", "json=true", cwd=tmp_path)
    data = json.loads(proc.stdout)
    assert data["counts"]["pending"] == 4 and len(data["runs"]) == 9
    # reads only: no Hydra folder, no config recorded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and not (sweep.root / "configs").exists()
    bad = _status_cli(f"run_dir={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "no plan" in bad.stderr


def test_bad_settings_are_one_line():
    with pytest.raises(FlopsFitError, match=r"^stale_after=0 must be a number of seconds > 0"):
        stages.status({"run_dir": "x", "stale_after": 0})


def test_ff_status_is_installed_and_loads_no_torch(sweep):
    assert 'ff-status = "flops_fit.cli.status:main"' in (REPO / "pyproject.toml").read_text()
    code = (f"import sys\nfrom flops_fit import stages\nstages.status({{'run_dir': {str(sweep.root)!r}}})\n"
            f"sys.exit(3 if 'torch' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(REPO / "src"), "PATH": ""},
                          capture_output=True, text=True)
    assert proc.returncode == 0, "ff-status imported torch" if proc.returncode == 3 else proc.stderr


# -- the loop writes the heartbeats ff-status reads ----------------------------------------------------

@pytest.mark.usefixtures("one_torch_thread")
def test_a_training_run_keeps_a_heartbeat_and_the_sweep_removes_it(tmp_path, monkeypatch):
    from flops_fit.training.sweep import RealTrainer, train_plan
    from tests.test_sweep import LOCAL, _plan

    monkeypatch.setattr(status_mod, "INTERVAL_S", 0.0)  # a heartbeat at every step
    rd = _plan(tmp_path / "run", budgets=(1e9,), min_steps=0)  # trainer.batch_size's 8 examples a step
    rid = rd.read_plan()["experiments"][0]["id"]
    seen = []
    train = RealTrainer.train

    def spy_train(self, exp):  # look at the run directory from inside the running loop
        draw = self.data.train_batch

        def train_batch(batch_size, generator):
            if len(seen) < 3:
                seen.append(sweep_status(rd.root))
            return draw(batch_size, generator)

        monkeypatch.setattr(self.data, "train_batch", train_batch)
        return train(self, exp)

    monkeypatch.setattr(RealTrainer, "train", spy_train)
    train_plan(str(rd.root), {**LOCAL, "checkpoint_every": 1}, quiet=True)
    # first batch: the heartbeat written at the start; then one per step, with the checkpoint each step saves
    running = [next(r for r in s["runs"] if r["id"] == rid) for s in seen]
    assert [r["state"] for r in running] == ["running"] * 3
    assert [r["step"] for r in running] == [0, 1, 2] and [r["checkpoint_step"] for r in running] == [None, 1, 2]
    assert running[2]["tokens"] == 2 * 8 * 32 and running[2]["steps"] > 2 and running[2]["world_size"] == 1
    assert running[2]["tokens_per_s"] > 0 and running[2]["eta_s"] > 0
    # once the record is written the heartbeat is gone, and ff-status says completed
    assert not heartbeat_path(rd, rid).exists()
    assert sweep_status(rd.root)["counts"]["completed"] == 1
