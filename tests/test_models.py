"""The example models (GPT, ViT) against the model contract, and FLOP counting."""

import math

import pytest
import torch

from flops_fit.examples import GPT, GPTConfig, VisionTransformer, ViTConfig
from flops_fit.examples.gpt import chinchilla_flops_per_token
from flops_fit.models import ModelCounter, ModelSpec
from flops_fit.flops import flops_by_convention, measure_flops_per_token
from flops_fit.training.optim import param_groups

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY_GPT = dict(n_layer=2, head_dim=16, vocab_size=64, seq_len=32)
TINY_VIT = dict(depth=2, head_dim=16, image_size=16, patch_size=4, channels=3, num_classes=5)


@pytest.mark.parametrize("d_model", [16, 48, 96])
def test_gpt_meta_counts_equal_real_counts(d_model):
    with torch.device("meta"):
        meta = GPT(d_model=d_model, **TINY_GPT)
    assert all(p.is_meta for p in meta.parameters())
    real = GPT(GPTConfig(d_model=d_model, **TINY_GPT))
    assert meta.num_params() == real.num_params() == sum(p.numel() for p in real.parameters())
    assert meta.num_params(non_embedding=True) == real.num_params() - 64 * d_model
    # the hand count: untied embedding + head, 4 d^2 attention, 3 d f SwiGLU, 2 gains per block, final gain
    f = real.config.ffn_dim
    assert f % 32 == 0 and f >= 8 / 3 * d_model
    expected = 2 * 64 * d_model + 2 * (4 * d_model**2 + 3 * d_model * f + 2 * d_model) + d_model
    assert real.num_params() == expected


