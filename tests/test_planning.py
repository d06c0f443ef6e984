import math

import numpy as np
import pytest

from flops_fit.errors import FlopsFitError
from flops_fit.models import ModelCounter, ModelSpec
from flops_fit.planning import Grid, check_budgets, format_plan, make_plan

USER_MODEL = ModelSpec(target="tests.plugins.user_model.BagOfWordsLM", size_param="width",
                       kwargs={"vocab_size": 256}, size_range=(4, 4096), name="bow")


def test_counts_are_true_counts_of_the_instantiated_model():
    from tests.plugins.user_model import BagOfWordsLM

    info = ModelCounter(USER_MODEL).info(64)
    real = BagOfWordsLM(width=64, vocab_size=256)
    assert info.params == sum(p.numel() for p in real.parameters())
    assert info.non_embedding_params == info.params - 256 * 64
    assert info.flops_per_token["6nd"] == 6 * info.params


def test_grid_is_log_spaced_around_the_20_tokens_per_param_prior():
    plan = make_plan(USER_MODEL, [1e12], grid=Grid(points=7, span=4.0))
    exps = plan["experiments"]
    assert len(exps) == 7 and not plan["dropped"]
    params = np.array([e["params"] for e in exps], dtype=float)
    # the middle run sits near the prior's optimum: D/N ~ 20
    mid = exps[3]
    assert 10 < mid["tokens"] / mid["params"] < 40
    # log-spaced: successive ratios close to 4^(1/3) = 1.59, spanning 16x
    ratios = params[1:] / params[:-1]
    assert np.all((ratios > 1.3) & (ratios < 1.9)), ratios
    assert 12 < params[-1] / params[0] < 21
    # the whole budget is spent: tokens = C / (6N)
    for e in exps:
        assert e["tokens"] == int(1e12 // (6 * e["params"]))
        assert e["flops"] <= 1e12 and e["flops"] > 0.999 * 1e12
    # every run's loss curve is evaluated on what fits the shortest run's evaluation budget (trainer.eval_budget)
    assert {e["eval_basis_tokens"] for e in exps} == {exps[-1]["tokens"]} == {min(e["tokens"] for e in exps)}


def test_runs_with_too_few_tokens_are_dropped_and_reported():
    plan = make_plan(USER_MODEL, [1e10], grid=Grid(points=7, span=16.0, min_tokens_per_param=2.0))
    assert plan["dropped"], "the largest sizes should have < 2 tokens per parameter"
    for d in plan["dropped"]:
        assert d["tokens"] < 2 * d["params"] and "per parameter" in d["reason"]
    assert all(e["tokens"] >= 2 * e["params"] for e in plan["experiments"])
    assert "dropped" in format_plan(plan)


@pytest.mark.parametrize("points", [1, 2, 3])
def test_a_plan_no_approach_can_fit_per_budget_says_so(points):
    """Under 3 sizes per budget the IsoFLOP approaches cannot work: ff-plan says so before any training."""
    plan = make_plan(USER_MODEL, [1e11, 1e12], grid=Grid(points=points))
    warned = [w for w in plan["warnings"] if "3 or more model sizes" in w]
    assert bool(warned) == (points < 3)
    if warned:
        assert f"grid.points={points}" in warned[0] and f"warning: {warned[0]}" in format_plan(plan)


def test_round_size_hook_is_honoured():
    spec = ModelSpec(target="flops_fit.examples.GPT", size_param="d_model",
                     kwargs={"n_layer": 2, "head_dim": 16, "vocab_size": 256, "seq_len": 64}, size_range=(16, 2048))
    plan = make_plan(spec, [1e11, 1e12], grid=Grid(points=5))
    assert all(e["size"] % 16 == 0 for e in plan["experiments"])


@pytest.mark.parametrize("bad, message", [
    ([], "budgets.values is empty"),
    (["abc"], "not a number of FLOPs"),
    ([1e12, -1.0], "must be positive"),
])
def test_bad_budgets_name_the_key(bad, message):
    with pytest.raises(FlopsFitError, match=message):
        check_budgets(bad)


def test_unknown_flops_convention_is_rejected():
    with pytest.raises(FlopsFitError, match="flops='6n' is not a FLOPs convention"):
        make_plan(USER_MODEL, [1e12], flops="6n")


def test_bad_target_is_one_clear_error():
    with pytest.raises(FlopsFitError, match="cannot import module"):
        make_plan(ModelSpec(target="nope.Model", size_param="w"), [1e12])
    with pytest.raises(FlopsFitError, match="rejected its arguments"):
        make_plan(ModelSpec(target="tests.plugins.user_model.BagOfWordsLM", size_param="size"), [1e12])


def test_centres_move_the_grid():
    base = make_plan(USER_MODEL, [1e12], grid=Grid(points=5, span=4.0))
    centre = 4 * base["experiments"][2]["params"]
    moved = make_plan(USER_MODEL, [1e12], grid=Grid(points=5, span=4.0), centres={1e12: centre})
    mid = moved["experiments"][2]["params"]
    assert abs(math.log(mid / centre)) < math.log(1.3)
