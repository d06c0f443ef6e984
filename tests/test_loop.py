"""The shared training loop (flops_fit.training.loop) on tiny in-test data sources."""

import json
import math

import pytest
import torch

from flops_fit.examples import GPT, VisionTransformer
from flops_fit.training import loop as loop_mod
from flops_fit.training.loop import train_run
from flops_fit.training.optim import lr_factor, warmup_steps_for
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")


VOCAB, T = 32, 16


class _Sampled:
    """Stand-in data: fresh samples for training, a fixed sample held out."""

    def train_batch(self, batch_size, generator):
        return self._sample(batch_size, generator)

    def eval_batches(self, batch_size):
        x, y = self.eval
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]


class ToyText(_Sampled):
    """A learnable stand-in for the data contract: each token is followed by a fixed successor
    with probability 1 - noise, else by a uniform random token (entropy floor ~0.65 nats)."""

    kind, data_unit = "text", "tokens"

    def __init__(self, vocab=VOCAB, seq_len=T, eval_seqs=64, noise=0.1, seed=0):
        self.vocab, self.seq_len, self.noise = vocab, seq_len, noise
        self.succ = torch.randperm(vocab, generator=torch.Generator().manual_seed(seed))
        self.eval = self._sample(eval_seqs, torch.Generator().manual_seed(seed + 1))

    def _sample(self, n, g):
        toks = [torch.randint(self.vocab, (n,), generator=g)]
        for _ in range(self.seq_len):
            rnd = torch.randint(self.vocab, (n,), generator=g)
            keep = torch.rand(n, generator=g) >= self.noise
            toks.append(torch.where(keep, self.succ[toks[-1]], rnd))
        s = torch.stack(toks, 1)
        return s[:, :-1].contiguous(), s[:, 1:].contiguous()

    def examples_per_batch(self, batch_size):
        return batch_size * self.seq_len


class ToyImages(_Sampled):
    """Four classes of 8x8 single-channel images: horizontal or vertical stripes, bright or dark."""

    kind, data_unit = "image", "images"

    def __init__(self, n_eval=32):
        self.eval = self._sample(n_eval, torch.Generator().manual_seed(1))

    def _sample(self, n, g):
        y = torch.randint(4, (n,), generator=g)
        stripes = (torch.arange(8) % 2).float() * 2 - 1
        patterns = torch.stack([stripes[:, None].expand(8, 8), stripes[None, :].expand(8, 8)])
        x = patterns[y % 2] + torch.where(y >= 2, 1.0, -1.0)[:, None, None] + 0.3 * torch.randn(n, 8, 8, generator=g)
        return x[:, None].contiguous(), y

    def examples_per_batch(self, batch_size):
        return batch_size


TRAINER = {"kind": "local", "device": "cpu", "lr": 1e-2, "batch_size": 8, "warmup_frac": 0.1, "min_lr_ratio": 0.1,
           "eval_every_frac": 0.25, "seed": 0, "progress": False}


def gpt(width=32, **kw):
    return GPT(d_model=width, n_layer=2, head_dim=16, vocab_size=VOCAB, seq_len=T, base_width=32, **kw)


def experiment(tokens, id="r0"):
    return {"id": id, "budget": 1e9, "size": 32, "params": 0, "tokens": tokens, "flops_per_token": 1.0}


