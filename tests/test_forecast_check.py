"""The forecast check and the table's forecasts: what a user bets on beyond the sweep, checked against a
known truth (a Chinchilla surface), and the table's model chosen by forecasting (the backtest)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.synthetic import sweep, truth_for_ratio
from flops_fit.analysis import run_analysis
from flops_fit.analysis.backtest import _pick
from flops_fit.analysis.forecast_check import preregister, realised_optimum, score
from flops_fit.analysis.predict import forecast, predict
from flops_fit.errors import FlopsFitError

TRUTH = truth_for_ratio(1.21)
BUDGETS = (1e17, 1e18, 1e19, 1e20)


def _check_runs(truth, C, centre, points=5, span=4.0, noise=0.0, seed=0, penalty=0.0):
    rng = np.random.default_rng(seed)
    N = centre * np.geomspace(1 / span, span, points)
    D = C / (6 * N)
    L = truth.loss(N, D) + penalty * np.sqrt(N / D)
    L = L * np.exp(noise * rng.standard_normal(points))
    return [{"id": f"r{i}", "status": "completed", "params": float(n), "tokens": float(d), "budget": C,
             "flops": C, "loss": float(v)} for i, (n, d, v) in enumerate(zip(N, D, L))]


@pytest.fixture(scope="module")
def noisy():
    runs = sweep(TRUTH, budgets=BUDGETS, points=7, noise=0.003, seed=3)
    return run_analysis(runs, n_bootstrap=100, seed=0)


def test_predict_and_the_table_are_one_computation_on_and_off_the_rows(noisy):
    for row in noisy["table"]:
        p = predict(noisy, row["budget"])
        for k in ("params", "tokens", "loss", "params_ci", "tokens_ci", "loss_ci", "params_ci_with_model"):
            assert p[k] == row[k], k
    off = predict(noisy, 6.3e21)  # not a row: still an interval, widened beyond the sweep
    assert off["params_ci"][0] < off["params"] < off["params_ci"][1]
    lo, hi = off["params_ci_with_model"]
    assert lo <= off["params_ci"][0] and hi >= off["params_ci"][1]


def test_beyond_the_sweep_the_interval_grows_with_the_distance(noisy):
    w = [np.log(r["params_ci_with_model"][1] / r["params_ci_with_model"][0])
         for r in (predict(noisy, c) for c in (1e20, 1e21, 1e22, 1e23))]
    assert w == sorted(w) and w[-1] > w[0]


def test_the_forecast_check_scores_a_right_forecast_inside_and_a_wrong_one_outside(noisy):
    C = 4 * max(BUDGETS)
    check = preregister(noisy, C, factor=4.0, source="x")
    assert check["registered"] and check["table"]["params"] == predict(noisy, C)["params"]
    assert set(check["approaches"]) >= {"isoflop", "isoflop_vp", "parametric"}
    runs = _check_runs(TRUTH, C, check["table"]["params"], noise=0.002)
    out = score(check, runs)
    real, table = out["realised"], out["forecasts"][0]
    assert real["interior"] and real["params"] == pytest.approx(TRUTH.n_opt(C), rel=0.15)
    assert real["params_ci"][0] < TRUTH.n_opt(C) < real["params_ci"][1]
    assert table["forecast"] == "table" and table["params_inside"] is True
    assert abs(table["params_ratio"] - 1) < 0.15 and abs(table["loss_error"]) < 0.005
    # a forecast 3x too large, tested against the same runs: outside its interval
    wrong = {**check, "table": {**check["table"], "params": 3 * check["table"]["params"],
                                "params_ci_with_model": [2.5 * check["table"]["params"], 3.5 * check["table"]["params"]]}}
    bad = score(wrong, runs)["forecasts"][0]
    assert bad["params_inside"] is False and bad["params_ratio"] > 2.5


def test_realised_optimum_is_exact_on_the_chinchilla_curve():
    C = 1e21
    runs = _check_runs(TRUTH, C, TRUTH.n_opt(C) * 2.0, points=5)  # off-centre grid, no noise
    N = np.array([r["params"] for r in runs])
    L = np.array([r["loss"] for r in runs])
    r = realised_optimum(N, L, {"alpha": TRUTH.alpha, "beta": TRUTH.beta}, n_boot=50)
    assert r["params"] == pytest.approx(TRUTH.n_opt(C), rel=1e-6)
    assert r["interior"]
    with pytest.raises(FlopsFitError, match="3 or more"):
        realised_optimum(N[:2], L[:2])


def test_the_realised_optimum_uses_the_curve_shape_that_fits_the_check_best():
    C = 1e21
    runs = _check_runs(TRUTH, C, TRUTH.n_opt(C) * 1.5, points=5)
    N = np.array([r["params"] for r in runs])
    L = np.array([r["loss"] for r in runs])
    wrong = {"alpha": 1.19, "beta": 0.44, "from": "parametric"}  # a poorly identified surface's shape
    right = {"alpha": TRUTH.alpha, "beta": TRUTH.beta, "from": "isoflop_vp"}
    alone = realised_optimum(N, L, wrong, n_boot=50)
    assert abs(alone["params"] / TRUTH.n_opt(C) - 1) > 0.05
    both = realised_optimum(N, L, [wrong, right], n_boot=50)
    assert both["params"] == pytest.approx(TRUTH.n_opt(C), rel=1e-6)
    assert both["curve"]["from"] == "isoflop_vp" and "best fit of its 2 shapes" in both["method"]
    assert realised_optimum(N, L, [right, wrong], n_boot=50)["params"] == pytest.approx(TRUTH.n_opt(C), rel=1e-6)


def test_three_runs_leave_the_realised_optimum_without_an_interval():
    # a parabola through 3 runs fits them exactly: no residual is left to bootstrap, so there is no interval
    # (the residual bootstrap drew a zero-width one, which counted any forecast off the vertex as outside it)
    C = 1e21
    runs = _check_runs(TRUTH, C, TRUTH.n_opt(C), points=4)
    rng = np.random.default_rng(0)
    N = np.array([r["params"] for r in runs])
    L = np.array([r["loss"] for r in runs]) * (1 + 0.002 * rng.standard_normal(len(runs)))
    three = realised_optimum(N[:3], L[:3])
    assert three["interior"] and three["params_ci"] is None and three["loss_ci"] is None
    four = realised_optimum(N, L, n_boot=200)
    assert four["params_ci"][0] < four["params"] < four["params_ci"][1]


def test_the_backtest_leaves_the_default_only_for_a_clearly_better_forecaster():
    avail = ("isoflop_vp", "parametric", "isoflop")
    order = avail
    assert _pick({"isoflop_vp": 0.33, "parametric": 0.24, "isoflop": 0.30}, order, avail, "isoflop_vp", 0.1) == "isoflop_vp"
    assert _pick({"isoflop_vp": 0.16, "parametric": 0.65, "isoflop": 0.25}, order, avail, "parametric", 0.1) == "isoflop_vp"
    assert _pick({"isoflop_vp": None, "parametric": 0.1, "isoflop": 0.01}, order, ("parametric", "isoflop"), None,
                 0.1) == "parametric"


def test_a_global_surface_that_misfits_the_budgets_is_not_the_table_when_it_forecasts_badly():
    """Outside the Chinchilla family (an under-training penalty that bends every budget differently): the
    one-surface model is not rejected by the F-test on few runs per budget, yet it forecasts worse than the
    per-budget curves; the backtest sees it, and the table's forecast of a larger budget is closer."""
    runs = sweep(TRUTH, budgets=(1e17, 1e18, 1e19, 1e20, 1e21), points=5, noise=0.002, seed=1, penalty=0.5)
    out = run_analysis(runs, n_bootstrap=0)
    bt = out["backtest"]
    assert bt["status"] == "ok" and len(bt["pairs"]) >= 2
    assert out["table_source"] == bt["chosen"]
    C = 4e21
    truth_n = _penalised_optimum(C, 0.5)
    f = forecast(out, C)
    table_err = abs(np.log(f["table"]["params"] / truth_n))
    worst = max(abs(np.log(r["params"] / truth_n)) for r in f["approaches"].values())
    assert table_err < worst


