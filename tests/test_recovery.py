"""The fits recover a known ground truth from a default plan trained by the mock trainer."""

import shutil

import pytest

from flops_fit import stages
from flops_fit.analysis import run_analysis
from flops_fit.artifacts import RunDir
from flops_fit.models import ModelSpec
from flops_fit.planning import Grid, make_plan
from flops_fit.training.sweep import train_plan

TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
A_TRUE = 0.28 / (0.34 + 0.28)  # 0.4516


@pytest.fixture(scope="module")
def default_plan(tmp_path_factory):
    """The default grid (7 sizes, span 4, 20 tokens/param prior) over Chinchilla's budgets, GPT-shaped."""
    gpt = ModelSpec(target="flops_fit.examples.GPT", size_param="d_model", size_range=(16, 32768),
                    kwargs={"n_layer": 4, "head_dim": 16, "vocab_size": 512, "seq_len": 128})
    root = tmp_path_factory.mktemp("plan")
    RunDir(root).write_plan(make_plan(gpt, [6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21], grid=Grid()))
    return root


def _analysis(default_plan, tmp_path, seed, noise):
    run = tmp_path / f"seed{seed}"
    run.mkdir()
    shutil.copy(default_plan / "plan.json", run / "plan.json")
    train_plan(str(run), {"kind": "mock", "seed": seed, "noise": noise, "ground_truth": TRUTH}, quiet=True)
    runs, plan = stages.load_runs(RunDir(run))
    return run_analysis(runs, plan=plan, n_bootstrap=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_isoflop_recovers_a(default_plan, tmp_path, seed):
    fits = _analysis(default_plan, tmp_path, seed, noise=0.005)["fits"]
    assert fits["isoflop"]["status"] == "ok"
    assert abs(fits["isoflop"]["a"] - A_TRUE) < 0.03, fits["isoflop"]["a"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parametric_recovers_alpha_beta_at_low_noise(default_plan, tmp_path, seed):
    par = _analysis(default_plan, tmp_path, seed, noise=0.001)["fits"]["parametric"]
    assert abs(par["alpha"] - 0.34) < 0.03 and abs(par["beta"] - 0.28) < 0.03, (par["alpha"], par["beta"])
    assert abs(par["a"] - A_TRUE) < 0.03
