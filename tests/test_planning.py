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


# -- grid.min_steps: every run trained for enough optimizer steps (docs/short-runs.md) --------------

DEMO_GPT = ModelSpec(target="flops_fit.examples.GPT", size_param="d_model", size_range=(8, 32768),
                     kwargs={"n_layer": 2, "n_heads": 2, "vocab_size": 512, "seq_len": 128})
DEMO_BUDGETS = [1.0e11, 2.5e11, 6.0e11, 1.5e12]  # make demo's plan: its largest runs had 33-142 steps at 32 x 128
TEXT_128 = {"kind": "text", "seq_len": 128}


def _steps(tokens, batch, per_example=128):
    return math.ceil(tokens / (batch * per_example))


@pytest.mark.parametrize("cap", [32, 64, 48])
def test_every_run_of_the_demo_plan_gets_min_steps_at_one_batch_for_the_whole_sweep(cap):
    from flops_fit.planning import run_batch_size

    plan = make_plan(DEMO_GPT, DEMO_BUDGETS, grid=Grid(points=5), dataset=TEXT_128)
    assert plan["grid"]["min_steps"] == 100 and plan["units_per_example"] == 128
    short_before = [e["id"] for e in plan["experiments"] if _steps(e["tokens"], 32) < 100]
    assert len(short_before) == 4  # the four runs under 100 steps at trainer.batch_size=32
    batches = set()
    for e in plan["experiments"]:
        batch = run_batch_size(cap, e["max_batch_size"])
        assert e["min_steps"] == 100 and _steps(e["tokens"], batch) >= 100, e["id"]
        batches.add(batch)
    # one batch for the sweep (a batch that changed with the budget would bend the exponents), the largest that
    # gives the sweep's shortest run the steps: a power of two whose double falls short
    (batch,) = batches
    shortest = min(e["tokens"] for e in plan["experiments"])
    assert batch & (batch - 1) == 0 and _steps(shortest, 2 * batch) < 100 and batch == 8
    table = format_plan(plan)
    assert "batch<=" in table and "steps>=" in table and "grid.min_steps=100" in table
    row = next(line for line in table.splitlines() if line.endswith("C1e11_d_model52"))
    assert row.split()[-3:-1] == ["8", "131"]  # 133K tokens: batch 8 gives 131 steps (33 at 32)


@pytest.mark.slow
def test_min_steps_off_reproduces_the_plan_without_the_rule_and_on_only_adds_keys():
    new_keys = {"min_steps", "max_batch_size", "batch_basis_tokens", "units_per_example"}
    for schedule in ("cosine", "wsd"):
        plans = {m: make_plan(DEMO_GPT, DEMO_BUDGETS, grid=Grid(points=5, min_steps=m), dataset=TEXT_128,
                              schedule=schedule) for m in (0, None, 100)}
        assert plans[0]["grid"]["min_steps"] == 0 and plans[None]["grid"]["min_steps"] is None
        for m in (0, None):  # off: the plan of before the rule (plus grid.min_steps), its table too
            assert all(not new_keys & set(e) for e in plans[m]["experiments"]) and "units_per_example" not in plans[m]
            assert "batch<=" not in format_plan(plans[m]) and "min_steps" not in format_plan(plans[m])
        off, on = plans[0], plans[100]
        strip = lambda p: [{k: v for k, v in e.items() if k not in new_keys} for e in p["experiments"]]
        assert strip(on) == strip(off)
        assert {k: v for k, v in on.items() if k not in ("grid", "experiments", "units_per_example")} == \
            {k: v for k, v in off.items() if k not in ("grid", "experiments")}


def test_the_planner_says_when_the_data_cannot_give_min_steps():
    plan = make_plan(USER_MODEL, [1e9], grid=Grid(points=3, min_steps=100000), dataset=TEXT_128)
    (warned,) = [w for w in plan["warnings"] if w.startswith("grid.min_steps=100000")]
    assert "one example a step" in warned and f"warning: {warned}" in format_plan(plan)
    assert {e["max_batch_size"] for e in plan["experiments"]} == {1}


def test_without_units_per_example_the_plan_records_the_rule_and_ff_train_picks_the_batch():
    torch_data = {"kind": "torch", "_target_": "mypkg.make"}  # a torch dataset's units are known once loaded
    plan = make_plan(USER_MODEL, [1e10], grid=Grid(points=3), dataset=torch_data)
    shortest = min(e["tokens"] for e in plan["experiments"])  # ff-train chooses the budget's batch for it
    assert all(e["min_steps"] == 100 and e["batch_basis_tokens"] == shortest and "max_batch_size" not in e
               for e in plan["experiments"])
    assert "ff-train picks the sweep's batch" in format_plan(plan)
    images = make_plan(USER_MODEL, [1e10], grid=Grid(points=3), dataset={"kind": "image"})
    assert images["units_per_example"] == 1


