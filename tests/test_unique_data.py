"""Unique data known at every stage: the source counts U (or the user states it), the plan gives each run its
epochs and warns when runs repeat data, the run record says how often it repeated it."""

import pytest
import torch
from torch.utils.data import IterableDataset, TensorDataset

from flops_fit import stages
from flops_fit.config.compose import compose
from flops_fit.data import build_data
from flops_fit.data.torch_data import TorchData
from flops_fit.errors import FlopsFitError
from flops_fit.models import ModelSpec
from flops_fit.planning import Grid, format_plan, make_plan
from flops_fit.training.record import planned_record

SYNTH = {"kind": "text", "source": "synthetic", "vocab_size": 64, "seq_len": 16, "eval_size": 1024,
         "options": {"num_tokens": 50_000}}


def test_text_source_counts_its_training_tokens_and_a_statement_wins():
    data = build_data(SYNTH)
    assert data.unique_units == data.train_tokens == 50_000 and data.unique_source == "counted"
    assert data.info()["unique_units"] == 50_000
    stated = build_data({**SYNTH, "unique_units": 12_345})
    assert stated.unique_units == 12_345 and stated.unique_source == "stated"


def test_torch_dataset_length_times_units_per_example_and_stream_unknown_unless_stated():
    x = torch.randint(0, 10, (100, 8))
    data = TorchData(TensorDataset(x, x), eval_size=10)
    assert data.unique_units == 90 * 8  # training examples (100 less the held-out 10) x 8 tokens each

    class Stream(IterableDataset):
        def __iter__(self):
            while True:
                yield torch.randint(0, 10, (8,)), torch.randint(0, 10, (8,))

    assert TorchData(Stream(), eval_size=4).unique_units is None
    assert TorchData(Stream(), eval_size=4, unique_units=5000).unique_units == 5000
    with pytest.raises(FlopsFitError, match="unique_units"):
        TorchData(Stream(), eval_size=4, unique_units=-1)


def test_dataset_unique_units_must_be_a_positive_integer():
    with pytest.raises(FlopsFitError, match="dataset.unique_units"):
        build_data({**SYNTH, "unique_units": 0})


def _gpt():
    return ModelSpec.from_config({"_target_": "flops_fit.examples.gpt.GPT", "size_param": "d_model",
                                  "kwargs": {"vocab_size": 64, "seq_len": 16, "n_layer": 2, "head_dim": 8},
                                  "size_range": [8, 256]})


def test_plan_records_epochs_and_warns_past_one_and_past_four_epochs():
    plan = make_plan(_gpt(), [1e10, 1e11], grid=Grid(points=5, min_steps=0), unique_units=100_000)
    assert plan["unique_units"] == 100_000 and plan["unique_units_source"] == "counted"
    for e in plan["experiments"]:
        assert e["epochs"] == pytest.approx(e["tokens"] / 100_000)
    assert any(e["epochs"] > 4 for e in plan["experiments"])
    text = " ".join(plan["warnings"])
    assert "repeat the data" in text and "pass 4 epochs" in text
    shown = format_plan(plan)
    assert "epochs" in shown and "unique data: 100K tokens (counted)" in shown


def test_no_repeat_warning_when_data_suffices_and_unknown_said_plainly():
    plan = make_plan(_gpt(), [1e10], grid=Grid(points=3, min_steps=0), unique_units=10**12)
    assert not any("repeat" in w for w in plan["warnings"])
    unknown = make_plan(_gpt(), [1e10], grid=Grid(points=3, min_steps=0))
    assert unknown["unique_units"] is None and unknown["unique_units_source"] == "unknown"
    assert "unique data: unknown" in format_plan(unknown)


def test_grid_max_epochs_drops_the_runs_that_repeat_more():
    plan = make_plan(_gpt(), [1e10, 1e11], grid=Grid(points=5, min_steps=0, max_epochs=2.0), unique_units=100_000)
    assert all(e["epochs"] <= 2.0 for e in plan["experiments"])
    assert any("grid.max_epochs=2" in d["reason"] for d in plan["dropped"])
    with pytest.raises(FlopsFitError, match="grid.max_epochs"):
        make_plan(_gpt(), [1e12], grid=Grid(points=3, min_steps=0, max_epochs=1.0), unique_units=1000)
    with pytest.raises(FlopsFitError, match="grid.max_epochs"):
        Grid(max_epochs=-1).validate()


def test_ff_plan_counts_the_data_and_fails_in_one_line_when_it_is_missing(tmp_path):
    cfg = compose("plan", [f"run_dir={tmp_path / 'a'}", "model=gpt", "dataset=synthetic_text",
                           "budgets.values=[1e11,1e12]", "grid.points=3", "quiet=true"])
    plan = stages.plan(cfg)
    assert plan["unique_units"] == build_data(dict(cfg["dataset"])).train_tokens
    assert all("epochs" in e for e in plan["experiments"])
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = compose("plan", [f"run_dir={tmp_path / 'b'}", "model=vit", "dataset=fashion_mnist",
                           f"dataset.path={empty}", "quiet=true"])
    with pytest.raises(FlopsFitError, match="dataset.path") as e:
        stages.plan(bad)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "b" / "plan.json").exists()


