"""The keys of analysis.json: what :func:`run_analysis` (and ``stages.analyze``) may write, and
so the only keys a reader (report, plots, summary, predict, refine) may read.

``SCHEMA`` mirrors the file: a dict is an object, ``[dict]`` a list of objects, ``None`` a
value (number, string, list of numbers). :data:`ANALYSIS_KEYS` flattens it into paths such as
``fits.isoflop.budgets[].params_opt``; tests check both the writer and every reader against it.
"""

from __future__ import annotations

_CI = None  # [lo, hi] or null
_BOOT = {"a": None, "b": None}  # replicate exponents

_POWER_LAW = {"status": None, "reason": None, "a": None, "b": None, "k_N": None, "k_D": None,
              "a_ci": _CI, "b_ci": _CI, "bootstrap": _BOOT}

_APPROACHES = ("envelope", "isoflop", "isoflop_vp", "parametric")
_LOSS_MODELS = ("loss_vs_compute", "parametric")
_ALLOC = {"k_N": None, "a": None, "k_D": None, "b": None}
_FRONTIER = {"E": None, "A0": None, "C0": None, "gamma": None}  # L*(C) = E + A0 (C/C0)^-gamma
_SURFACE = {"E": None, "A": None, "B": None, "alpha": None, "beta": None}  # L(N, D)
# data_constrained.DataConstrainedOptimum.to_json and inference.InferenceOptimum.to_json
_DC_OPT = {"budget": None, "unique_tokens": None, "params": None, "tokens": None, "epochs": None, "loss": None,
           "params_unlimited": None, "tokens_unlimited": None, "loss_unlimited": None, "loss_cost": None,
           "doubling_saves": None}
_INFERENCE = {"loss": None, "inference_tokens": None, "params": None, "tokens": None, "train_flops": None,
              "inference_flops": None, "total_flops": None, "chinchilla_params": None, "chinchilla_tokens": None,
              "chinchilla_total_flops": None, "flops_saved": None}

