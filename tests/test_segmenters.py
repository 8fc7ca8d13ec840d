"""The segmenter interface (fpn.py, segmenters.ARCHS), checked for every architecture at once, so a
new one is covered by adding it to the registry: logits at the input size, (logits, loss) with a
target, gradients, the optimiser's groups, bf16 autocast on CPU; seg.py trains it under torchrun
(gloo, 2 processes) and resumes it; metrics.py gives the consistency mIoU for any architecture and
FID / sFID / IS for the FPN only; and the checkpoint's arch is checked on resume."""
import json

import numpy as np
import pytest
import torch

import pairs
import segmenters
from conftest import make_dataset, run_script

ARCHS = list(segmenters.ARCHS)


def tiny(arch, num_classes=3):
    """The architecture at its smallest CPU size (ResNet-18 where it takes a depth)."""
    torch.manual_seed(0)
    return segmenters.build(segmenters.model_args(arch, num_classes=num_classes, depth=18))


@pytest.mark.parametrize('arch', ARCHS)
def test_every_arch_follows_the_interface(arch):
    model = tiny(arch)
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 3, (2, 64, 64))
    y[:, :3, :3] = 255  # ignore pixels
    model.train()
    logits, loss = model(x, y, ignore_index=255, progress=0.5)
    assert logits.shape == (2, 3, 64, 64) and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad  # every parameter takes part in the loss
    optimizer = model.configure_optimizers('adamw', 1e-3, 1e-2)
    in_groups = sum(len(g['params']) for g in optimizer.param_groups)
    assert in_groups == len(list(model.parameters()))  # every parameter, once
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 3, 64, 64)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(x)
    assert low.shape == (2, 3, 64, 64) and torch.isfinite(low.float()).all()
    with pytest.raises(ValueError, match='multiples of 32'):
        model(torch.randn(1, 3, 48, 40))


def test_build_and_model_args():
    assert segmenters.model_args('fpn', 4, 18) == dict(arch='fpn', num_classes=4, depth=18)
    assert segmenters.describe(dict(arch='fpn', num_classes=4, depth=18)) == 'fpn-ResNet18'
    assert isinstance(segmenters.build(dict(num_classes=2, depth=18)), segmenters.FPN)  # no arch
    with pytest.raises(ValueError, match='arch must be one of'):
        segmenters.build(dict(arch='unet', num_classes=2))


def seg(args, cwd, ddp=False, check=True):
    return run_script(['seg.py', 'configs/tiny.py', '--image_size=0', '--batch_size=2',
                       '--eval_interval=2', '--warmup_iters=1'] + args, cwd, torchrun=ddp,
                      check=check)


@pytest.mark.parametrize('arch', [a for a in ARCHS if a != 'segformer_b2'])  # (B0's code, wider)
def test_seg_py_trains_each_arch_under_torchrun_and_resumes(arch, tmp_path):
    make_dataset(tmp_path)
    common = [f'--data_dir={tmp_path}', '--dataset=tiny', f'--out_dir={tmp_path / "o"}',
              f'--arch={arch}']
    out = seg(common + ['--max_iters=2', '--backend=gloo', '--device=cpu',
                        '--gradient_accumulation_steps=2'], tmp_path, ddp=True)
    assert 'global batch 4 = 2 x 1 accumulation x 2 processes' in out
    out = seg(common + ['--max_iters=3', '--init_from=resume', '--gradient_accumulation_steps=2'],
              tmp_path)
    assert 'resuming from' in out
    ckpt = torch.load(tmp_path / 'o' / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 3 and ckpt['model_args']['arch'] == arch
    assert np.isfinite(json.loads((tmp_path / 'o' / 'results.json').read_text())['miou'])


def test_resume_refuses_another_arch_and_metrics_skips_fid_for_it(tmp_path):
    """A checkpoint resumed with another --arch is one line; metrics.py with a non-FPN segmenter
    computes the consistency mIoU and leaves FID / sFID / IS out, saying why in one line."""
    other = next((a for a in ARCHS if a != 'fpn'), None)
    if other is None:
        pytest.skip('only the FPN is registered')
    meta = make_dataset(tmp_path / 'data')
    common = [f'--data_dir={tmp_path / "data"}', '--dataset=tiny', f'--out_dir={tmp_path / "o"}',
              '--max_iters=1']
    seg(common + [f'--arch={other}'], tmp_path)
    out = seg(common + ['--arch=fpn', '--init_from=resume', '--max_iters=2'], tmp_path,
              check=False)
    assert out.strip().splitlines()[-1] == (f"{tmp_path / 'o' / 'ckpt.pt'}: a {other} "
                                            "checkpoint, this run has arch='fpn'")
    _, data = pairs.load_dataset(tmp_path / 'data' / 'tiny')
    fake = tmp_path / 'fake'
    for i, (image, mask) in enumerate(zip(*data['val'])):
        pairs.save_pair(fake, i, image, mask, meta['palette'])
    pairs.save_json(meta, str(fake / 'meta.json'))
    out = run_script(['metrics.py', f'--real={tmp_path / "data" / "tiny"}', f'--fake={fake}',
                      f'--seg_ckpt={tmp_path / "o" / "best.pt"}', f'--out_dir={tmp_path / "m"}'],
                     tmp_path)
    assert f'a {other} segmenter: FID, sFID and IS are defined on the FPN-ResNet encoder' in out
    report = json.loads((tmp_path / 'm' / 'metrics.json').read_text())
    assert report['fid'] is None and report['sfid'] is None and report['is_mean'] is None
    assert 0 <= report['consistency_miou'] <= 1 and report['n_fake'] == len(data['val'][0])
