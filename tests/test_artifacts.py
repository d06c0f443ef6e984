import json

import pytest

from flops_fit.artifacts import RunDir, write_json
from flops_fit.errors import FlopsFitError
from flops_fit.units import fmt_flops, fmt_params, fmt_tokens, human, sci


def test_units_format_the_same_way_everywhere():
    assert fmt_flops(1.2e18) == "1.2e18 FLOPs"
    assert fmt_params(3.5e8) == "350M params"
    assert fmt_tokens(7.0e9) == "7.0B tokens"
    assert human(12_345) == "12K"
    assert sci(3e-5) == "3.0e-5"


def test_write_json_is_atomic_and_replaces_nan(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary files left behind


def test_missing_plan_names_the_file_and_the_fix(tmp_path):
    rd = RunDir(tmp_path / "nowhere")
    with pytest.raises(FlopsFitError, match=r"no plan at .*plan.json: run `ff-plan run_dir="):
        rd.read_plan()


def test_corrupt_json_is_a_clear_error(tmp_path):
    rd = RunDir(tmp_path)
    rd.plan_path.write_text("{not json")
    with pytest.raises(FlopsFitError, match="is not valid JSON"):
        rd.read_plan()


def test_run_records_need_a_valid_status(tmp_path):
    rd = RunDir(tmp_path)
    with pytest.raises(ValueError):
        rd.write_run({"id": "x", "status": "done"})
    rd.write_run({"id": "x", "status": "completed", "loss": 3.0})
    assert rd.read_run("x")["loss"] == 3.0
    assert rd.read_run("missing") is None
