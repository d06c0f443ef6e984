import json
import time

import numpy as np
import pytest

from flops_fit.artifacts import RunDir
from flops_fit.errors import FlopsFitError
from flops_fit.planning import Grid, make_plan
from flops_fit.training.mock import GroundTruth, train_mock
from flops_fit.training.sweep import train_plan
from tests.test_planning import USER_MODEL

MOCK = {"kind": "mock", "seed": 0, "noise": 0.0, "history_points": 10,
        "ground_truth": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}}


@pytest.fixture
def planned(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.write_plan(make_plan(USER_MODEL, [1e11, 1e12], grid=Grid(points=5)))
    return rd


def test_mock_loss_is_the_closed_form_and_history_ends_at_it():
    truth = GroundTruth(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    exp = {"id": "x", "params": 1e6, "tokens": 2e7, "flops_per_token": 6e6}
    rec = train_mock(exp, truth=truth, noise=0.0, history_points=5)
    assert rec["loss"] == pytest.approx(1.69 + 406.4 / 1e6**0.34 + 410.7 / 2e7**0.28)
    assert rec["history"][-1]["tokens"] == 2e7 and rec["history"][-1]["loss"] == rec["loss"]
    losses = [h["loss"] for h in rec["history"]]
    assert losses == sorted(losses, reverse=True)  # loss falls along the run
    assert rec["history"][0]["flops"] == pytest.approx(rec["history"][0]["tokens"] * 6e6)


def test_mock_noise_is_seeded_per_run():
    truth = GroundTruth()
    exp = {"id": "a", "params": 1e6, "tokens": 2e7}
    one = train_mock(exp, truth=truth, noise=0.01, seed=3)["loss"]
    assert train_mock(exp, truth=truth, noise=0.01, seed=3)["loss"] == one
    assert train_mock(exp, truth=truth, noise=0.01, seed=4)["loss"] != one
    assert train_mock({**exp, "id": "b"}, truth=truth, noise=0.01, seed=3)["loss"] != one


def test_train_writes_one_record_per_run_and_skips_completed(planned):
    counts = train_plan(str(planned.root), MOCK, quiet=True)
    plan = planned.read_plan()
    assert counts["completed"] == len(plan["experiments"])
    for e in plan["experiments"]:
        rec = planned.read_run(e["id"])
        assert rec["status"] == "completed" and rec["params"] == e["params"] and rec["tokens"] == e["tokens"]
        assert {"tokens", "flops", "loss"} <= set(rec["history"][0])
    mtimes = {p: p.stat().st_mtime_ns for p in planned.runs_dir.glob("*.json")}
    again = train_plan(str(planned.root), MOCK, quiet=True)
    assert again["completed"] == 0 and again["skipped_completed"] == len(plan["experiments"])
    assert mtimes == {p: p.stat().st_mtime_ns for p in planned.runs_dir.glob("*.json")}


def test_shards_partition_the_plan(planned):
    n = len(planned.read_plan()["experiments"])
    done = [train_plan(str(planned.root), MOCK, shard=k, num_shards=3, quiet=True)["completed"] for k in range(3)]
    assert sum(done) == n and all(d > 0 for d in done)
    assert len(list(planned.runs_dir.glob("*.json"))) == n


def test_failed_runs_are_kept_and_retried_on_request(planned, monkeypatch):
    import flops_fit.training.sweep as stage

    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(stage, "train_mock", boom)
    counts = train_plan(str(planned.root), MOCK, quiet=True)
    assert counts["failed"] == len(planned.read_plan()["experiments"])
    rec = next(planned.iter_runs())
    assert rec["status"] == "failed" and "out of memory" in rec["error"]
    monkeypatch.undo()
    assert train_plan(str(planned.root), MOCK, quiet=True)["skipped_failed"] == counts["failed"]
    assert train_plan(str(planned.root), MOCK, retry_failed=True, quiet=True)["completed"] == counts["failed"]


@pytest.mark.parametrize("kwargs, message", [
    ({"shard": 3, "num_shards": 3}, "shard=3 must be in 0..2"),
    ({"num_shards": 0}, "num_shards=0 must be at least 1"),
])
def test_bad_shards(planned, kwargs, message):
    with pytest.raises(FlopsFitError, match=message):
        train_plan(str(planned.root), MOCK, **kwargs)


def test_bad_ground_truth(planned):
    with pytest.raises(FlopsFitError, match="trainer.ground_truth.alpha"):
        train_plan(str(planned.root), {**MOCK, "ground_truth": {"alpha": -1}})


def test_missing_plan(tmp_path):
    with pytest.raises(FlopsFitError, match="no plan at"):
        train_plan(str(tmp_path / "nowhere"), MOCK)
    assert not (tmp_path / "nowhere").exists()
