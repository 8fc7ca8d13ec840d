"""fpn.py: FPN shapes and illegal sizes, torchvision's state-dict key names (so a torchvision
ResNet loads strictly), preprocess's two layouts, the dilated ResNet (output stride 8) and the
segmenter interface's loss."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fpn

# torchvision.models.resnet18().state_dict() keys minus fc.*, written out (torchvision 0.29.1)
RESNET18_KEYS = """
    conv1.weight bn1.weight bn1.bias bn1.running_mean bn1.running_var bn1.num_batches_tracked
    layer1.0.conv1.weight layer1.0.bn1.weight layer1.0.bn1.bias layer1.0.bn1.running_mean
    layer1.0.bn1.running_var layer1.0.bn1.num_batches_tracked layer1.0.conv2.weight
    layer1.0.bn2.weight layer1.0.bn2.bias layer1.0.bn2.running_mean layer1.0.bn2.running_var
    layer1.0.bn2.num_batches_tracked layer1.1.conv1.weight layer1.1.bn1.weight layer1.1.bn1.bias
    layer1.1.bn1.running_mean layer1.1.bn1.running_var layer1.1.bn1.num_batches_tracked
    layer1.1.conv2.weight layer1.1.bn2.weight layer1.1.bn2.bias layer1.1.bn2.running_mean
    layer1.1.bn2.running_var layer1.1.bn2.num_batches_tracked layer2.0.conv1.weight
    layer2.0.bn1.weight layer2.0.bn1.bias layer2.0.bn1.running_mean layer2.0.bn1.running_var
    layer2.0.bn1.num_batches_tracked layer2.0.conv2.weight layer2.0.bn2.weight layer2.0.bn2.bias
    layer2.0.bn2.running_mean layer2.0.bn2.running_var layer2.0.bn2.num_batches_tracked
    layer2.0.downsample.0.weight layer2.0.downsample.1.weight layer2.0.downsample.1.bias
    layer2.0.downsample.1.running_mean layer2.0.downsample.1.running_var
    layer2.0.downsample.1.num_batches_tracked layer2.1.conv1.weight layer2.1.bn1.weight
    layer2.1.bn1.bias layer2.1.bn1.running_mean layer2.1.bn1.running_var
    layer2.1.bn1.num_batches_tracked layer2.1.conv2.weight layer2.1.bn2.weight layer2.1.bn2.bias
    layer2.1.bn2.running_mean layer2.1.bn2.running_var layer2.1.bn2.num_batches_tracked
    layer3.0.conv1.weight layer3.0.bn1.weight layer3.0.bn1.bias layer3.0.bn1.running_mean
    layer3.0.bn1.running_var layer3.0.bn1.num_batches_tracked layer3.0.conv2.weight
    layer3.0.bn2.weight layer3.0.bn2.bias layer3.0.bn2.running_mean layer3.0.bn2.running_var
    layer3.0.bn2.num_batches_tracked layer3.0.downsample.0.weight layer3.0.downsample.1.weight
    layer3.0.downsample.1.bias layer3.0.downsample.1.running_mean
    layer3.0.downsample.1.running_var layer3.0.downsample.1.num_batches_tracked
    layer3.1.conv1.weight layer3.1.bn1.weight layer3.1.bn1.bias layer3.1.bn1.running_mean
    layer3.1.bn1.running_var layer3.1.bn1.num_batches_tracked layer3.1.conv2.weight
    layer3.1.bn2.weight layer3.1.bn2.bias layer3.1.bn2.running_mean layer3.1.bn2.running_var
    layer3.1.bn2.num_batches_tracked layer4.0.conv1.weight layer4.0.bn1.weight layer4.0.bn1.bias
    layer4.0.bn1.running_mean layer4.0.bn1.running_var layer4.0.bn1.num_batches_tracked
    layer4.0.conv2.weight layer4.0.bn2.weight layer4.0.bn2.bias layer4.0.bn2.running_mean
    layer4.0.bn2.running_var layer4.0.bn2.num_batches_tracked layer4.0.downsample.0.weight
    layer4.0.downsample.1.weight layer4.0.downsample.1.bias layer4.0.downsample.1.running_mean
    layer4.0.downsample.1.running_var layer4.0.downsample.1.num_batches_tracked
    layer4.1.conv1.weight layer4.1.bn1.weight layer4.1.bn1.bias layer4.1.bn1.running_mean
    layer4.1.bn1.running_var layer4.1.bn1.num_batches_tracked layer4.1.conv2.weight
    layer4.1.bn2.weight layer4.1.bn2.bias layer4.1.bn2.running_mean layer4.1.bn2.running_var
    layer4.1.bn2.num_batches_tracked
