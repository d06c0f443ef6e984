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


def script(name: str) -> str:
    """The installed console script (ff-plan, ...) next to this interpreter."""
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is not installed: run `make setup` (pip install -e .)")
        return found
    return str(path)


def run_cli(name: str, *args: str, cwd=None, check=True, env=None, timeout=600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    # the tests' own plug-in model must import from the subprocess, as a user's package would
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH", "")]))
    proc = subprocess.run([script(name), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
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