def test_record_shape_and_learning():
    data = ToyText()
    r = train_run(experiment(8 * T * 60), model=gpt(), data=data, trainer=TRAINER, progress=False)
    json.dumps(r)
    for key in ("id", "status", "budget", "size", "params", "non_embedding_params", "tokens", "flops",
                "flops_by_convention", "loss", "history", "trainer", "seed", "wall_time_s", "steps",
                "tokens_per_s", "achieved_flops_per_s", "data_unit"):
        assert key in r, key
    assert r["status"] == "completed" and r["trainer"] == "local" and r["data_unit"] == "tokens"
    assert r["steps"] == 60 and r["tokens"] == 60 * 8 * T
    assert r["params"] == gpt().num_params()
    assert r["flops"] == pytest.approx(6 * r["params"] * r["tokens"])
    assert set(r["flops_by_convention"]) == {"6nd", "6nd_nonembedding", "chinchilla", "measured"}
    assert [p["tokens"] for p in r["history"]] == [15 * 128, 30 * 128, 45 * 128, 60 * 128]
    assert r["history"][-1]["loss"] == r["loss"]
    assert r["history"][-1]["flops"] == pytest.approx(r["flops"])
    # learns: from ln(32) = 3.47 at init to well under 2 nats
    assert r["loss"] < 2.0, r["loss"]
    assert r["tokens_per_s"] > 0 and r["achieved_flops_per_s"] > 0


def test_capped_history_evaluations_keep_each_curve_on_one_set_of_data(monkeypatch):
    """trainer.eval_max_batches: every history point, the last included, is the loss on the first batches of
    the held-out split; the run's loss is still the whole split's, from the same final pass."""
    calls = []
    real = loop_mod.evaluate_split

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((kwargs.get("stop"), out))
        return out

    monkeypatch.setattr(loop_mod, "evaluate_split", spy)
    data, cfg = ToyText(), {**TRAINER, "eval_batch_size": 8}  # 64 held-out sequences: 8 batches
    full = train_run(experiment(8 * T * 40), model=gpt(), data=data, trainer=cfg, progress=False)
    calls.clear()
    capped = train_run(experiment(8 * T * 40), model=gpt(), data=data, trainer={**cfg, "eval_max_batches": 2},
                       progress=False)
    assert capped["loss"] == full["loss"]  # the whole split either way
    (last_stop, (whole, head, batches)), history_calls = calls[-1], calls[:-1]
    assert last_stop is None and capped["loss"] == whole and capped["history"][-1]["loss"] == head != whole
    assert batches == 8 and capped["history_batches"] == 2 and "history_batches" not in full
    assert [stop for stop, _ in history_calls] == [2, 2, 2]
    assert [p["loss"] for p in capped["history"][:-1]] == [out[0] for _, out in history_calls]
    assert full["history"][-1]["loss"] == full["loss"]


