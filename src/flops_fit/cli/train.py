"""ff-train: train every planned run (mock | local | gpu) into run_dir/runs/.

``trainer.devices=N`` trains each run on N devices: this process composes the config, checks it
and starts N workers through torch's launcher (``torch.distributed.run``), each running this
module with the resolved config. Under ``torchrun`` this entry point is itself one of the workers.
"""

from flops_fit.cli.common import run_stage


def _task(cfg: dict) -> int | None:
    from flops_fit import stages
    from flops_fit.artifacts import RunDir
    from flops_fit.training import distributed
    from flops_fit.training.sweep import summarize

    if distributed.launches_workers(cfg["trainer"]):
        stages.check("train", cfg)
        RunDir(cfg["run_dir"]).read_plan()  # a missing plan is one line here, not one per worker
        distributed.check_devices(cfg["trainer"])
        return distributed.launch(distributed.devices_of(cfg["trainer"]), "flops_fit.cli.train", "train", cfg) or None
    counts = stages.train(cfg)
    if not distributed.is_main_process():
        return None
    print(summarize(counts, cfg["run_dir"]))
    if counts["shard_size"] and not cfg.get("num_shards", 1) > 1:
        print(f"next: ff-analyze run_dir={cfg['run_dir']}")
    return None


def main() -> None:
    run_stage("train", _task)


if __name__ == "__main__":
    main()
