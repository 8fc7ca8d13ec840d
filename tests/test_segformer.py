"""segformer.py: MiT feature maps and SegFormer logits at the right shapes, gradients everywhere,
the segmenter interface's loss, the MiT state-dict layout and parameter counts (checked against
segmentation_models_pytorch once, pinned here), bf16 autocast, load_pretrained's strict loading
and one-line errors, and the AdamW recipe's parameter groups."""
import inspect

import pytest
import torch
import torch.nn.functional as F

import segformer

# Verified once against segmentation_models_pytorch 0.6.0 (torch 2.14.1, a separate venv; not a
# test dependency): smp.Segformer(f'mit_{size}', encoder_weights=None, classes=150).encoder's
# state dict loads with strict=True into SegFormer(150, size=size).backbone with no key mapping,
# has these key and parameter counts, and gives the same four feature maps (max |diff| < 1e-5).
MIT_KEYS = {'b0': 176, 'b2': 332}
MIT_PARAMS = {'b0': 3_319_392, 'b2': 24_196_288}
# The whole model at K = 150 (ADE20K, the paper's Tab. 1: B0 3.4M + 0.4M, B2 24.2M + 3.3M). These
# equal smp.Segformer(..., classes=150, decoder_segmentation_channels=256 (b0) / 768 (b2)), whose
# decoder then has the same tensors (a strict load of its mapped weights gives the same logits).
SEGFORMER_PARAMS_K150 = {'b0': 3_752_694, 'b2': 27_461_974}

# Tiny tensors on a shared CPU: one thread (conftest.py's one_thread) keeps each test well
# under a second, where OpenMP barrier waits made some take several.
pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def b2():
    torch.manual_seed(0)
    return segformer.SegFormer(150, size='b2').eval()  # ~27M parameters: built once


def mit_keys(depths):
    """The state-dict keys of NVlabs's mix_transformer.py MiT (head.* excluded), written out."""
    keys = []
    for i, depth in enumerate(depths, start=1):
        names = [f'patch_embed{i}.proj', f'patch_embed{i}.norm']
        for j in range(depth):
            block = f'block{i}.{j}'
            names += [f'{block}.norm1', f'{block}.attn.q', f'{block}.attn.kv', f'{block}.attn.proj']
            if i < 4:  # stages 1-3 have spatial reduction (sr ratios 8, 4, 2), stage 4 none
                names += [f'{block}.attn.sr', f'{block}.attn.norm']
            names += [f'{block}.norm2', f'{block}.mlp.fc1', f'{block}.mlp.dwconv.dwconv',
                      f'{block}.mlp.fc2']
        names.append(f'norm{i}')
        keys += [f'{name}.{p}' for name in names for p in ('weight', 'bias')]
    return keys