SCHEMA: dict = {
    "schema_version": None,
    "created": None,
    "params_kind": None,
    "data_unit": None,
    "n_runs": None,
    "n_used": None,
    "excluded_runs": [{"id": None, "status": None, "reason": None}],
    "flops_per_token": None,
    "budgets_inferred": None,
    "bootstrap": {"n": None, "seed": None, "ci": None},
    "fits": {
        "envelope": {**_POWER_LAW, "n_points": None, "loss_offset": None,
                     "points": [{"flops": None, "params": None, "tokens": None, "loss": None, "params_run": None}]},
        "isoflop": {**_POWER_LAW, "k_N_ci": _CI, "k_D_ci": _CI, "n_budgets": None, "n_interior": None,
                    "budgets": [{"budget": None, "params_opt": None, "tokens_opt": None, "loss_opt": None,
                                 "interior": None, "coef": None, "n_runs": None, "params_min": None,
                                 "params_max": None, "params_opt_ci": _CI, "loss_opt_ci": _CI, "run_ids": None}]},
        "isoflop_vp": {**_POWER_LAW, "k_N_ci": _CI, "k_D_ci": _CI, "alpha": None, "beta": None, "n_budgets": None,
                       "n_used": None, "objective": None, "converged": None,
                       "budgets": [{"budget": None, "params_opt": None, "tokens_opt": None, "loss_opt": None,
                                    "interior": None, "used": None, "coef": None, "n_runs": None, "params_min": None,
                                    "params_max": None, "rmse": None, "params_opt_ci": _CI}]},
        "parametric": {**_POWER_LAW, "E": None, "A": None, "B": None, "alpha": None, "beta": None,
                       "E_ci": _CI, "A_ci": _CI, "B_ci": _CI, "alpha_ci": _CI, "beta_ci": _CI,
                       "objective": None, "converged": None, "n_starts": None, "n_starts_converged": None,
                       "optimizer": None, "huber_delta": None, "exponents": None, "objective_kind": None,
                       "engine": None,
                       "bootstrap_converged_fraction": None},
        "loss_vs_compute": {"status": None, "reason": None, "E": None, "A": None, "gamma": None, "C0": None,
                            "A0": None, "E_ci": _CI, "A_ci": _CI, "gamma_ci": _CI, "source": None,
                            "n_points": None, "points": [{"flops": None, "loss": None}]},
        # Muennighoff et al.'s R_D*, R_N* over a fixed surface, when runs record their unique data
        "data_constrained": {"status": None, "reason": None, "R_D_star": None, "R_N_star": None, "R_D_star_ci": _CI,
                             "R_N_star_ci": _CI, "fixed": None, "objective": None, "r2": None, "n_runs": None,
                             "n_repeated": None, "n_excess_params": None, "huber_delta": None, "n_bootstrap": None,
                             "surface": _SURFACE, "surface_source": None, "lower_bound_only": None,
                             "at_lower_bound": None},
    },
    # the unique data the table is read for and the inference tokens asked about (docs/data-constrained.md)
    "unique_data": {"unique_tokens": None, "source": None, "law_source": None, "R_D_star": None, "R_N_star": None,
                    "inference_tokens": None},
    "table": [{"budget": None, "params": None, "tokens": None, "tokens_per_param": None, "loss": None,
               "params_ci": _CI, "tokens_ci": _CI, "loss_ci": _CI, "planned": None, "params_model_range": _CI,
               "params_ci_with_model": _CI, "tokens_ci_with_model": _CI, "loss_ci_with_model": _CI,
               "epochs": None, "data_constrained": _DC_OPT, "inference": _INFERENCE}],
    "table_source": None,
    "table_loss_source": None,
    "table_model": {"source": None, "ci": None, "competitive": None, "loss_source": None, "loss_competitive": None,
                    "approaches": [{"approach": None, **_ALLOC, "replicates": _ALLOC}],
                    "loss_models": {"loss_vs_compute": {"kind": None, **_FRONTIER, "replicates": _FRONTIER},
                                    "parametric": {"kind": None, **_SURFACE, "replicates": _SURFACE}},
                    "planned": None, "forecast_error": {"params": None, "loss": None, "ahead": None, "raw_params": None},
                    "sweep_max": None},
    "short_runs": {"min_steps": None, "runs": [{"id": None, "steps": None}], "budget": None, "params_shift": None,
                   "loss_shift": None},
    "verdict": {"budget": None, "factor": None, "params": None, "tokens": None, "loss": None, "params_interval": _CI,
                "tokens_interval": _CI, "loss_interval": _CI, "source": None, "loss_source": None, "trust": None,
                "reasons": None},
    "backtest": {"status": None, "reason": None, "method": None, "chosen": None, "loss_chosen": None,
                 "competitive": None, "loss_competitive": None, "switch": None, "competitive_factor": None,
                 "params_score": {k: None for k in _APPROACHES}, "loss_score": {k: None for k in _LOSS_MODELS},
                 "pairs": [{"fit_up_to": None, "budget": None, "ahead": None, "params_observed": None,
                            "loss_observed": None, "params": [{"approach": None, "forecast": None, "error": None}],
                            "loss": [{"model": None, "forecast": None, "error": None}]}]},
    "model_selection": {"test": None, "level": None, "chosen": None, "F": None, "p_value": None, "df": None,
                        "rss_surface": None, "rss_curves": None, "reason": None},
    "agreement": [{"approaches": None, "a": None, "a_ci": None, "difference": None, "difference_ci": _CI,
                   "agree": None, "test": None, "budget": None, "params": None, "ratio": None, "material": None}],
    "explanation": {"alpha_over_beta": None, "alpha": None, "beta": None, "isoflop_vp_a": None,
                    "parabola_replay_a": None, "parabola_bias_a": None, "isoflop_a": None, "parametric_a": None,
                    "budgets": [{"budget": None, "n_runs": None, "grid_half_width": None, "grid_centre": None,
                                 "optimum": None, "centre_over_optimum": None, "rmse_curve": None,
                                 "rmse_parabola": None, "rmse_surface": None}],
                    "surface_vs_curves": {"F": None, "p_value": None, "chosen": None}},
    "diagnostics": [{"level": None, "code": None, "budget": None, "message": None}],
    "residuals": [{"id": None, "params": None, "tokens": None, "loss": None, "predicted": None,
                   "residual": None, "log_residual": None}],
    "holdout": {"k": None, "status": None, "reason": None, "held_out_budgets": None, "fit_budgets": None,
                "isoflop_a": None, "isoflop_vp_a": None, "parametric_a": None,
                "rows": [{"budget": None, "interior": None, "params_observed": None, "loss_observed": None,
                          "best_run_loss": None, "isoflop_params": None, "isoflop_params_error": None,
                          "parametric_params": None, "parametric_params_error": None, "parametric_loss": None,
                          "parametric_loss_error": None, "parametric_loss_error_vs_best_run": None,
                          "loss_vs_compute_loss": None, "loss_vs_compute_loss_error": None,
                          "isoflop_vp_params": None, "isoflop_vp_params_error": None, "params_observed_curve": None,
                          "isoflop_vp_params_error_vs_curve": None, "parametric_run_loss_rmse": None}]},
    # a forecast check's run_dir (plan.json with forecast_check): stages.analyze writes this instead of the fits
    "forecast_check": {"budget": None, "factor": None, "registered": None, "source_run_dir": None, "n_runs": None,
                       "summary": None,
                       "realised": {"method": None,
                                    "curve": {"kind": None, "coef": None, "alpha": None, "beta": None, "from": None},
                                    "params": None, "loss": None, "interior": None, "params_ci": _CI, "loss_ci": _CI,
                                    "parabola_params": None, "parabola_loss": None, "best_run_params": None,
                                    "best_run_loss": None, "params_min": None, "params_max": None, "n_runs": None,
                                    "rmse": None},
                       "forecasts": [{"forecast": None, "params": None, "params_interval": _CI, "loss": None,
                                      "loss_interval": _CI, "params_ratio": None, "params_inside": None,
                                      "loss_error": None, "loss_error_vs_best_run": None, "loss_inside": None}]},
    # written by stages.analyze beside run_analysis's body
    "input": None,
    # a sequential design's run_dir (plan.json with design): what its last batch bought (analysis/design.outcome)
    "design": {"batch": None, "target_budget": None, "target_width": None, "width_before": None,
               "expected_width": None, "width": None, "bootstrap_width": None, "params": None, "params_ci": _CI,
               "params_ci_with_model": _CI, "forecast_checks": []},  # filled in below
    "points": [{"id": None, "status": None, "budget": None, "params": None, "non_embedding_params": None,
                "tokens": None, "flops": None, "loss": None}],
}