def _penalised_optimum(C, pen):
    N = np.geomspace(1e6, 1e13, 20001)
    D = C / (6 * N)
    return float(N[np.argmin(TRUTH.loss(N, D) + pen * np.sqrt(N / D))])


# ---------------------------------------------------------------------------------------------
# through the stages (in-process: the CLI's exit codes are tested for the same errors in test_bad_input)

MOCK = {"trainer.ground_truth.E": 1.69, "trainer.ground_truth.A": 406.4, "trainer.ground_truth.B": 410.7,
        "trainer.ground_truth.alpha": 0.34, "trainer.ground_truth.beta": 0.28, "trainer.noise": 0.002}


def _stage(stage, *overrides):
    from flops_fit import stages
    from flops_fit.config.compose import compose

    return getattr(stages, stage)(compose(stage, list(overrides)))


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    src = tmp_path_factory.mktemp("sweep")
    _stage("plan", f"run_dir={src}", "model=gpt", "dataset=synthetic_text", "model.size_range=[16,32768]",
           "budgets.values=[1e17,1e18,1e19,1e20]", "grid.points=7", "quiet=true")
    _stage("train", f"run_dir={src}", "trainer=mock", *(f"{k}={v}" for k, v in MOCK.items()))
    _stage("analyze", f"run_dir={src}", "bootstrap=100", "quiet=true")
    return src


