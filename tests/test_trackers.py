"""Experiment trackers (``logger=tensorboard | mlflow | wandb``): what a sweep writes, read back with each
tracker's own reader. Each test skips where its tracker is not installed (the dev extra installs tensorboard)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from flops_fit import stages
from flops_fit.config.compose import compose
from flops_fit.errors import FlopsFitError
from tests.conftest import REPO

GPT_TINY = ["model=gpt", "model.kwargs.n_layer=1", "model.kwargs.head_dim=8",
            "dataset=synthetic_text", "dataset.seq_len=32", "dataset.vocab_size=64", "dataset.eval_size=1024",
            "dataset.options.num_tokens=65536", "quiet=true"]


def _records(run):
    return {r["id"]: r for r in (json.loads(p.read_text()) for p in (run / "runs").glob("*.json"))}


def _mock_sweep(run, logger, plot=False):
    """Twelve mock runs over three budgets, analysed (and plotted): the table and every run go to ``logger``."""
    stages.plan(compose("plan", [f"run_dir={run}", *GPT_TINY, "model.size_range=[8,256]",
                                 "budgets.values=[1e11,1e12,1e13]", "grid.points=4"]))
    stages.train(compose("train", [f"run_dir={run}", "trainer=mock", f"logger={logger}", "quiet=true"]))
    analysis = stages.analyze(compose("analyze", [f"run_dir={run}", "bootstrap=0", f"logger={logger}", "quiet=true"]))
    if plot:
        stages.plot(compose("plot", [f"run_dir={run}", f"logger={logger}", "report=false", "quiet=true"]))
    return _records(run), analysis


def _real_runs(run, logger, limit=1, *extra):
    """Tiny runs trained for real (a learning rate, a throughput), logged to ``logger``: {id: record}."""
    stages.plan(compose("plan", [f"run_dir={run}", *GPT_TINY, "model.size_range=[8,64]", "budgets.values=[3e8]",
                                 "grid.points=2", "grid.min_steps=0"]))
    stages.train(compose("train", [f"run_dir={run}", "trainer=local", "trainer.batch_size=8", "trainer.threads=1",
                                   "trainer.progress=false", f"limit={'null' if limit is None else limit}",
                                   f"logger={logger}", "quiet=true", *extra]))
    records = _records(run)
    assert all(r["status"] == "completed" and len(r["history"]) >= 2 for r in records.values())
    return records


def _table_text(analysis):
    from flops_fit.analysis.summary import markdown_table

    return markdown_table(analysis)


def _check_lr(record, lrs):
    """The logged learning rates: warmup then cosine decay down to lr x min_lr_ratio at the last step."""
    peak, floor = record["lr"], record["lr"] * record["trainer_settings"]["min_lr_ratio"]
    assert len(lrs) == len(record["history"])
    assert all(floor * (1 - 1e-6) <= v <= peak * (1 + 1e-6) for v in lrs)  # TensorBoard stores float32
    assert lrs[-1] == pytest.approx(floor, rel=1e-6) and max(lrs) > 2 * floor
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # the warmup ends before the first evaluation


# ------------------------------------------------------------------------------------------ TensorBoard


@pytest.mark.slow
def test_tensorboard_holds_every_run_curve_and_the_table(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def read(folder):
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
        acc.Reload()
        return acc

    run = tmp_path / "sweep"
    records, analysis = _mock_sweep(run, "tensorboard", plot=True)
    assert analysis["table"]
    logs = run / "logs" / "tensorboard"
    assert {p.name for p in logs.iterdir()} == set(records) | {"analysis", "plots"}
    for rid, rec in records.items():
        acc = read(logs / rid)
        loss = acc.Scalars("loss")
        assert [e.step for e in loss] == [h["tokens"] for h in rec["history"]]
        assert [e.value for e in loss] == pytest.approx([h["loss"] for h in rec["history"]], rel=1e-6)
        assert acc.Scalars("final_loss")[-1].value == pytest.approx(rec["loss"], rel=1e-6)
        params = acc.Tensors("params")[0].tensor_proto.string_val[0].decode()
        assert "| model.name | gpt |" in params and f"| run.id | {rid} |" in params
    acc = read(logs / "analysis")
    assert acc.Tensors("table")[0].tensor_proto.string_val[0].decode() == _table_text(analysis)
    assert acc.Scalars("isoflop.a")[0].value == pytest.approx(analysis["fits"]["isoflop"]["a"], rel=1e-6)
    plots = read(logs / "plots")
    assert "figures/isoflop" in plots.Tags()["images"]
    assert plots.Images("figures/isoflop")[0].encoded_image_string == (run / "plots" / "isoflop.png").read_bytes()

    real = tmp_path / "real"
    (record,) = _real_runs(real, "tensorboard").values()
    acc = read(real / "logs" / "tensorboard" / record["id"])
    _check_lr(record, [e.value for e in acc.Scalars("lr")])
    assert record["tokens_per_s"] > 0
    assert acc.Scalars("tokens_per_s")[-1].value == pytest.approx(record["tokens_per_s"], rel=1e-6)


def test_runs_trained_in_packed_worker_processes_are_logged(tmp_path):
    """Packed workers write their records; the sweep's process logs each as its task finishes."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records = _real_runs(tmp_path, "tensorboard", None, "trainer.pack=2")
    assert len(records) == 2 and {r["concurrent_runs"] for r in records.values()} == {2}
    for rid, rec in records.items():
        acc = EventAccumulator(str(tmp_path / "logs" / "tensorboard" / rid))
        acc.Reload()
        assert [e.step for e in acc.Scalars("loss")] == [h["tokens"] for h in rec["history"]]
        _check_lr(rec, [e.value for e in acc.Scalars("lr")])


