"""End to end through the installed console scripts, in subprocesses, as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

PLAN_ARGS = ["model=gpt", "dataset=synthetic_text", "budgets=chinchilla", "model.kwargs.n_layer=4"]


def _one_line_error(proc, *needles):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err and "Traceback" not in proc.stdout
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def test_whole_pipeline_mock(tmp_path):
    run = tmp_path / "study"
    out = run_cli("ff-plan", f"run_dir={run}", *PLAN_ARGS, cwd=tmp_path).stdout
    assert "IsoFLOP plan" in out and "FLOPs" in out
    plan = json.loads((run / "plan.json").read_text())
    assert plan["schema_version"] == 1 and len(plan["budgets"]) == 9
    assert {"id", "budget", "size", "params", "tokens"} <= set(plan["experiments"][0])

    out = run_cli("ff-train", f"run_dir={run}", "trainer=mock", cwd=tmp_path).stdout
    assert f"trained {len(plan['experiments'])} runs" in out
    runs = sorted((run / "runs").glob("*.json"))
    assert len(runs) == len(plan["experiments"])

    out = run_cli("ff-analyze", f"run_dir={run}", "bootstrap=50", cwd=tmp_path).stdout
    analysis = json.loads((run / "analysis.json").read_text())
    for approach in ("envelope", "isoflop", "parametric"):
        assert analysis["fits"][approach]["status"] == "ok", approach
        assert 0.3 < analysis["fits"][approach]["a"] < 0.7
    assert analysis["table"] and max(r["budget"] for r in analysis["table"]) >= 1e24
    assert "params" in out.lower()

    out = run_cli("ff-plot", f"run_dir={run}", cwd=tmp_path).stdout
    for name in ("isoflop", "n_opt", "d_opt", "loss_vs_compute"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 10_000
    assert (run / "report.html").is_file()
    for stage in ("plan", "train", "analyze", "plot"):
        assert (run / "configs" / f"{stage}.yaml").is_file()

    # every stage again, or one alone, is safe
    again = run_cli("ff-train", f"run_dir={run}", cwd=tmp_path).stdout
    assert "trained 0 runs" in again and "already completed" in again
    run_cli("ff-analyze", f"run_dir={run}", "bootstrap=0", cwd=tmp_path)
    assert json.loads((run / "analysis.json").read_text())["fits"]["isoflop"]["status"] == "ok"


@pytest.mark.slow
def test_analyze_without_a_table_says_why_and_exits_non_zero(tmp_path):
    """Two runs at one budget fit nothing: ff-analyze writes analysis.json with the reasons, then fails
    with one line saying what to plan; ff-plot still draws the runs."""
    run = tmp_path / "thin"
    run_cli("ff-plan", f"run_dir={run}", *PLAN_ARGS[:2], "budgets.values=[1e17]", "grid.points=2", cwd=tmp_path)
    run_cli("ff-train", f"run_dir={run}", "trainer=mock", cwd=tmp_path)
    proc = run_cli("ff-analyze", f"run_dir={run}", "bootstrap=0", cwd=tmp_path, check=False)
    _one_line_error(proc, "no compute-optimal table", "analysis.json", "grid.points=5 or more")
    assert "skipped" in proc.stdout
    analysis = json.loads((run / "analysis.json").read_text())
    assert not analysis["table"] and any(d["code"] == "no_table" for d in analysis["diagnostics"])
    run_cli("ff-plot", f"run_dir={run}", cwd=tmp_path)
    assert (run / "report.html").is_file()


@pytest.mark.slow
def test_user_model_class_through_the_cli(tmp_path):
    """A user's own class, from the user's own config folder on Hydra's search path."""
    conf = tmp_path / "my_conf" / "model"
    conf.mkdir(parents=True)
    (conf / "bow.yaml").write_text(
        "# my bag-of-words LM\n"
        "defaults: [model_schema, _self_]\n"
        "name: bow\n"
        "_target_: tests.plugins.user_model.BagOfWordsLM\n"
        "size_param: width\n"
        "size_range: [4, 4096]\n"
        "kwargs: {vocab_size: 256, depth: 2}\n"
    )
    run = tmp_path / "mine"
    run_cli("ff-plan", f"run_dir={run}", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "model=bow",
            "dataset=synthetic_text", "budgets=tiny", cwd=REPO)  # its 256-token vocabulary fits the model's
    plan = json.loads((run / "plan.json").read_text())
    assert plan["model"]["target"] == "tests.plugins.user_model.BagOfWordsLM"
    assert all(e["id"].split("_")[-1].startswith("width") for e in plan["experiments"])
    run_cli("ff-train", f"run_dir={run}", cwd=REPO)
    assert len(list((run / "runs").glob("*.json"))) == len(plan["experiments"])


@pytest.mark.parametrize("args, needles", [
    (["model=gtp"], ["model=gtp", "gpt", "vit"]),
    (["budgets.values=[1e12,abc]"], ["budgets.values"]),
    (["budgets.values=[]"], ["budgets.values is empty"]),
    (["grid.pionts=3"], ["grid.pionts"]),
    (["grid.points=many"], ["grid.points"]),
    (["flops=6n"], ["flops", "6nd"]),
])
@pytest.mark.slow
def test_wrong_plan_input_is_one_clear_line(tmp_path, args, needles):
    proc = run_cli("ff-plan", f"run_dir={tmp_path / 'r'}", *args, cwd=tmp_path, check=False)
    _one_line_error(proc, *needles)
    assert not (tmp_path / "r" / "plan.json").exists()