""".split()


@pytest.mark.parametrize('H, W', [(32, 32), (64, 96), (96, 32), (160, 128)])
def test_fpn_shapes(H, W):
    model = fpn.FPN(5, depth=18)
    x = torch.randn(2, 3, H, W, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 5, H, W)
    out.mean().backward()  # the graph reaches the input through every level
    assert x.grad is not None and x.grad.abs().sum() > 0
    c2, c3, c4, c5 = model.backbone(x)
    assert [c.shape[-2:] for c in (c2, c3, c4, c5)] == [(H // s, W // s) for s in (4, 8, 16, 32)]


@pytest.mark.parametrize('shape', [(1, 3, 48, 64), (1, 3, 64, 70), (1, 4, 64, 64)])
def test_fpn_rejects_illegal_sizes(shape):
    with pytest.raises(ValueError, match='multiples of 32'):
        fpn.FPN(3, depth=18)(torch.randn(shape))


def test_fpn_resnet50_forward():
    model = fpn.FPN(3).eval()  # depth 50 is the default (the paper's backbone)
    assert model.backbone.out_channels == (256, 512, 1024, 2048)
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert model(x).shape == (1, 3, 64, 64)
        assert [c.shape[1] for c in model.backbone(x)] == [256, 512, 1024, 2048]


def test_torchvision_key_names(tmp_path):
    assert list(fpn.ResNet(18).state_dict()) == RESNET18_KEYS
    keys = list(fpn.ResNet(50).state_dict())
    assert len(keys) == 318  # torchvision resnet50 has 320 with fc.weight, fc.bias
    for k in ['conv1.weight', 'bn1.running_var', 'layer1.0.conv3.weight', 'layer3.5.bn2.bias',
              'layer1.0.downsample.0.weight', 'layer3.0.downsample.1.num_batches_tracked',
              'layer4.2.bn3.running_mean']:
        assert k in keys
    # a torchvision-format file (with its fc.*) loads strictly; a mismatch names the missing keys
    sd = {k: torch.randn(v.shape).to(v.dtype) for k, v in fpn.ResNet(18).state_dict().items()}
    fc = {'fc.weight': torch.zeros(1000, 512), 'fc.bias': torch.zeros(1000)}
    torch.save({**sd, **fc}, tmp_path / 'r18.pth')
    model = fpn.ResNet(18)
    fpn.load_backbone(model, str(tmp_path / 'r18.pth'))
    assert torch.equal(model.layer2[0].conv1.weight, sd['layer2.0.conv1.weight'])
    del sd['layer4.1.conv2.weight']
    torch.save(sd, tmp_path / 'bad.pth')
    with pytest.raises(SystemExit, match='layer4.1.conv2.weight'):
        fpn.load_backbone(fpn.ResNet(18), str(tmp_path / 'bad.pth'))


def test_preprocess_layouts():
    hwc = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    a, b = fpn.preprocess(hwc), fpn.preprocess(torch.from_numpy(hwc).permute(0, 3, 1, 2))
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)
    pixel = a[0, :, 0, 0] * torch.tensor(fpn.IMAGENET_STD) + torch.tensor(fpn.IMAGENET_MEAN)
    assert torch.allclose(pixel, torch.from_numpy(hwc[0, 0, 0] / 255).float(), atol=1e-6)
    with pytest.raises(ValueError):
        fpn.preprocess(torch.zeros(2, 3, 8, 8))  # float, not uint8


def _torchvision_sd(depth):
    """A random state dict with torchvision's keys for ResNet-`depth`, fc.* included."""
    sd = {k: torch.randn(v.shape).to(v.dtype) for k, v in fpn.ResNet(depth).state_dict().items()}
    return {**sd, 'fc.weight': torch.zeros(1000, 512), 'fc.bias': torch.zeros(1000)}


def test_imagenet_urls():
    # torchvision's ResNet*_Weights.IMAGENET1K_V1 (torchvision/models/resnet.py)
    assert fpn.IMAGENET_URLS == {
        18: 'https://download.pytorch.org/models/resnet18-f37072fd.pth',
        34: 'https://download.pytorch.org/models/resnet34-b627a593.pth',
        50: 'https://download.pytorch.org/models/resnet50-0676ba61.pth',
        101: 'https://download.pytorch.org/models/resnet101-63fe2227.pth'}
    assert fpn.ResNet(18).depth == 18 and fpn.FPN(3, depth=34).backbone.depth == 34


