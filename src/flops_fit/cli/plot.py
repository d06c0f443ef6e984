"""ff-plot: figures in run_dir/plots/ and run_dir/report.html."""

from flops_fit.cli.common import run_stage


def _task(cfg: dict) -> None:
    from flops_fit import stages

    out = stages.plot(cfg)
    for p in out["plots"]:
        print(f"wrote {p}")
    if out.get("report"):
        print(f"wrote {out['report']}")


def main() -> None:
    run_stage("plot", _task)


if __name__ == "__main__":
    main()
