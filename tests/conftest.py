import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BIN = Path(sys.executable).parent


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs one worker per core): one thread per worker and per
    process it starts, so that workers share the cores instead of oversubscribing them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """With several workers, the slow tests go first (a stable sort): the longest jobs start while the
    rest fill in around them, instead of one of them starting last and running alone."""
    if getattr(config.option, "numprocesses", None):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def script(name: str) -> str:
    """The installed console script (ff-plan, ...) next to this interpreter."""
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is not installed: run `make setup` (pip install -e .)")
        return found
    return str(path)


# ff-* runs in the test process unless the process boundary is part of what a test checks: a
# multirun (its launcher starts processes), more than one training worker, an environment of its
# own (other than the variables flops-fit reads when it runs, set for the call: IN_PROCESS_ENV), or
# a caller's ``subprocess=True`` (the tests of entry points, signals and imports run their own).
# Same argv, exit code, stdout and stderr as the console script; each call restores the working
# directory, sys.path, sys.argv, the logging setup and torch's thread count, and Hydra's global
# state is cleared around it. ``timeout`` bounds a subprocess only.
SUBPROCESS_ONLY = ("-m", "--multirun", "trainer.devices=")
IN_PROCESS_ENV = {"FLOPS_FIT_CACHE"}


def _in_process(name: str, args, cwd, env=None) -> subprocess.CompletedProcess:
    import contextlib
    import io
    import logging
    import traceback
    from importlib.metadata import entry_points

    from hydra.core.global_hydra import GlobalHydra

    main = next(ep for ep in entry_points(group="console_scripts") if ep.name == name).load()
    out, err = io.StringIO(), io.StringIO()
    saved = (os.getcwd(), list(sys.path), list(sys.argv), logging.root.level, list(logging.root.handlers))
    saved_env = {k: os.environ.get(k) for k in (env or {})}
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    code = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        sys.path.insert(0, str(REPO))  # the tests' own plug-in model imports, as from the script's PYTHONPATH
        sys.argv = [name, *args]
        os.environ.update(env or {})
        GlobalHydra.instance().clear()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
            except BaseException:  # what a console script would print as a traceback, exit 1
                traceback.print_exc()
                code = 1
    finally:
        GlobalHydra.instance().clear()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.chdir(saved[0])
        sys.path[:], sys.argv[:] = saved[1], saved[2]
        logging.root.setLevel(saved[3])
        logging.root.handlers[:] = saved[4]
        torch = sys.modules.get("torch")
        if torch is not None and threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return subprocess.CompletedProcess([name, *args], code, out.getvalue(), err.getvalue())


def run_cli(name: str, *args: str, cwd=None, check=True, env=None, timeout=600,
            subprocess: bool = False) -> "subprocess.CompletedProcess":
    import subprocess as sp

    if subprocess or set(env or ()) - IN_PROCESS_ENV or any(a.startswith(SUBPROCESS_ONLY) for a in args):
        full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
        # the tests' own plug-in model must import from the subprocess, as a user's package would
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH", "")]))
        proc = sp.run([script(name), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    else:
        proc = _in_process(name, args, cwd, env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def held_out(data, batch_size: int):
    """``data``'s held-out split ``(x, y)`` in the split's own order, from ``eval_batches(batch_size)``, whose
    batches are each spread over the split (:func:`flops_fit.data.base.spread_batches`)."""
    import torch

    from flops_fit.data.base import spread_batches

    batches = list(data.eval_batches(batch_size))
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    n = len(x)
    order = torch.tensor([i for rows in spread_batches(n, batch_size) for i in range(n)[rows]])
    assert sorted(order.tolist()) == list(range(n)) and [len(b[0]) for b in batches] == \
        [len(range(n)[rows]) for rows in spread_batches(n, batch_size)]
    return x[order.argsort()], y[order.argsort()]


@pytest.fixture
def one_torch_thread():
    """Tiny models: one thread is as fast, and immune to a co-tenant stalling OpenMP's second."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
