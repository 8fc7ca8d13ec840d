"""seg.py: FPN shapes, torchvision key names, label-safe augmentations, and end-to-end runs
(synthetic folder, resume, 2-process gloo DDP) on a tiny dataset written into tmp_path."""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bits
import seg

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']  # free port

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
    model = seg.FPN(5, depth=18)
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
        seg.FPN(3, depth=18)(torch.randn(shape))


def test_fpn_resnet50_forward():
    model = seg.FPN(3).eval()  # depth 50 is the default (the paper's backbone)
    assert model.backbone.out_channels == (256, 512, 1024, 2048)
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert model(x).shape == (1, 3, 64, 64)
        assert [c.shape[1] for c in model.backbone(x)] == [256, 512, 1024, 2048]


def test_torchvision_key_names(tmp_path):
    assert list(seg.ResNet(18).state_dict()) == RESNET18_KEYS
    keys = list(seg.ResNet(50).state_dict())
    assert len(keys) == 318  # torchvision resnet50 has 320 with fc.weight, fc.bias
    for k in ['conv1.weight', 'bn1.running_var', 'layer1.0.conv3.weight', 'layer3.5.bn2.bias',
              'layer1.0.downsample.0.weight', 'layer3.0.downsample.1.num_batches_tracked',
              'layer4.2.bn3.running_mean']:
        assert k in keys
    # a torchvision-format file (with its fc.*) loads strictly; a mismatch names the missing keys
    sd = {k: torch.randn(v.shape).to(v.dtype) for k, v in seg.ResNet(18).state_dict().items()}
    fc = {'fc.weight': torch.zeros(1000, 512), 'fc.bias': torch.zeros(1000)}
    torch.save({**sd, **fc}, tmp_path / 'r18.pth')
    model = seg.ResNet(18)
    seg.load_backbone(model, str(tmp_path / 'r18.pth'))
    assert torch.equal(model.layer2[0].conv1.weight, sd['layer2.0.conv1.weight'])
    del sd['layer4.1.conv2.weight']
    torch.save(sd, tmp_path / 'bad.pth')
    with pytest.raises(SystemExit, match='layer4.1.conv2.weight'):
        seg.load_backbone(seg.ResNet(18), str(tmp_path / 'bad.pth'))


def test_preprocess_layouts():
    hwc = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    a, b = seg.preprocess(hwc), seg.preprocess(torch.from_numpy(hwc).permute(0, 3, 1, 2))
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)
    pixel = a[0, :, 0, 0] * torch.tensor(seg.IMAGENET_STD) + torch.tensor(seg.IMAGENET_MEAN)
    assert torch.allclose(pixel, torch.from_numpy(hwc[0, 0, 0] / 255).float(), atol=1e-6)
    with pytest.raises(ValueError):
        seg.preprocess(torch.zeros(2, 3, 8, 8))  # float, not uint8


LUT = np.array([[200, 10, 10], [10, 200, 10], [10, 10, 200], [90, 90, 90]], np.uint8)