@pytest.mark.slow
def test_the_eval_budget_puts_every_run_of_a_sweep_on_the_same_held_out_batches(monkeypatch):
    """trainer.eval_budget (default 0.05): the history points of every run evaluate as many held-out batches
    as fit in 5% of the sweep's shortest run's training compute (plan.json's eval_basis_tokens), a forward pass
    costing a third of a step; a longer run uses the same batches, and the final loss the whole split."""
    stops = []
    real = loop_mod.evaluate_split

    def spy(*args, **kwargs):
        stops.append(kwargs.get("stop"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "evaluate_split", spy)
    data, cfg = ToyText(), {**TRAINER, "eval_batch_size": 8}  # 8 held-out batches of 128 tokens
    # 3 x 0.05 x 6000 tokens over the 3 history points before the final pass: 2.3 batches of 128 tokens -> 2
    basis = 6000

    def run(steps, trainer=cfg, **exp):
        stops.clear()
        r = train_run({**experiment(8 * T * steps), **exp}, model=gpt(), data=data, trainer=trainer, progress=False)
        return r, stops[:-1], stops[-1]

    for steps in (40, 80):  # the shortest run and one twice as long
        r, history_stops, final_stop = run(steps, eval_basis_tokens=basis)
        assert r["history_batches"] == 2 and history_stops == [2, 2, 2] and final_stop is None
    whole, history_stops, _ = run(40)  # a plan from before eval_basis_tokens: the whole split, as before
    assert "history_batches" not in whole and history_stops == [None] * 3
    r, history_stops, _ = run(40, {**cfg, "eval_budget": None}, eval_basis_tokens=basis)
    assert "history_batches" not in r and history_stops == [None] * 3 and r["loss"] == whole["loss"]
    r, history_stops, _ = run(40, {**cfg, "eval_max_batches": 3}, eval_basis_tokens=basis)  # a fixed cap wins
    assert r["history_batches"] == 3 and history_stops == [3, 3, 3]
    r, _, _ = run(40, {**cfg, "eval_budget": 10.0}, eval_basis_tokens=basis)  # more than the split: all of it
    assert stops[0] == 468 and "history_batches" not in r  # (the record: the whole split)
    assert r["history"][-1]["loss"] == r["loss"] == whole["loss"]


def test_same_seed_same_losses_different_seed_different():
    data = ToyText()
    runs = [train_run(experiment(8 * T * 12), model=gpt(), data=data, trainer=dict(TRAINER, seed=s), progress=False)
            for s in (3, 3, 4)]
    losses = [[p["loss"] for p in r["history"]] for r in runs]
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


def test_model_built_elsewhere_is_reseeded_and_meta_is_materialised():
    data = ToyText()
    torch.manual_seed(123)
    a = train_run(experiment(8 * T * 6), model=gpt(), data=data, trainer=TRAINER, progress=False)
    with torch.device("meta"):
        m = gpt()
    b = train_run(experiment(8 * T * 6), model=m, data=data, trainer=TRAINER, progress=False)
    assert a["loss"] == b["loss"]
    assert not any(p.is_meta for p in m.parameters())


def test_schedule_ends_at_min_ratio_at_the_budget(monkeypatch):
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.1) == 1.0
    assert lr_factor(99, 100, 10, 0.1) == pytest.approx(0.1)
    factors = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert all(a <= b for a, b in zip(factors[:10], factors[1:10])) and all(
        a >= b for a, b in zip(factors[9:], factors[10:]))
    assert warmup_steps_for(1, 0.1) == 1 and warmup_steps_for(2, 0.9) == 1 and warmup_steps_for(100, 0.05) == 5

    seen = []
    real_set_lr = loop_mod.set_lr

    def spy(optimizer, factor):
        real_set_lr(optimizer, factor)
        seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})

    monkeypatch.setattr(loop_mod, "set_lr", spy)
    tokens = 8 * T * 19 + 5  # not a whole number of batches: 20 steps
    r = train_run(experiment(tokens), model=gpt(64), data=ToyText(), trainer=dict(TRAINER, lr=0.02), progress=False)
    assert r["steps"] == len(seen) == 20 == math.ceil(tokens / (8 * T))
    assert r["tokens"] == 20 * 8 * T >= tokens
    assert seen[-1]["vector"] == pytest.approx(0.02 * 0.1)
    assert seen[-1]["hidden"] == pytest.approx(0.02 * 0.1 * 32 / 64)  # μP: hidden at lr x base/width
    assert max(s["vector"] for s in seen) == pytest.approx(0.02)


def test_divergence_is_reported():
    data = ToyText()
    trainer = dict(TRAINER, lr=30.0, grad_clip=0.0, warmup_frac=0.0, diverge_factor=1.5)
    r = train_run(experiment(8 * T * 30), model=gpt(parametrization="sp"), data=data, trainer=trainer, progress=False)
    assert r["status"] == "diverged"
    assert r["loss"] is None
    assert r["steps"] < 30 and "loss" in r["reason"]
    json.dumps(r)


