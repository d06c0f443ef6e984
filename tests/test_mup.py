"""μP coordinate check (Yang et al. 2022, "Tensor Programs V", section 7).

Train the same tiny GPT for a few Adam steps at widths 32..256 with one learning rate and look
at the typical size (mean |x|) of each layer's output on a fixed batch. Under μP the sizes
stay roughly flat as the width grows; under SP the updates blow them up with width. Both are
asserted, so a broken μP (or a test that cannot tell the two apart) fails.
"""

import pytest
import torch
import torch.nn.functional as F

from flops_fit.examples import GPT, VisionTransformer
from flops_fit.training.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


WIDTHS = (32, 64, 128, 256)
VOCAB, T = 64, 32


def _coordinates(model, step_fn, steps=4, lr=1e-2) -> dict[str, float]:
    opt = build_optimizer(model, lr=lr, weight_decay=0.0)
    for _ in range(steps):
        step_fn(model).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sizes: dict[str, float] = {}
    hooks = []
    for i, block in enumerate(model.blocks):
        for name, mod in (("attn", block.attn), ("mlp", block.mlp), ("block", block)):
            hooks.append(mod.register_forward_hook(
                lambda m, inp, out, key=f"{name}{i}": sizes.__setitem__(key, out.abs().mean().item())))
    with torch.no_grad():
        sizes["logits"] = step_fn(model, logits=True).abs().mean().item()
    for h in hooks:
        h.remove()
    return sizes


def _gpt_step(model, logits=False):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(VOCAB, (8, T + 1), generator=g)
    out = model(x[:, :-1])
    return out if logits else F.cross_entropy(out.reshape(-1, VOCAB), x[:, 1:].reshape(-1))


def _vit_step(model, logits=False):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.randint(10, (8,), generator=g)
    out = model(x)
    return out if logits else F.cross_entropy(out, y)


def _table(build, step_fn):
    rows = {}
    for width in WIDTHS:
        torch.manual_seed(0)
        rows[width] = _coordinates(build(width), step_fn)
    return rows


def _spread(rows, key):
    values = [rows[w][key] for w in WIDTHS]
    return max(values) / min(values), rows[WIDTHS[-1]][key] / rows[WIDTHS[0]][key]


@pytest.mark.parametrize("family", ["gpt", "vit"])
def test_coordinate_check_mup_flat_sp_grows(family):
    if family == "gpt":
        def build(param):
            return lambda w: GPT(d_model=w, n_layer=2, head_dim=16, vocab_size=VOCAB, seq_len=T,
                                 parametrization=param, base_width=32)
        step_fn = _gpt_step
    else:
        def build(param):
            return lambda w: VisionTransformer(embed_dim=w, depth=2, head_dim=16, image_size=16, patch_size=4,
                                               parametrization=param, base_width=32)
        step_fn = _vit_step
    mup = _table(build("mup"), step_fn)
    sp = _table(build("sp"), step_fn)
    report = "\n".join(
        f"{p} {w:4d} " + " ".join(f"{k}={v:.3g}" for k, v in rows[w].items())
        for p, rows in (("mup", mup), ("sp", sp)) for w in WIDTHS
    )
    hidden_keys = [k for k in mup[WIDTHS[0]] if k != "logits"]
    for key in hidden_keys + ["logits"]:
        spread, _ = _spread(mup, key)
        assert spread < 2.5, f"μP {key} is not flat across widths {WIDTHS}:\n{report}"
    # SP: the hidden layers' outputs grow several-fold over an 8x width increase
    growth = [_spread(sp, key)[1] for key in hidden_keys]
    assert min(growth) > 4.0, f"SP did not blow up with width (growth {growth}):\n{report}"


def test_the_optimizer_is_fused_on_cpu_and_falls_back_to_foreach_elsewhere():
    """The fused AdamW kernel on CPU (2.4-2.8x less time per step than foreach, the same updates to float
    rounding); foreach on a device it does not serve."""
    torch.manual_seed(0)
    model = GPT(vocab_size=VOCAB, d_model=32, n_layer=1, head_dim=16, seq_len=T)
    fused = build_optimizer(model, lr=1e-2, weight_decay=0.1)
    assert fused.defaults["fused"] and not fused.defaults.get("foreach")
    other = build_optimizer(model, lr=1e-2, weight_decay=0.1, device_type="mps")
    assert other.defaults["foreach"] and not other.defaults.get("fused")
    twin = GPT(vocab_size=VOCAB, d_model=32, n_layer=1, head_dim=16, seq_len=T)
    twin.load_state_dict(model.state_dict())
    slow = build_optimizer(twin, lr=1e-2, weight_decay=0.1, device_type="mps")
    x = torch.randint(0, VOCAB, (4, T))
    for m, opt in ((model, fused), (twin, slow)):
        for _ in range(5):
            logits = m(x)
            F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