@pytest.mark.parametrize("embed_dim", [16, 64])
def test_vit_meta_counts_equal_real_counts(embed_dim):
    with torch.device("meta"):
        meta = VisionTransformer(embed_dim=embed_dim, **TINY_VIT)
    real = VisionTransformer(ViTConfig(embed_dim=embed_dim, **TINY_VIT))
    assert meta.num_params() == real.num_params() == sum(p.numel() for p in real.parameters())
    tokens = (16 // 4) ** 2
    assert real.num_params() - real.num_params(non_embedding=True) == tokens * embed_dim  # the position table


def test_model_spec_builds_on_meta_and_counts():
    spec = ModelSpec.from_config(
        {"_target_": "flops_fit.examples.GPT", "size_param": "d_model", "kwargs": TINY_GPT, "size_range": [16, 512]}
    )
    assert spec.round_size(50) == 48
    assert spec.round_size(3) == 16
    counter = ModelCounter(spec)
    info = counter.info(64)
    assert info.params == GPT(d_model=64, **TINY_GPT).num_params()
    assert info.data_unit == "tokens"
    assert {"6nd", "6nd_nonembedding", "chinchilla"} <= set(info.flops_per_token)
    assert counter.measured_flops_per_token(64) == pytest.approx(GPT(d_model=64, **TINY_GPT).flops_per_token("measured"))
    vspec = ModelSpec.from_config(
        {"_target_": "flops_fit.examples.VisionTransformer", "size_param": "embed_dim", "kwargs": TINY_VIT}
    )
    vinfo = ModelCounter(vspec).info(32)
    assert vinfo.data_unit == "images"
    assert vinfo.flops_per_token["6nd"] == pytest.approx(6 * vinfo.params * 16)  # 16 patches per image


def test_round_size():
    assert GPT.round_size(100) == 96  # default head_dim 32
    assert GPT.round_size(10) == 32
    assert GPT.round_size(100, head_dim=64) == 128
    assert GPT.round_size(112, head_dim=32, n_layer=3) == 128  # ties go to the even multiple, extra kwargs ignored
    assert VisionTransformer.round_size(70, head_dim=16) == 64
    assert VisionTransformer.round_size(1, head_dim=16) == 16
    with pytest.raises(ValueError, match="multiple of head_dim"):
        GPT(d_model=40, head_dim=16)
    with pytest.raises(ValueError, match="parametrization"):
        GPT(d_model=32, parametrization="ntk")


def test_forward_shapes():
    torch.manual_seed(0)
    gpt = GPT(d_model=32, **TINY_GPT)
    x = torch.randint(0, 64, (3, 20))
    assert gpt(x).shape == (3, 20, 64)
    vit = VisionTransformer(embed_dim=32, **TINY_VIT)
    assert vit(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    with pytest.raises(ValueError):
        vit(torch.randn(2, 3, 32, 32))


def test_gpt_is_causal():
    torch.manual_seed(0)
    gpt = GPT(d_model=32, **TINY_GPT).eval()
    x = torch.randint(0, 64, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % 64
    with torch.no_grad():
        assert torch.allclose(gpt(x)[0, :8], gpt(y)[0, :8], atol=1e-5)
        assert not torch.allclose(gpt(x)[0, 8:], gpt(y)[0, 8:], atol=1e-5)


def test_chinchilla_flops_vs_6n():
    for d in (64, 256, 1024):
        m = GPT(GPTConfig(d_model=d, n_layer=4, head_dim=32, vocab_size=256, seq_len=128))
        ratio = m.flops_per_token("chinchilla") / m.flops_per_token("6nd")
        assert 0.95 < ratio < 1.6, (d, ratio)
    # hand count of appendix F for a toy: d=8, 1 layer, 2 heads of 4, ffn 16 (2 matrices), V=10, T=5
    fwd = 2 * 10 * 8 + (2 * 3 * 8 * 8 + 2 * 5 * 8 + 3 * 2 * 5 + 2 * 5 * 8 + 2 * 8 * 8) + 2 * 2 * 8 * 16 + 2 * 8 * 10
    got = chinchilla_flops_per_token(d_model=8, n_layer=1, n_head=2, head_dim=4, ffn_dim=16, vocab_size=10, seq_len=5)
    assert got == 3 * fwd
    with pytest.raises(NotImplementedError):
        GPT(d_model=32, **TINY_GPT).flops_per_token("kaplan")


def test_measured_flops_close_to_6n_for_small_gpt():
    torch.manual_seed(0)
    m = GPT(d_model=128, n_layer=2, head_dim=32, vocab_size=256, seq_len=64)
    x = torch.randint(0, 256, (2, 64))
    measured = measure_flops_per_token(m, (x, x))
    six_n = m.flops_per_token("6nd")
    assert 0.8 < measured / six_n < 1.3, measured / six_n
    assert all(p.grad is None for p in m.parameters())  # the count leaves no gradients behind
    # the meta-device count (the model's "measured" hook) agrees with the real step
    assert m.flops_per_token("measured") == pytest.approx(measured, rel=0.1)


def test_measured_flops_vit_per_image():
    torch.manual_seed(0)
    m = VisionTransformer(embed_dim=64, **TINY_VIT)
    x, y = torch.randn(3, 3, 16, 16), torch.randint(0, 5, (3,))
    measured = measure_flops_per_token(m, (x, y))
    assert 0.8 < measured / m.flops_per_token("6nd") < 1.3
    conv = flops_by_convention(m, "images")
    assert set(conv) == {"6nd", "6nd_nonembedding", "chinchilla", "measured"}


def test_flops_by_convention_for_a_plain_module():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    x, y = torch.randn(5, 3, 2, 2), torch.randint(0, 4, (5,))
    conv = flops_by_convention(net, "images", example_batch=(x, y))
    assert conv["6nd"] == 6 * 52
    # forward 2 x 48 per image; backward only the weight gradient (the input needs none): 2 x 48
    assert conv["measured"] == pytest.approx(4 * 48)


@pytest.mark.parametrize("cls,kw,size", [(GPT, TINY_GPT, "d_model"), (VisionTransformer, TINY_VIT, "embed_dim")])
def test_param_groups_mup_and_sp(cls, kw, size):
    mup = cls(**kw, **{size: 64}, parametrization="mup", base_width=16)
    groups = {g["name"]: g for g in param_groups(mup, 1e-2, 0.1)}
    assert groups["hidden"]["lr"] == pytest.approx(1e-2 * 16 / 64)
    assert groups["input"]["lr"] == groups["output"]["lr"] == groups["vector"]["lr"] == 1e-2
    assert groups["vector"]["weight_decay"] == 0.0 and groups["hidden"]["weight_decay"] == 0.1
    assert sum(len(g["params"]) for g in groups.values()) == len(list(mup.parameters()))
    sp = cls(**kw, **{size: 64}, parametrization="sp", base_width=16)
    assert {g["lr"] for g in param_groups(sp, 1e-2, 0.1)} == {1e-2}
    # the readout multiplier and attention scale
    assert mup.output_scale == pytest.approx(16 / 64) and sp.output_scale == 1.0
    # attention: SP 1/sqrt(head_dim); μP ∝ 1/head_dim, equal to SP's at base_head_dim (default head_dim)
    assert mup.blocks[0].attn.scale == pytest.approx(1 / 4) and sp.blocks[0].attn.scale == pytest.approx(1 / 4)
    kw_wide_heads = {**kw, "head_dim": 64}
    wide_heads = cls(**kw_wide_heads, **{size: 128}, parametrization="mup", base_width=16, base_head_dim=16)
    assert wide_heads.blocks[0].attn.scale == pytest.approx(4 / 64)


def test_mup_init_at_base_width_matches_sp():
    """At d_model == base_width μP and SP draw the same weights and the same learning rates."""
    torch.manual_seed(0)
    a = GPT(d_model=64, **TINY_GPT, parametrization="mup", base_width=64)
    torch.manual_seed(0)
    b = GPT(d_model=64, **TINY_GPT, parametrization="sp", base_width=64)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    assert {g["lr"] for g in a.param_groups(1e-3, 0.0)} == {1e-3}
    # and wider μP models shrink hidden init std like 1/sqrt(width)
    torch.manual_seed(0)
    wide = GPT(d_model=256, **TINY_GPT, parametrization="mup", base_width=64)
    ratio = a.blocks[0].attn.qkv.weight.detach().std() / wide.blocks[0].attn.qkv.weight.detach().std()
    assert math.isclose(float(ratio), 2.0, rel_tol=0.1)


def test_gpt_with_a_fixed_head_count():
    """n_heads fixes the head count: head_dim = d_model / n_heads grows with the width."""
    assert GPT.round_size(113, n_heads=2) == 112 and GPT.round_size(1, n_heads=2) == 4
    small = GPT(d_model=32, n_layer=1, n_heads=2, vocab_size=64, seq_len=16, base_width=32)
    wide = GPT(d_model=128, n_layer=1, n_heads=2, vocab_size=64, seq_len=16, base_width=32)
    assert (small.config.n_head, small.config.head_dim) == (2, 16)
    assert (wide.config.n_head, wide.config.head_dim) == (2, 64)
    # μP: at the base width the attention scale equals SP's 1/sqrt(head_dim), and falls like 1/head_dim beyond
    assert small.blocks[0].attn.scale == pytest.approx(1 / 16 ** 0.5)
    assert wide.blocks[0].attn.scale == pytest.approx(4 / 64)
    with torch.device("meta"):
        twin = GPT(d_model=128, n_layer=1, n_heads=2, vocab_size=64, seq_len=16)
    assert twin.num_params() == wide.num_params()
    assert wide(torch.randint(64, (2, 16))).shape == (2, 16, 64)
    with pytest.raises(ValueError, match="multiple of 2 x n_heads=2"):
        GPT(d_model=30, n_layer=1, n_heads=2, vocab_size=64, seq_len=16)


@pytest.mark.parametrize("head_dim", [2, 4, 6, 16, 24])
def test_gpt_attention_pads_narrow_cpu_heads_without_changing_the_result(head_dim, monkeypatch):
    """Heads narrower than 16 go to the CPU kernel zero-padded to 16 (a faster shape there); the
    output and the gradients are those of the unpadded call."""
    import torch.nn.functional as F

    from flops_fit.examples import gpt

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 17, head_dim, generator=g, requires_grad=True) for _ in range(3))
    dy = torch.randn(3, 2, 17, head_dim, generator=g)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.37)
    want_grads = torch.autograd.grad(want, (q, k, v), dy)

    seen, plain = [], F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append(q.shape[-1])
        return plain(q, k, v, **kw)

    monkeypatch.setattr(gpt.F, "scaled_dot_product_attention", spy)
    got = gpt.causal_attention(q, k, v, 0.37)
    got_grads = torch.autograd.grad(got, (q, k, v), dy)
    assert seen == [max(head_dim, gpt.CPU_MIN_HEAD_DIM)]
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_grads, want_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    # on the meta device (the measured FLOPs convention) the model's own shapes are kept
    seen.clear()
    gpt.causal_attention(*(t.detach().to("meta") for t in (q, k, v)), 0.37)
    assert seen == [head_dim]