def test_image_model_and_plain_module():
    data = ToyImages()
    vit = VisionTransformer(embed_dim=32, depth=1, head_dim=16, image_size=8, patch_size=4, channels=1,
                            num_classes=4, base_width=32)
    r = train_run(experiment(8 * 40), model=vit, data=data, trainer=dict(TRAINER, lr=3e-3), progress=False)
    assert r["status"] == "completed" and r["data_unit"] == "images" and r["tokens"] == 320
    assert r["flops"] == pytest.approx(6 * vit.num_params() * 4 * 320)  # 4 patches per image
    assert r["loss"] < 1.0  # ln 4 = 1.39 at chance

    # any nn.Module with the forward contract trains; it falls back to 6 x params
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    r = train_run(experiment(8 * 20), model=net, data=data, trainer=TRAINER, flops_convention="6nd", progress=False)
    assert r["status"] == "completed" and r["params"] == 64 * 32 + 32 + 32 * 4 + 4
    assert r["flops"] == pytest.approx(6 * r["params"] * 160)
    with pytest.raises(Exception, match="chinchilla"):
        train_run({"id": "x", "tokens": 16}, model=net, data=data, trainer=TRAINER, flops_convention="chinchilla",
                  progress=False)


def test_cuda_request_falls_back_with_one_warning(capsys):
    loop_mod._WARNED.clear()
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    for _ in range(2):
        r = train_run(experiment(8 * T * 2), model=gpt(), data=ToyText(), trainer=dict(TRAINER, device="cuda"),
                      progress=False)
        assert r["device"] == "cpu"
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "CUDA is not available" in err


def test_progress_prints_one_summary_line(capsys):
    train_run(experiment(8 * T * 3, id="sum1"), model=gpt(), data=ToyText(), trainer=dict(TRAINER, progress=False),
              progress=True)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("[sum1] completed: loss")


# -- trainer settings: one source of defaults, validated up front -----------------------------------

def test_defaults_are_the_dataclass_and_local_yaml_only_repeats_them():
    import yaml

    from flops_fit.training.config import TrainerConfig

    local = yaml.safe_load((REPO / "conf" / "trainer" / "local.yaml").read_text())
    local.pop("defaults", None)
    defaults = TrainerConfig()
    assert defaults.lr == 8e-3 and defaults.kind == "local"
    for key, value in local.items():
        assert getattr(defaults, key) == value, f"conf/trainer/local.yaml sets {key}={value!r}, the default differs"
    # a partial dict trains at the dataclass defaults (the schema's old 3e-3 was the drift bug)
    r = train_run(experiment(8 * T * 2), model=gpt(), data=ToyText(), trainer={"progress": False}, progress=False)
    assert r["lr"] == 8e-3 and r["batch_size"] == 32


@pytest.mark.parametrize("key, value", [("lr", -1), ("lr", 0), ("batch_size", 0), ("batch_size", -3),
                                        ("warmup_frac", 1.0), ("warmup_frac", 2), ("warmup_frac", -0.1),
                                        ("dtype", "float8"), ("kind", "tpu"), ("loss", "mse"), ("eval_budget", 0),
                                        ("eval_budget", "abc"), ("eval_max_batches", 0)])
def test_bad_trainer_settings_name_the_key(key, value):
    from flops_fit.errors import FlopsFitError
    from flops_fit.training.config import TrainerConfig

    with pytest.raises(FlopsFitError, match=rf"^trainer\.{key}={value!r} is not valid: "):
        TrainerConfig.from_mapping({key: value})
    with pytest.raises(FlopsFitError, match=rf"trainer\.{key}="):
        train_run(experiment(8 * T), model=gpt(), data=ToyText(), trainer=dict(TRAINER, **{key: value}), progress=False)


def test_unknown_trainer_key_and_num_workers_are_refused():
    from flops_fit.errors import FlopsFitError
    from flops_fit.training.config import TrainerConfig

    with pytest.raises(FlopsFitError, match="trainer.num_workers is not a trainer setting"):
        TrainerConfig.from_mapping({"num_workers": 2})


# -- one loss function for training and evaluation ----------------------------------------------------

class TupleGPT(torch.nn.Module):
    """A model whose forward returns (logits, aux), as transformers models do with return_dict=False."""

    def __init__(self):
        super().__init__()
        self.inner = gpt()

    def reset_parameters(self):
        self.inner.reset_parameters()

    def num_params(self, non_embedding=False):
        return self.inner.num_params(non_embedding)

    def forward(self, x):
        logits = self.inner(x)
        return logits, {"aux": logits.mean()}


