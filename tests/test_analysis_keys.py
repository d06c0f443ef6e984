"""The writer of analysis.json and every reader agree on its keys.

The writer (run_analysis, plus the two keys stages.analyze adds) must write only keys of
``flops_fit.analysis.schema``, and together the sweeps below write every one of them. Each
reader (report, plots, summary, refine_centres, predict) runs on a traced copy that records
every key it asks for; a key outside the schema (say, a top-level ``ci`` the writer never
writes) fails the test.
"""

from __future__ import annotations

import numpy as np
import pytest

from flops_fit.analysis import predict, refine_centres, run_analysis, summary_lines
from flops_fit.analysis.forecast_check import analyze_check, preregister
from flops_fit.analysis.schema import ANALYSIS_KEYS, REQUIRED, key_paths
from tests.test_analysis_run import _loss, mock_runs


class _TracedList(list):
    def __init__(self, data, path, log):
        super().__init__(data)
        self._path, self._log = path, log

    def __getitem__(self, i):
        v = super().__getitem__(i)
        return _TracedList(v, self._path, self._log) if isinstance(i, slice) else _trace(v, self._path + "[]", self._log)

    def __iter__(self):
        for v in super().__iter__():
            yield _trace(v, self._path + "[]", self._log)


class _TracedDict(dict):
    def __init__(self, data, path, log):
        super().__init__(data)
        self._path, self._log = path, log

    def _key(self, k):
        p = f"{self._path}.{k}" if self._path else str(k)
        self._log.add(p)
        return p

    def __getitem__(self, k):
        p = self._key(k)
        return _trace(super().__getitem__(k), p, self._log)

    def get(self, k, default=None):
        p = self._key(k)
        return _trace(super().__getitem__(k), p, self._log) if dict.__contains__(self, k) else default

    def __contains__(self, k):
        self._key(k)
        return dict.__contains__(self, k)

    def __iter__(self):  # also forces {**d} through keys() + __getitem__
        return iter(list(dict.keys(self)))

    def keys(self):
        return list(dict.keys(self))

    def items(self):
        return [(k, self[k]) for k in dict.keys(self)]

    def values(self):
        return [self[k] for k in dict.keys(self)]


def _trace(v, path, log):
    if isinstance(v, dict):
        return _TracedDict(v, path, log)
    if isinstance(v, list):
        return _TracedList(v, path, log)
    return v


def _as_written_by_stages(runs, out, input_path=None):
    """What stages.analyze adds beside run_analysis's body."""
    out = dict(out)
    if input_path:
        out["input"] = input_path
    out["points"] = [{k: r.get(k) for k in ("id", "status", "budget", "params", "non_embedding_params", "tokens",
                                            "flops", "loss")} for r in runs]
    return out


@pytest.fixture(scope="module")
def analyses():
    """Sweeps that together make the writer write every key it can."""
    full = mock_runs(0, fail=("c1e+18_n3",), shift={1e19: 8.0})
    for r in full[-3:]:
        r["steps"] = 40  # records that say they trained too few steps: the short_runs block
    rng = np.random.default_rng(10)
    N = 10 ** rng.uniform(7.5, 9.5, 40)
    C = 10 ** rng.uniform(18, 20, 40)
    cont = [{"params": n, "tokens": c / (6 * n), "loss": _loss(n, c / (6 * n))} for n, c in zip(N, C)]
    tiny = mock_runs(1, budgets=(1e17,), points=3)
    source = run_analysis(mock_runs(2), n_bootstrap=8)
    check = mock_runs(3, budgets=(4e19,), points=5)
    repeats = mock_runs(4)  # runs that record their unique data, some of them repeating it
    U = float(np.median([r["tokens"] for r in repeats]))
    for r in repeats:
        r["unique_units"] = U
    # a sequential design's run_dir: stages.analyze adds what the last batch bought (analysis/design.outcome)
    from flops_fit.analysis.design import outcome

    seq = mock_runs(5)
    designed = _as_written_by_stages(seq, run_analysis(seq, n_bootstrap=8))
    # ... batch 1 a new budget, its forecast registered and scored on its runs (analysis/design.score_checks)
    registered = dict(preregister(source, 4e19, factor=4.0), runs=[r["id"] for r in check])
    designed["design"] = outcome({"target_budget": 1e21, "target_width": 0.2,
                                  "batches": [{"batch": 0, "runs": ["a"]},
                                              {"batch": 1, "runs": ["b"], "width_before": 0.6, "expected_width": 0.3,
                                               "forecast_checks": [registered]}]},
                                 designed, check)
    assert designed["design"] and designed["design"]["width"] is not None
    assert designed["design"]["forecast_checks"][0]["realised"]["params"]
    return [
        ("designed", seq, designed),
        ("repeats", repeats, _as_written_by_stages(repeats, run_analysis(repeats, n_bootstrap=4,
                                                                          inference_tokens=1e12))),
        ("full", full, _as_written_by_stages(full, run_analysis(full, n_bootstrap=8, holdout=1, table_max_budget=1e21))),
        ("continuous", cont, _as_written_by_stages(cont, run_analysis(cont, n_bootstrap=4, holdout=1),
                                                   input_path="runs.csv")),
        ("tiny", tiny, _as_written_by_stages(tiny, run_analysis(tiny, n_bootstrap=4))),
        ("check", check, _as_written_by_stages(check, analyze_check(preregister(source, 4e19, factor=4.0), check))),
    ]


@pytest.mark.slow
def test_writer_writes_only_and_all_schema_keys(analyses):
    written = set()
    for name, _, out in analyses:
        keys = key_paths(out)
        assert keys <= ANALYSIS_KEYS, (name, sorted(keys - ANALYSIS_KEYS))
        assert set(REQUIRED) <= set(out), (name, set(REQUIRED) - set(out))
        written |= keys
    assert written == set(ANALYSIS_KEYS), sorted(set(ANALYSIS_KEYS) - written)


def _readers(tmp_path, runs):
    from flops_fit.plotting import make_plots
    from flops_fit.report import render_report

    return {
        "report": lambda a: render_report(a, []),
        "plots": lambda a: make_plots(a, runs, tmp_path / "plots"),
        "summary": summary_lines,
        "refine_centres": refine_centres,
        "predict": lambda a: predict(a, 1e21),
    }


def _reads(reader, analysis) -> set[str]:
    log: set[str] = set()
    reader(_trace(analysis, "", log))
    return log


@pytest.mark.slow
def test_every_reader_reads_only_schema_keys(analyses, tmp_path):
    for name, runs, out in analyses:
        for rname, reader in _readers(tmp_path, runs).items():
            if rname == "predict" and name in ("tiny", "check"):
                continue  # no fit with a power law to predict from is a user error, tested elsewhere
            read = _reads(reader, out)
            assert read, rname
            assert read <= ANALYSIS_KEYS, (name, rname, sorted(read - ANALYSIS_KEYS))


def test_the_check_catches_a_reader_of_an_unwritten_key(analyses):
    _, _, out = analyses[0]

    def stale_reader(a):  # how report.py read the interval level before it was fixed
        return a.get("ci", 0.95)

    assert "ci" in _reads(stale_reader, out) - ANALYSIS_KEYS
    assert "bootstrap.ci" in ANALYSIS_KEYS