def test_gpt_readout_gradients_are_linears():
    """The output head's own backward (a faster layout for the weight gradient on the CPU) computes
    F.linear's gradients: checked exactly in float64 and, through a whole μP GPT, in float32."""
    from flops_fit.examples.gpt import _Readout

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(7, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(_Readout.apply, (x, w))

    def grads(monkey):
        torch.manual_seed(0)
        model = GPT(d_model=8, n_layer=1, n_heads=2, vocab_size=64, seq_len=16)
        if monkey:  # the plain path: F.linear and autograd's own backward
            import flops_fit.examples.gpt as gpt

            orig, gpt.readout = gpt.readout, torch.nn.functional.linear
        try:
            idx = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
            logits = model(idx)
            assert ("Readout" in type(logits.grad_fn).__name__) != monkey
            torch.nn.functional.cross_entropy(logits.reshape(-1, 64), idx.reshape(-1)).backward()
        finally:
            if monkey:
                gpt.readout = orig
        return {n: p.grad for n, p in model.named_parameters()}

    ours, plain = grads(False), grads(True)
    for name in plain:
        assert torch.allclose(ours[name], plain[name], rtol=1e-5, atol=1e-7), name


def test_a_meta_build_skips_the_initialisers_and_restores_them(monkeypatch):
    """Planning builds every size on the meta device with torch.nn.init's initialisers skipped (they change
    nothing there); the same counts as a real build, and the initialisers are back afterwards."""
    import torch

    from flops_fit.models import ModelSpec

    calls = []
    original = torch.nn.init.normal_
    monkeypatch.setattr(torch.nn.init, "normal_", lambda t, *a, **k: calls.append(t.device.type) or original(t, *a, **k))

    spec = ModelSpec(target="flops_fit.examples.GPT", size_param="d_model", size_range=(16, 64),
                     kwargs={"n_layer": 2, "head_dim": 16, "vocab_size": 256, "seq_len": 32})
    normal = torch.nn.init.normal_
    meta = spec.build(32, device="meta")
    assert calls == []  # skipped on the meta device
    real = spec.build(32)
    assert calls and set(calls) == {"cpu"}  # and called again for a real build
    assert torch.nn.init.normal_ is normal
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [(n, p.shape) for n, p in real.named_parameters()]
    assert all(p.is_meta for p in meta.parameters())
    w = torch.empty(1000)
    torch.nn.init.normal_(w, std=1.0)
    assert 0.9 < float(w.std()) < 1.1  # still initialises outside a meta build


def test_counters_of_one_model_family_share_its_counts_within_the_process(monkeypatch):
    import flops_fit.models as models

    monkeypatch.setattr(models, "_SHARED_COUNTS", {})
    built = []
    real_build = ModelSpec.build
    monkeypatch.setattr(ModelSpec, "build", lambda self, size, device=None: built.append((self.kwargs.get("n_layer"), size))
                        or real_build(self, size, device))

    def spec(**kw):
        return ModelSpec.from_config({"_target_": "flops_fit.examples.GPT", "size_param": "d_model",
                                      "kwargs": {**TINY_GPT, **kw}, "size_range": [8, 64]})

    first = ModelCounter(spec()).info(32)
    assert built == [(2, 32)]
    again = ModelCounter(spec()).info(32)  # another spec of the same family (ff-plan's next layout): not rebuilt
    assert again == first and built == [(2, 32)]
    deeper = ModelCounter(spec(n_layer=3)).info(32)  # other fixed arguments: another family
    assert built == [(2, 32), (3, 32)] and deeper.params > first.params
    odd = ModelSpec.from_config({"_target_": "flops_fit.examples.GPT", "size_param": "d_model",
                                 "kwargs": {**TINY_GPT, "extra": object()}, "size_range": [8, 64]})
    assert models._family_key(odd) is None  # an argument that is not plain data: nothing shared


def test_a_config_file_edited_between_two_plans_is_another_family(tmp_path):
    import os

    import flops_fit.models as models

    cfg = tmp_path / "config.json"
    cfg.write_text("{}")
    spec = ModelSpec.from_config({"_target_": "flops_fit.examples.GPT", "size_param": "d_model",
                                  "kwargs": {**TINY_GPT, "config": str(cfg)}, "size_range": [8, 64]})
    before = models._family_key(spec)
    os.utime(cfg, ns=(1, 1))
    assert models._family_key(spec) != before and models._family_key(spec) == models._family_key(spec)
