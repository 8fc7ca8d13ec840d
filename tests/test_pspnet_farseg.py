"""pspnet.py and farseg.py: shapes at the input size, gradients to every parameter, the segmenter
interface's losses (PSPNet: CE + 0.4 x auxiliary CE in training only; FarSeg: the annealed focal
loss against a hand computation and against the reference code), illegal sizes, bf16 autocast,
strict backbone loading, and parameter counts pinned to the peers'."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fpn
from farseg import FarSeg, annealed_focal_loss, annealing_weight
from pspnet import AUX_WEIGHT, PSPNet

ARCHS = [PSPNet, FarSeg]


def _batch(K, H=32, W=32, seed=0):
    """Random images (2, 3, H, W) and labels with a patch of ignore pixels (255)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, H, W, generator=g)
    y = torch.randint(0, K, (2, H, W), generator=g)
    y[0, :5, :7] = 255  # (a 32x32 crop: c5 is 1x1 for FarSeg, 4x4 for PSPNet)
    return x, y


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('H, W', [(32, 32), (64, 96)])
def test_logits_at_input_size(arch, H, W):
    torch.manual_seed(0)
    model = arch(5, depth=18).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, H, W)).shape == (2, 5, H, W)


def test_pspnet_backbone_is_dilated():
    model = PSPNet(3, depth=18)
    assert model.backbone.output_stride == 8  # c4, c5 at stride 8: mmseg's R-18-D8
    shapes = [tuple(c.shape[2:]) for c in model.backbone.eval()(torch.zeros(1, 3, 64, 64))]
    assert shapes == [(16, 16), (8, 8), (8, 8), (8, 8)]
    # mmseg's pspnet_r18-d8 widths: PSP channels 128 (c5 512 / 4), aux channels 64 (c4 256 / 4)
    assert model.decode_head.bottleneck[0].out_channels == 128
    assert model.auxiliary_head.convs[0].out_channels == 64
    assert PSPNet(3).decode_head.bottleneck[0].in_channels == 2048 + 4 * 512  # ResNet-50


@pytest.mark.parametrize('arch', ARCHS)
def test_gradient_reaches_every_parameter(arch):
    torch.manual_seed(0)
    model = arch(4, depth=18).train()
    x, y = _batch(4)
    logits, loss = model(x, y, progress=0.5)
    loss.backward()
    for name, p in model.named_parameters():  # PSPNet: auxiliary_head.* included
        assert p.grad is not None, f'{name} got no gradient'
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    if arch is PSPNet:
        assert any(n.startswith('auxiliary_head.') for n, _ in model.named_parameters())


def test_pspnet_eval_loss_is_plain_cross_entropy():
    """In eval mode the auxiliary head is off: model(x, y) == (model(x), CE(model(x), y))."""
    torch.manual_seed(0)
    model = PSPNet(3, depth=18).eval()
    x, y = _batch(3)
    with torch.no_grad():
        logits = model(x)
        same, loss = model(x, y, ignore_index=255)
    assert torch.equal(logits, same)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, F.cross_entropy(logits, y, ignore_index=255), rtol=1e-6)


def test_pspnet_train_loss_adds_the_auxiliary_head_with_weight_0_4():
    """Train mode: loss = CE(main) + 0.4 * CE(aux), both branches recomputed by hand. Dropout is
    switched off so that both passes see the same network; BN stays in train mode."""
    assert AUX_WEIGHT == 0.4
    torch.manual_seed(0)
    model = PSPNet(3, depth=18).train()
    for m in model.modules():
        if isinstance(m, nn.Dropout2d):
            m.eval()
    x, y = _batch(3)
    with torch.no_grad():
        logits, loss = model(x, y)
        c2, c3, c4, c5 = model.backbone(x)
        up = lambda t: F.interpolate(t, size=x.shape[2:], mode='bilinear', align_corners=False)
        main, aux = up(model.decode_head(c5)), up(model.auxiliary_head(c4))
    assert torch.allclose(logits, main)
    ce_main = F.cross_entropy(main, y, ignore_index=255)
    ce_aux = F.cross_entropy(aux, y, ignore_index=255)
    assert torch.allclose(loss, ce_main + 0.4 * ce_aux, rtol=1e-5)
    assert (loss - ce_main).abs() > 1e-3  # the auxiliary term is really there


