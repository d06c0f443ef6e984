"""ff-train's sweep: checkpoints kept or removed, plans the runs were not trained with refused,
settings checked before anything is built, and sweeps that survive kills and concurrent trainers."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flops_fit import stages
from flops_fit.analysis import run_analysis
from flops_fit.artifacts import RunDir
from flops_fit.errors import FlopsFitError
from flops_fit.models import ModelSpec
from flops_fit.planning import Grid, make_plan
from flops_fit.training.sweep import train_plan
from tests.conftest import REPO, run_cli, script

TINY_GPT = ModelSpec(target="flops_fit.examples.GPT", size_param="d_model", size_range=(16, 32),
                     kwargs={"n_layer": 1, "head_dim": 8, "vocab_size": 256, "seq_len": 32})
SYNTHETIC = {"kind": "text", "source": "synthetic", "vocab_size": 256, "seq_len": 32, "eval_size": 1024}
LOCAL = {"kind": "local", "batch_size": 8, "threads": 1, "progress": False}
MOCK = {"kind": "mock", "seed": 0}
# a GPT-shaped default grid over Chinchilla's budgets: ~60 mock runs that every approach can fit
GPT = ModelSpec(target="flops_fit.examples.GPT", size_param="d_model", size_range=(16, 32768),
                kwargs={"n_layer": 4, "head_dim": 16, "vocab_size": 512, "seq_len": 128})
CHINCHILLA = [6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21]


def _plan(root: Path, spec=TINY_GPT, budgets=(3e9,), dataset=SYNTHETIC, **kw) -> RunDir:
    rd = RunDir(root)
    grid = Grid(points=kw.pop("points", 2), **({"min_steps": kw.pop("min_steps")} if "min_steps" in kw else {}))
    rd.write_plan(make_plan(spec, list(budgets), grid=grid, dataset=dict(dataset), progress=False, **kw))
    return rd


# -- checkpoints of completed runs ------------------------------------------------------------------

@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("keep", [False, True])
def test_completed_runs_checkpoints_are_deleted_unless_kept(tmp_path, keep):
    rd = _plan(tmp_path / "run")
    counts = train_plan(str(rd.root), {**LOCAL, "checkpoint_every": 30, "keep_checkpoints": keep}, quiet=True)
    assert counts["completed"] == len(rd.read_plan()["experiments"]) == 2
    kept = sorted(p.stem for p in (rd.root / "checkpoints").glob("*.pt"))
    assert kept == (sorted(e["id"] for e in rd.read_plan()["experiments"]) if keep else [])


# -- refusing a plan the completed runs were not trained with -------------------------------------

@pytest.mark.parametrize("change, was, now", [
    ({"spec": ModelSpec(target="flops_fit.examples.GPT", size_param="d_model", size_range=(16, 32768),
                        kwargs={"n_layer": 6, "head_dim": 16, "vocab_size": 512, "seq_len": 128})},
     "model.kwargs.n_layer=4", "model.kwargs.n_layer=6"),
    ({"dataset": {**SYNTHETIC, "seq_len": 64}}, "dataset.seq_len=32", "dataset.seq_len=64"),
    ({"flops": "6nd_nonembedding"}, "flops=6nd", "flops=6nd_nonembedding"),
])
def test_a_plan_unlike_the_completed_runs_is_refused(tmp_path, change, was, now):
    rd = _plan(tmp_path / "run", spec=GPT, budgets=[1e19], dataset=SYNTHETIC, points=3)
    train_plan(str(rd.root), MOCK, quiet=True)
    before = {p.name: p.read_bytes() for p in rd.runs_dir.glob("*.json")}
    kw = {"spec": GPT, "dataset": SYNTHETIC, **change}
    _plan(rd.root, kw.pop("spec"), [1e19, 1e20], kw.pop("dataset"), points=3, **kw)  # a new plan, same run_dir
    with pytest.raises(FlopsFitError) as e:
        train_plan(str(rd.root), MOCK, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and f"was trained with {was} but" in msg and f"plans {now}" in msg
    assert "allow_mismatch=true" in msg
    assert before == {p.name: p.read_bytes() for p in rd.runs_dir.glob("*.json")}  # nothing trained
    counts = train_plan(str(rd.root), MOCK, quiet=True, allow_mismatch=True)
    assert counts["completed"] > 0


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.slow
def test_completed_real_runs_refuse_other_trainer_settings_but_not_other_machinery(tmp_path):
    rd = _plan(tmp_path / "run", budgets=(3e9, 6e9))
    train_plan(str(rd.root), LOCAL, quiet=True, limit=1)
    (done,) = list(rd.iter_runs())
    assert done["trainer_settings"]["lr"] == 8e-3
    before = {p.name: p.read_bytes() for p in rd.runs_dir.glob("*.json")}
    for key, value in [("lr", 4e-3), ("warmup_frac", 0.1), ("dtype", "bfloat16"), ("seed", 1)]:
        with pytest.raises(FlopsFitError) as e:
            train_plan(str(rd.root), {**LOCAL, key: value}, quiet=True, limit=1)
        msg = str(e.value)
        shown = "bfloat16" if key == "dtype" else value
        assert "\n" not in msg and f"trainer.{key}=" in msg and f"has trainer.{key}={shown}" in msg, msg
        assert before == {p.name: p.read_bytes() for p in rd.runs_dir.glob("*.json")}  # nothing trained
    # where and how fast runs train is not a mismatch; allow_mismatch mixes on purpose
    counts = train_plan(str(rd.root), {**LOCAL, "threads": 2, "checkpoint_every": 7, "pack": 1}, quiet=True, limit=1)
    assert counts["completed"] == 1
    assert train_plan(str(rd.root), {**LOCAL, "lr": 4e-3}, quiet=True, allow_mismatch=True, limit=1)["completed"] == 1


@pytest.mark.usefixtures("one_torch_thread")
def test_a_sweep_under_min_steps_resumes_but_refuses_runs_trained_with_another_batch(tmp_path):
    rd = _plan(tmp_path / "run", budgets=(1e9, 2e9))  # 53 and 106 steps at trainer.batch_size=8
    short, long = sorted(rd.read_plan()["experiments"], key=lambda e: e["tokens"])
    assert short["max_batch_size"] == long["max_batch_size"] == 4  # one batch: the sweep's shortest run's
    assert train_plan(str(rd.root), LOCAL, quiet=True, limit=1)["completed"] == 1  # the longer run, first
    assert train_plan(str(rd.root), LOCAL, quiet=True)["completed"] == 1  # resumed under the same rule
    runs = {r["id"]: r for r in rd.iter_runs()}
    assert (runs[short["id"]]["batch_size"], runs[short["id"]]["steps"], runs[short["id"]]["warmup"]) == (4, 106, 5)
    assert (runs[long["id"]]["batch_size"], runs[long["id"]]["steps"]) == (4, 212)
    assert {r["trainer_settings"]["batch_size"] for r in runs.values()} == {8}

    _plan(rd.root, budgets=(1e9, 2e9), min_steps=0)  # the rule off: the short run would train at batch 8
    with pytest.raises(FlopsFitError) as e:
        train_plan(str(rd.root), LOCAL, quiet=True)
    assert "\n" not in str(e.value) and ".json was trained with batch_size=4 but" in str(e.value)
    assert "plans batch_size=8" in str(e.value)
    _plan(rd.root, budgets=(1e9, 2e9), min_steps=70)  # another rule that gives the same batches is no mismatch
    assert train_plan(str(rd.root), LOCAL, quiet=True)["skipped_completed"] == 2


def test_a_wsd_plan_with_another_cooldown_is_refused(tmp_path):
    rd = _plan(tmp_path / "run", spec=GPT, budgets=[1e19, 3e19], points=3, schedule="wsd", cooldown_frac=0.2)
    train_plan(str(rd.root), MOCK, quiet=True)
    _plan(rd.root, GPT, [1e19, 3e19], points=3, schedule="wsd", cooldown_frac=0.1)
    with pytest.raises(FlopsFitError, match=r"was trained with cooldown_frac=0.2 but .* plans cooldown_frac=0.1"):
        train_plan(str(rd.root), MOCK, quiet=True)
    _plan(rd.root, GPT, [1e19, 3e19], points=3, schedule="wsd", cooldown_frac=0.2)  # back as it was
    assert train_plan(str(rd.root), MOCK, quiet=True)["skipped_completed"] == len(rd.read_plan()["experiments"])


def test_the_same_plan_again_and_a_relocated_dataset_are_not_mismatches(tmp_path):
    rd = _plan(tmp_path / "run", spec=GPT, budgets=[1e19], points=3)
    train_plan(str(rd.root), MOCK, quiet=True)
    _plan(rd.root, GPT, [1e19, 1e20], points=3)  # more budgets, same model, data and FLOPs
    assert train_plan(str(rd.root), MOCK, quiet=True, data_path="/elsewhere")["completed"] > 0


def test_ff_train_refuses_a_mismatch_in_one_line(tmp_path):
    rd = _plan(tmp_path / "run", spec=GPT, budgets=[1e19], points=3)
    run_cli("ff-train", f"run_dir={rd.root}", "trainer=mock", cwd=tmp_path)
    _plan(rd.root, GPT, [1e19], points=3, flops="chinchilla")
    proc = run_cli("ff-train", f"run_dir={rd.root}", "trainer=mock", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (line,) = [l for l in proc.stderr.splitlines() if l.strip()]
    assert "flops=6nd" in line and "flops=chinchilla" in line and "allow_mismatch=true" in line


# -- settings checked before anything is built ------------------------------------------------------

@pytest.mark.parametrize("key, value", [("lr", -1), ("batch_size", 0), ("warmup_frac", 2)])
def test_bad_settings_stop_before_data_and_models_are_built(tmp_path, key, value):
    # the dataset does not exist: reaching it would fail with another message
    rd = _plan(tmp_path / "run", dataset={"kind": "text", "source": "synthetic", "vocab_size": 256, "seq_len": 32})
    plan = rd.read_plan()
    plan["dataset"] = {"kind": "text", "source": "text_files", "path": str(tmp_path / "missing.txt")}
    rd.write_plan(plan)
    with pytest.raises(FlopsFitError, match=rf"^trainer\.{key}={value} is not valid"):
        train_plan(str(rd.root), {**LOCAL, key: value}, quiet=True)
    assert not rd.runs_dir.exists()
    proc = run_cli("ff-train", f"run_dir={rd.root}", "trainer=local", f"trainer.{key}={value}", cwd=tmp_path,
                   check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"trainer.{key}={value}" in proc.stderr.strip().splitlines()[-1]
    assert not rd.runs_dir.exists()


# -- kills and concurrent trainers --------------------------------------------------------------------

# Mock runs are instant. Slowed down (and logged) inside the ff-train processes, a sweep lasts long
# enough to be killed mid-way or to overlap with another trainer.
SLOW_MOCK = '''
import os, time
import flops_fit.training.mock as mock

_train_mock = mock.train_mock


def train_mock(experiment, **kwargs):
    time.sleep(float(os.environ["FF_TEST_MOCK_DELAY"]))
    with open(os.environ["FF_TEST_TRAIN_LOG"], "a") as log:
        log.write(experiment["id"] + "\\n")
    return _train_mock(experiment, **kwargs)


mock.train_mock = train_mock
'''


@pytest.fixture
def slow_mock(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_MOCK)
    log = tmp_path / "trained.log"

    def env(delay: float) -> dict:
        path = os.pathsep.join(filter(None, [str(hook), str(REPO), os.environ.get("PYTHONPATH", "")]))
        return {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore", "FF_TEST_MOCK_DELAY": str(delay),
                "FF_TEST_TRAIN_LOG": str(log)}

    env.log = log
    return env


def _whole_records(rd: RunDir, killed: bool = False) -> list[dict]:
    """Every record in runs/ parses. Only a process killed mid-write may leave a temporary file, and
    then a hidden one that no reader looks at (the record itself is whole or absent)."""
    names = [p.name for p in rd.runs_dir.iterdir() if p.is_file()]
    stray = [n for n in names if not n.endswith(".json")]
    assert all(n.startswith(".") and n.endswith(".tmp") for n in stray) if killed else not stray, stray
    return [json.loads((rd.runs_dir / n).read_text()) for n in names if n.endswith(".json")]


@pytest.mark.slow
def test_four_shards_and_a_duplicate_train_every_run_once(tmp_path, slow_mock):
    rd = _plan(tmp_path / "run", spec=GPT, budgets=CHINCHILLA, points=7)
    ids = sorted(e["id"] for e in rd.read_plan()["experiments"])
    env = slow_mock(delay=0.1)
    shards = subprocess.Popen([script("ff-train"), "-m", f"run_dir={rd.root}", "trainer=mock", "hydra/launcher=joblib",
                               "hydra.launcher.n_jobs=4", "shard=0,1,2,3", "num_shards=4"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # start the duplicate once the shards are training (their launch takes seconds on a busy machine)
    deadline = time.monotonic() + 240
    while not list(rd.runs_dir.glob("*.json")) and time.monotonic() < deadline and shards.poll() is None:
        time.sleep(0.05)
    duplicate = subprocess.Popen([script("ff-train"), f"run_dir={rd.root}", "trainer=mock"], cwd=tmp_path, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=300) for p in (shards, duplicate)]
    assert shards.returncode == 0 and duplicate.returncode == 0, outs
    trained = slow_mock.log.read_text().split()
    assert sorted(trained) == ids  # every run trained, none twice
    records = _whole_records(rd)
    assert sorted(r["id"] for r in records) == ids and all(r["status"] == "completed" for r in records)
    # they did overlap: the duplicate found runs that the shards had trained or were training
    dup = outs[1][0]
    assert f"trained {len(ids)} runs" not in dup and ("already completed" in dup or "another process" in dup), dup


@pytest.mark.slow
def test_a_mock_sweep_killed_at_random_points_gives_the_uninterrupted_fits(tmp_path, slow_mock):
    def fits(rd: RunDir) -> dict:
        runs, plan = stages.load_runs(rd)
        return run_analysis(runs, plan=plan, n_bootstrap=20, seed=0, progress=False)["fits"]

    whole = _plan(tmp_path / "whole", spec=GPT, budgets=CHINCHILLA, points=7)
    train_plan(str(whole.root), MOCK, quiet=True)
    killed = RunDir(tmp_path / "killed")
    killed.root.mkdir()
    shutil.copy(whole.plan_path, killed.plan_path)
    n = len(whole.read_plan()["experiments"])

    rng, kills = random.Random(0), 0
    env = slow_mock(delay=0.03)
    while kills < 4:
        done = len(list(killed.runs_dir.glob("*.json"))) if killed.runs_dir.is_dir() else 0
        proc = subprocess.Popen([script("ff-train"), f"run_dir={killed.root}", "trainer=mock"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and len(list(killed.runs_dir.glob("*.json"))) <= done:
            time.sleep(0.005)  # wait until this process is training ...
        time.sleep(rng.uniform(0, 0.3))  # ... then kill it at a random point
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert len(_whole_records(killed, killed=True)) < n, "the sweep ended before it was killed"
    run_cli("ff-train", f"run_dir={killed.root}", "trainer=mock", cwd=tmp_path)
    assert len(_whole_records(killed, killed=True)) == n
    assert fits(killed) == fits(whole)