def blob_batch(B=6, S=48, seed=0):
    """Masks of random rectangles (classes 0..3) and images that are a function of the mask."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((B, S, S), np.uint8)
    for m in masks:
        for _ in range(4):
            y, x, h, w = rng.integers(0, S - 8, 2).tolist() + rng.integers(4, 16, 2).tolist()
            m[y:y + h, x:x + w] = rng.integers(1, 4)
    return LUT[masks], masks


@pytest.mark.parametrize('name', ['cutout', 'cutmix', 'copy_paste'])
def test_augmentations_keep_image_and_mask_aligned(name):
    images, masks = blob_batch()
    rng = np.random.default_rng(1)
    fn = getattr(seg, 'apply_' + name)
    out_i, out_m = fn(images, masks, rng, 1.0, 255)
    assert out_i.shape == images.shape and out_m.shape == masks.shape
    assert (out_m != masks).any()  # p = 1: something moved
    keep = out_m != 255
    assert np.array_equal(out_i[keep], LUT[out_m[keep]])  # every labelled pixel kept its colour
    if name == 'cutout':
        assert (~keep).any() and (out_i[~keep] == np.round(np.array(seg.IMAGENET_MEAN) * 255)).all()
    else:
        assert keep.all()
    assert np.array_equal(images, LUT[masks])  # inputs untouched


def make_dataset(root, P=32, K=3, n_train=8, n_val=4):
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (('train', n_train), ('val', n_val)):
        images, masks = blob_batch(n, P, seed=len(split))
        masks = np.minimum(masks, K - 1)
        masks[:, 0, :3] = 255  # some ignore pixels
        images = LUT[np.minimum(masks, 3)] // 2 + rng.integers(0, 60, images.shape).astype(np.uint8)
        np.save(root / f'{split}_images.npy', images)
        np.save(root / f'{split}_masks.npy', masks)
    meta = dict(name='tiny', classes=['bg', 'a', 'b'], palette=LUT[:K].tolist(), num_classes=K,
                ignore_index=255, patch_size=P, ignore_fraction=dict(train=0.01, val=0.01))
    (root / 'meta.json').write_text(json.dumps(meta))
    return meta


def run(args, cwd, ddp=False):
    cmd = [sys.executable] + TORCHRUN * ddp
    env = dict(os.environ, OMP_NUM_THREADS='1')
    p = subprocess.run(cmd + [str(ROOT / 'seg.py'), 'configs/tiny_seg.py'] + args, cwd=cwd,
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def test_end_to_end_with_synthetic_folder_then_resume(tmp_path):
    meta = make_dataset(tmp_path / 'data' / 'tiny')
    images, masks = blob_batch(3, 16, seed=5)  # generated pairs at 16 px, real patches 32 px
    for i in range(3):
        bits.save_pair(str(tmp_path / 'syn'), i, images[i], masks[i] % 3, meta['palette'])
    (tmp_path / 'syn' / 'meta.json').write_text(json.dumps(meta))
    common = [f'--data_dir={tmp_path / "data"}', '--dataset=tiny', f'--out_dir={tmp_path / "out"}',
              '--always_save_checkpoint=True', '--cutmix=0.5', '--copy_paste=0.5', '--cutout=0.5']
    out = run(common + [f'--synthetic_dir={tmp_path / "syn"}'], ROOT)
    assert 'epoch composition' in out and '(synthetic_share 0.5)' in out
    res = json.loads((tmp_path / 'out' / 'results.json').read_text())
    assert res['iter_num'] == 2 and res['n_synthetic'] == 3 and set(res['iou']) == {'bg', 'a', 'b'}
    assert 0 <= res['miou'] <= 1 and np.array(res['confusion_matrix']).sum() == 4 * 32 * 32 - 4 * 3
    ckpt = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 2 and ckpt['meta']['classes'] == ['bg', 'a', 'b']
    assert set(ckpt) == set('model optimizer model_args iter_num best_miou config meta'.split())
    model = seg.FPN(**ckpt['model_args'])
    model.load_state_dict(ckpt['model'])  # rebuilt from model_args alone
    out = run(common + ['--init_from=resume', '--max_iters=4'], ROOT)
    assert 'resuming from' in out and 'iter 3:' in out and 'iter 1:' not in out
    assert torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)['iter_num'] == 4


def test_ddp_two_processes_gloo(tmp_path):
    make_dataset(tmp_path / 'tiny', n_val=5)  # 5 val patches: the shards differ in size
    out = run([f'--data_dir={tmp_path}', '--dataset=tiny', f'--out_dir={tmp_path / "out"}',
               '--backend=gloo', '--device=cpu', '--gradient_accumulation_steps=2'], ROOT, ddp=True)
    assert 'global batch 4 = 2 x 1 accumulation x 2 processes' in out
    res = json.loads((tmp_path / 'out' / 'results.json').read_text())
    assert np.array(res['confusion_matrix']).sum() == 5 * 32 * 32 - 5 * 3  # both shards counted
