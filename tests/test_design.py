"""Sequential design (ff-plan next_from=, find_optimal(target_width=, max_flops=)): it stops at its target,
resumes after a kill without retraining, never plans a run twice, and bad input is one line."""

import json
import shutil

import numpy as np
import pytest

import flops_fit
from flops_fit.analysis.design import (Candidate, SeenWidth, Simulator, choose_batch, existing_groups, residual_sigma,
                                       width_of)
from flops_fit.law import ChinchillaLaw
from tests.conftest import REPO, run_cli

TRUTH = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
TRAINER = {"kind": "mock", "name": "mock", "noise": 0.005, "ground_truth": TRUTH}
PLAN = ["model.size_range=[16,32768]", "grid.points=5", "quiet=true"]
ANALYZE = ["bootstrap=50", "table_max_budget=1e21", "quiet=true"]
CLI_TRUTH = [f"trainer.ground_truth.{k}={v}" for k, v in TRUTH.items()] + ["trainer.noise=0.005"]


def _study(run_dir, **design):
    return flops_fit.find_optimal(run_dir=str(run_dir), model="gpt", dataset="synthetic_text",
                                  budgets=[1e17, 1e18, 1e19], trainer=TRAINER, plan_overrides=PLAN,
                                  analyze_overrides=ANALYZE, plot=False, **design)


def _plan(run_dir):
    return json.loads((run_dir / "plan.json").read_text())


def _records(run_dir):
    return {p.stem: p.read_text() for p in sorted((run_dir / "runs").glob("*.json"))}


@pytest.mark.slow
def test_sequential_loop_stops_at_its_target_and_plans_no_run_twice(tmp_path):
    run = tmp_path / "seq"
    result = _study(run, target_width=0.2, max_flops=1e21)
    plan = _plan(run)
    batches = plan["design"]["batches"]
    assert len(batches) >= 3  # the seed grid, at least one planned batch, the stop
    assert all(b["runs"] for b in batches[:-1]) and not batches[-1]["runs"]
    assert "target_width=0.2" in batches[-1]["stop"]
    bought = result.analysis["design"]
    assert bought["width"] <= 0.2 < batches[1]["width_before"]  # it needed the batches to get there
    ids = [e["id"] for e in plan["experiments"]]
    assert len(ids) == len(set(ids))
    assert len({(e["budget"], e["size"]) for e in plan["experiments"]}) == len(ids)
    assert {e["batch"] for e in plan["experiments"]} == set(range(len(batches) - 1))
    for b in batches[1:-1]:  # each batch's record lists exactly its runs, within the allowance
        assert sorted(b["runs"]) == sorted(e["id"] for e in plan["experiments"] if e["batch"] == b["batch"])
        assert b["flops"] <= b["allowance"] * (1 + 1e-9) and b["expected_width"] < b["width_before"]
    assert sum(e["flops"] for e in plan["experiments"]) <= 1e21
    # asked again, it stops again: no run planned, the stop replaced rather than piled up
    out = run_cli("ff-plan", f"next_from={run}", "design.target_width=0.2", cwd=REPO).stdout
    assert "design: stop:" in out
    again = _plan(run)
    assert again["experiments"] == plan["experiments"] and len(again["design"]["batches"]) == len(batches)


@pytest.mark.slow
def test_a_kill_between_batches_resumes_without_retraining(tmp_path):
    run = tmp_path / "killed"
    run_cli("ff-plan", f"run_dir={run}", "model=gpt", "dataset=synthetic_text", "budgets.values=[1e17,1e18,1e19]",
            *PLAN, cwd=REPO)
    run_cli("ff-train", f"run_dir={run}", "trainer=mock", *CLI_TRUTH, "quiet=true", cwd=REPO)
    run_cli("ff-analyze", f"run_dir={run}", *ANALYZE, cwd=REPO)
    out = run_cli("ff-plan", f"next_from={run}", "design.target_width=0.2", cwd=REPO).stdout
    assert "design: batch 1:" in out
    # killed two runs into batch 1
    run_cli("ff-train", f"run_dir={run}", "trainer=mock", *CLI_TRUTH, "quiet=true", "limit=2", cwd=REPO)
    before = _records(run)
    assert len(before) == 15 + 2
    # planning again before the batch is trained plans nothing and says to train
    again = run_cli("ff-plan", f"next_from={run}", "design.target_width=0.2", cwd=REPO).stdout
    assert "not trained yet" in again and "next: ff-train" in again
    assert len(_plan(run)["design"]["batches"]) == 2
    _study(run, target_width=0.2, max_flops=1e21)
    after = _records(run)
    assert all(after[k] == v for k, v in before.items())  # not one completed run trained again
    assert len(after) > len(before)
    assert _plan(run)["design"]["batches"][1]["batch"] == 1  # batch 1 finished, not re-planned