# each forecast check a sequential design's batch registered (a new budget), scored as a forecast_from check is
SCHEMA["design"]["forecast_checks"] = [{"batch": None, **SCHEMA["forecast_check"]}]

# always present in what run_analysis returns
REQUIRED = ("schema_version", "created", "params_kind", "data_unit", "n_runs", "n_used", "excluded_runs",
            "flops_per_token", "budgets_inferred", "bootstrap", "fits", "table", "table_source",
            "table_loss_source", "model_selection", "agreement", "explanation", "diagnostics", "residuals")


def flatten(spec, prefix: str = "") -> set[str]:
    """Every key path of a ``SCHEMA``-like spec: ``a.b``, ``a[].c``."""
    out: set[str] = set()
    if isinstance(spec, list):
        return flatten(spec[0], prefix + "[]") if spec else out
    if isinstance(spec, dict):
        for k, v in spec.items():
            p = f"{prefix}.{k}" if prefix else k
            out.add(p)
            out |= flatten(v, p)
    return out


def key_paths(doc, prefix: str = "") -> set[str]:
    """Every key path present in an analysis.json body (lists of objects as ``[]``)."""
    out: set[str] = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            p = f"{prefix}.{k}" if prefix else str(k)
            out.add(p)
            out |= key_paths(v, p)
    elif isinstance(doc, list):
        for v in doc:
            if isinstance(v, (dict, list)):
                out |= key_paths(v, prefix + "[]")
    return out


ANALYSIS_KEYS: frozenset[str] = frozenset(flatten(SCHEMA))
