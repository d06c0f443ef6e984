"""ff-status: list the runs of run_dir by state, with the progress of the running ones."""

from flops_fit.cli.common import run_stage


def _task(cfg: dict) -> None:
    from flops_fit import stages
    from flops_fit.artifacts import dumps
    from flops_fit.training.status import format_status

    status = stages.status(cfg)
    print(dumps(status) if cfg.get("json") else format_status(status, show_all=bool(cfg.get("all"))))


def main() -> None:
    run_stage("status", _task)


if __name__ == "__main__":
    main()
