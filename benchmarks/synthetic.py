"""Synthetic IsoFLOP sweeps with a known truth, shared by the fit benchmarks and the tests.

    sweep(truth, budgets, points=9, half_width=4, centre="centred", noise=0.0, noise_kind="mult", seed=0)

``centre``: "centred" (grids on the true optimum), "offset" (every grid 3x above it), "drift"
(grids drifting from centred at the smallest budget to 3x below at the largest). ``noise_kind``:
"mult" (log-normal, relative ``noise``), "add" (Gaussian, absolute ``noise``), "hetero" (relative
noise growing 4x from the largest to the smallest model of each budget). ``penalty``: an extra
under-training term P (N/D)^0.5 that takes the truth outside the Chinchilla family.
Returns run records for ``run_analysis`` and the true N_opt function.
"""

from __future__ import annotations

import numpy as np

from flops_fit.law import ChinchillaLaw


def exponents_from_ratio(ratio: float, total: float = 0.62):
    return total * ratio / (1 + ratio), total / (1 + ratio)


def truth_for_ratio(ratio: float) -> ChinchillaLaw:
    al, be = exponents_from_ratio(ratio)
    return ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=al, beta=be)


def centres(truth, budgets, centre):
    b = np.asarray(budgets, dtype=float)
    lc = np.log10(b)
    frac = (lc - lc[0]) / max(lc[-1] - lc[0], 1e-12)
    if centre == "centred":
        factor = np.ones_like(b)
    elif centre == "offset":
        factor = np.full_like(b, 3.0)
    elif centre == "drift":
        factor = 3.0 ** (-frac)
    else:
        raise ValueError(centre)
    return truth.n_opt(b) * factor


def loss_fn(truth, penalty=0.0):
    if not penalty:
        return truth.loss
    return lambda N, D: truth.loss(N, D) + penalty * np.sqrt(N / D)


def sweep(truth, budgets=(1e17, 1e18, 1e19, 1e20, 1e21), *, points=9, half_width=4.0, centre="centred", noise=0.0,
          noise_kind="mult", seed=0, penalty=0.0):
    rng = np.random.default_rng(seed)
    f = loss_fn(truth, penalty)
    runs = []
    for C, c in zip(budgets, centres(truth, budgets, centre)):
        N = c * np.geomspace(1 / half_width, half_width, points)
        D = C / (6 * N)
        L = f(N, D)
        z = rng.standard_normal(points)
        if noise_kind == "mult":
            L = L * np.exp(noise * z)
        elif noise_kind == "add":
            L = L + noise * z
        elif noise_kind == "hetero":
            s = noise * np.geomspace(4.0, 1.0, points)  # small models noisier
            L = L * np.exp(s * z)
        for j in range(points):
            runs.append({"id": f"c{C:.1e}_{j}", "status": "completed", "budget": float(C), "params": float(N[j]),
                         "tokens": float(D[j]), "flops": float(6 * N[j] * D[j]), "loss": float(L[j])})
    return runs


def true_n_opt(truth, penalty=0.0, C=1e24):
    """N_opt(C) of the truth (numerically when a penalty takes it out of the family)."""
    if not penalty:
        return float(truth.n_opt(C))
    f = loss_fn(truth, penalty)
    n = truth.n_opt(C) * np.geomspace(0.05, 20, 200001)
    return float(n[np.argmin(f(n, C / (6 * n)))])


def true_a(truth, penalty=0.0):
    if not penalty:
        return float(truth.a)
    c = np.array([1e21, 1e25])
    n = np.array([true_n_opt(truth, penalty, x) for x in c])
    return float(np.log(n[1] / n[0]) / np.log(c[1] / c[0]))
