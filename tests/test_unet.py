"""UNet tests: shapes and gradients at odd legal sizes, boundary errors, zero init, config I/O."""
import dataclasses

import pytest
import torch

from unet import AttnBlock, UNet, UNetConfig, timestep_embedding

pytestmark = pytest.mark.usefixtures('one_thread')  # (conftest)


def tiny_config(**kw):
    cfg = dict(image_size=24, in_channels=5, out_channels=5, n_ch=16, ch_mult=(1, 2, 2),
               n_res_blocks=1, attn_res=(12,), n_heads=2, dropout=0.1, cond_channels=0)
    cfg.update(kw)
    return UNetConfig(**cfg)


def unzero_(model):
    # The zero-initialised output convs block every gradient upstream of them at step 0, so for
    # gradient-flow tests give all-zero parameters small random values first.
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.05)


@pytest.mark.parametrize('cond_channels', [0, 3])
def test_shape_and_gradients_odd_size(cond_channels):
    torch.manual_seed(0)
    model = UNet(tiny_config(cond_channels=cond_channels))
    unzero_(model)
    x = torch.randn(2, 5, 24, 40)  # not square, not the config's image_size: still legal
    t = torch.tensor([0, 999])
    cond = torch.randn(2, 3, 24, 40) if cond_channels else None
    out = model(x, t, cond)
    assert out.shape == (2, 5, 24, 40)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f'no gradient reaches {name}'


def test_cond_changes_output():
    torch.manual_seed(0)
    model = UNet(tiny_config(cond_channels=3)).eval()
    unzero_(model)
    x, t = torch.randn(1, 5, 8, 12), torch.tensor([3])
    a = model(x, t, torch.zeros(1, 3, 8, 12))
    b = model(x, t, torch.ones(1, 3, 8, 12))
    assert not torch.allclose(a, b), 'cond must reach the output'


def test_fresh_model_outputs_zeros():
    model = UNet(tiny_config())
    out = model(torch.randn(2, 5, 24, 24), torch.tensor([5, 700]))
    assert torch.equal(out, torch.zeros_like(out))


def test_illegal_sizes_and_inputs_raise_clear_errors():
    model = UNet(tiny_config())
    t = torch.tensor([1, 2])
    with pytest.raises(ValueError, match='multiples of 4'):
        model(torch.randn(2, 5, 24, 30), t)  # 30 is not divisible by 2**(3-1)
    with pytest.raises(ValueError, match='multiples of 4'):
        model(torch.randn(2, 5, 26, 24), t)
    with pytest.raises(ValueError, match='in_channels'):
        model(torch.randn(2, 4, 24, 24), t)
    with pytest.raises(ValueError, match='t must be'):
        model(torch.randn(2, 5, 24, 24), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match='cond_channels == 0'):
        model(torch.randn(2, 5, 24, 24), t, torch.randn(2, 3, 24, 24))
    with pytest.raises(ValueError, match='image_size=26'):
        UNet(tiny_config(image_size=26))
    sr = UNet(tiny_config(cond_channels=3))
    with pytest.raises(ValueError, match='cond_channels=3'):
        sr(torch.randn(2, 5, 24, 24), t)
    with pytest.raises(ValueError, match='cond must be'):
        sr(torch.randn(2, 5, 24, 24), t, torch.randn(2, 3, 12, 12))


def test_attention_placement():
    # attn_res=(12,) at image_size 24 with ch_mult (1,2,2) is level 1: n_res_blocks ResBlocks
    # down, n_res_blocks + 1 up, plus the middle block, each with attention.
    n_attn = lambda m: sum(isinstance(x, AttnBlock) for x in m.modules())
    assert n_attn(UNet(tiny_config(n_res_blocks=2))) == 2 + 3 + 1
    assert n_attn(UNet(tiny_config(attn_res=()))) == 1
    assert n_attn(UNet(tiny_config(attn_res=(24, 12, 6)))) == 3 * (1 + 2) + 1


def test_model_args_round_trip():
    given = tiny_config(ch_mult=[1, 2], attn_res=[12])
    model = UNet(given)  # lists (e.g. from JSON) -> tuples
    assert given.ch_mult == [1, 2] and given.attn_res == [12]  # the caller's config: untouched
    args = dataclasses.asdict(model.config)
    assert args['ch_mult'] == (1, 2) and args['attn_res'] == (12,)
    clone = UNet(UNetConfig(**args))
    clone.load_state_dict(model.state_dict())  # strict: same keys and shapes
    assert clone.get_num_params() == model.get_num_params() > 0


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 1, 999]), 16)
    assert emb.shape == (3, 16)
    # t = 0 -> cos(0) = 1 for the first half, sin(0) = 0 for the second.
    assert torch.equal(emb[0], torch.cat([torch.ones(8), torch.zeros(8)]))
    assert not torch.allclose(emb[1], emb[2])
    assert timestep_embedding(torch.tensor([3]), 7).shape == (1, 7)


def test_cpu_bf16_attention_matches_sdpa():
    # Under CPU bf16 autocast AttnBlock writes softmax(q k^T / sqrt(d)) v out (faster there than
    # SDPA); it must compute what SDPA computes in fp32, output and input gradient, to bf16
    # precision, at the toy UNet's shape (64 tokens, 4 heads of 16) and at 256 tokens.
    torch.manual_seed(0)
    for hw in (8, 16):
        block = AttnBlock(64, 4)
        unzero_(block)
        x = torch.randn(3, 64, hw, hw, requires_grad=True)
        ref = block(x)  # fp32: SDPA
        (gref,) = torch.autograd.grad(ref.square().sum(), x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = block(x)
        (g,) = torch.autograd.grad(out.float().square().sum(), x)
        assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
        assert (g - gref).abs().max() < 0.05 * gref.abs().max()
        assert torch.corrcoef(torch.stack([(out.float() - x).flatten(),
                                           (ref - x).flatten()]))[0, 1] > 0.999