def test_annealing_weight_pinned_to_the_formula():
    """zeta(t) = (1 + cos(pi t / T)) / 2 (Zheng et al.; the reference's cosine_annealing)."""
    assert annealing_weight(0.0) == 1.0  # start: plain cross-entropy
    assert annealing_weight(0.5) == pytest.approx(0.5, abs=1e-12)
    assert annealing_weight(1.0) == 0.0  # end: the normalised focal loss
    assert annealing_weight(0.25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert annealing_weight(1.5) == 0.0  # past T: focal only (the reference's t > t_max)
    assert annealing_weight(1 / 12, annealing_end=1 / 6) == pytest.approx(0.5)  # reference's T
    with pytest.raises(ValueError, match='annealing_end'):
        FarSeg(3, depth=18, annealing_end=0.0)


def _reference_loss(y_pred, y_true, t, t_max, ignore_index=255, gamma=2.0):
    """Z-Zheng/FarSeg module/loss.py, annealing_softmax_focalloss with cosine_annealing, the
    commit of 'release farseg++' (35ba29f), transcribed as the oracle (its denominator adds the
    batch size to the labelled pixels; farseg.py's does not)."""
    losses = F.cross_entropy(y_pred, y_true, ignore_index=ignore_index, reduction='none')
    with torch.no_grad():
        p = y_pred.softmax(dim=1)
        modulating_factor = (1 - p).pow(gamma)
        valid_mask = ~y_true.eq(ignore_index)
        masked_y_true = torch.where(valid_mask, y_true, torch.zeros_like(y_true))
        modulating_factor = torch.gather(modulating_factor, dim=1,
                                         index=masked_y_true.unsqueeze(dim=1)).squeeze_(dim=1)
        normalizer = losses.sum() / (losses * modulating_factor).sum()
        scales = modulating_factor * normalizer
    cosine = lambda lower, upper, _t, _t_max: \
        upper + 0.5 * (lower - upper) * (math.cos(math.pi * _t / _t_max) + 1)
    scale = scales if t > t_max else cosine(1, scales, t, t_max)
    return (losses * scale).sum() / (valid_mask.sum() + p.size(0))


@pytest.mark.parametrize('progress', [0.0, 0.5, 1.0])
def test_annealed_focal_loss_by_hand_and_against_the_reference(progress):
    """Three labelled pixels and one ignored, K = 3: the value and the gradient written out, and
    Z-Zheng's function, which differs by the factor n / (n + B) of its denominator only."""
    logits = torch.tensor([[[[2.0, 0.1, -1.0, 0.3]], [[0.5, 1.5, 0.0, 0.2]],
                            [[-1.0, 0.2, 3.0, 0.1]]]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[[0, 0, 2, 255]]])  # (B, H, W) = (1, 1, 4)
    loss = annealed_focal_loss(logits, y, progress)
    # by hand: softmax, l_i = -log p_i, focal (1 - p_i)^2, Z, w_i, loss = sum(w_i l_i) / n
    z = logits.detach()[0, :, 0, :3].T  # (3 pixels, 3 classes)
    prob = z.exp() / z.exp().sum(1, keepdim=True)
    labels = torch.tensor([0, 0, 2])
    p_true = prob[torch.arange(3), labels]
    ce = -p_true.log()
    focal = (1 - p_true) ** 2
    Z = (focal * ce).sum() / ce.sum()
    zeta = 0.5 * (1 + math.cos(math.pi * progress))
    w = zeta + (1 - zeta) * focal / Z
    assert loss.dtype == torch.float32  # computed in float32 whatever comes in
    assert loss.item() == pytest.approx((w * ce).sum().item() / 3, rel=1e-5)
    assert loss.item() == pytest.approx(ce.mean().item(), rel=1e-5)  # the value is CE's, always
    loss.backward()
    grad = w[:, None] * (prob - F.one_hot(labels, 3)) / 3  # d loss / d logits, weights constant
    assert torch.allclose(logits.grad[0, :, 0, :3].T, grad, atol=1e-6)
    assert torch.equal(logits.grad[0, :, 0, 3], torch.zeros(3, dtype=torch.float64))  # ignored
    # the reference at t / t_max = progress (t_max = 10000 as its config)
    ref_logits = logits.detach().clone().requires_grad_(True)
    ref = _reference_loss(ref_logits, y, progress * 10000, 10000)
    ref.backward()
    n, B = 3, 1
    assert ref.item() == pytest.approx(loss.item() * n / (n + B), rel=1e-5)
    assert torch.allclose(ref_logits.grad, logits.grad * n / (n + B), atol=1e-6)


def test_focal_weights_shift_the_gradient_to_hard_pixels():
    """At progress 1 an easy pixel's gradient shrinks and a hard one's grows, relative to CE."""
    logits = torch.tensor([[[[4.0, -1.0]], [[0.0, 0.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    y = torch.tensor([[[0, 0]]])  # pixel 0 easy (p ~ 0.98), pixel 1 hard (p = 0.5)
    grads = []
    for progress in (0.0, 1.0):
        logits.grad = None
        annealed_focal_loss(logits, y, progress).backward()
        grads.append(logits.grad[0, 0, 0].abs().clone())
    ce_grad, focal_grad = grads
    assert focal_grad[0] < ce_grad[0] and focal_grad[1] > ce_grad[1]


def test_annealed_focal_loss_all_ignored_is_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = annealed_focal_loss(logits, torch.full((1, 2, 2), 255), 1.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_farseg_forward_with_a_target_returns_the_annealed_focal_loss():
    torch.manual_seed(0)
    model = FarSeg(3, depth=18).eval()
    x, y = _batch(3)
    with torch.no_grad():
        logits = model(x)
        for progress in (0.0, 0.5, 1.0):
            same, loss = model(x, y, ignore_index=255, progress=progress)
            assert torch.equal(logits, same)
            assert loss.dtype == torch.float32
            assert torch.allclose(loss, annealed_focal_loss(logits, y, progress), rtol=1e-6)
            assert torch.allclose(loss, F.cross_entropy(logits, y, ignore_index=255), rtol=1e-5)


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('shape', [(1, 3, 48, 64), (1, 3, 64, 70), (1, 4, 64, 64)])
def test_rejects_illegal_sizes(arch, shape):
    with pytest.raises(ValueError, match='multiples of 32'):
        arch(3, depth=18)(torch.randn(shape))


@pytest.mark.parametrize('arch', ARCHS)
def test_bf16_autocast_forward(arch):
    torch.manual_seed(0)
    model = arch(4, depth=18).eval()
    x, y = _batch(4)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        logits, loss = model(x, y, progress=0.5)
    assert logits.shape == (2, 4, 32, 32) and torch.isfinite(logits).all()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize('arch', ARCHS)
def test_load_pretrained_loads_a_resnet_strictly_into_the_backbone(arch, tmp_path):
    sd = {k: torch.randn(v.shape).to(v.dtype) for k, v in fpn.ResNet(18).state_dict().items()}
    fc = {'fc.weight': torch.zeros(1000, 512), 'fc.bias': torch.zeros(1000)}  # torchvision's
    torch.save({**sd, **fc}, tmp_path / 'r18.pth')
    model = arch(3, depth=18)
    model.load_pretrained(str(tmp_path / 'r18.pth'))
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, sd[k]), k
    del sd['layer4.1.conv2.weight']
    torch.save(sd, tmp_path / 'bad.pth')
    with pytest.raises(SystemExit, match='layer4.1.conv2.weight'):
        arch(3, depth=18).load_pretrained(str(tmp_path / 'bad.pth'))


def test_configure_optimizers_delegates_to_fpn():
    for arch in ARCHS:
        model = arch(3, depth=18)
        opt = model.configure_optimizers('sgd', 0.01, 1e-4)
        decayed, plain = opt.param_groups
        assert decayed['weight_decay'] == 1e-4 and plain['weight_decay'] == 0.0
        assert len(decayed['params']) + len(plain['params']) == len(list(model.parameters()))


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_at_resnet50_match_the_peers():
    """Counts for 16 classes (iSAID). No forward: depth 50 is only built.

    FarSeg: torchgeo 0.8.1's FarSeg(backbone='resnet50', classes=16, backbone_pretrained=False),
    its models/farseg.py loaded on its own from the peer venv (torch 2.14.1 + torchvision), has
    33,435,448 parameters. Of those, 2,049,000 are torchvision's fc (2048 x 1000 + 1000), which
    FarSeg never uses and fpn.ResNet leaves out, and torchgeo classifies with a 3x3 conv
    (128 x 16 x 9 + 16 = 18,448) where Z-Zheng/FarSeg (and farseg.py) use a 1x1 conv (2,064).
    With torchgeo's weights loaded (fc and classifier aside) the decoder outputs agree exactly.
    At ResNet-18 the same arithmetic takes torchgeo's 17,257,784 to 16,728,400.

    PSPNet: no peer has mmseg's recipe. smp 0.6.0's PSPNet('resnet50', classes=16) has
    24,370,128 (encoder depth 3, no dilation, 1x1 convs to 512 / 4 = 128 per bin, one 1x1
    bottleneck, no auxiliary head). mmseg's PSPNet R-50-D8 is this model plus ResNetV1c's deep
    stem (3x3 convs 3-32-32-64 with BN: 28,768 against torchvision's 7x7 + BN: 9,536), i.e.
    48,953,952 + 19,232 = 48,973,184 for 16 classes (48,975,494 for Cityscapes' 19), counted by
    hand from mmseg's configs/_base_/models/pspnet_r50-d8.py."""
    assert _n_params(FarSeg(16, depth=50)) == 33_435_448 - 2_049_000 - 18_448 + 2_064 == 31_370_064
    assert _n_params(FarSeg(16, depth=18)) == 17_257_784 - 513_000 - 18_448 + 2_064 == 16_728_400
    psp = PSPNet(16, depth=50)
    assert _n_params(psp) == 48_953_952
    assert _n_params(psp.backbone) == 23_508_032  # torchvision resnet50 without fc
    assert _n_params(psp.decode_head) == 23_082_000
    assert _n_params(psp.auxiliary_head) == 2_363_920  # 1024*256*9 + BN 512 + 256*16 + 16
    assert _n_params(PSPNet(16, depth=18)) == 12_770_272
