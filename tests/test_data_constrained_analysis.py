"""ff-analyze with the data the user has and the model they will serve: fits.data_constrained, the table's
epochs and data-constrained optimum, inference_tokens, external files with a unique_tokens column."""

import csv
import json

import numpy as np
import pytest

from flops_fit import stages
from flops_fit.analysis import load_external, run_analysis, summary_lines
from flops_fit.analysis.data_constrained import DataConstrainedLaw
from flops_fit.analysis.schema import ANALYSIS_KEYS, key_paths
from flops_fit.api import Result
from flops_fit.config.compose import compose
from flops_fit.errors import FlopsFitError
from flops_fit.law import ChinchillaLaw
from tests.test_data_constrained import DATA

TRUTH = DataConstrainedLaw(ChinchillaLaw(E=1.8, A=400.0, B=1800.0, alpha=0.34, beta=0.32), R_D_star=6.0,
                           R_N_star=4.0)


def _sweep(noise=0.002, seed=0):
    """IsoFLOP runs at 5 budgets on fresh data, and the same sizes again on two small unique sets, 1-40 epochs."""
    rng = np.random.default_rng(seed)
    runs = []
    for C in (1e17, 3e17, 1e18, 3e18, 1e19):
        centre = np.sqrt(C / 120.0)
        for j, N in enumerate(np.geomspace(centre / 4, centre * 4, 7)):
            D = C / (6 * N)
            runs.append({"id": f"c{C:.0e}_{j}", "params": N, "tokens": D, "budget": C, "unique_tokens": 1e15})
    for U in (2e7, 1e8):
        for N in (5e6, 2e7, 8e7):
            for e in (2, 4, 8, 16, 40):
                runs.append({"id": f"u{U:.0e}_n{N:.0e}_e{e}", "params": N, "tokens": U * e, "unique_tokens": U})
    for r in runs:
        r.update(status="completed", flops=6 * r["params"] * r["tokens"], history=[], data_unit="tokens",
                 loss=float(TRUTH.loss(r["params"], r["tokens"], r["unique_tokens"]) * np.exp(noise * rng.standard_normal())))
        r.setdefault("budget", None)
    return runs


def test_analysis_fits_the_data_constrained_law_on_top_of_a_single_epoch_surface():
    out = run_analysis(_sweep(), n_bootstrap=10, unique_tokens=5e7, inference_tokens=1e11, check_short=False)
    dc = out["fits"]["data_constrained"]
    assert dc["status"] == "ok" and dc["n_repeated"] == 30
    assert dc["surface_source"] == "35 single-epoch runs"
    assert dc["R_D_star"] == pytest.approx(6.0, rel=0.25)
    lo, hi = dc["R_D_star_ci"]
    assert lo <= dc["R_D_star"] <= hi
    assert out["unique_data"]["unique_tokens"] == 5e7 and out["unique_data"]["law_source"] == "fitted"
    rows = out["table"]
    assert all(r["epochs"] == pytest.approx(r["tokens"] / 5e7) for r in rows)
    past = [r for r in rows if r["epochs"] > 1]
    assert past and all(r["data_constrained"]["params"] < r["data_constrained"]["params_unlimited"] for r in past)
    assert all(r["data_constrained"] is None for r in rows if r["epochs"] <= 1)
    assert all(0 < r["inference"]["flops_saved"] < 1 for r in rows)
    assert key_paths(out) <= ANALYSIS_KEYS
    text = "\n".join(summary_lines(out))
    assert "unique data: 50M tokens" in text and "R_D* =" in text and "inference-aware" in text
    assert any(d["code"] == "repeats_data" for d in out["diagnostics"])


def test_without_unique_data_or_inference_nothing_is_added():
    runs = _sweep()
    for r in runs:
        del r["unique_tokens"]
    out = run_analysis(runs, n_bootstrap=0, check_short=False)
    assert "data_constrained" not in out["fits"] and "unique_data" not in out
    assert "epochs" not in out["table"][0]


def test_unique_tokens_option_alone_uses_the_published_constants():
    runs = _sweep()
    for r in runs:
        del r["unique_tokens"]
    out = run_analysis(runs, n_bootstrap=0, check_short=False, unique_tokens=1e7)
    assert out["unique_data"]["law_source"] == "published"
    assert out["unique_data"]["R_D_star"] == pytest.approx(15.387756)
    assert out["fits"]["data_constrained"]["status"] == "skipped"
    with pytest.raises(FlopsFitError, match="unique_tokens"):
        run_analysis(runs, n_bootstrap=0, check_short=False, unique_tokens=-1)