@pytest.mark.parametrize("bad", [-1, 2.5, True, "many"])
def test_a_bad_min_steps_is_one_line_naming_the_key(bad):
    with pytest.raises(FlopsFitError, match=r"^grid\.min_steps=.* must be a whole number of optimizer steps"):
        make_plan(USER_MODEL, [1e10], grid=Grid(min_steps=bad))


def test_a_bad_min_steps_through_the_cli_exits_with_one_line(tmp_path):
    from tests.conftest import REPO, run_cli

    proc = run_cli("ff-plan", f"run_dir={tmp_path / 'r'}", "grid.min_steps=-5", cwd=REPO, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "grid.min_steps=-5" in lines[0], proc.stderr
    assert not (tmp_path / "r" / "plan.json").exists()


@pytest.mark.slow
def test_find_optimal_routes_min_steps_to_the_grid(tmp_path):
    import json

    import flops_fit

    flops_fit.find_optimal(run_dir=str(tmp_path / "r"), model="gpt", dataset="synthetic_text", budgets=[1e11, 1e12],
                           trainer="mock", points=3, min_steps=7, bootstrap=0, plot=False)
    plan = json.loads((tmp_path / "r" / "plan.json").read_text())
    assert plan["grid"]["min_steps"] == 7 and {e["min_steps"] for e in plan["experiments"]} == {7}


def test_plan_differences_compare_the_batch_the_rule_gives_under_the_runs_own_cap():
    from flops_fit.planning import plan_differences

    entry = {"id": "r", "tokens": 1000, "min_steps": 100, "max_batch_size": 8}
    rec = {"id": "r", "planned_tokens": 1000, "batch_size": 8, "trainer_settings": {"batch_size": 32}, "min_steps": 100}
    assert plan_differences(entry, rec) == []  # the same rule: the same batch
    assert plan_differences({**entry, "min_steps": 50}, rec) == []  # another rule that gives the same batch
    assert plan_differences({**entry, "max_batch_size": 4}, rec) == [("batch_size", 8, 4)]
    old = {"id": "r", "planned_tokens": 1000, "batch_size": 32, "trainer_settings": {"batch_size": 32}}
    assert plan_differences(entry, old) == [("batch_size", 32, 8)]  # trained before the rule, at the cap
    rule_off = {"id": "r", "tokens": 1000}
    assert plan_differences(rule_off, old) == [] and plan_differences(rule_off, rec) == [("batch_size", 8, 32)]
    assert plan_differences(entry, {"id": "r", "planned_tokens": 1000, "loss": 3.0}) == []  # mock: no batch
    unknown = {"id": "r", "tokens": 1000, "min_steps": 50, "batch_basis_tokens": 1000}  # no max_batch_size:
    assert plan_differences(unknown, rec) == [("min_steps", 100, 50)]                  # the rule's inputs compared
    assert plan_differences(unknown, {**rec, "min_steps": 50, "batch_basis_tokens": 800}) == \
        [("batch_basis_tokens", 800, 1000)]  # another shortest run in its budget


def test_targets_below_the_smallest_multiple_name_size_multiple():
    """When the smallest planned size is the size rule's first multiple, not the range's end, the warning names
    model.size_multiple as the thing to lower."""
    from flops_fit.models import ModelSpec
    from flops_fit.planning import Grid, make_plan

    spec = ModelSpec(target="flops_fit.examples.GPT", size_param="d_model", size_range=(8, 256), size_multiple=32,
                     kwargs={"n_layer": 1, "head_dim": 8, "vocab_size": 320, "seq_len": 32})
    plan = make_plan(spec, [1e11], grid=Grid(points=3, min_steps=0))
    warning = next(w for w in plan["warnings"] if "distinct sizes" in w)
    assert "below the smallest model" in warning and "lower model.size_multiple=32 (its smallest size is 32)" in warning
    wide = ModelSpec(target="flops_fit.examples.GPT", size_param="d_model", size_range=(32, 256),
                     kwargs={"n_layer": 1, "head_dim": 8, "vocab_size": 320, "seq_len": 32})
    plain = make_plan(wide, [1e11], grid=Grid(points=3, min_steps=0))
    assert not any("size_multiple" in w for w in plain["warnings"])