def test_backbone_imagenet_mocked_download(monkeypatch):
    sd, calls = _torchvision_sd(18), []
    def fake(url, **kw):  # no network in tests: torch.hub's download is replaced
        calls.append((url, kw))
        return sd
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', fake)
    model = fpn.ResNet(18)
    fpn.load_backbone(model, 'imagenet')
    (url, kw), = calls
    assert url == 'https://download.pytorch.org/models/resnet18-f37072fd.pth'
    assert kw['check_hash'] is True and kw.get('model_dir') is None  # torch.hub's cache dir
    assert torch.equal(model.layer3[1].conv2.weight, sd['layer3.1.conv2.weight'])
    assert torch.equal(model.bn1.running_mean, sd['bn1.running_mean'])


def test_backbone_imagenet_from_hub_cache(tmp_path, monkeypatch):
    # a file already in $TORCH_HOME/hub/checkpoints is read by the real torch.hub, not downloaded
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    def no_download(*a, **kw):
        raise AssertionError('downloaded although the file is cached')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)
    sd = _torchvision_sd(18)
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    torch.save(sd, tmp_path / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth')
    model = fpn.ResNet(18)
    fpn.load_backbone(model, 'imagenet')
    assert torch.equal(model.layer4[0].downsample[0].weight, sd['layer4.0.downsample.0.weight'])


def test_backbone_imagenet_offline(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    def offline(url, **kw):
        raise OSError('<urlopen error [Errno -3]\nTemporary failure in name resolution>')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', offline)
    with pytest.raises(SystemExit) as e:
        fpn.load_backbone(fpn.ResNet(50), 'imagenet')
    msg = str(e.value)
    assert '\n' not in msg and 'https://download.pytorch.org/models/resnet50-0676ba61.pth' in msg
    assert str(tmp_path / 'hub' / 'checkpoints' / 'resnet50-0676ba61.pth') in msg
    assert 'name resolution' in msg and '--backbone_ckpt=/path/to/resnet50-0676ba61.pth' in msg


@pytest.mark.parametrize('depth', [18, 50])
def test_resnet_output_stride_8_dilates_layer3_and_4_with_the_same_weights(depth):
    """output_stride=8 (PSPNet): c4 and c5 stay at stride 8, from the very same tensors (an
    ImageNet file loads into both), and the 3x3 convs of layer3 / layer4 get dilation 2 / 4,
    the first block of each keeping the previous one (torchvision's rule)."""
    plain, dilated = fpn.ResNet(depth), fpn.ResNet(depth, output_stride=8)
    assert {k: v.shape for k, v in plain.state_dict().items()} == \
        {k: v.shape for k, v in dilated.state_dict().items()}
    dilated.load_state_dict(plain.state_dict())
    shapes = [tuple(c.shape[2:]) for c in dilated.eval()(torch.zeros(1, 3, 64, 64))]
    assert shapes == [(16, 16), (8, 8), (8, 8), (8, 8)]
    conv = 'conv1' if depth == 18 else 'conv2'  # the 3x3 conv of a BasicBlock / Bottleneck
    assert getattr(dilated.layer3[0], conv).dilation == (1, 1)
    assert getattr(dilated.layer3[1], conv).dilation == (2, 2)
    assert getattr(dilated.layer4[0], conv).dilation == (2, 2)
    assert getattr(dilated.layer4[1], conv).dilation == (4, 4)
    assert getattr(plain.layer4[1], conv).dilation == (1, 1)
    with pytest.raises(ValueError, match='output_stride'):
        fpn.ResNet(depth, output_stride=16)


def test_forward_with_a_target_returns_the_loss():
    """The segmenter interface (fpn.py): model(x) -> logits; model(x, y) -> (logits, loss), the
    float32 cross-entropy with ignore pixels left out."""
    torch.manual_seed(0)
    model = fpn.FPN(3, depth=18).eval()
    x = torch.randn(2, 3, 32, 32)
    y = torch.randint(0, 3, (2, 32, 32))
    y[0, :4] = 255
    logits = model(x)
    same, loss = model(x, y, ignore_index=255)
    assert torch.equal(logits, same)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, F.cross_entropy(logits, y, ignore_index=255))
