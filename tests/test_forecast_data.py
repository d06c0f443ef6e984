"""tests/data/public_isoflops.csv is a set of usable IsoFLOP sweeps, and the forecast benchmark's
"realised optimum" (a parabola in log N through one budget's losses) finds a known vertex."""

from __future__ import annotations

import csv
import importlib.util
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PUBLIC = REPO / "tests" / "data" / "public_isoflops.csv"
BENCH = REPO / "benchmarks" / "bench_forecast.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_forecast", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweeps():
    with PUBLIC.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["sweep", "params", "tokens", "budget", "loss"]
        rows = list(reader)
    out = defaultdict(list)
    for row in rows:
        out[row["sweep"]].append({k: float(v) for k, v in row.items() if k != "sweep"})
    return dict(out)


def test_every_sweep_is_an_isoflop_sweep_with_positive_finite_numbers(sweeps):
    assert len(sweeps) >= 7
    for name, runs in sweeps.items():
        budgets = defaultdict(list)
        for r in runs:
            assert all(math.isfinite(v) and v > 0 for v in r.values()), (name, r)
            budgets[r["budget"]].append(r)
        assert len(budgets) >= 4, name
        for b, rs in budgets.items():
            assert len(rs) >= 3, (name, b)
            assert len({r["params"] for r in rs}) >= 3, (name, b)  # a parabola needs 3 sizes
            # the runs of one budget spend about that budget (6ND, Marin's within 40%)
            ratio = [6 * r["params"] * r["tokens"] / b for r in rs]
            assert 0.6 < min(ratio) and max(ratio) < 1.4, (name, b)


def test_the_public_file_holds_the_expected_sweeps(sweeps):
    assert {"ml_scalefit__massivetext__chinchilla", "llama3__llama_3__llama_3__raw_loss",
            "marin_202603__comma__llama_2"} <= set(sweeps)
    assert not any("exp_loss" in name for name in sweeps)  # Llama 3: raw_loss rows only
    assert len(sweeps["ml_scalefit__massivetext__chinchilla"]) == 124


def test_the_benchmark_reads_the_file_as_the_test_does(bench, sweeps):
    loaded = bench.load_public(PUBLIC)
    assert {k: len(v) for k, v in loaded.items()} == {k: len(v) for k, v in sweeps.items()}


def test_realised_optimum_recovers_the_vertex_of_an_exact_parabola(bench):
    n_star, l_star = 3.0e9, 2.25
    N = np.geomspace(5e8, 2e10, 9)
    L = l_star + 0.04 * np.log(N / n_star) ** 2
    out = bench.parabola_optimum(N, L)
    assert out["interior"]
    assert out["n_vertex"] == pytest.approx(n_star, rel=1e-6)
    assert out["loss"] == pytest.approx(l_star, abs=1e-9)
    assert out["loss_best"] == pytest.approx(L.min())


def test_realised_optimum_refuses_a_vertex_outside_the_sampled_sizes(bench):
    N = np.geomspace(5e8, 2e9, 5)  # the true vertex (3e9) lies beyond the largest size
    L = 2.25 + 0.04 * np.log(N / 3.0e9) ** 2
    out = bench.parabola_optimum(N, L)
    assert not out["interior"] and out["n_vertex"] is None
    assert out["loss"] == pytest.approx(L[-1])  # the parabola's lowest point over the sampled sizes
    with pytest.raises(ValueError):
        bench.parabola_optimum([1e9, 1e9, 2e9], [2.0, 2.1, 2.2])


def test_local_optimum_reads_an_asymmetric_curve_near_its_minimum(bench):
    # a Chinchilla-shaped IsoFLOP curve (alpha 0.34, beta 0.28) over 2 decades: the parabola through every run is
    # pulled by the far, asymmetric ends; the one through the runs near the best size is not
    n_star = 2.0e9
    N = np.geomspace(1e8, 1.2e10, 15)
    x = N / n_star
    L = 1.7 + 0.5 * (x ** -0.34 / 0.34 + x ** 0.28 / 0.28) / (1 / 0.34 + 1 / 0.28)
    whole = bench.parabola_optimum(N, L)["n_vertex"]
    local = bench.local_optimum(N, L)
    assert abs(np.log(local / n_star)) < 0.5 * abs(np.log(whole / n_star))
    assert local == pytest.approx(n_star, rel=0.05)
    # fewer than 3 sizes within the window: every run counts
    assert bench.local_optimum(N[::7], L[::7]) == bench.parabola_optimum(N[::7], L[::7])["n_vertex"]
