"""The config form of find_optimal gets exactly what the command line gets."""

import json

import pytest
import yaml

import flops_fit
from flops_fit.config.compose import compose
from tests.conftest import run_cli


def test_trainer_dict_builds_on_the_named_trainer_like_the_cli(tmp_path):
    """Drift bug: trainer={"kind": "local"} used to merge onto the mock node and train at the schema's
    lr 3e-3, while `ff-train trainer=local` trains at 8e-3."""
    cli = yaml.safe_load(run_cli("ff-train", "trainer=local", "--cfg", "job", cwd=tmp_path).stdout)["trainer"]
    api = compose("train", [], {"trainer": {"kind": "local"}})["trainer"]
    assert api == cli and api["lr"] == 8e-3
    gpu = compose("train", [], {"trainer": {"kind": "gpu", "lr": 1e-3}})["trainer"]
    assert gpu["dtype"] == "bfloat16" and gpu["lr"] == 1e-3  # the gpu option, then the dict's keys


@pytest.mark.slow
def test_real_run_through_find_optimal_trains_at_the_clis_learning_rate(tmp_path, one_torch_thread):
    flops_fit.find_optimal(run_dir=str(tmp_path / "r"), model="gpt", dataset="synthetic_text", budgets=[3e9],
                           trainer={"kind": "local", "progress": False}, train_overrides=["limit=1"], plot=False,
                           bootstrap=0)
    records = [json.loads(p.read_text()) for p in (tmp_path / "r" / "runs").glob("*.json")]
    assert [r["lr"] for r in records] == [8e-3]


@pytest.mark.slow
def test_options_reach_the_stage_that_owns_them(tmp_path):
    flops_fit.find_optimal(run_dir=str(tmp_path / "r"), model="gpt", dataset="synthetic_text", budgets="tiny",
                           trainer="mock", points=5, noise=0.0, bootstrap=10, plot=False)
    plan = json.loads((tmp_path / "r" / "plan.json").read_text())
    assert plan["grid"]["points"] == 5
    train_cfg = yaml.safe_load((tmp_path / "r" / "configs" / "train.yaml").read_text())
    assert train_cfg["trainer"]["noise"] == 0.0
    analysis = json.loads((tmp_path / "r" / "analysis.json").read_text())
    assert analysis["bootstrap"]["n"] == 10