# ------------------------------------------------------------------------------------------ MLflow


@pytest.mark.slow
def test_mlflow_file_store_holds_every_run_curve_and_the_table(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow import MlflowClient

    run = tmp_path / "sweep"
    records, analysis = _mock_sweep(run, "mlflow")
    client = MlflowClient(tracking_uri=(run / "logs" / "mlflow" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("flops-fit")
    found = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(found) == set(records) | {"analysis"}
    for rid, rec in records.items():
        r = found[rid]
        assert r.data.tags["flops_fit.sweep"] == "sweep"
        assert r.data.params["model.name"] == "gpt" and r.data.params["grid.points"] == "4"
        assert r.data.params["run.budget"] == str(rec["budget"])
        history = sorted(client.get_metric_history(r.info.run_id, "loss"), key=lambda m: m.step)
        assert [m.step for m in history] == [h["tokens"] for h in rec["history"]]
        assert [m.value for m in history] == pytest.approx([h["loss"] for h in rec["history"]])
        assert r.data.metrics["final_loss"] == pytest.approx(rec["loss"])
    table = client.download_artifacts(found["analysis"].info.run_id, "table.md", str(tmp_path))
    assert open(table).read() == _table_text(analysis)
    assert found["analysis"].data.metrics["parametric.a"] == pytest.approx(analysis["fits"]["parametric"]["a"])

    real = tmp_path / "real"
    (record,) = _real_runs(real, "mlflow").values()
    client = MlflowClient(tracking_uri=(real / "logs" / "mlflow" / "mlruns").as_uri())
    (r,) = client.search_runs([client.get_experiment_by_name("flops-fit").experiment_id])
    lrs = [m.value for m in sorted(client.get_metric_history(r.info.run_id, "lr"), key=lambda m: m.step)]
    _check_lr(record, lrs)
    assert r.data.metrics["tokens_per_s"] == pytest.approx(record["tokens_per_s"]) and record["tokens_per_s"] > 0


# ------------------------------------------------------------------------------------------ W&B


def _wandb_runs(folder):
    """Every offline run under ``folder``, read with W&B's own reader of its run files (``wandb leet inspect``)."""
    out = {}
    for run_dir in sorted((folder / "wandb").glob("offline-run-*")):
        lines = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", str(run_dir), "--json"],
                               capture_output=True, text=True, check=True).stdout.splitlines()
        found = {"history": [], "summary": {}, "dir": run_dir}
        for rec in map(json.loads, lines):
            if rec["type"] == "run":
                found.update(name=rec["run"]["display_name"], project=rec["run"]["project"],
                             group=rec["run"].get("run_group"),
                             config={k: v for k, v in rec["run"]["config"]["update"].items() if k != "_wandb"})
            elif rec["type"] == "history":
                found["history"].append(rec["history"]["item"])
            elif rec["type"] == "summary":
                found["summary"].update(rec["summary"]["update"])
            elif rec["type"] == "exit":
                found["exit_code"] = rec["exit"].get("exit_code", 0)
        out[found["name"]] = found
    return out


@pytest.mark.slow
def test_wandb_offline_runs_hold_every_run_curve_and_the_table(tmp_path):
    pytest.importorskip("wandb")
    # two runs trained for real, each an offline W&B run (a W&B run costs about a second, so the sweep is small)
    real = tmp_path / "real"
    records = _real_runs(real, "wandb", limit=None)
    found = _wandb_runs(real / "logs" / "wandb")
    assert set(found) == set(records) and len(records) == 2
    for rid, rec in records.items():
        logged = found[rid]
        assert logged["exit_code"] == 0 and logged["project"] == "flops-fit" and logged["group"] == "real"
        assert logged["config"]["model.name"] == "gpt" and logged["config"]["run.id"] == rid
        curve = [h for h in logged["history"] if "loss" in h]  # a run logged live gets its lr in rows of its own
        assert [h["tokens"] for h in curve] == [h["tokens"] for h in rec["history"]]
        assert [h["loss"] for h in curve] == pytest.approx([h["loss"] for h in rec["history"]])
        assert logged["summary"]["final_loss"] == pytest.approx(rec["loss"])
        assert logged["summary"]["tokens_per_s"] == pytest.approx(rec["tokens_per_s"])
        lr = {h["tokens"]: h["lr"] for h in logged["history"] if "lr" in h}
        _check_lr(rec, [lr[h["tokens"]] for h in rec["history"]])
    # the analysis of a sweep: its table and exponents
    run = tmp_path / "sweep"
    _mock_sweep(run, "none")
    analysis = stages.analyze(compose("analyze", [f"run_dir={run}", "bootstrap=0", "logger=wandb", "quiet=true"]))
    (found,) = _wandb_runs(run / "logs" / "wandb").values()
    assert found["name"] == "analysis" and found["summary"]["isoflop.a"] == pytest.approx(analysis["fits"]["isoflop"]["a"])
    (table_file,) = (found["dir"] / "files" / "media" / "table").glob("*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:2] == ["budget", "params"] and len(table["data"]) == len(analysis["table"])
    assert [row[1] for row in table["data"]] == [row["params"] for row in analysis["table"]]


# ------------------------------------------------------------------------------------------ choosing


@pytest.mark.slow
def test_logger_none_writes_nothing_and_imports_no_tracker(tmp_path):
    code = ("import sys\nfrom flops_fit import stages\nfrom flops_fit.config.compose import compose\n"
            f"run = {str(tmp_path / 'r')!r}\n"
            f"stages.plan(compose('plan', ['run_dir=' + run, *{GPT_TINY!r}, 'budgets.values=[1e11]', 'grid.points=3']))\n"
            "stages.train(compose('train', ['run_dir=' + run, 'quiet=true']))\n"
            "bad = [m for m in ('tensorboard', 'mlflow', 'wandb') if m in sys.modules]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "r" / "logs").exists()


def test_a_tracker_that_is_not_installed_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(FlopsFitError, match=r"logger=wandb needs the wandb package.*flops-fit\[wandb\]"):
        stages.check("train", compose("train", [f"run_dir={tmp_path}", "logger=wandb"]))
    # and through the command line: one line, the usage exit code, nothing trained
    code = ("import importlib.util as u, sys\nreal = u.find_spec\n"
            "u.find_spec = lambda n, *a: None if n == 'mlflow' else real(n, *a)\n"
            f"sys.argv = ['ff-train', 'run_dir={tmp_path}', 'logger=mlflow']\n"
            "from flops_fit.cli.train import main\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "logger=mlflow needs the mlflow package" in proc.stderr and "pip install 'flops-fit[mlflow]'" in proc.stderr
    with pytest.raises(FlopsFitError, match="logger=neptune"):
        from flops_fit.trackers import check_logger

        check_logger({"name": "neptune"})


# ------------------------------------------------------------------------------------------ find_optimal(logger=)


@pytest.mark.slow
def test_find_optimal_logger_sends_runs_analysis_and_figures_to_the_tracker(tmp_path):
    pytest.importorskip("tensorboard")
    import torch

    import flops_fit

    class Net(torch.nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.ReLU(), torch.nn.Linear(width, 4))

        def forward(self, x):
            return self.body(x)

    run = tmp_path / "objects"
    flops_fit.find_optimal(model_cls=Net, model_size_param="width", compute_budgets=[1e9, 3e9, 1e10, 3e10],
                           mode="mock", output_dir=run, logger="tensorboard", bootstrap=0)
    logs = run / "logs" / "tensorboard"
    runs = {p.stem for p in (run / "runs").glob("*.json")}
    assert runs and {p.name for p in logs.iterdir()} == runs | {"analysis", "plots"}

    config = tmp_path / "config"
    flops_fit.find_optimal(run_dir=str(config), model="gpt", budgets=[1e17, 3e17, 1e18], trainer="mock",
                           plot=False, logger="tensorboard", bootstrap=0)
    runs = {p.stem for p in (config / "runs").glob("*.json")}
    assert runs and {p.name for p in (config / "logs" / "tensorboard").iterdir()} == runs | {"analysis"}

    with pytest.raises(FlopsFitError, match="logger='tensorbored' is not a tracker.*tensorboard"):
        flops_fit.find_optimal(run_dir=str(tmp_path / "bad"), model="gpt", trainer="mock", logger="tensorbored")
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------ live


@pytest.mark.parametrize("logger", ["tensorboard", "mlflow"])
def test_a_running_run_is_logged_live_from_its_heartbeat_then_completed_by_its_record(tmp_path, logger, monkeypatch):
    pytest.importorskip(logger)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from flops_fit.trackers import open_tracker
    from flops_fit.training.track import LiveLog, run_log

    run = tmp_path / "sweep"
    stages.plan(compose("plan", [f"run_dir={run}", *GPT_TINY, "model.size_range=[8,64]", "budgets.values=[3e8]",
                                 "grid.points=2", "grid.min_steps=0"]))
    plan = json.loads((run / "plan.json").read_text())
    exp = plan["experiments"][0]
    tracker = open_tracker({"name": logger}, run)
    beats = run / "runs" / ".heartbeat"
    beats.mkdir(parents=True)
    live = LiveLog(beats, tracker, plan, plan["experiments"], trainer="local", note=pytest.fail)
    curve = [{"tokens": 256 * (i + 1), "flops": 1e6 * (i + 1), "loss": 5.0 - 0.5 * i} for i in range(4)]

    def beat(n):  # what the loop's heartbeat holds after n evaluations
        (beats / f"{exp['id']}.json").write_text(json.dumps({"id": exp["id"], "history": curve[:n]}))

    def logged():  # {metric: [(step, value)]} of the run, as the tracker's own reader sees it
        if logger == "tensorboard":
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

            acc = EventAccumulator(str(run / "logs" / "tensorboard" / exp["id"]), size_guidance={"scalars": 0})
            acc.Reload()
            return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=(run / "logs" / "mlflow" / "mlruns").as_uri())
        (r,) = client.search_runs([client.get_experiment_by_name("flops-fit").experiment_id])
        return {k: sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)) for k in r.data.metrics}

    beat(2)
    live.poll()
    assert logged()["loss"] == [(256, 5.0), (512, 4.5)]  # there while the run trains
    beat(3)
    live.poll()
    live.poll()  # nothing new: nothing logged twice
    assert logged()["loss"] == [(256, 5.0), (512, 4.5), (768, 4.0)]
    record = {**exp, "status": "completed", "trainer": "local", "loss": 3.4, "history": curve, "lr": 1e-3,
              "steps": 4, "warmup": 1, "tokens": 1024, "tokens_per_s": 100.0, "trainer_settings": {"lr": 1e-3}}
    tracker.log_run(exp["id"], *run_log(record, plan))  # the record: the last point, the lr, the summary
    beat(4)
    live.poll()  # a heartbeat read after the record was logged does not reopen the run
    tracker.close()
    got = logged()
    assert got["loss"] == [(h["tokens"], pytest.approx(h["loss"])) for h in curve]
    assert [s for s, _ in got["lr"]] == [h["tokens"] for h in curve]
    assert got["final_loss"] == [(1024, pytest.approx(3.4))]
    if logger == "mlflow":
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=(run / "logs" / "mlflow" / "mlruns").as_uri())
        (r,) = client.search_runs([client.get_experiment_by_name("flops-fit").experiment_id])
        # opened live with the plan's settings; the record added the trainer's (MLflow keeps each parameter once)
        assert r.info.status == "FINISHED" and r.data.params["run.trainer"] == "local"
        assert r.data.params["trainer.lr"] == "0.001" and r.data.params["run.status"] == "completed"


@pytest.mark.parametrize("logger", ["tensorboard", "mlflow", "wandb"])
def test_a_killed_run_resumed_by_a_later_ff_train_continues_its_tracker_run(tmp_path, logger, monkeypatch):
    """ff-train killed while a run trains (its tracker never closed), then run again: the resumed run's points
    go on in the same tracker run, none twice, and its record closes it."""
    pytest.importorskip(logger)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("WANDB_SILENT", "true")
    from flops_fit.trackers import open_tracker

    run = tmp_path / "sweep"
    run.mkdir()
    params = {"budget": 3e8, "size": 8}
    pts = [{"step": 256 * (i + 1), "loss": 5.0 - 0.5 * i} for i in range(4)]
    killed = ("import os, sys; from flops_fit.trackers import open_tracker; "
              f"t = open_tracker({{'name': {logger!r}}}, sys.argv[1]); t.log_points('r1', {params!r}, {pts[:2]!r}); "
              "os._exit(9)")  # killed while training: no close, no record
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")}  # its own W&B service
    proc = subprocess.run([sys.executable, "-c", killed, str(run)], capture_output=True, text=True, env=env)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert (run / "logs" / logger / "open" / "sweep" / "r1.json").is_file()
    second = open_tracker({"name": logger}, run)
    second.log_points("r1", params, pts[:3])  # the resumed run's heartbeat holds every point so far
    second.log_run("r1", {**params, "lr": 1e-3}, pts, {"final_loss": 3.4})
    second.close()
    assert not (run / "logs" / logger / "open" / "sweep" / "r1.json").exists()
    if logger == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run / "logs" / "tensorboard" / "r1"), size_guidance={"scalars": 0})
        acc.Reload()
        # two event files in the run's folder, which TensorBoard shows as one run, by step
        assert sorted((e.step, e.value) for e in acc.Scalars("loss")) == [(p["step"], p["loss"]) for p in pts]
    elif logger == "mlflow":
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=(run / "logs" / "mlflow" / "mlruns").as_uri())
        (r,) = client.search_runs([client.get_experiment_by_name("flops-fit").experiment_id])
        assert sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "loss")) == \
            [(p["step"], p["loss"]) for p in pts]
        assert r.info.status == "FINISHED" and r.data.params["lr"] == "0.001"
    else:
        runs = sorted((run / "logs" / "wandb" / "wandb").glob("offline-run-*"))
        ids = {re.match(r"offline-run-\d+_\d+-([a-z0-9]+)", p.name).group(1) for p in runs}
        assert len(runs) == 2 and len(ids) == 1  # one W&B run id, resumed
        logged = []
        for d in runs:
            lines = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", str(d), "--json"],
                                   capture_output=True, text=True, check=True).stdout.splitlines()
            logged.append([rec["history"]["item"]["tokens"] for rec in map(json.loads, lines)
                           if rec["type"] == "history" and "loss" in rec["history"]["item"]])
        # the resumed run logs only the points after the last one noted (W&B may lose the killed process's
        # unflushed ones: its service writes them)
        assert set(logged[0]) <= {256, 512} and logged[1] == [768, 1024]
