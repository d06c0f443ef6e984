"""ff-plan: lay out the IsoFLOP sweep into run_dir/plan.json."""

from flops_fit.cli.common import run_stage


def _task(cfg: dict) -> None:
    from flops_fit import stages
    from flops_fit.planning import format_plan

    plan = stages.plan(cfg)
    if plan.get("design_decision"):  # next_from=: the next batch of a sequential design
        run_dir = cfg["next_from"]
        print("\n".join(plan["design_lines"]))
        if plan["design_decision"] == "planned":
            print(f"wrote {run_dir}/plan.json; next: ff-train run_dir={run_dir}")
        elif plan["design_decision"] == "pending":
            print(f"next: ff-train run_dir={run_dir}")
        return
    if not cfg.get("quiet"):
        print(format_plan(plan))
        if plan.get("forecast_check"):
            from flops_fit.checks import describe

            print(describe(plan["forecast_check"]))
    print(f"wrote {cfg['run_dir']}/plan.json; next: ff-train run_dir={cfg['run_dir']}")


def main() -> None:
    run_stage("plan", _task)


if __name__ == "__main__":
    main()
