"""find_optimal(model_cls=..., dataset=..., loss_fn=...): a user's own objects through the same stages.

The model classes, datasets and losses are defined here, as a user would in a notebook: nothing
in the package knows them.
"""

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import flops_fit
from flops_fit import FlopsFitError
from tests.conftest import REPO, run_cli

N_CLASSES = 4
N_FEATURES = 8


class Classifier(nn.Module):
    """A user's MLP classifier, sized by ``width``."""

    def __init__(self, width: int, depth: int = 1):
        super().__init__()
        layers, d = [], N_FEATURES
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, N_CLASSES))

    def forward(self, x):
        return self.net(x)

    def num_params(self, non_embedding: bool = False) -> int:
        return sum(p.numel() for p in self.parameters())


def _blobs(n=2048, seed=0):
    """Four separable Gaussian blobs: a uniform guess scores log(4), a trained model far less."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    centres = torch.randn(N_CLASSES, N_FEATURES, generator=torch.Generator().manual_seed(99)) * 2.0
    x = centres[y] + 0.7 * torch.randn(n, N_FEATURES, generator=g)
    return x, y


class BlobStream(IterableDataset):
    def __init__(self, n=2048):
        self.x, self.y = _blobs(n)

    def __iter__(self):
        for i in range(len(self.y)):
            yield self.x[i], self.y[i]


BUDGETS = [2e6, 6e6]


def _objects(tmp_path, **kw):
    args = dict(model_cls=Classifier, model_size_param="width", dataset=TensorDataset(*_blobs()),
                compute_budgets=BUDGETS, output_dir=tmp_path / "run", size_range=[2, 256], points=4, span=3.0,
                tokens_per_param=20.0, bootstrap=20, plot=False)
    args.update(kw)
    return flops_fit.find_optimal(**args)


@pytest.mark.slow
def test_mock_mode_writes_the_clis_artifacts_and_a_table(tmp_path):
    result = _objects(tmp_path, mode="mock")
    run = tmp_path / "run"
    plan = json.loads((run / "plan.json").read_text())
    assert plan["model"]["size_param"] == "width" and plan["data_unit"] == "samples"
    assert {"id", "budget", "size", "params", "tokens"} <= set(plan["experiments"][0])
    for e in plan["experiments"]:
        rec = json.loads((run / "runs" / f"{e['id']}.json").read_text())
        assert {"id", "status", "params", "tokens", "flops", "loss", "history"} <= set(rec)
    table = result.chinchilla_table()
    assert table.splitlines()[0].startswith("| budget") and "N_opt" in table and len(table.splitlines()) >= 4
    assert result.predict(1e8)["params"] > result.predict(1e7)["params"] > 0
    # the CLI's later stages work on what the API wrote, and load() gives the same answer back
    run_cli("ff-analyze", f"run_dir={run}", "bootstrap=20", "quiet=true", cwd=tmp_path)
    assert flops_fit.load(run).predict(1e8)["params"] == pytest.approx(result.predict(1e8)["params"], rel=1e-9)


def test_plan_warnings_reach_the_notebook_at_the_callers_line(tmp_path):
    """What ff-plan prints under its table reaches a find_optimal caller as a UserWarning on its own line."""
    with pytest.warns(UserWarning, match="3 or more model sizes") as caught:
        _objects(tmp_path, mode="mock", points=2)
    # every plan warning (too few sizes; this tiny dataset's repeats) at the caller's line
    assert {w.filename for w in caught if str(w.message).startswith("flops-fit plan:")} == {__file__}


def test_a_sweep_too_thin_to_fit_warns_and_its_table_says_why(tmp_path):
    """Two runs at one budget: find_optimal still returns the Result (its diagnostics say why), warns at the
    caller's line, and asking it for the table raises the CLI's message instead of printing an empty one."""
    with pytest.warns(UserWarning, match="no compute-optimal table") as caught:
        result = _objects(tmp_path, mode="mock", points=2, compute_budgets=BUDGETS[:1])
    assert [w.filename for w in caught if "no compute-optimal" in str(w.message)] == [__file__]
    assert any(d["code"] == "no_table" for d in result.analysis["diagnostics"])
    with pytest.raises(FlopsFitError, match="grid.points=5 or more"):
        result.chinchilla_table()


@pytest.mark.slow
def test_result_plot_returns_the_open_figures_it_wrote(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    result = _objects(tmp_path, mode="mock")
    plt.close("all")
    figures = result.plot()
    written = sorted((tmp_path / "run" / "plots").glob("*.png"))
    assert written and len(figures) == len(written)
    assert all(isinstance(f, Figure) and f.axes for f in figures)
    assert set(plt.get_fignums()) == {f.number for f in figures}  # left open for the notebook
    assert (tmp_path / "run" / "report.html").exists()
    plt.close("all")
    from flops_fit import stages
    from flops_fit.config.compose import compose

    out = stages.plot(compose("plot", [f"run_dir={tmp_path / 'run'}"]))  # what ff-plot runs: closes them
    assert "figures" not in out and len(out["plots"]) == len(written) and plt.get_fignums() == []


def _uniform_guess():
    return math.log(N_CLASSES)


@pytest.mark.parametrize("kind", ["tensor", "iterable", "loader"])
@pytest.mark.slow
def test_local_mode_learns_on_each_kind_of_dataset(tmp_path, kind, one_torch_thread):
    data = {"tensor": TensorDataset(*_blobs()), "iterable": BlobStream(),
            "loader": DataLoader(TensorDataset(*_blobs()), batch_size=32, shuffle=True,
                                 generator=torch.Generator().manual_seed(0))}[kind]
    result = _objects(tmp_path, dataset=data, mode="local", compute_budgets=[3e6], points=2, batch_size=32, lr=1e-2,
                      progress=False, train=True, bootstrap=0)
    runs = [json.loads(p.read_text()) for p in (tmp_path / "run" / "runs").glob("*.json")]
    assert runs and all(r["status"] == "completed" for r in runs)
    assert max(r["loss"] for r in runs) < 0.5 * _uniform_guess(), [r["loss"] for r in runs]
    assert result.run_dir == str(tmp_path / "run")


@pytest.mark.slow
def test_custom_loss_is_used_for_training_and_evaluation(tmp_path, one_torch_thread):
    """CE + 10 has CE's gradients, so training is the same run; the held-out loss is the user's: + 10."""
    calls = {"n": 0}

    def shifted_ce(output, targets):
        calls["n"] += 1
        return nn.functional.cross_entropy(output, targets) + 10.0

    kw = dict(mode="local", compute_budgets=[3e6], points=2, batch_size=32, lr=1e-2, progress=False, bootstrap=0)
    _objects(tmp_path / "plain", **kw)
    _objects(tmp_path / "shifted", loss_fn=shifted_ce, **kw)
    assert calls["n"] > 0

    def losses(name):
        return {p.name: json.loads(p.read_text())["loss"] for p in (tmp_path / name / "run" / "runs").glob("*.json")}

    plain, shifted = losses("plain"), losses("shifted")
    assert plain.keys() == shifted.keys() and plain
    for k in plain:
        assert shifted[k] == pytest.approx(plain[k] + 10.0, abs=1e-4)


@pytest.mark.slow
def test_second_call_skips_completed_runs(tmp_path, one_torch_thread):
    kw = dict(mode="local", compute_budgets=[3e6], points=2, batch_size=32, progress=False, bootstrap=0)
    _objects(tmp_path, **kw)
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "runs").glob("*.json")}
    _objects(tmp_path, **kw)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "runs").glob("*.json")} == files


class NoCount(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.lin = nn.Linear(N_FEATURES, width)


class FixedSize(Classifier):
    def __init__(self, width: int):
        super().__init__(8)


class NoSizeParam(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.lin = nn.Linear(N_FEATURES, hidden)

    def num_params(self):
        return hidden_count(self)


def hidden_count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.slow
def test_a_module_without_num_params_is_counted_by_its_parameters(tmp_path):
    _objects(tmp_path, model_cls=NoCount, mode="mock")
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert all(e["params"] == N_FEATURES * e["size"] + e["size"] for e in plan["experiments"])


@pytest.mark.parametrize("cls, needles", [
    (NoSizeParam, ["width", "NoSizeParam"]),
    (FixedSize, ["does not grow", "width"]),
])
def test_contract_violations_are_one_clear_error(tmp_path, cls, needles):
    with pytest.raises(FlopsFitError) as e:
        _objects(tmp_path, model_cls=cls, mode="mock")
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    assert not (tmp_path / "run" / "plan.json").exists()


def test_mixing_the_two_forms_is_refused(tmp_path):
    with pytest.raises(FlopsFitError, match="one form"):
        flops_fit.find_optimal(model_cls=Classifier, model_size_param="width", dataset=TensorDataset(*_blobs()),
                               compute_budgets=BUDGETS, model="gpt", output_dir=tmp_path)
    with pytest.raises(FlopsFitError, match="without model_cls"):
        flops_fit.find_optimal(run_dir=str(tmp_path), loss_fn=lambda o, t: o.sum())


def test_unknown_option_names_the_known_ones(tmp_path):
    with pytest.raises(FlopsFitError, match="unknown option lerning_rate"):
        _objects(tmp_path, mode="mock", lerning_rate=1e-3)


@pytest.mark.slow
def test_size_range_is_found_when_not_given(tmp_path):
    _objects(tmp_path, mode="mock", size_range=None, compute_budgets=[1e8, 1e9])
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    for budget in (1e8, 1e9):
        params = sorted(e["params"] for e in plan["experiments"] if e["budget"] == budget)
        centre = math.sqrt(budget / (6 * 20))
        assert params[0] < centre < params[-1], (budget, params, centre)


@pytest.mark.slow
def test_user_data_and_loss_through_the_cli(tmp_path):
    """The same kind of user model, data factory and loss, from a user config folder."""
    conf = tmp_path / "my_conf"
    (conf / "model").mkdir(parents=True)
    (conf / "dataset").mkdir()
    (conf / "model" / "bow.yaml").write_text(
        "defaults: [model_schema, _self_]\nname: bow\n_target_: tests.plugins.user_model.BagOfWordsLM\n"
        "size_param: width\nsize_range: [4, 512]\nkwargs: {vocab_size: 32, depth: 1}\n")
    (conf / "dataset" / "windows.yaml").write_text(
        "defaults: [dataset_schema, _self_]\nname: windows\nkind: torch\n"
        "_target_: tests.plugins.user_model.make_token_windows\nkwargs: {n: 512, seq_len: 16, vocab_size: 32}\n")
    run = tmp_path / "run"
    search = f"hydra.searchpath=[file://{conf}]"
    run_cli("ff-plan", f"run_dir={run}", search, "model=bow", "dataset=windows", "budgets.values=[3e7]",
            "grid.points=2", cwd=REPO)
    plan = json.loads((run / "plan.json").read_text())
    assert plan["dataset"]["kind"] == "torch" and plan["data_unit"] == "tokens"
    run_cli("ff-train", f"run_dir={run}", "trainer=local", "trainer.loss=tests.plugins.user_model.smoothed_ce",
            "trainer.progress=false", "trainer.threads=1", cwd=REPO)
    runs = [json.loads(p.read_text()) for p in (run / "runs").glob("*.json")]
    assert len(runs) == len(plan["experiments"]) and all(r["status"] == "completed" for r in runs)
    assert max(r["loss"] for r in runs) < math.log(32)
