"""ff-train: train every planned run (mock | local | gpu) into run_dir/runs/."""

from flops_fit.cli.common import run_stage


def _task(cfg: dict) -> None:
    from flops_fit import stages
    from flops_fit.training.sweep import summarize

    counts = stages.train(cfg)
    print(summarize(counts, cfg["run_dir"]))
    if counts["shard_size"] and not cfg.get("num_shards", 1) > 1:
        print(f"next: ff-analyze run_dir={cfg['run_dir']}")


def main() -> None:
    run_stage("train", _task)


if __name__ == "__main__":
    main()