def test_next_from_without_analysis_is_one_line(tmp_path):
    run = tmp_path / "r"
    run_cli("ff-plan", f"run_dir={run}", "model=gpt", "dataset=synthetic_text", "budgets.values=[1e17,1e18]",
            *PLAN, cwd=REPO)
    wsd = tmp_path / "wsd"
    run_cli("ff-plan", f"run_dir={wsd}", "model=gpt", "dataset=synthetic_text", "budgets.values=[1e17,1e18]",
            "schedule=wsd", *PLAN, cwd=REPO)
    for args, needle in (([f"next_from={run}"], "no analysis.json"),
                         ([f"next_from={tmp_path / 'nowhere'}"], "no such run directory"),
                         ([f"next_from={run}", "design.target_width=-1"], "design.target_width=-1"),
                         ([f"next_from={run}", "design.bogus=1"], "bogus"),
                         ([f"next_from={run}", f"refine_from={run}"], "next_from="),
                         ([f"next_from={wsd}"], "no analysis.json")):
        proc = run_cli("ff-plan", *args, cwd=REPO, check=False)
        err = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode != 0 and len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert needle in err[0], err[0]


def _draws(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return {k: v * np.exp(0.03 * rng.standard_normal(n)) for k, v in TRUTH.items()}


def _grid(budgets, points, law):
    B, N = [], []
    for C in budgets:
        n = law.n_opt(C) * np.geomspace(0.25, 4, points)
        B += [C] * points
        N += list(n)
    B, N = np.array(B), np.array(N)
    return B, N, B / (6 * N)


def test_more_runs_narrow_the_simulated_interval_and_the_greedy_spends_within_its_allowance():
    law = ChinchillaLaw(**TRUTH)
    sim = Simulator(_draws(), 0.005, 1e21, sims=300, seed=1)
    B, N, D = _grid([1e17, 1e18, 1e19], 5, law)
    existing = existing_groups(sim, B, N, D)
    sparse = sim.width([(b, p, t, z) for b, (p, t, z) in existing.items()])
    B2, N2, D2 = _grid([1e17, 1e18, 1e19], 15, law)
    dense = sim.width([(b, p, t, z) for b, (p, t, z) in existing_groups(sim, B2, N2, D2).items()])
    assert dense < 0.8 * sparse
    new_budget = Candidate("budget", 4e19, *_grid([4e19], 5, law)[1:], flops=5 * 4e19)
    sizes = [Candidate("size", C, np.array([n]), np.array([C / (6 * n)]), flops=C)
             for C in (1e17, 1e18, 1e19) for n in law.n_opt(C) * np.geomspace(0.3, 3, 7)]
    batch = choose_batch(sim, existing, [new_budget, *sizes], width_now=0.5, allowance=3e19)
    assert batch.stop is None and batch.chosen and batch.flops <= 3e19
    assert batch.expected_width < 0.5
    assert len({id(c) for c in batch.chosen}) == len(batch.chosen)  # no candidate chosen twice
    # honest stopping: when no batch can narrow it by design.min_gain, nothing is planned
    stop = choose_batch(sim, existing, [new_budget, *sizes], width_now=0.5, allowance=3e19, min_gain=0.9)
    assert stop.stop and not stop.chosen and stop.flops == 0.0 and "min_gain" in stop.stop


def test_residual_sigma_measures_the_noise():
    law = ChinchillaLaw(**TRUTH)
    B, N, D = _grid([1e17, 1e18, 1e19, 1e20], 9, law)
    L = law.loss(N, D) * np.exp(0.01 * np.random.default_rng(0).standard_normal(len(N)))
    assert 0.007 < residual_sigma(B, N, L) < 0.013


def _table_model(others=(), forecast_error=None, seed=0):
    """A table model whose source (isoflop) has N_opt = 0.1 C^0.5 with a 10% bootstrap spread in log N_opt;
    ``others``: [(name, factor on the source's N_opt, share of the source's bootstrap deviations)]: their
    replicates are paired with the source's (a disagreement by noise shares its deviations)."""
    z = np.random.default_rng(seed).standard_normal(200)
    own = 0.1 * np.exp(0.1 * z)

    def approach(name, k_N, reps):
        return {"approach": name, "k_N": k_N, "a": 0.5, "k_D": 1.0 / 0.6, "b": 0.5,
                "replicates": {"k_N": list(reps), "a": [0.5] * 200, "k_D": [1.0 / 0.6] * 200, "b": [0.5] * 200}}

    aps = [approach("isoflop", 0.1, own)]
    for name, factor, paired in others:
        aps.append(approach(name, 0.1 * factor, factor * (paired * own + (1 - paired) * 0.1)))
    return {"source": "isoflop", "ci": 0.95, "approaches": aps, "competitive": [a["approach"] for a in aps],
            "loss_source": None, "loss_models": {}, "loss_competitive": [], "planned": [1e17, 1e18, 1e19],
            "forecast_error": forecast_error or {}, "sweep_max": 1e19}


def test_the_width_the_user_sees_is_the_tables_and_the_model_choice_alone_is_its_floor():
    from flops_fit.analysis.predict import predict

    systematic = _table_model([("parametric", 2.0, 1.0)])  # 2x away, its replicates shifted with the source's
    row = predict({"table_model": systematic}, 1e21)
    seen = SeenWidth(systematic, 1e21)
    assert seen() == pytest.approx(width_of(row["params_ci_with_model"]))  # the table's own interval
    assert width_of(row["params_ci_with_model"]) > width_of(row["params_ci"])
    assert seen.noise_only == [] and seen.floor() == pytest.approx(1.0)  # hi / lo = 2 whatever the runs
    assert seen(0.5) < seen() and seen(0.5) >= seen.floor()
    noise = SeenWidth(_table_model([("parametric", 1.05, 0.0)]), 1e21)  # 5% away, within its 10% noise
    assert noise.noise_only == ["parametric"] and noise.floor() == pytest.approx(0.0, abs=1e-9)
    # beyond the sweep the backtest's error widens the interval; a larger budget moves that out
    far = SeenWidth(_table_model(forecast_error={"params": 0.2, "ahead": 4.0}), 1e21)
    assert far.floor() > 0.5 and far.floor(4e19) < far.floor() and far.floor(1e21) == pytest.approx(0.0, abs=1e-9)


def test_when_the_model_choice_alone_exceeds_the_target_nothing_is_planned():
    law = ChinchillaLaw(**TRUTH)
    sim = Simulator(_draws(), 0.005, 1e21, sims=100, seed=1)
    existing = existing_groups(sim, *_grid([1e17, 1e18, 1e19], 5, law))
    sizes = [Candidate("size", C, np.array([n]), np.array([C / (6 * n)]), flops=C)
             for C in (1e17, 1e18, 1e19) for n in law.n_opt(C) * np.geomspace(0.3, 3, 7)]
    seen = SeenWidth(_table_model([("parametric", 2.0, 1.0)]), 1e21)
    stop = choose_batch(sim, existing, sizes, width_now=seen(), allowance=1e20, target_width=0.5, seen=seen)
    assert not stop.chosen and stop.flops == 0.0 and stop.model_floor == pytest.approx(1.0)
    assert "model choice alone" in stop.stop and "target_width=0.5" in stop.stop and "span 3.2B-6.3B" in stop.stop
    # the same runs, the other approach within noise: the batch is planned and expected to narrow what is seen
    seen = SeenWidth(_table_model([("parametric", 1.05, 0.0)]), 1e21)
    go = choose_batch(sim, existing, sizes, width_now=seen(), allowance=1e20, target_width=0.2, seen=seen)
    assert go.stop is None and go.chosen and go.expected_width < seen()
    # no target: approaches 3x either side hold the bootstrap's interval inside theirs, so no run can narrow it
    seen = SeenWidth(_table_model([("parametric", 3.0, 1.0), ("envelope", 1 / 3, 1.0)]), 1e21)
    stop = choose_batch(sim, existing, sizes, width_now=seen(), allowance=1e20, seen=seen)
    assert stop.stop and "model choice alone" in stop.stop and "min_gain" in stop.stop


def _seed_grid(run, plan_args):
    """Plan ``plan_args`` over 3 budgets into ``run``, train it on the mock surface and analyse it."""
    run_cli("ff-plan", f"run_dir={run}", "model=gpt", "dataset=synthetic_text", "budgets.values=[1e17,1e18,1e19]",
            *plan_args, cwd=REPO)
    run_cli("ff-train", f"run_dir={run}", "trainer=mock", *CLI_TRUTH, "quiet=true", cwd=REPO)
    run_cli("ff-analyze", f"run_dir={run}", "bootstrap=30", "table_max_budget=1e21", "quiet=true", cwd=REPO)
    return run


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A trained, analysed seed grid (3 budgets x 5 sizes on the mock surface), copied by each test."""
    return _seed_grid(tmp_path_factory.mktemp("seeded") / "seed", PLAN)


def test_next_from_says_stop_and_plans_nothing_when_the_model_choice_dominates(seeded, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(seeded, run)
    # an approach the table's interval holds disagrees 3x, pairwise with the source's bootstrap: not noise
    analysis = json.loads((run / "analysis.json").read_text())
    tm = analysis["table_model"]
    other = next(a for a in tm["approaches"] if a["approach"] != tm["source"] and a["approach"] in tm["competitive"])
    src = next(a for a in tm["approaches"] if a["approach"] == tm["source"])
    other.update(k_N=3 * src["k_N"], a=src["a"], replicates={**src["replicates"],
                                                            "k_N": [3 * k for k in src["replicates"]["k_N"]]})
    (run / "analysis.json").write_text(json.dumps(analysis))
    before = _plan(run)
    out = run_cli("ff-plan", f"next_from={run}", "design.target_width=0.5", cwd=REPO).stdout
    stop = [line for line in out.splitlines() if line.startswith("design: stop:")]
    assert len(stop) == 1 and "model choice alone" in stop[0] and "target_width=0.5" in stop[0], out
    assert "the model choice's alone" in out  # the head line names both parts of the width
    after = _plan(run)
    assert [e["id"] for e in after["experiments"]] == [e["id"] for e in before["experiments"]]
    assert not after["design"]["batches"][-1]["runs"] and after["design"]["batches"][-1]["model_floor"] > 0.5


def test_a_new_budget_the_design_buys_is_a_forecast_check_that_ff_analyze_scores(seeded, tmp_path, monkeypatch):
    import flops_fit.analysis.design as design_mod

    run = tmp_path / "run"
    shutil.copytree(seeded, run)
    greedy = design_mod.choose_batch

    def only_the_largest_new_budget(sim, existing, candidates, **kw):  # the loop's choice, made for the test
        top = max(c.budget for c in candidates if c.kind == "budget")
        pick = [c for c in candidates if c.kind == "budget" and c.budget == top]
        return greedy(sim, existing, pick[-1:], **{**kw, "target_width": None, "min_gain": 0.0})

    monkeypatch.setattr(design_mod, "choose_batch", only_the_largest_new_budget)
    out = run_cli("ff-plan", f"next_from={run}", "design.max_flops=1e21", cwd=REPO).stdout
    assert "design: forecast check at 4.0e19 FLOPs registered" in out, out
    plan = _plan(run)
    batch = plan["design"]["batches"][-1]
    (check,) = batch["forecast_checks"]
    assert check["budget"] == pytest.approx(4e19) and check["factor"] == pytest.approx(4.0)
    assert sorted(check["runs"]) == sorted(batch["runs"]) and check["table"]["params"] > 0 and check["registered"]
    run_cli("ff-train", f"run_dir={run}", "trainer=mock", *CLI_TRUTH, "quiet=true", cwd=REPO)
    out = run_cli("ff-analyze", f"run_dir={run}", "bootstrap=30", "table_max_budget=1e21", cwd=REPO).stdout
    assert "forecast check at 4e+19 FLOPs: realised optimum" in out, out
    assert "design: batch 1 took the N_opt(1e+21 FLOPs) interval's width from" in out and "the bootstrap's" in out
    (scored,) = json.loads((run / "analysis.json").read_text())["design"]["forecast_checks"]
    assert scored["batch"] == batch["batch"] and scored["n_runs"] == len(check["runs"])
    assert scored["realised"]["interior"] and scored["forecasts"][0]["forecast"] == "table"
    truth = ChinchillaLaw(**TRUTH).n_opt(4e19)
    assert scored["realised"]["params"] == pytest.approx(truth, rel=0.3)  # the check measured the truth there
    assert scored["forecasts"][0]["params"] == check["table"]["params"]  # scored the forecast registered before


# schedule=wsd: every candidate is a new size, a new trunk of its own (ff-train does not extend a trained trunk),
# costed by what it adds to the sweep (planning.sweep_flops counts a trunk once)

WSD_PLAN = [*PLAN, "schedule=wsd", "model.size_multiple=256"]  # coarse sizes: some candidates fall on a trunk's


@pytest.fixture(scope="module")
def wsd_seeded(tmp_path_factory):
    """A trained, analysed WSD seed grid (3 budgets x 5 sizes on a shared ladder, mock surface)."""
    return _seed_grid(tmp_path_factory.mktemp("wsd") / "seed", WSD_PLAN)


def test_next_from_a_wsd_sweep_plans_new_trunks_only_that_ff_train_trains_and_ff_analyze_fits(wsd_seeded, tmp_path):
    from flops_fit.planning import sweep_flops, trunk_id

    run = tmp_path / "run"
    shutil.copytree(wsd_seeded, run)
    before = _plan(run)
    assert before["schedule"]["name"] == "wsd"
    old_sizes = {e["size"] for e in before["experiments"]}
    old_trunks = {e["trunk"] for e in before["experiments"]}
    assert len(old_trunks) < len(before["experiments"])  # the seed's sizes share trunks across budgets
    out = run_cli("ff-plan", f"next_from={run}", "design.target_width=0.2", cwd=REPO).stdout
    assert "design: batch 1:" in out, out
    left = [line for line in out.splitlines() if line.startswith("design: schedule=wsd:")]
    assert len(left) == 1 and "already have a trunk left out" in left[0], out
    assert int(left[0].split(": ")[2].split()[0]) > 0  # the count of candidate runs dropped
    plan = _plan(run)
    assert plan["experiments"][:len(before["experiments"])] == [dict(e, batch=0) for e in before["experiments"]]
    new = [e for e in plan["experiments"] if e["batch"] == 1]
    batch = plan["design"]["batches"][-1]
    assert new and sorted(batch["runs"]) == sorted(e["id"] for e in new)
    # every run is on a new size, a new trunk laid out as make_plan lays out a WSD sweep's
    assert not {e["size"] for e in new} & old_sizes and not {e["trunk"] for e in new} & old_trunks
    for e in new:
        assert e["schedule"] == "wsd" and e["cooldown_frac"] == before["schedule"]["cooldown_frac"]
        assert e["trunk"] == trunk_id("d_model", e["size"])
        assert e["warmup_basis_tokens"] == min(x["tokens"] for x in new if x["trunk"] == e["trunk"])
        assert e["eval_basis_tokens"] == before["experiments"][0]["eval_basis_tokens"]
    assert sorted(batch["new_trunks"]) == sorted({e["trunk"] for e in new})
    # the batch's FLOPs are what it adds to the sweep, each new trunk once; the greedy's steps add up to them
    added = sweep_flops(plan["experiments"]) - sweep_flops(before["experiments"])
    assert batch["flops"] == pytest.approx(added, rel=1e-9)
    assert plan["sweep_flops"] - before["sweep_flops"] == pytest.approx(added, rel=1e-9)
    assert sum(c["flops"] for c in batch["chosen"]) == pytest.approx(added, rel=1e-9)
    assert added <= batch["allowance"] * (1 + 1e-9)
    assert len({e["trunk"] for e in new}) < len(new)  # some new trunk serves two budgets: paid once
    assert added < sum(e["flops"] for e in new)
    # ff-train (mock) trains them, ff-analyze fits them and reports what the batch bought
    run_cli("ff-train", f"run_dir={run}", "trainer=mock", *CLI_TRUTH, "quiet=true", cwd=REPO)
    assert len(_records(run)) == len(plan["experiments"])
    out = run_cli("ff-analyze", f"run_dir={run}", "bootstrap=30", "table_max_budget=1e21", cwd=REPO).stdout
    assert "design: batch 1 took the N_opt(1e+21 FLOPs) interval's width from" in out, out
    analysis = json.loads((run / "analysis.json").read_text())
    assert {e["id"] for e in new} <= {p["id"] for p in analysis["points"]}
    # the next batch again takes only sizes with no trunk, the batch 1 trunks included
    run_cli("ff-plan", f"next_from={run}", "design.target_width=0.01", cwd=REPO)
    later = [e for e in _plan(run)["experiments"] if e["batch"] == 2]
    assert not {e["size"] for e in later} & {e["size"] for e in plan["experiments"]}


def test_wsd_candidates_never_take_a_size_that_has_a_trunk(wsd_seeded):
    from flops_fit.analysis.design import Design
    from flops_fit.design import _wsd_candidates

    plan, analysis = _plan(wsd_seeded), json.loads((wsd_seeded / "analysis.json").read_text())
    experiments = plan["experiments"]
    cands, (runs_left, sizes_left) = _wsd_candidates(plan, analysis, experiments, Design())
    trunked = {e["size"] for e in experiments}
    sizes = {e["size"] for _, _, es in cands for e in es}
    assert cands and not sizes & trunked and runs_left >= sizes_left > 0
    assert {k for k, _, _ in cands} == {"size", "budget"}
    assert all(len(es) >= 3 for k, _, es in cands if k == "budget")
    # give one candidate size a trunk (as if an earlier batch had trained it): it is no candidate any more
    taken = next(es[0] for k, _, es in cands if k == "size")
    again, (runs_again, _) = _wsd_candidates(plan, analysis, experiments + [dict(taken, id="elsewhere")], Design())
    assert taken["size"] not in {e["size"] for _, _, es in again for e in es} and runs_again > runs_left


def _wsd_entry(budget, size, params, cooldown=0.2):
    tokens = int(budget // (6 * params))
    return {"id": f"C{budget:g}_d_model{size}", "budget": budget, "size": size, "params": params, "tokens": tokens,
            "flops_per_token": 6.0 * params, "flops": 6.0 * params * tokens, "schedule": "wsd",
            "cooldown_frac": cooldown, "trunk": f"trunk_d_model{size}", "warmup_basis_tokens": tokens}


def test_a_new_trunk_shared_by_two_budgets_is_paid_once_and_the_greedy_sees_the_second_budget_cheaper():
    from flops_fit.design import marginal_cost
    from flops_fit.planning import sweep_flops

    law = ChinchillaLaw(**TRUTH)
    N = 3 * float(law.n_opt(1e18))  # one new size: near the optimum at 1e19, 3x above it at 1e18
    existing = [_wsd_entry(C, 64 * i, float(n)) for C in (1e17, 1e18, 1e19)
                for i, n in enumerate(law.n_opt(C) * np.geomspace(0.25, 4, 5))]

    def cand(C):
        e = _wsd_entry(C, 999, N)
        return Candidate("size", C, np.array([N]), np.array([float(e["tokens"])]), flops=sweep_flops([e]), entries=[e])

    big, small = cand(1e19), cand(1e18)
    cost = marginal_cost(existing)
    d_big, d_small, fpt = big.entries[0]["tokens"], small.entries[0]["tokens"], 6.0 * N
    assert cost([], small) == pytest.approx(small.flops, rel=1e-9)  # a new trunk alone costs its run
    assert cost([big], small) == pytest.approx(0.2 * fpt * d_small, rel=1e-9)  # then only its cooldown
    assert cost([small], big) == pytest.approx(fpt * (0.8 * (d_big - d_small) + 0.2 * d_big), rel=1e-9)
    assert cost([big], small) < 0.25 * small.flops
    # the greedy prices each candidate given the batch so far: with the trunk shared, both fit an allowance
    # that holds only one of them at its own cost
    sim = Simulator(_draws(), 0.005, 1e21, sims=200, seed=1)
    groups = existing_groups(sim, *_grid([1e17, 1e18, 1e19], 5, law))
    allowance = big.flops + 0.5 * small.flops
    kw = dict(width_now=0.5, allowance=allowance, min_gain=0.0)
    shared = choose_batch(sim, groups, [big, small], cost=cost, **kw)
    alone = choose_batch(sim, groups, [big, small], **kw)
    assert len(shared.chosen) == 2 and len(alone.chosen) == 1
    both = [e for c in shared.chosen for e in c.entries]
    assert shared.flops == pytest.approx(sweep_flops(existing + both) - sweep_flops(existing), rel=1e-9)
    assert shared.flops == pytest.approx(big.flops + 0.2 * fpt * d_small, rel=1e-9)
