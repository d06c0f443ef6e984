"""A plan shifted off the optimum is flagged by budget; refine_from re-centres it."""

import json

import pytest

from tests.conftest import REPO, run_cli

TRUTH = ["trainer.ground_truth.E=1.69", "trainer.ground_truth.A=406.4", "trainer.ground_truth.B=410.7",
         "trainer.ground_truth.alpha=0.34", "trainer.ground_truth.beta=0.28", "trainer.noise=0.002"]
MODEL = ["model=gpt", "dataset=synthetic_text", "model.size_range=[16,32768]", "budgets=chinchilla"]


def _edge_budgets(analysis):
    return {d["budget"] for d in analysis["diagnostics"] if d["code"] == "isoflop_edge"}


@pytest.mark.slow
def test_edge_minimum_is_named_and_refine_from_moves_the_grid(tmp_path):
    shifted, refined = tmp_path / "shifted", tmp_path / "refined"
    # a prior of 2000 tokens per parameter puts every grid on much too small models
    run_cli("ff-plan", f"run_dir={shifted}", *MODEL, "grid.tokens_per_param=2000", "quiet=true", cwd=REPO)
    run_cli("ff-train", f"run_dir={shifted}", *TRUTH, cwd=REPO)
    out = run_cli("ff-analyze", f"run_dir={shifted}", "bootstrap=0", cwd=REPO).stdout
    before = json.loads((shifted / "analysis.json").read_text())
    edges = _edge_budgets(before)
    assert len(edges) >= 3, before["diagnostics"]
    for b in edges:
        assert f"{b:.1e}".replace("e+", "e") in out  # the printed warning names the budget
    assert "larger models" in out

    run_cli("ff-plan", f"run_dir={refined}", f"refine_from={shifted}", "quiet=true", cwd=REPO)
    plan = json.loads((refined / "plan.json").read_text())
    assert plan["refined_from"] == str(shifted) and plan["model"]["size_range"] == [16, 32768]
    run_cli("ff-train", f"run_dir={refined}", *TRUTH, cwd=REPO)
    run_cli("ff-analyze", f"run_dir={refined}", "bootstrap=0", cwd=REPO)
    after = json.loads((refined / "analysis.json").read_text())
    assert not _edge_budgets(after), after["diagnostics"]
    assert all(b["interior"] for b in after["fits"]["isoflop"]["budgets"])
    assert abs(after["fits"]["isoflop"]["a"] - 0.28 / 0.62) < 0.03