def test_missing_plan_is_one_clear_line(tmp_path):
    proc = run_cli("ff-train", "run_dir=nowhere", cwd=tmp_path, check=False)
    _one_line_error(proc, "no plan", "ff-plan run_dir=nowhere")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_bad_input_leaves_the_run_dir_as_it_was(tmp_path):
    run = tmp_path / "r"
    run_cli("ff-plan", f"run_dir={run}", *PLAN_ARGS, cwd=tmp_path)
    before = (run / "plan.json").read_bytes()
    proc = run_cli("ff-plan", f"run_dir={run}", "budgets.values=[]", cwd=tmp_path, check=False)
    _one_line_error(proc, "budgets.values")
    assert (run / "plan.json").read_bytes() == before


@pytest.mark.slow
def test_multirun_shards_with_joblib(tmp_path):
    run = tmp_path / "shards"
    run_cli("ff-plan", f"run_dir={run}", *PLAN_ARGS, cwd=tmp_path)
    n = len(json.loads((run / "plan.json").read_text())["experiments"])
    run_cli("ff-train", "-m", f"run_dir={run}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            "shard=0,1,2,3", "num_shards=4", cwd=tmp_path)
    records = [json.loads(p.read_text()) for p in (run / "runs").glob("*.json")]
    assert len(records) == n and all(r["status"] == "completed" for r in records)
    assert len({r["id"] for r in records}) == n
    assert sorted(p.name for p in (run / "configs").glob("train-shard*.yaml")) == [f"train-shard{k}.yaml" for k in range(4)]


@pytest.mark.slow
def test_config_tree_found_from_a_built_wheel(tmp_path):
    """The wheel carries conf/ as flops_fit/conf; the scripts find it from any directory."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)],
                   check=True, capture_output=True, text=True)
    wheel = next(dist.glob("flops_fit-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    assert (target / "flops_fit" / "conf" / "plan.yaml").is_file()
    env = {"PYTHONPATH": str(target), "PATH": ""}
    code = "from flops_fit.config.compose import config_dir; print(config_dir())"
    where = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()) == target / "flops_fit" / "conf"
    run = tmp_path / "from_wheel"
    proc = subprocess.run([sys.executable, "-m", "flops_fit.cli.plan", f"run_dir={run}", *PLAN_ARGS],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (run / "plan.json").is_file()


@pytest.mark.slow
def test_runs_trained_elsewhere_reproduce_chinchilla(tmp_path):
    """`ff-analyze input=FILE` on Epoch AI's extraction of Chinchilla's runs (../shared/data)."""
    src = REPO.parent / "shared" / "data" / "chinchilla_svg_extracted.csv"
    if not src.is_file():
        pytest.skip(f"{src} is absent (it ships beside the checkout in ../shared/data, not with the package)")
    run = tmp_path / "chin"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "chinchilla_reproduce.py"), "--csv", str(src),
                           "--run-dir", str(run), "--bootstrap", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    fit = json.loads((run / "analysis.json").read_text())["fits"]
    assert fit["isoflop"]["status"] == "skipped" and fit["envelope"]["status"] == "skipped"
    par = fit["parametric"]
    for key, want, tol in [("E", 1.8172, 0.005), ("alpha", 0.3473, 0.005), ("beta", 0.3672, 0.005),
                           ("A", 477.78, 0.03), ("B", 2142.93, 0.03)]:
        assert abs(par[key] / want - 1) < tol, (key, par[key], want)
    run_cli("ff-plot", f"run_dir={run}", cwd=tmp_path)
    assert (run / "plots" / "parametric_residuals.png").is_file() and (run / "report.html").is_file()


def test_bad_dataset_fails_at_plan_time(tmp_path):
    proc = run_cli("ff-plan", f"run_dir={tmp_path / 'r'}", "dataset=bbc_news", "dataset.vocab_size=100",
                   cwd=tmp_path, check=False)
    _one_line_error(proc, "dataset.vocab_size=100")
    assert not (tmp_path / "r" / "plan.json").exists()


@pytest.mark.slow
def test_analyze_and_plot_never_import_torch(tmp_path):
    run = tmp_path / "r"
    run_cli("ff-plan", f"run_dir={run}", *PLAN_ARGS, "quiet=true", cwd=tmp_path)
    run_cli("ff-train", f"run_dir={run}", cwd=tmp_path)
    for stage in ("analyze", "plot"):
        code = ("import sys, importlib.abc\n"
                "class NoTorch(importlib.abc.MetaPathFinder):  # any import of torch now fails\n"
                "    def find_spec(self, name, path=None, target=None):\n"
                "        if name.split('.')[0] == 'torch':\n"
                "            raise ImportError('torch is blocked')\n"
                "sys.meta_path.insert(0, NoTorch())\n"
                f"sys.argv = ['ff-{stage}', 'run_dir={run}', 'quiet=true']\n"
                f"from flops_fit.cli.{stage} import main\n"
                "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
                "assert 'torch' not in sys.modules\n")
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert (run / "report.html").is_file()
