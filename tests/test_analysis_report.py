"""The report through the user's path: ff-analyze with ci=0.8, then ff-plot."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, run_cli
from tests.test_analysis_run import mock_runs


@pytest.mark.slow
def test_report_states_the_interval_level_the_analysis_used(tmp_path):
    csv = tmp_path / "runs.csv"
    rows = ["params,tokens,loss,budget"] + [f"{r['params']},{r['tokens']},{r['loss']},{r['budget']}"
                                           for r in mock_runs(0, history=1)]
    csv.write_text("\n".join(rows) + "\n")
    run_dir = tmp_path / "run"
    run_cli("ff-analyze", f"input={csv}", f"run_dir={run_dir}", "ci=0.8", "bootstrap=20", "quiet=true", cwd=REPO)
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert analysis["bootstrap"]["ci"] == 0.8
    run_cli("ff-plot", f"run_dir={run_dir}", cwd=REPO)
    html = (run_dir / "report.html").read_text()
    assert "intervals are 80% bootstrap percentiles" in html
    assert "95%" not in html