@pytest.mark.parametrize('H, W', [(64, 64), (64, 96), (96, 32)])
def test_b0_shapes(H, W):
    model = segformer.SegFormer(5)
    x = torch.randn(2, 3, H, W)
    features = model.backbone(x)
    for stride, c, f in zip((4, 8, 16, 32), (32, 64, 160, 256), features):
        assert f.shape == (2, c, H // stride, W // stride)
    assert model(x).shape == (2, 5, H, W)


def test_b2_shapes(b2):
    x = torch.randn(1, 3, 32, 32)  # the smallest legal input: B2 stays cheap
    with torch.no_grad():
        features = b2.backbone(x)
        logits = b2(x)
    for stride, c, f in zip((4, 8, 16, 32), (64, 128, 320, 512), features):
        assert f.shape == (1, c, 32 // stride, 32 // stride)
    assert logits.shape == (1, 150, 32, 32)


def test_gradient_reaches_every_parameter():
    # 64x64, not 32x32: at 32x32 every stage's reduced keys are one token, the softmax over one
    # key is constant and q gets no gradient. drop_path=0: a dropped branch gets none either.
    torch.manual_seed(0)
    model = segformer.SegFormer(4, drop_path=0.0).train()
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 4, (2, 64, 64))
    _, loss = model(x, y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_stochastic_depth():
    model = segformer.SegFormer(3, drop_path=0.1)
    blocks = [b for i in range(1, 5) for b in getattr(model.backbone, f'block{i}')]
    expected = torch.linspace(0, 0.1, 8).tolist()  # linear over all 8 B0 blocks, as NVlabs
    assert [b.drop_prob for b in blocks] == pytest.approx(expected)
    x = torch.randn(2, 3, 32, 32)
    model.eval()  # eval: no drop path, no dropout, BN running stats: deterministic
    assert torch.equal(model(x), model(x))


def test_stochastic_depth_drops_whole_samples():
    torch.manual_seed(0)
    x = torch.ones(1000, 4, 8)  # (B, N, C) tokens
    out = segformer.stochastic_depth(x, 0.25, training=True)
    per_sample = out.flatten(1)
    assert torch.equal(per_sample.min(1).values, per_sample.max(1).values)  # all or nothing
    assert set(per_sample[:, 0].tolist()) == {0.0, torch.tensor(1 / 0.75).item()}  # x / (1 - p)
    assert abs(out.mean().item() - 1.0) < 0.1  # unbiased
    assert segformer.stochastic_depth(x, 0.25, training=False) is x


def test_loss_is_cross_entropy_of_logits():
    torch.manual_seed(0)
    model = segformer.SegFormer(3).eval()
    x = torch.randn(2, 3, 32, 64)
    y = torch.randint(0, 3, (2, 32, 64))
    y[:, :4, :4] = 255  # ignore pixels
    with torch.no_grad():
        logits, loss = model(x, y, ignore_index=255, progress=0.5)
        alone = model(x)
    assert torch.allclose(logits, alone)
    assert torch.allclose(loss, F.cross_entropy(alone, y, ignore_index=255))


@pytest.mark.parametrize('shape', [(1, 3, 48, 64), (1, 3, 64, 40), (1, 4, 64, 64)])
def test_rejects_illegal_input(shape):
    with pytest.raises(ValueError, match='SegFormer wants'):
        segformer.SegFormer(3)(torch.randn(shape))


def test_mit_key_layout():
    assert list(segformer.SegFormer(3).backbone.state_dict()) == mit_keys((2, 2, 2, 2))


def test_parameter_counts(b2):
    n = lambda m: sum(p.numel() for p in m.parameters())
    b0 = segformer.SegFormer(150, size='b0')
    for size, model in (('b0', b0), ('b2', b2)):
        assert len(model.backbone.state_dict()) == MIT_KEYS[size]
        assert n(model.backbone) == MIT_PARAMS[size]
        assert n(model) == SEGFORMER_PARAMS_K150[size]
        # the decoder in closed form: 4 linears, the fuse conv (no bias) + BN, the classifier
        c, E, K = sum(model.backbone.embed_dims), segformer.MIT_SIZES[size]['decoder_dim'], 150
        assert n(model.decode_head) == c * E + 4 * E + 4 * E * E + 2 * E + E * K + K


def test_registry_constructors():
    for build, size in ((segformer.segformer_b0, 'b0'), (segformer.segformer_b2, 'b2')):
        assert list(inspect.signature(build).parameters) == ['num_classes']  # no `depth` knob
    assert segformer.segformer_b0(7).decode_head.linear_pred.out_channels == 7


def test_bf16_autocast_cpu():
    model = segformer.SegFormer(3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        logits = model(x)
    assert logits.shape == (1, 3, 64, 64)
    assert torch.isfinite(logits).all()


def test_channels_last_same_logits():
    model = segformer.SegFormer(3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)  # what seg.py does with channels_last=True
        got = model(x.to(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize('nested', [False, True])
def test_load_pretrained_strict(tmp_path, nested):
    torch.manual_seed(0)
    source = segformer.SegFormer(3).backbone.state_dict()
    source['head.weight'] = torch.randn(1000, 256)  # an ImageNet MiT file's classifier
    source['head.bias'] = torch.randn(1000)
    path = tmp_path / 'mit_b0.pth'
    torch.save({'state_dict': source} if nested else source, path)
    torch.manual_seed(1)
    model = segformer.SegFormer(3)
    model.load_pretrained(str(path))
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, source[k]), k


def test_load_pretrained_errors(tmp_path):
    model = segformer.SegFormer(3)
    good = model.backbone.state_dict()
    renamed = dict(good)
    renamed['block1.0.attn.qq.weight'] = renamed.pop('block1.0.attn.q.weight')
    reshaped = dict(good)
    reshaped['norm4.weight'] = torch.ones(512)  # a B2-sized stage 4 in a B0 file
    files = {'renamed.pth': renamed, 'reshaped.pth': reshaped, 'tensor.pth': torch.ones(3)}
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
    (tmp_path / 'garbage.pth').write_bytes(b'not a checkpoint at all')
    for name in [*files, 'garbage.pth', 'missing.pth']:
        path = str(tmp_path / name)
        with pytest.raises(SystemExit) as info:
            model.load_pretrained(path)
        message = str(info.value)
        assert message.startswith(path) and '\n' not in message, message
    with pytest.raises(SystemExit, match='fetches no weights'):
        model.load_pretrained('imagenet')


def test_configure_optimizers():
    model = segformer.SegFormer(3)
    lr, wd = 6e-5, 0.01
    optimizer = model.configure_optimizers('adamw', lr, wd)
    assert isinstance(optimizer, torch.optim.AdamW)
    head = {id(p) for p in model.decode_head.parameters()}
    seen = []
    for group in optimizer.param_groups:
        in_head = {id(p) in head for p in group['params']}
        assert len(in_head) == 1  # a group is all encoder or all decoder
        expected_mult = 10.0 if in_head.pop() else 1.0
        assert group['lr_mult'] == expected_mult
        assert group['lr'] == pytest.approx(lr * expected_mult)
        one_d = {p.dim() < 2 for p in group['params']}
        assert one_d == {True} and group['weight_decay'] == 0.0 or \
            one_d == {False} and group['weight_decay'] == wd
        seen += [id(p) for p in group['params']]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # each exactly once
    sgd = model.configure_optimizers('sgd', 0.01, 1e-4)
    assert isinstance(sgd, torch.optim.SGD)
    assert {g['lr'] for g in sgd.param_groups} == {0.01}