def test_external_csv_unique_tokens_column_reproduces_the_published_runs(tmp_path):
    if not DATA.is_file():
        pytest.skip("datablations runs not here")
    runs = load_external(DATA)
    assert all(r["unique_tokens"] > 0 for r in runs)
    out = run_analysis(runs, n_bootstrap=0, check_short=False)
    dc = out["fits"]["data_constrained"]
    assert dc["status"] == "ok" and dc["n_runs"] == 182 and dc["n_repeated"] == 153
    assert dc["surface_source"] == "29 single-epoch runs"


def test_ff_analyze_options_and_result_predict(tmp_path):
    path = tmp_path / "runs.csv"
    runs = _sweep()
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["params", "tokens", "loss", "unique_tokens"])
        w.writeheader()
        for r in runs:
            w.writerow({k: r[k] for k in w.fieldnames})
    cfg = compose("analyze", [f"run_dir={tmp_path / 'a'}", f"input={path}", "bootstrap=0", "quiet=true",
                              "unique_tokens=3e7", "inference_tokens=5e11"])
    out = stages.analyze(cfg)
    assert out["unique_data"]["unique_tokens"] == 3e7 and out["unique_data"]["inference_tokens"] == 5e11
    saved = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert saved["fits"]["data_constrained"]["R_D_star"] == out["fits"]["data_constrained"]["R_D_star"]
    res = Result(run_dir=str(tmp_path / "a"), analysis=out)
    row = res.predict(1e20, inference_tokens=1e12)
    assert row["epochs"] == pytest.approx(row["tokens"] / 3e7)
    assert row["data_constrained"]["epochs"] > 1 and row["inference"]["params"] < row["inference"]["chinchilla_params"]
    other = res.predict(1e20, unique_tokens=1e13)
    assert other["epochs"] < 1 and other["data_constrained"] is None and "inference" not in other


def test_repeats_worse_than_any_decay_explains_fall_back_to_the_published_constants():
    """Repeated runs far above the surface (30% worse at 2 epochs, say a bad surface at their sizes): R_D* is
    (or R_N*) driven to its floor, the fit says so, and the table reads the limit with the published constants."""
    runs = _sweep()
    for r in runs:
        if r["tokens"] > r["unique_tokens"]:
            r["loss"] *= 1.3
    out = run_analysis(runs, n_bootstrap=0, unique_tokens=5e7, check_short=False)
    dc = out["fits"]["data_constrained"]
    assert dc["at_lower_bound"]  # R_D* or R_N* (either can absorb it) at the floor
    assert out["unique_data"]["law_source"] == "published"
    assert "went to its lower bound" in "\n".join(summary_lines(out))
    # the published constants sit on the sweep's own surface (the one the table and predict agree with), not on the
    # surface refitted for the fit that was not used: its unlimited-data model is the parametric fit's N_opt
    from flops_fit.law import ChinchillaLaw

    par = ChinchillaLaw.from_mapping(out["fits"]["parametric"])
    row = next(r for r in out["table"] if r.get("data_constrained"))
    assert row["data_constrained"]["params_unlimited"] == pytest.approx(float(par.n_opt(row["budget"])), rel=1e-3)
    clean = run_analysis(_sweep(), n_bootstrap=0, unique_tokens=5e7, check_short=False)
    assert clean["fits"]["data_constrained"]["at_lower_bound"] == [] and clean["unique_data"]["law_source"] == "fitted"


def test_readers_use_the_law_the_table_used():
    from flops_fit.analysis.data_constrained import law_from_analysis, row_extras

    runs = _sweep()
    for r in runs:
        if r["tokens"] > r["unique_tokens"]:
            r["loss"] *= 1.3
    out = run_analysis(runs, n_bootstrap=0, unique_tokens=5e7, check_short=False)
    law = law_from_analysis(out)
    assert law.R_D_star == pytest.approx(15.387756) and law.R_N_star == pytest.approx(5.309743)
    row = next(r for r in out["table"] if r.get("data_constrained"))
    again = row_extras(out, row)["data_constrained"]
    assert again["params"] == pytest.approx(row["data_constrained"]["params"], rel=1e-9)