class DictGPT(TupleGPT):
    """A model whose forward returns a dict with no 'logits' entry."""

    def forward(self, x):
        return {"scores": super().forward(x)[0]}


def first_output_ce(output, targets, scale=1.0):
    """A user's loss for a model that returns a tuple: the default cross-entropy of its first item
    (the same function, so a run with it must equal the plain model's run exactly)."""
    from flops_fit.training.loss import cross_entropy_loss

    logits = output[0] if isinstance(output, tuple) else output
    return scale * cross_entropy_loss(logits, targets)


def test_user_loss_for_a_tuple_output_trains_and_evaluates():
    from flops_fit.errors import FlopsFitError

    plain = train_run(experiment(8 * T * 12), model=gpt(), data=ToyText(), trainer=TRAINER, progress=False)
    named = dict(TRAINER, loss={"_target_": "tests.test_loop.first_output_ce"})
    r = train_run(experiment(8 * T * 12), model=TupleGPT(), data=ToyText(), trainer=named, progress=False)
    assert r["status"] == "completed"
    assert [p["loss"] for p in r["history"]] == [p["loss"] for p in plain["history"]]
    # a Python callable directly (what the objects API passes)
    r2 = train_run(experiment(8 * T * 12), model=TupleGPT(), data=ToyText(), trainer=TRAINER, progress=False,
                   loss_fn=first_output_ce)
    assert r2["loss"] == r["loss"]
    # the default cross-entropy reads a tuple's first item as the logits (as transformers' return_dict=False)
    r3 = train_run(experiment(8 * T * 12), model=TupleGPT(), data=ToyText(), trainer=TRAINER, progress=False)
    assert r3["loss"] == r["loss"]
    # an output with no logits in it: one line saying what to set
    with pytest.raises(FlopsFitError, match="trainer.loss"):
        train_run(experiment(8 * T * 2), model=DictGPT(), data=ToyText(), trainer=TRAINER, progress=False)


def test_held_out_loss_is_the_training_loss():
    """Adam is blind to the loss's scale (without clipping), so 3 x CE trains the same model and
    its held-out loss, measured with the same function, is 3 x the plain one."""
    trainer = dict(TRAINER, grad_clip=0.0)
    plain = train_run(experiment(8 * T * 12), model=gpt(), data=ToyText(), trainer=trainer, progress=False)
    scaled = dict(trainer, loss={"_target_": "tests.test_loop.first_output_ce", "scale": 3.0})
    r = train_run(experiment(8 * T * 12), model=gpt(), data=ToyText(), trainer=scaled, progress=False)
    assert r["loss"] == pytest.approx(3 * plain["loss"], rel=2e-3)


def test_float16_trains_with_gradient_scaling(monkeypatch):
    steps = []

    class SpyScaler(torch.amp.GradScaler):
        def step(self, optimizer, *args, **kwargs):
            steps.append(self.get_scale())
            return super().step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", SpyScaler)
    r = train_run(experiment(8 * T * 20), model=gpt(), data=ToyText(), trainer=dict(TRAINER, dtype="float16"),
                  progress=False)
    assert r["status"] == "completed" and r["dtype"] == "float16" and r["loss"] < 3.0
    assert len(steps) == 20 and steps[0] > 1  # every step went through the scaler, at a scale above 1
    plain = train_run(experiment(8 * T * 2), model=gpt(), data=ToyText(), trainer=TRAINER, progress=False)
    assert len(steps) == 20 and plain["dtype"] == "float32"  # no scaler without float16


# -- grid.min_steps: the batch, steps and warmup a run records (docs/short-runs.md) ---------------

