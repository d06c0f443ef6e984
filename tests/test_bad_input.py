"""Every bad input gets one line naming the key or file and the fix, a non-zero exit, and leaves
the run directory exactly as it was (same files, same bytes)."""

import json
import os

import pytest

from tests.conftest import run_cli

EXT_HEADER = "params,tokens,loss\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A planned and mock-trained run directory every case starts from."""
    root = tmp_path_factory.mktemp("bad")
    run = root / "r"
    run_cli("ff-plan", f"run_dir={run}", "budgets=tiny", "quiet=true", cwd=root)
    run_cli("ff-train", f"run_dir={run}", "quiet=true", cwd=root)
    return root


def _snapshot(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = fh.read()
    return out


def _write(root, name, text):
    path = root / name
    path.write_text(text)
    return str(path)


# (case id, stage, args (R = the run dir, F = the case's input file), file name, file text, exit code, needles)
CASES = [
    ("unknown option", "ff-plan", ["model=gtp"], None, None, 2, ["model=gtp", "choose one of"]),
    ("unknown key", "ff-train", ["trainer.lrr=1"], None, None, 2, ["trainer.lrr"]),
    ("wrong type", "ff-plan", ["grid.points=many"], None, None, 2, ["grid.points", "many"]),
    ("empty budgets", "ff-plan", ["budgets.values=[]"], None, None, 2, ["budgets.values is empty"]),
    ("non-positive budget", "ff-plan", ["budgets.values=[-1e12]"], None, None, 2, ["budgets.values", "positive"]),
    ("non-numeric budget", "ff-plan", ["budgets.values=[1e12,abc]"], None, None, 2, ["budgets.values"]),
    ("budget too small for every size", "ff-plan", ["budgets.values=[10]"], None, None, 1, ["too few tokens", "budgets.values"]),
    ("reversed size_range", "ff-plan", ["model.size_range=[512,8]"], None, None, 2, ["model.size_range", "[min, max]"]),
    ("missing run dir", "ff-train", ["run_dir=nowhere"], None, None, 1, ["no plan", "ff-plan run_dir=nowhere"]),
    ("missing analysis", "ff-plot", ["run_dir=nowhere"], None, None, 1, ["no analysis", "ff-analyze"]),
    ("run dir under a file", "ff-plan", ["run_dir=F/sub"], "afile", "x", 1, ["is a file, not a folder", "run_dir"]),
    ("missing dataset path", "ff-plan", ["dataset=text_files", "dataset.path=/nonexistent/corpus"], None, None, 1,
     ["dataset.path=/nonexistent/corpus", "does not exist"]),
    ("token ids beyond the vocabulary", "ff-plan", ["dataset=synthetic_text", "model.kwargs.vocab_size=64"], None,
     None, 1, ["model.kwargs.vocab_size=64", "dataset.vocab_size=256"]),
    ("non-positive lr", "ff-train", ["trainer=local", "trainer.lr=-1"], None, None, 2, ["trainer.lr", "positive"]),
    ("zero batch size", "ff-train", ["trainer=local", "trainer.batch_size=0"], None, None, 2, ["trainer.batch_size"]),
    ("warmup_frac out of range", "ff-train", ["trainer=local", "trainer.warmup_frac=2"], None, None, 2,
     ["trainer.warmup_frac", "[0, 1)"]),
    ("csv missing column", "ff-analyze", ["input=F", "run_dir=R/ext"], "a.csv", "params,loss\n1e6,3.0\n", 1,
     ["tokens", "a.csv"]),
    ("csv text value", "ff-analyze", ["input=F", "run_dir=R/ext"], "b.csv", EXT_HEADER + "1e6,abc,3.0\n" * 3, 1,
     ["b.csv", "tokens"]),
    ("csv NaN", "ff-analyze", ["input=F", "run_dir=R/ext"], "c.csv", EXT_HEADER + "1e6,2e7,nan\n" * 3, 1,
     ["c.csv", "loss"]),
    ("csv non-positive", "ff-analyze", ["input=F", "run_dir=R/ext"], "d.csv", EXT_HEADER + "-5,2e7,3.0\n" * 3, 1,
     ["d.csv", "params"]),
    ("csv duplicated rows", "ff-analyze", ["input=F", "run_dir=R/ext"], "e.csv",
     EXT_HEADER + "1e6,2e7,3.0\n1e6,2e7,3.0\n2e6,2e7,2.9\n", 1, ["e.csv", "duplicate"]),
    ("jsonl missing column", "ff-analyze", ["input=F", "run_dir=R/ext"], "f.jsonl", '{"params": 1e6, "loss": 3}\n', 1,
     ["f.jsonl", "tokens"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.slow
def test_bad_input_is_one_line_and_changes_nothing(study, case):
    _, stage, args, fname, ftext, code, needles = case
    run = study / "r"
    f = _write(study, fname, ftext) if fname else None
    args = [a.replace("F", f) if f and "=F" in a else a for a in args]
    args = [a.replace("=R/", f"={run}/") for a in args]
    if not any(a.startswith("run_dir=") for a in args):
        args.append(f"run_dir={run}")
    before = _snapshot(run)
    proc = run_cli(stage, *args, cwd=study, check=False)
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    err = [l for l in proc.stderr.splitlines() if l.strip()]
    assert "Traceback" not in proc.stderr and len(err) == 1, proc.stderr
    assert err[0].startswith(f"{stage}: error: ")
    for n in needles:
        assert n in err[0], (n, err[0])
    assert _snapshot(run) == before


@pytest.mark.parametrize("damage", ["truncated", "newer schema"])
@pytest.mark.slow
def test_damaged_plan_is_refused_and_kept(study, damage):
    run = study / f"damaged-{damage.split()[0]}"
    run_cli("ff-plan", f"run_dir={run}", "budgets=tiny", "quiet=true", cwd=study)
    plan = run / "plan.json"
    text = plan.read_text()
    bad = text[: len(text) // 2] if damage == "truncated" else json.dumps({**json.loads(text), "schema_version": 99})
    plan.write_text(bad)
    before = _snapshot(run)
    proc = run_cli("ff-train", f"run_dir={run}", cwd=study, check=False)
    err = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 1 and len(err) == 1 and "plan.json" in err[0], proc.stderr
    if damage == "newer schema":
        assert "99" in err[0] and "1" in err[0] and "upgrade" in err[0]
    else:
        assert "not valid JSON" in err[0]
    assert _snapshot(run) == before


def test_debug_shows_the_traceback(study):
    proc = run_cli("ff-train", "run_dir=nowhere", "debug=true", cwd=study, check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_artifacts_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run_cli("ff-plan", f"run_dir={tmp_path / 'u'}", "budgets=tiny", "quiet=true", cwd=tmp_path)
    finally:
        os.umask(old)
    assert (tmp_path / "u" / "plan.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_a_new_cooldown_over_completed_wsd_runs_is_refused_by_both_stages(tmp_path):
    run = tmp_path / "w"
    run_cli("ff-plan", f"run_dir={run}", "budgets=tiny", "schedule=wsd", "quiet=true", cwd=tmp_path)
    run_cli("ff-train", f"run_dir={run}", "quiet=true", cwd=tmp_path)
    before = _snapshot(run)
    proc = run_cli("ff-plan", f"run_dir={run}", "budgets=tiny", "schedule=wsd", "cooldown_frac=0.18", cwd=tmp_path,
                   check=False)  # same run ids, each now another experiment
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and "cooldown_frac=0.2, now cooldown_frac=0.18" in line and "force=true" in line
    assert _snapshot(run) == before
    run_cli("ff-plan", f"run_dir={run}", "budgets=tiny", "schedule=wsd", "cooldown_frac=0.18", "force=true",
            "quiet=true", cwd=tmp_path)
    proc = run_cli("ff-train", f"run_dir={run}", cwd=tmp_path, check=False)
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and "was trained with cooldown_frac=0.2 but" in line and "allow_mismatch=true" in line


@pytest.mark.slow
def test_replanning_over_completed_runs_of_another_plan_needs_force(study):
    run = study / "r"
    before = _snapshot(run)
    proc = run_cli("ff-plan", f"run_dir={run}", "budgets.values=[3e12]", cwd=study, check=False)
    assert proc.returncode == 1 and "force=true" in proc.stderr and "completed runs" in proc.stderr
    assert _snapshot(run) == before