@pytest.mark.slow
def test_a_forecast_check_registers_then_trains_then_scores(swept, tmp_path):
    from flops_fit.artifacts import RunDir

    check = tmp_path / "check"
    plan = _stage("plan", f"run_dir={check}", f"forecast_from={swept}", "grid.points=5", "quiet=true")
    block = plan["forecast_check"]
    assert plan["budgets"] == [pytest.approx(4e20)] and len(plan["experiments"]) == 5
    assert block["source_run_dir"] == str(swept) and block["registered"]
    src_analysis = RunDir(swept).read_analysis()
    assert block["table"]["params"] == pytest.approx(predict(src_analysis, 4e20)["params"], rel=1e-12)
    # the grid is centred on the table's forecast
    sizes = sorted(e["params"] for e in plan["experiments"])
    assert sizes[0] < block["table"]["params"] < sizes[-1]
    assert not list((check / "runs").glob("*.json")) if (check / "runs").exists() else True  # nothing trained yet
    _stage("train", f"run_dir={check}", "trainer=mock", *(f"{k}={v}" for k, v in MOCK.items()))
    out = _stage("analyze", f"run_dir={check}", "quiet=true")
    fc = out["forecast_check"]
    assert fc["registered"] == block["registered"] and fc["n_runs"] == 5
    truth = TRUTH.__class__(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    assert fc["realised"]["params"] == pytest.approx(truth.n_opt(4e20), rel=0.1)
    table = fc["forecasts"][0]
    assert table["params_inside"] and abs(table["params_ratio"] - 1) < 0.1 and abs(table["loss_error"]) < 0.01
    assert {f["forecast"] for f in fc["forecasts"]} >= {"table", "isoflop", "isoflop_vp", "parametric"}
    from flops_fit.analysis import summary_lines

    text = "\n".join(summary_lines(out))
    assert text.startswith("forecast check at 4.0e20 FLOPs") and "inside its interval" in text


def test_forecast_from_bad_input_says_what_to_do(swept, tmp_path):
    with pytest.raises(FlopsFitError, match="no such run directory"):
        _stage("plan", f"run_dir={tmp_path / 'c1'}", f"forecast_from={tmp_path / 'nope'}")
    with pytest.raises(FlopsFitError, match="forecast_factor=1.0 must be > 1"):
        _stage("plan", f"run_dir={tmp_path / 'c2'}", f"forecast_from={swept}", "forecast_factor=1")
    with pytest.raises(FlopsFitError, match="give one"):
        _stage("plan", f"run_dir={tmp_path / 'c3'}", f"forecast_from={swept}", f"refine_from={swept}")
    unanalysed = tmp_path / "unanalysed"
    _stage("plan", f"run_dir={unanalysed}", "model=gpt", "dataset=synthetic_text", "budgets=tiny", "quiet=true")
    with pytest.raises(FlopsFitError, match="ff-analyze"):
        _stage("plan", f"run_dir={tmp_path / 'c4'}", f"forecast_from={unanalysed}")
    assert not (tmp_path / "c4").exists() or not (tmp_path / "c4" / "plan.json").exists()


def test_a_check_refuses_to_train_otherwise_than_its_sweep():
    from flops_fit.checks import refuse_other_trainer
    from flops_fit.training.config import TrainerConfig

    same = TrainerConfig.from_mapping({"kind": "local"})
    plan = {"forecast_check": {"source_run_dir": "outputs/demo", "trainer_settings": same.run_settings()}}
    refuse_other_trainer(plan, same, allow_mismatch=False)
    other = TrainerConfig.from_mapping({"kind": "local", "lr": 1e-3})
    with pytest.raises(FlopsFitError, match=r"trainer.lr=0.008.*pass trainer.lr=0.008"):
        refuse_other_trainer(plan, other, allow_mismatch=False)
    refuse_other_trainer(plan, other, allow_mismatch=True)


def test_runs_under_min_steps_are_flagged_with_how_far_they_move_the_answer():
    runs = sweep(TRUTH, budgets=BUDGETS, points=7, noise=0.003, seed=3)
    for i, r in enumerate(runs):
        r["id"], r["status"] = f"r{i}", "completed"
        r["steps"] = 500
    # the largest budget's largest models trained 30-60 steps, and their losses came out 3% high
    top = [r for r in runs if r["budget"] == max(BUDGETS)][-3:]
    for r, steps in zip(top, (60, 45, 30)):
        r["steps"], r["loss"] = steps, r["loss"] * 1.03
    out = run_analysis(runs, n_bootstrap=0, plan={"grid": {"min_steps": 100}})
    sr = out["short_runs"]
    assert [x["steps"] for x in sr["runs"]] == [60, 45, 30] and sr["min_steps"] == 100
    assert sr["params_shift"] is not None and abs(sr["params_shift"]) > 0.01
    d = next(d for d in out["diagnostics"] if d["code"] == "short_runs")
    assert "3 run(s) trained fewer than 100 optimizer steps" in d["message"] and "moves" in d["message"]
    assert "short" in " ".join(out["verdict"]["reasons"])
    clean = run_analysis([r for r in runs if r not in top], n_bootstrap=0, plan={"grid": {"min_steps": 100}})
    assert "short_runs" not in clean


@pytest.mark.slow
def test_result_check_forecast_trains_the_same_objects_and_scores_the_forecast(tmp_path):
    """From a notebook: find_optimal(model_cls=...) then result.check_forecast(): the check's plan registers the
    forecast, trains the user's own model class as the sweep did (here the mock trainer), and scores it."""
    import flops_fit
    from tests.test_api_objects import Classifier, _blobs
    from torch.utils.data import TensorDataset

    result = flops_fit.find_optimal(model_cls=Classifier, model_size_param="width", dataset=TensorDataset(*_blobs()),
                                    compute_budgets=[1e6, 3e6, 1e7, 3e7], mode="mock", output_dir=tmp_path / "run",
                                    size_range=[2, 512], points=5, bootstrap=50, plot=False)
    check = result.check_forecast(factor=4, points=5, plot=False)
    fc = check.forecast_check
    assert check.run_dir == str(tmp_path / "run" / "forecast_check_4x")
    assert fc["budget"] == pytest.approx(1.2e8) and fc["n_runs"] >= 4
    assert fc["forecasts"][0]["params"] == pytest.approx(result.predict(1.2e8)["params"], rel=1e-9)
    assert fc["realised"]["interior"] and fc["forecasts"][0]["params_ratio"] is not None
    with pytest.raises(FlopsFitError, match="forecast check already"):
        check.check_forecast()


def test_a_check_whose_losses_do_not_curve_up_is_reported_not_scored(noisy):
    """The ViT study's check: its smallest size was best and the losses did not curve upwards; ff-analyze must say
    the forecast cannot be scored (and print), not crash on a missing optimum."""
    from flops_fit.analysis.forecast_check import check_lines

    C = 4 * max(BUDGETS)
    check = preregister(noisy, C, factor=4.0, source="x")
    N = check["table"]["params"] * np.array([0.3, 0.5, 1.0, 2.0, 4.0])
    L = [0.3363, 0.3385, 0.3815, 0.3879, 0.3534]  # the measured ViT losses, shape and all
    runs = [{"id": f"r{i}", "status": "completed", "params": float(n), "tokens": C / (6 * n), "budget": C,
             "loss": v} for i, (n, v) in enumerate(zip(N, L))]
    out = score(check, runs)
    assert out["realised"]["interior"] is False and "cannot be scored" in out["summary"]
    assert all(f["params_inside"] is None for f in out["forecasts"])
    text = "\n".join(check_lines({"forecast_check": out}))
    assert "cannot be scored" in text
