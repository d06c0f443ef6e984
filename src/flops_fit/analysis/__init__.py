"""Fitting compute-optimal scaling laws: pure, vectorised functions over numpy arrays.

- Approach 1, the envelope of training curves: :func:`fit_envelope` (module ``envelope``).
- Approach 2, IsoFLOP profiles: :func:`fit_isoflop` (robust parabolas, power laws; ``isoflop``).
- Approach 3, the parametric loss L(N, D) = E + A/N^alpha + B/D^beta: :func:`fit_parametric`
  (Huber on log L, a 4500-start batched L-BFGS), :func:`bootstrap_parametric`,
  :func:`optimal_allocation`, :func:`exponents` (``parametric``; the surface itself is
  :class:`flops_fit.law.ChinchillaLaw`).
- The loss frontier L*(C) = E + A C^-gamma: :func:`fit_loss_vs_compute` (``frontier``).
- Everything together, with the bootstrap, the compute-optimal table and diagnostics:
  :func:`run_analysis` (returns the analysis.json body; :func:`analyze_runs` the typed
  :class:`Analysis`); :func:`summary_lines`, :func:`refine_centres`, :func:`predict` read it back.
- :func:`load_external` reads runs trained elsewhere (the only file I/O in this package).

Nothing here imports torch or hydra.
"""

from flops_fit.analysis.common import fit_power_law, resample_counts
from flops_fit.analysis.envelope import fit_envelope
from flops_fit.analysis.external import load_external
from flops_fit.analysis.frontier import fit_loss_vs_compute, predict_frontier
from flops_fit.analysis.isoflop import fit_isoflop, fit_parabolas
from flops_fit.analysis.parametric import (
    bootstrap_parametric,
    default_grid,
    exponents,
    fit_parametric,
    optimal_allocation,
    predict_loss,
)
from flops_fit.analysis.predict import predict
from flops_fit.analysis.run import Analysis, analyze_runs, run_analysis
from flops_fit.analysis.summary import interval_level, refine_centres, summary_lines
from flops_fit.analysis.sweep import FlopsPerTokenFromRuns, Sweep, group_budgets, load_sweep

__all__ = [
    "Analysis",
    "FlopsPerTokenFromRuns",
    "Sweep",
    "analyze_runs",
    "bootstrap_parametric",
    "default_grid",
    "exponents",
    "fit_envelope",
    "fit_isoflop",
    "fit_loss_vs_compute",
    "fit_parabolas",
    "fit_parametric",
    "fit_power_law",
    "group_budgets",
    "interval_level",
    "load_external",
    "load_sweep",
    "optimal_allocation",
    "predict",
    "predict_frontier",
    "predict_loss",
    "refine_centres",
    "resample_counts",
    "run_analysis",
    "summary_lines",
]
