"""Mid-run checkpoints: an interrupted run continues from its last checkpoint to the same result."""

import pathlib

import pytest
import torch

from flops_fit.errors import FlopsFitError
from flops_fit.training import checkpoints
from flops_fit.training.loop import train_run
from tests.test_loop import TRAINER, T, ToyText, experiment, gpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 40
EXP = experiment(8 * T * STEPS, id="ck")


class Interrupted(Exception):
    pass


class DiesAfter(ToyText):
    """ToyText whose process "dies" when asked for batch ``n + 1``."""

    def __init__(self, n):
        super().__init__()
        self.n, self.drawn = n, 0

    def train_batch(self, batch_size, generator):
        self.drawn += 1
        if self.drawn > self.n:
            raise Interrupted
        return super().train_batch(batch_size, generator)


def _run(tmp_path, data, **trainer):
    return train_run(EXP, model=gpt(), data=data, trainer=dict(TRAINER, **trainer), progress=False,
                     checkpoint_path=tmp_path / "ck.pt")


def test_interrupted_run_resumes_to_the_same_loss(tmp_path):
    whole = train_run(EXP, model=gpt(), data=ToyText(), trainer=TRAINER, progress=False)
    with pytest.raises(Interrupted):
        _run(tmp_path, DiesAfter(27), checkpoint_every=8)  # checkpoints at steps 8, 16, 24
    saved = checkpoints.load(tmp_path / "ck.pt")
    assert saved["format"] == "flops-fit-checkpoint" and saved["version"] == checkpoints.VERSION
    assert saved["state"]["step"] == 24 and len(saved["state"]["history"]) == 2  # evals at steps 10, 20

    resumed = _run(tmp_path, ToyText(), checkpoint_every=8)
    assert resumed["status"] == "completed" and resumed["resumed_from_step"] == 24
    assert resumed["loss"] == pytest.approx(whole["loss"], abs=1e-5)
    assert [p["loss"] for p in resumed["history"]] == pytest.approx([p["loss"] for p in whole["history"]], abs=1e-5)
    assert resumed["steps"] == whole["steps"] == STEPS and resumed["tokens"] == whole["tokens"]
    segs = resumed["segments"]
    assert [(s["start_step"], s["end_step"]) for s in segs] == [(0, 24), (24, STEPS)]
    assert all(s["wall_time_s"] > 0 for s in segs)
    assert resumed["wall_time_s"] == pytest.approx(sum(s["wall_time_s"] for s in segs))
    assert whole["resumed_from_step"] == 0 and len(whole["segments"]) == 1


def test_a_checkpoint_of_another_setup_is_not_resumed(tmp_path, capsys):
    with pytest.raises(Interrupted):
        _run(tmp_path, DiesAfter(20), checkpoint_every=8)
    r = _run(tmp_path, ToyText(), checkpoint_every=8, lr=5e-3)  # another learning rate: start over
    assert r["resumed_from_step"] == 0 and r["status"] == "completed"
    err = capsys.readouterr().err
    assert "different run setup" in err and "lr 0.01 -> 0.005" in err


def test_short_runs_write_no_checkpoint(tmp_path):
    """The defaults (every 15 minutes, no step interval) leave a run of seconds alone."""
    r = _run(tmp_path, ToyText())
    assert r["status"] == "completed" and not (tmp_path / "ck.pt").exists()


def test_a_corrupt_or_foreign_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "ck.pt"
    path.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(FlopsFitError, match=r"^checkpoint \S+ cannot be read \([^\n]*\); delete it"):
        checkpoints.load(path)
    torch.save({"format": "flops-fit-checkpoint", "version": checkpoints.VERSION + 1}, path)
    with pytest.raises(FlopsFitError, match=f"version {checkpoints.VERSION + 1}, newer"):
        checkpoints.load(path)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A save that dies half-way leaves the previous checkpoint, and no stray file."""
    path = tmp_path / "ck.pt"
    checkpoints.save(path, {"state": {"step": 1}})

    def dies(obj, f, *a, **k):  # torch.save gets the temporary file's path
        pathlib.Path(f).write_bytes(b"half")
        raise Interrupted

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(Interrupted):
        checkpoints.save(path, {"state": {"step": 2}})
    monkeypatch.undo()
    assert checkpoints.load(path)["state"]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


@pytest.mark.slow
def test_sigkilled_cli_run_resumes_to_the_uninterrupted_loss(tmp_path):
    """A real CPU run killed (SIGKILL) after its first checkpoint, then re-run, ends within 1e-5
    of the same run trained without interruption; its checkpoint is gone once it completes."""
    import json
    import os
    import shutil
    import signal
    import subprocess
    import time

    from tests.conftest import REPO, run_cli, script

    killed, whole = tmp_path / "killed", tmp_path / "whole"
    run_cli("ff-plan", f"run_dir={killed}", "dataset=synthetic_text", "model=gpt", "model.kwargs.n_layer=1",
            "model.kwargs.head_dim=8", "model.size_range=[16,16]", "dataset.seq_len=32", "dataset.eval_size=2048",
            "budgets.values=[1.5e10]", "grid.points=1", "quiet=true", cwd=REPO)
    whole.mkdir()
    shutil.copy(killed / "plan.json", whole / "plan.json")
    (run_id,) = [e["id"] for e in json.loads((killed / "plan.json").read_text())["experiments"]]
    train = ["trainer=local", "trainer.batch_size=8", "trainer.threads=1", "trainer.checkpoint_every=50"]

    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    proc = subprocess.Popen([script("ff-train"), f"run_dir={killed}", *train], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoints" / f"{run_id}.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (killed / "runs" / f"{run_id}.json").exists(), "killed too late: no mid-run state"

    run_cli("ff-train", f"run_dir={killed}", *train, cwd=REPO)
    run_cli("ff-train", f"run_dir={whole}", *train, cwd=REPO)
    a = json.loads((killed / "runs" / f"{run_id}.json").read_text())
    b = json.loads((whole / "runs" / f"{run_id}.json").read_text())
    assert a["status"] == b["status"] == "completed"
    assert a["resumed_from_step"] > 0 and b["resumed_from_step"] == 0
    assert a["resumed_from_step"] % 50 == 0 and len(a["segments"]) == 2
    assert abs(a["loss"] - b["loss"]) <= 1e-5, (a["loss"], b["loss"])
    assert a["steps"] == b["steps"] and len(a["history"]) == len(b["history"])
    assert not ckpt.exists()  # a completed run's checkpoint is deleted (keep_checkpoints=false)
