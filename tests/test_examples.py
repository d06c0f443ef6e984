"""The example scripts run as a new user would run them (mock by default: offline, seconds)."""

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("module, args", [
    ("gpt_study", ["--budgets", "1e18", "1e19", "1e20"]),
    ("vit_study", ["--budgets", "1e15", "1e16", "1e17"]),
    ("cli_wrapper", ["--budgets", "1e18", "1e19", "1e20", "--points", "5"]),
])
@pytest.mark.slow
def test_example_runs_offline_and_prints_the_table(tmp_path, module, args):
    proc = subprocess.run([sys.executable, "-m", f"flops_fit.examples.{module}", *args,
                           "--output-dir", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("| budget"))
    rows = [l for l in lines[header + 2:] if l.startswith("| ")]
    assert len(rows) >= 3
    assert (tmp_path / "out" / "analysis.json").is_file() and (tmp_path / "out" / "report.html").is_file()


def test_examples_export_what_users_copy_from():
    import flops_fit.examples as ex

    for name in ("GPT", "GPTConfig", "VisionTransformer", "ViTConfig", "gpt_loss_fn", "vit_loss_fn",
                 "TinyStoriesDataset", "CIFAR10Dataset"):
        assert getattr(ex, name) is not None


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path):
    """The README's "From Python" block, pasted as written: real CPU training, a table, and an IsoFLOP
    minimum inside every budget's grid that moves to larger models as the budget grows."""
    text = (REPO / "README.md").read_text()
    start = text.index("```python\n", text.index("## From Python")) + len("```python\n")
    code = text[start:text.index("```", start)]
    code += ("\nminima = result.analysis['fits']['isoflop']['budgets']\n"
             "print('N_OPT', [m['params_opt'] for m in minima if m['interior']])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any(line.startswith("| budget | N_opt") for line in proc.stdout.splitlines()), proc.stdout[-1500:]
    n_opt = eval(next(l for l in proc.stdout.splitlines() if l.startswith("N_OPT"))[len("N_OPT"):])
    assert len(n_opt) >= 3 and all(a < b for a, b in zip(n_opt, n_opt[1:])), n_opt
    assert (tmp_path / "outputs" / "mlp" / "analysis.json").is_file()
