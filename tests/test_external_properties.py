"""Property-based tests (hypothesis) of the reader of runs trained elsewhere and of the planner's arguments."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flops_fit import FlopsFitError
from flops_fit.analysis.external import load_external
from flops_fit.planning import Grid, check_budgets

positive = st.floats(min_value=1.0, max_value=1e15, allow_nan=False, allow_infinity=False)
loss = st.floats(min_value=0.01, max_value=20.0, allow_nan=False, allow_infinity=False)
rows_strategy = st.lists(st.tuples(positive, positive, loss), min_size=1, max_size=30,
                         unique_by=lambda r: r)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(tmp_path, rows, fmt, name="runs"):
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "csv":
        path.write_text("params,tokens,loss\n" + "".join(f"{p!r},{t!r},{l!r}\n" for p, t, l in rows))
    else:
        path.write_text("".join(json.dumps({"params": p, "tokens": t, "loss": l}) + "\n" for p, t, l in rows))
    return path


@SETTINGS
@given(rows=rows_strategy, fmt=st.sampled_from(["csv", "jsonl"]))
def test_valid_rows_round_trip(tmp_path, rows, fmt):
    runs = load_external(_write(tmp_path, rows, fmt))
    assert [(r["params"], r["tokens"], r["loss"]) for r in runs] == [tuple(map(float, r)) for r in rows]
    for r in runs:
        assert r["status"] == "completed" and r["flops"] == pytest.approx(6 * r["params"] * r["tokens"])
    assert len({r["id"] for r in runs}) == len(runs)


bad_value = st.sampled_from(["nan", "inf", "-3", "0", "abc", ""])


@SETTINGS
@given(rows=rows_strategy, which=st.integers(min_value=0, max_value=29), column=st.sampled_from([0, 1, 2]),
       value=bad_value, fmt=st.sampled_from(["csv", "jsonl"]))
def test_one_bad_cell_is_one_clear_error(tmp_path, rows, which, column, value, fmt):
    rows = [list(map(repr, r)) for r in rows]
    which %= len(rows)
    if column == 2 and value in ("-3", "0"):
        value = "nan"  # a loss may be zero or negative in principle; non-finite never
    rows[which][column] = value
    name = ("params", "tokens", "loss")[column]
    path = tmp_path / f"bad.{fmt}"
    if fmt == "csv":
        path.write_text("params,tokens,loss\n" + "".join(",".join(r) + "\n" for r in rows))
    else:
        def cell(v):
            try:
                return float(v)
            except ValueError:
                return v
        path.write_text("".join(json.dumps({k: cell(v) for k, v in zip(("params", "tokens", "loss"), r)
                                            if v != ""}) + "\n" for r in rows))
    with pytest.raises(FlopsFitError) as e:
        load_external(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and name in msg


@SETTINGS
@given(rows=rows_strategy, dup=st.integers(min_value=0, max_value=29))
def test_duplicated_rows_are_refused(tmp_path, rows, dup):
    rows = rows + [rows[dup % len(rows)]]
    with pytest.raises(FlopsFitError, match="duplicates row"):
        load_external(_write(tmp_path, rows, "csv"))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                                 st.integers(min_value=-10**20, max_value=10**20)), max_size=6))
def test_check_budgets_accepts_exactly_positive_distinct_numbers(values):
    def ok(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return f if math.isfinite(f) and f > 0 else None

    parsed = [ok(v) for v in values]
    if values and all(p is not None for p in parsed) and len(set(parsed)) == len(parsed):
        assert check_budgets(values) == sorted(parsed)
    else:
        with pytest.raises(FlopsFitError) as e:
            check_budgets(values)
        assert "budgets.values" in str(e.value)


@settings(max_examples=100, deadline=None)
@given(points=st.integers(min_value=-5, max_value=50), span=st.floats(min_value=-2, max_value=50, allow_nan=False),
       tpp=st.floats(min_value=-5, max_value=100, allow_nan=False))
def test_grid_validation_names_the_key(points, span, tpp):
    grid = Grid(points=points, span=span, tokens_per_param=tpp)
    if points >= 1 and span > 1 and tpp > 0:
        grid.validate()
    else:
        with pytest.raises(FlopsFitError, match=r"grid\.(points|span|tokens_per_param)"):
            grid.validate()
