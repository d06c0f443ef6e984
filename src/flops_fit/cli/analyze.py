"""ff-analyze: fit the scaling laws -> run_dir/analysis.json and print the compute-optimal table."""

from flops_fit.cli.common import run_stage


def _task(cfg: dict) -> None:
    from flops_fit import stages
    from flops_fit.analysis import summary_lines

    analysis = stages.analyze(cfg)
    if not cfg.get("quiet"):
        print("\n".join(summary_lines(analysis)))
    bought = analysis.get("design")
    if bought and bought.get("width") is not None:
        from flops_fit.analysis.design import fmt_width

        print(f"design: batch {bought['batch']} took the N_opt({bought['target_budget']:.2g} FLOPs) interval's width from "
              f"{fmt_width(bought['width_before'])} to {fmt_width(bought['width'])} "
              + (f"(the bootstrap's {fmt_width(bought['bootstrap_width'])}; " if bought.get("bootstrap_width") is not None
                 else "(")
              + f"expected {fmt_width(bought['expected_width'])})")
    for fc in (bought or {}).get("forecast_checks") or []:  # a new budget the design bought: its forecast, scored
        print(f"design: batch {fc['batch']}'s forecast check at {fc['budget']:.2g} FLOPs: {fc['summary']}")
    if not analysis.get("table") and not analysis.get("forecast_check"):
        from flops_fit.analysis.summary import no_table_message
        from flops_fit.errors import FlopsFitError

        where = f"{cfg['run_dir']}/analysis.json, which was written"
        raise FlopsFitError(no_table_message(f"why: the diagnostics in {where}" if cfg.get("quiet")
                                             else f"why: the lines above, and {where}"))
    print(f"wrote {cfg['run_dir']}/analysis.json; next: ff-plot run_dir={cfg['run_dir']}")


def main() -> None:
    run_stage("analyze", _task)


if __name__ == "__main__":
    main()
