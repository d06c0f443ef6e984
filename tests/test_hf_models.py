"""Hugging Face `transformers` models and plain modules as they are: counts, outputs, size rules; and a
sweep whose loss does not fall with data (B = 0) analysed without a crash."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM  # noqa: E402

import flops_fit  # noqa: E402
from flops_fit.errors import FlopsFitError  # noqa: E402
from flops_fit.flops import count_params  # noqa: E402
from flops_fit.law import ChinchillaLaw  # noqa: E402
from flops_fit.models import ModelCounter, ModelSpec  # noqa: E402
from flops_fit.training.loss import call_model, cross_entropy_loss, resolve_loss  # noqa: E402

VOCAB, T = 64, 16
LLAMA_TIE = {"num_attention_heads": "size // 8", "num_key_value_heads": "size // 8", "intermediate_size": "4 * size"}


# factories as a user writes them: no num_params, no rounding, nothing flops-fit specific
def llama(hidden_size, **kw):
    return LlamaForCausalLM(LlamaConfig(hidden_size=hidden_size, vocab_size=VOCAB, num_hidden_layers=2,
                                        max_position_embeddings=64, **kw))


def gpt2(n_embd, **kw):
    return GPT2LMHeadModel(GPT2Config(n_embd=n_embd, vocab_size=VOCAB, n_layer=2, n_positions=32, **kw))


def random_tokens(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (n, T + 1), generator=g)
    return TensorDataset(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())


@pytest.fixture(autouse=True)
def _quiet_transformers():
    transformers.logging.set_verbosity_error()
    yield


# ------------------------------------------------------------------------------------------ counts

def test_hf_counts_come_from_num_parameters_with_tied_weights_once():
    model = gpt2(16, n_head=2)  # GPT-2 ties its head to the token embedding
    total, non_emb = count_params(model)
    assert total == model.num_parameters() == sum(p.numel() for p in model.parameters())
    # the lookup tables (tokens, positions) are left out once; the tied head is the same weight
    assert total - non_emb == VOCAB * 16 + 32 * 16
    untied = llama(16, num_attention_heads=2, num_key_value_heads=2, intermediate_size=32)
    total, non_emb = count_params(untied)
    assert total - non_emb == VOCAB * 16  # the input embedding only: an untied head is a matmul and stays in


class PlainLM(nn.Module):
    """A plain module: no num_params, an embedding, a head tied to it."""

    def __init__(self, width: int, tied: bool = True):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.body = nn.Linear(width, width)
        self.head = nn.Linear(width, VOCAB, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, x):
        return self.head(torch.relu(self.body(self.embed(x))))


def test_plain_module_counts_its_parameters():
    total, non_emb = count_params(PlainLM(8))
    assert total == VOCAB * 8 + 8 * 8 + 8  # the tied head is not counted twice
    assert non_emb == 8 * 8 + 8
    total, non_emb = count_params(PlainLM(8, tied=False))
    assert (total, non_emb) == (2 * VOCAB * 8 + 72, VOCAB * 8 + 72)
    spec = ModelSpec.from_callable(PlainLM, "width")
    spec.check_contract()  # no num_params() needed any more
    assert ModelCounter(spec).info(8).params == VOCAB * 8 + 72


# ----------------------------------------------------------------------------------------- outputs

def test_default_loss_reads_logits_from_every_output_form():
    logits = torch.randn(2, T, VOCAB)
    y = torch.randint(0, VOCAB, (2, T))
    want = float(torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)))
    from transformers.modeling_outputs import CausalLMOutputWithPast

    for output in (logits, (logits, None), [logits], {"logits": logits, "aux": 1}, CausalLMOutputWithPast(logits=logits)):
        assert float(cross_entropy_loss(output, y)) == pytest.approx(want, rel=1e-5)
    with pytest.raises(FlopsFitError, match=r"dict with keys \['hidden', 'z'\], with no logits") as e:
        cross_entropy_loss({"z": logits, "hidden": logits}, y)
    assert "\n" not in str(e.value)


def test_model_loss_is_the_hf_loss_on_the_same_targets():
    torch.manual_seed(0)
    model = llama(16, num_attention_heads=2, num_key_value_heads=2, intermediate_size=32).eval()
    x, y = random_tokens(4)[:]
    loss_fn = resolve_loss("model")
    with torch.no_grad():
        own = loss_fn(call_model(model, x, y, loss_fn), y)
        logits = model(x).logits
    # the causal LM shifts its labels itself: it scores y[:, :T-1], the same pairs cross-entropy scores
    want = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), y[:, :-1].reshape(-1))
    assert float(own) == pytest.approx(float(want), rel=1e-5)
    with pytest.raises(FlopsFitError, match="takes no labels= argument; use trainer.loss=cross_entropy"):
        call_model(PlainLM(8), x, y, loss_fn)


# -------------------------------------------------------------------------------------- size rules

def test_size_rules_are_small_integer_formulas():
    spec = ModelSpec.from_callable(llama, "hidden_size", size_multiple=16,
                                   tie={"num_attention_heads": "max(1, size // 32)", "intermediate_size": "8 * size // 3",
                                        "num_key_value_heads": lambda size: 1})
    assert [spec.round_size(s) for s in (1, 20, 25, 100)] == [16, 16, 32, 96]
    assert spec.tied(96) == {"num_attention_heads": 3, "intermediate_size": 256, "num_key_value_heads": 1}
    again = ModelSpec.from_config({**ModelSpec.from_callable(llama, "hidden_size", size_multiple=16, tie=LLAMA_TIE)
                                  .describe(), "_target_": "x.y"})
    assert again.size_multiple == 16 and again.tied(32) == {"num_attention_heads": 4, "num_key_value_heads": 4,
                                                            "intermediate_size": 128}
    for bad in ("__import__('os').system('true')", "size ** 2", "size.real", "size / 2", "open"):
        with pytest.raises(FlopsFitError, match=r"model.tie.num_attention_heads=.* is not a size rule: give an integer"):
            ModelSpec.from_callable(llama, "hidden_size", tie={"num_attention_heads": bad})
    with pytest.raises(FlopsFitError, match="model.size_multiple=0 must be a positive integer"):
        ModelSpec.from_callable(llama, "hidden_size", size_multiple=0)
    with pytest.raises(FlopsFitError, match=r"model.size_range=\[17, 30\] holds no multiple of model.size_multiple=16"):
        ModelSpec.from_callable(llama, "hidden_size", size_multiple=16, size_range=[17, 30]).round_size(20)
    # a tie replaces the fixed value a model config gives the same argument
    fixed = ModelSpec.from_callable(llama, "hidden_size", kwargs={"num_attention_heads": 2}, tie={"num_attention_heads": 1})
    assert fixed.build(16, device="meta").config.num_attention_heads == 1


def test_model_config_keys_compose_from_the_command_line():
    from flops_fit.config.compose import compose

    cfg = compose("plan", ["model=gpt", "dataset=synthetic_text", "model.size_multiple=32",
                           "+model.tie.n_heads=size // 16"])
    spec = ModelSpec.from_config(cfg["model"])
    assert spec.round_size(40) == 32 and spec.tied(64) == {"n_heads": 4}
    assert spec.build(64, device="meta").config.n_head == 4


def test_a_size_the_model_refuses_is_one_line_naming_the_size_and_the_rules(tmp_path):
    with pytest.raises(FlopsFitError) as e:  # LlamaConfig wants hidden_size a multiple of its 32 heads
        flops_fit.find_optimal(model_cls=llama, model_size_param="hidden_size", compute_budgets=[1e11],
                               mode="mock", output_dir=tmp_path, plot=False)
    msg = str(e.value)
    assert "\n" not in msg and "could not be built at hidden_size=8" in msg
    assert "not a multiple of the number of attention heads" in msg  # the model's own reason
    assert "model.size_multiple" in msg and "model.tie" in msg
    with pytest.raises(FlopsFitError, match=r"at n_embd=24 \(n_head=5\).*embed_dim"):
        ModelSpec.from_callable(gpt2, "n_embd", tie={"n_head": 5}).build(24, device="meta")


# ------------------------------------------------------------------------------ through find_optimal

@pytest.mark.parametrize("factory, size_param, tie", [
    (llama, "hidden_size", LLAMA_TIE),
    (gpt2, "n_embd", {"n_head": "size // 8"}),
])
@pytest.mark.slow
def test_hf_model_plans_and_analyzes_in_mock_mode(tmp_path, factory, size_param, tie):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = flops_fit.find_optimal(model_cls=factory, model_size_param=size_param, size_multiple=8, tie=tie,
                                        compute_budgets=[3e10, 1e11, 3e11, 1e12], mode="mock", output_dir=tmp_path,
                                        plot=False)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["model"]["size_multiple"] == 8 and plan["model"]["tie"] == tie
    sizes = sorted({e["size"] for e in plan["experiments"]})
    assert len(sizes) >= 5 and all(s % 8 == 0 for s in sizes)
    for e in plan["experiments"][:3]:  # the planned counts are the real model's
        assert e["params"] == ModelSpec.from_callable(factory, size_param, tie=tie).build(e["size"]).num_parameters()
    assert result.analysis["table"] and "| budget |" in result.chinchilla_table()


@pytest.mark.slow
def test_hf_models_train_locally_with_their_logits_or_their_own_loss(tmp_path):
    common = dict(dataset=random_tokens(), compute_budgets=[3e8, 1e9], mode="local", size_multiple=8,
                  size_range=[8, 24], plot=False, points=3, span=2.0, tokens_per_param=1.0, min_tokens_per_param=0.2,
                  min_steps=0, batch_size=8, threads=1, progress=False, bootstrap=20)
    for name, factory, size_param, tie, loss in (("llama", llama, "hidden_size", LLAMA_TIE, None),
                                                 ("gpt2", gpt2, "n_embd", {"n_head": "size // 8"}, "model")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = flops_fit.find_optimal(model_cls=factory, model_size_param=size_param, tie=tie, loss_fn=loss,
                                            output_dir=tmp_path / name, **common)
        runs = [json.loads(p.read_text()) for p in sorted((tmp_path / name / "runs").glob("*.json"))]
        assert len(runs) >= 3 and {r["status"] for r in runs} == {"completed"}
        # random tokens: the held-out loss sits near log(vocab), whatever the size
        assert all(abs(r["loss"] - np.log(VOCAB)) < 0.3 for r in runs)
        assert all(0 < r["non_embedding_params"] < r["params"] for r in runs)
        assert result.analysis["diagnostics"]  # analysed (a flat sweep says so) without an exception


# ------------------------------------------------------------------------- a loss that ignores data

def _flat_in_data(budgets=(1e8, 3e8, 1e9, 3e9), points=5):
    """Records whose loss falls with size but not with tokens (it even creeps up): the fit puts B at 0."""
    runs = []
    for C in budgets:
        centre = np.sqrt(C / 120)
        for j, N in enumerate(np.geomspace(centre / 4, centre * 4, points)):
            N = float(round(N))
            D = C / (6 * N)
            loss = (2 + 50 / N ** 0.3) * (1 + 1e-3 * np.log(D))
            runs.append({"id": f"c{C:.0e}_n{j}", "status": "completed", "budget": C, "size": j, "params": N,
                         "tokens": D, "flops": C, "loss": float(loss), "data_unit": "tokens",
                         "history": [{"tokens": D, "flops": C, "loss": float(loss)}]})
    return runs


def test_degenerate_law_answers_inf_and_says_why():
    law = ChinchillaLaw(E=2.0, A=50.0, B=0.0, alpha=0.3, beta=0.02)
    assert law.G == np.inf and law.k_D() == 0 and law.n_opt(1e20) == np.inf  # no ZeroDivisionError
    assert "does not fall with data (B=0" in law.degenerate()
    assert "does not fall with model size" in ChinchillaLaw(A=0.0).degenerate()
    assert ChinchillaLaw().degenerate() is None


def test_analysis_of_a_sweep_with_no_data_effect_does_not_crash():
    from flops_fit.analysis import run_analysis, summary_lines

    for bootstrap in (0, 20):
        out = run_analysis(_flat_in_data(), n_bootstrap=bootstrap)
        par = out["fits"]["parametric"]  # the fit that gave B = 0 (it divided by zero in ChinchillaLaw.G) is withheld
        assert par["status"] == "degenerate" and par["reason"].startswith("the loss does not fall with data")
        assert any(d["code"] == "parametric_degenerate" for d in out["diagnostics"])
        assert not any(np.isfinite(r.get("params") or np.nan) and r["params"] > 1e15 for r in out["table"] or [])
        summary_lines(out)


def test_analysis_names_the_degenerate_fit_in_its_diagnostics():
    from flops_fit.analysis import run_analysis

    out = run_analysis(_flat_in_data(), n_bootstrap=0)
    assert any("does not fall with data" in d["message"] for d in out["diagnostics"])


def test_analysis_of_a_sweep_with_no_size_effect_does_not_crash():
    from flops_fit.analysis import run_analysis

    runs = _flat_in_data()
    for r in runs:
        r["loss"] = r["history"][0]["loss"] = 4.16 + 1e-6 * r["params"]  # bigger is (slightly) worse
    run_analysis(runs, n_bootstrap=0)


@pytest.mark.slow
def test_readme_hf_example_runs_as_written(tmp_path):
    """The README's "Your Hugging Face model" block, pasted as written."""
    import subprocess
    import sys
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("```python\n", text.index("## Your Hugging Face model")) + len("```python\n")
    code = text[start:text.index("```", start)]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any(line.startswith("| budget | N_opt") for line in proc.stdout.splitlines()), proc.stdout[-1500:]
    plan = json.loads((tmp_path / "outputs" / "llama" / "plan.json").read_text())
    assert all(e["size"] % 16 == 0 for e in plan["experiments"])
