"""Many runs on a cluster: ff-train -m through hydra-submitit-launcher. The local executor
(hydra/launcher=submitit_local) is the SLURM path with the queue left out: each shard is a
separately started job that unpickles the task, composes its config and trains into the shared
run directory."""

import json
from pathlib import Path

import pytest

from flops_fit.config.compose import config_dir
from flops_fit.training.workload import run_flops, shard_runs
from tests.conftest import run_cli
from tests.test_sweep import CHINCHILLA, GPT, _plan, slow_mock  # noqa: F401  (slow_mock: a fixture)

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def _submit(rd, tmp_path, env, shards: int = 2):
    return run_cli("ff-train", "-m", f"run_dir={rd.root}", "trainer=mock", "hydra/launcher=submitit_local",
                   f"shard=range({shards})", f"num_shards={shards}", cwd=tmp_path, env=env, timeout=300)


def _job_logs(rd) -> list[str]:
    return [p.read_text() for p in sorted((rd.root / ".multirun" / ".submitit").glob("*/*_log.out"))]


@pytest.mark.slow
def test_submitit_jobs_train_every_run_once_and_a_resubmission_only_the_unfinished(tmp_path, slow_mock):
    rd = _plan(tmp_path / "run", spec=GPT, budgets=CHINCHILLA[:3], points=4)
    experiments = rd.read_plan()["experiments"]
    ids = sorted(e["id"] for e in experiments)
    env = slow_mock(delay=0.0)

    _submit(rd, tmp_path, env)
    trained = slow_mock.log.read_text().split()
    assert sorted(trained) == ids  # every run, none twice
    assert all(r["status"] == "completed" for r in rd.iter_runs()) and len(list(rd.iter_runs())) == len(ids)
    logs = _job_logs(rd)
    assert len(logs) == 2 and all("submitit INFO" in log and "trained" in log for log in logs)
    assert not any("throughput probe" in log for log in logs)  # mock runs take no time to estimate
    # each job trained its FLOP-balanced shard
    for k in range(2):
        shard = shard_runs(experiments, k, 2)
        assert any(f"shard {k}/2: {len(shard)} to train" in log for log in logs), logs

    # jobs that died part-way (their records never written): the same submission trains only those
    lost = ids[1::3]
    for rid in lost:
        rd.run_path(rid).unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in rd.runs_dir.glob("*.json")}
    slow_mock.log.unlink()
    _submit(rd, tmp_path, env)
    assert sorted(slow_mock.log.read_text().split()) == lost
    assert {p.name: p.stat().st_mtime_ns for p in rd.runs_dir.glob("*.json") if p.name in kept} == kept
    assert len(list(rd.iter_runs())) == len(ids)


def test_shards_are_balanced_by_flops_and_start_with_the_largest_runs():
    # a plan whose FLOPs sit in a few big runs: an even count would give one job almost everything
    exps = [{"id": f"r{i}", "params": 1, "tokens": 1, "flops": f} for i, f in
            enumerate([100, 1, 1, 1, 1, 1, 90, 1, 1, 1, 80, 1])]
    shards = [shard_runs(exps, k, 3) for k in range(3)]
    assert sorted(e["id"] for s in shards for e in s) == sorted(e["id"] for e in exps)  # a partition
    loads = [sum(run_flops(e) for e in s) for s in shards]
    assert max(loads) - min(loads) <= 12 and max(loads) == 100  # the longest run sets the pace, nothing else
    for s in shards:
        flops = [run_flops(e) for e in s]
        assert flops == sorted(flops, reverse=True)
    assert shard_runs(exps, 0, 1)[0]["id"] == "r0" and len(shard_runs(exps, 0, 1)) == len(exps)
    # the split depends on the plan only, so a re-submitted job gets the same runs
    assert [shard_runs(exps, k, 3) for k in range(3)] == shards


def _launcher(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from flops_fit.config.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        return instantiate(cfg.hydra.launcher)


def test_the_slurm_preset_takes_the_cluster_settings_and_one_gpu_per_device():
    launcher = _launcher(["hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4", "run_dir=/shared/x",
                          "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=60",
                          "hydra.launcher.array_parallelism=4"])
    assert type(launcher).__name__ == "SlurmLauncher"
    p = launcher.params
    assert (p["partition"], p["gpus_per_task"], p["timeout_min"], p["array_parallelism"]) == ("gpu", 4, 60, 4)
    assert p["max_num_timeout"] >= 1  # a job that reaches its time limit is requeued and resumes
    assert Path(p["submitit_folder"]).parts[:3] == ("/", "shared", "x")


def test_the_workstation_preset_is_joblib():
    launcher = _launcher(["hydra/launcher=workstation"])
    assert type(launcher).__name__ == "JoblibLauncher"