def test_a_run_record_says_the_batch_steps_and_warmup_the_min_steps_rule_gave(monkeypatch):
    data, seen = ToyText(), []
    draw = data.train_batch
    monkeypatch.setattr(data, "train_batch", lambda b, g: seen.append(b) or draw(b, g))
    tokens = 8 * T * 12  # 12 steps at trainer.batch_size=8
    trainer = {**TRAINER, "warmup_frac": 0.02, "eval_every_frac": 0.5}
    r = train_run({**experiment(tokens), "min_steps": 40}, model=gpt(16), data=data, trainer=trainer, progress=False)
    # 40 steps: a batch of 4 gives 24, of 2 gives 48; the warmup's 0.02 x 48 = 1 step is raised to a 2-step ramp
    assert (r["batch_size"], r["steps"], r["warmup"], r["min_steps"]) == (2, 48, 2, 40)
    assert r["trainer_settings"]["batch_size"] == 8 and r["tokens"] == 48 * 2 * T and set(seen) == {2}
    assert r["status"] == "completed" and [p["tokens"] for p in r["history"]] == [24 * 2 * T, 48 * 2 * T]

    seen.clear()
    plain = train_run(experiment(tokens), model=gpt(16), data=data, trainer=trainer, progress=False)
    # no rule: trainer.batch_size; 12 steps are too few for a 2-step warmup within 10% of them
    assert (plain["batch_size"], plain["steps"], plain["warmup"], set(seen)) == (8, 12, 1, {8})
    assert "min_steps" not in plain


def test_warmup_ramps_over_two_steps_at_least_where_that_is_within_a_tenth_of_the_run():
    for steps in range(1, 400):
        for frac in (0.0, 0.01, 0.05, 0.1, 0.3):
            w = warmup_steps_for(steps, frac)
            assert 1 <= w <= max(1, steps - 1)
            if steps >= 20:
                assert w >= 2, (steps, frac)  # a ramp: over 1 step the first update already runs at the peak
            assert w == min(round(frac * steps), steps - 1) or w <= max(1, 0.1 * steps), (steps, frac)
    assert warmup_steps_for(100, 0.05) == 5 and warmup_steps_for(131, 0.05) == 7


def test_short_runs_lists_completed_runs_under_min_steps_from_plain_records():
    from flops_fit.training.record import short_runs

    records = [
        {"id": "long", "status": "completed", "steps": 140},
        {"id": "short", "status": "completed", "steps": 33},
        {"id": "diverged", "status": "diverged", "steps": 5},
        # written before records said steps: tokens / (batch x seq_len), the seq_len from the dataset or model
        {"id": "old", "status": "completed", "tokens": 133_269, "batch_size": 32, "data_unit": "tokens",
         "dataset": {"seq_len": 128}},
        {"id": "old_model", "status": "completed", "tokens": 4096 * 60, "batch_size": 32,
         "model": {"kwargs": {"seq_len": 128}}},
        {"id": "images", "status": "completed", "tokens": 5000, "batch_size": 64, "data_unit": "images"},
        {"id": "mock", "status": "completed", "tokens": 10**6},  # no batch: unknown, skipped
        # as the mock trainer writes it: its steps are history points, not optimizer steps
        {"id": "mock_trainer", "status": "completed", "trainer": "mock", "steps": 11, "tokens": 10**6,
         "batch_size": 8, "dataset": {"seq_len": 128}},
        {"id": "csv", "status": "completed", "params": 1e6, "tokens": 2e7, "loss": 3.0},
    ]
    assert short_runs(records) == [("short", 33), ("old", 33), ("old_model", 60), ("images", 79)]
    assert short_runs(records, min_steps=50) == [("short", 33), ("old", 33)]
    assert short_runs(records, min_steps=0) == []


def test_short_runs_imports_no_torch():
    import subprocess
    import sys

    code = "import sys; from flops_fit.training.record import short_runs; sys.exit(3 if 'torch' in sys.modules else 0)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": ""})
    assert proc.returncode == 0, "importing flops_fit.training.record loaded torch" if proc.returncode == 3 else proc.stderr