def test_run_record_gives_unique_units_seen_and_epochs():
    exp = {"id": "r", "budget": 1e10, "size": 8, "params": 1000, "tokens": 30_000, "unique_units": 10_000,
           "epochs": 3.0}
    rec = planned_record(exp, status="completed", trainer="mock", flops_convention="6nd", data_unit="tokens",
                         loss=1.0, history=[])
    assert rec["unique_units"] == 10_000 and rec["unique_units_seen"] == 10_000 and rec["epochs"] == pytest.approx(3.0)
    once = planned_record({**exp, "tokens": 4000}, status="completed", trainer="mock", flops_convention="6nd",
                          data_unit="tokens", loss=1.0, history=[])
    assert once["unique_units_seen"] == 4000 and once["epochs"] == pytest.approx(0.4)


def test_train_subset_cuts_the_training_split_and_keeps_the_held_out_one():
    full = build_data(SYNTH)
    cut = build_data({**SYNTH, "options": {**SYNTH["options"], "train_subset": 5000}})
    assert cut.unique_units == 5000 and cut.train_range == (0, 5000)
    assert cut.eval_range == full.eval_range
    import numpy as np
    assert np.array_equal(next(iter(cut.eval_batches(8)))[0].numpy(), next(iter(full.eval_batches(8)))[0].numpy())
    with pytest.raises(FlopsFitError, match="train_subset"):
        build_data({**SYNTH, "options": {**SYNTH["options"], "train_subset": 3}})


def test_with_train_subset_for_text_images_and_datasets():
    text = build_data(SYNTH)
    sub = text.with_train_subset(2000)
    assert sub.unique_units == 2000 and sub.eval_range == text.eval_range and text.unique_units == 50_000
    x = torch.randint(0, 10, (100, 8))
    data = TorchData(TensorDataset(x, x), eval_size=10)
    assert data.with_train_subset(80).unique_units == 80 and data.unique_units == 720
    img = build_data({"kind": "image", "source": "synthetic", "num_classes": 3, "image_size": 8, "channels": 1,
                      "eval_size": 16})
    with pytest.raises(FlopsFitError, match="repeat_epochs"):
        img.with_train_subset(10)  # images generated on the fly: no subset to repeat


def test_grid_repeat_epochs_plans_a_data_constrained_study_inside_the_sweep(tmp_path):
    plan = make_plan(_gpt(), [1e10, 1e11], grid=Grid(points=5, min_steps=0, repeat_epochs=[4, 16]),
                     unique_units=10**9)
    reps = [e for e in plan["experiments"] if e.get("train_subset")]
    assert len(reps) == 4
    for r in reps:
        twin = next(e for e in plan["experiments"] if e["id"] == r["repeat_of"])
        assert r["tokens"] == twin["tokens"] and r["params"] == twin["params"]  # same compute as its fresh twin
        assert r["unique_units"] == r["train_subset"] and r["epochs"] == pytest.approx(r["id"].endswith("rep4") and 4 or 16, rel=1e-3)
    with pytest.raises(FlopsFitError, match="unique units"):
        make_plan(_gpt(), [1e10], grid=Grid(points=3, min_steps=0, repeat_epochs=[4]))
    with pytest.raises(FlopsFitError, match="repeat_epochs"):
        Grid(repeat_epochs=[0.5]).validate()


def test_repeat_runs_train_on_the_subset_and_only_the_data_constrained_fit_reads_them(tmp_path):
    from flops_fit.analysis import run_analysis
    from flops_fit.artifacts import RunDir

    rd = tmp_path / "s"
    stages.plan(compose("plan", [f"run_dir={rd}", "model=gpt", "dataset=synthetic_text", "budgets.values=[1e11,3e11,1e12]",
                                 "grid.points=5", "grid.repeat_epochs=[4,16]", "quiet=true"]))
    stages.train(compose("train", [f"run_dir={rd}", "trainer=mock"]))
    runs, plan = stages.load_runs(RunDir(rd))
    reps = [r for r in runs if r.get("train_subset")]
    assert reps and all(r["epochs"] == pytest.approx(r["tokens"] / r["train_subset"]) for r in reps)
    both = run_analysis(runs, plan=plan, n_bootstrap=0, check_short=False)
    fresh = run_analysis([r for r in runs if not r.get("train_subset")], plan=plan, n_bootstrap=0, check_short=False)
    assert both["fits"]["isoflop"]["a"] == pytest.approx(fresh["fits"]["isoflop"]["a"])
    assert both["fits"]["data_constrained"]["n_runs"] == len(runs)
    assert fresh["fits"]["data_constrained"]["n_runs"] == len(runs) - len(reps)
    assert any(d["code"] == "repeat_runs" for d in both["diagnostics"])


def test_find_optimal_unique_units_is_a_statement_the_plan_records(tmp_path):
    import warnings

    import flops_fit
    from flops_fit.artifacts import RunDir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flops_fit.find_optimal(run_dir=str(tmp_path / "r"), model="gpt", dataset="synthetic_text",
                               budgets=[1e11, 1e12], trainer="mock", unique_units=123_456, plot=False)
    plan = RunDir(tmp_path / "r").read_plan()
    assert plan["unique_units"] == 123_456 and plan["unique_units_source"] == "stated"
    assert all(e["epochs"] == pytest.approx(e["tokens"] / 123_456) for e in plan["experiments"])


def test_a_stated_unique_units_plans_without_the_data_here(tmp_path):
    """Data that lives only where ff-train runs (trainer data_path): stating U plans without reading it."""
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = compose("plan", [f"run_dir={tmp_path / 'p'}", "model=vit", "dataset=fashion_mnist", f"dataset.path={empty}",
                           "dataset.unique_units=60000", "budgets.values=[1e11,1e12]", "quiet=true"])
    plan = stages.plan(cfg)
    assert plan["unique_units"] == 60000 and plan["unique_units_source"] == "stated"
