"""G_SR end to end on a tiny fixture (configs/tiny.py --cond=lowres --scale=2, 8x8 -> 16x16 on
CPU): trained by train_gen.py, applied by superres.py.

Training: a run of 4 iters equals 2 iters + --init_from=resume to 4, bit for bit, and the eval
grid shows the condition aligned with the target (a known pattern lands where it should).
Upsampling: the right sizes, the same indices, valid class codes only, per-index seeds, resume
that skips finished pairs (under torchrun, 2 ranks), and clear errors for a mismatched folder.
"""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import pairs
from conftest import ROOT, run_script

K = 3  # not a power of two: the bit code 11 is invalid and must never be decoded
PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]


def make_pairs(rng, n, size=16):
    """Dark images with a bright 4x4 square at an odd offset (not on the 2x2 grid), and masks
    with 4x4 class blocks on the 2x2 grid (so the 2x mask downsampling keeps them exactly)."""
    images = np.full((n, size, size, 3), 20, np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r, c = rng.choice([3, 5, 7, 9], size=2)
        images[i, r:r + 4, c:c + 4] = 220
        for k in (1, 2):
            r, c = 2 * rng.integers(0, 6, size=2)
            masks[i, r:r + 4, c:c + 4] = k
    return images, masks


def run(*args, script='superres.py', torchrun=False, ok=True):
    return run_script([script, 'configs/tiny.py', *map(str, args)], ROOT, torchrun, ok)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A 4-iter run A and a 2 + 2 iter run B resumed from its checkpoint."""
    tmp = tmp_path_factory.mktemp('sr')
    rng = np.random.default_rng(0)
    d = tmp / 'data' / 'tiny'
    d.mkdir(parents=True)
    for split, n in [('train', 12), ('val', 4)]:
        images, masks = make_pairs(rng, n)
        np.save(d / f'{split}_images.npy', images)
        np.save(d / f'{split}_masks.npy', masks)
    meta = dict(name='tiny', classes=['a', 'b', 'c'], palette=PALETTE, num_classes=K,
                ignore_index=255, patch_size=16, counts={'train': 12, 'val': 4},
                ignore_fraction={'train': 0.0, 'val': 0.0})
    (d / 'meta.json').write_text(json.dumps(meta))
    common = [f'--data_dir={tmp / "data"}', '--dataset=tiny', '--cond=lowres',
              '--scale=2']
    run(*common, f'--out_dir={tmp / "A"}', script='train_gen.py')
    run(*common, f'--out_dir={tmp / "B"}', '--max_iters=2', script='train_gen.py')
    run(*common, f'--out_dir={tmp / "B"}', '--init_from=resume', script='train_gen.py')
    return tmp, meta


def test_exact_resume(trained):
    tmp, _ = trained
    a, b = (torch.load(tmp / x / 'ckpt.pt', weights_only=True) for x in 'AB')
    assert a['iter_num'] == b['iter_num'] == 4
    assert a['cond'] == 'lowres' and a['scale'] == 2
    assert a['model_args']['cond_channels'] == 3 + 2 and a['config']['cond'] == 'lowres'
    for key in ['model', 'ema']:
        for name, v in a[key].items():
            assert torch.equal(v, b[key][name]), f'{key}.{name} differs after resume'
    log = (tmp / 'B' / 'log.txt').read_text().splitlines()
    assert any(l.startswith('iter 4: loss ') for l in log), log
    assert any(l.startswith('step 2: val loss ') for l in log), log


def test_condition_aligned_with_target(trained):
    tmp, meta = trained
    # grid cells: low-res image | low-res mask | SR image | SR mask | real image | real mask
    grid = np.asarray(Image.open(tmp / 'A' / 'grid_000004.png').convert('RGB')).astype(float)
    assert grid.shape == (20, 4 * 6 * 20, 3)  # 4 val pairs in one row, 16 px panels + 2 px pads
    panel = lambda c, p: grid[2:18, 120 * c + 20 * p + 2:120 * c + 20 * p + 18]
    for c in range(4):
        assert np.array_equal(panel(c, 1), panel(c, 5)), 'the low-res mask moved'
        centroids = []
        for p in (0, 4):  # the bright square: area-downsampled + bilinear vs the real one
            w = panel(c, p).mean(-1) - 20
            ys, xs = np.mgrid[:16, :16]
            centroids.append([(w * ys).sum() / w.sum(), (w * xs).sum() / w.sum()])
        # exactly 0 when pixel centres align; align_corners=True would give ~0.19, a shift >= 0.5
        assert np.abs(np.subtract(*centroids)).max() < 0.05, centroids
        assert np.abs(panel(c, 0) - panel(c, 4)).max() > 50  # blurred, so not a copy of the target


def test_upsample_writes_resumes_and_checks(trained):
    tmp, meta = trained
    lr, hr, ck = tmp / 'lr', tmp / 'hr', tmp / 'A' / 'ckpt.pt'
    images, masks = pairs.resize_pair(*make_pairs(np.random.default_rng(1), 5), 8)
    index = [0, 1, 2, 3, 7]  # not 0..N-1: the outputs must keep these indices
    for i, im, m in zip(index, images, masks):
        pairs.save_pair(lr, i, im, m, PALETTE)
    (lr / 'meta.json').write_text(json.dumps(dict(meta, source='sample.py', ckpt='gen.pt')))
    run('--mode=upsample', f'--ckpt={ck}', f'--in_dir={lr}', f'--out_dir={hr}', '--batch_size=2')
    names = sorted(os.listdir(hr / 'images'))
    assert names == sorted(os.listdir(hr / 'masks')) == [f'{i:06d}.png' for i in index]
    for n in names:
        assert Image.open(hr / 'images' / n).size == (16, 16)
        assert set(np.unique(np.asarray(Image.open(hr / 'masks' / n)))) <= {0, 1, 2}
    info = json.loads((hr / 'meta.json').read_text())
    assert info['source'] == 'superres.py' and info['ckpt'] == str(ck)
    assert info['low_res']['ckpt'] == 'gen.pt' and info['image_size'] == 16
    assert (hr / 'grid.png').exists()

    # resume under torchrun: only the deleted pairs are redone, each from its own seed, so they
    # come back as before although they now share a batch with other pairs (or none)
    before = {n: (np.asarray(Image.open(hr / 'images' / n)), os.stat(hr / 'masks' / n).st_mtime_ns)
              for n in names}
    gone = ['000001.png', '000007.png']  # positions 1 and 4: one on each rank
    for n in gone:
        os.remove(hr / 'images' / n)
        os.remove(hr / 'masks' / n)
    out = run('--mode=upsample', f'--ckpt={ck}', f'--in_dir={lr}', f'--out_dir={hr}',
              '--batch_size=2', torchrun=True)
    assert 'rank 0: 1 of 3 pairs to upsample' in out and 'rank 1: 1 of 2 pairs' in out, out
    for n in names:
        image = np.asarray(Image.open(hr / 'images' / n))
        assert np.abs(image.astype(int) - before[n][0]).max() <= 1, n  # float rounding at most
        if n not in gone:
            assert os.stat(hr / 'masks' / n).st_mtime_ns == before[n][1], f'{n} was rewritten'

    # a resumed run with other settings, or a folder of another dataset, is refused
    out = run('--mode=upsample', f'--ckpt={ck}', f'--in_dir={lr}', f'--out_dir={hr}', '--seed=7',
              ok=False)
    assert 'pairs of another run (seed 1337 there, 7 now)' in out
    (lr / 'meta.json').write_text(json.dumps(dict(meta, classes=['x', 'y', 'z'])))
    out = run('--mode=upsample', f'--ckpt={ck}', f'--in_dir={lr}', f'--out_dir={tmp / "hr2"}',
              ok=False)
    assert 'classes' in out and not (tmp / 'hr2').exists()


def test_eval_mode_scores_against_baselines(trained):
    tmp, meta = trained
    common = [f'--data_dir={tmp / "data"}', '--dataset=tiny', f'--ckpt={tmp / "A" / "ckpt.pt"}',
              '--mode=eval', '--sampler=ddim', '--steps=3']
    out = run(*common, f'--out_dir={tmp / "ev"}')
    report = json.loads((tmp / 'ev' / 'eval.json').read_text())
    assert report['pairs'] == 4 and report['invalid_codes'] == 0 and report['iter_num'] == 4
    rows = report['scores']
    assert set(rows) == {'G_SR', 'bilinear image, nearest mask', 'bicubic image'}, out
    assert 'miou' in rows['G_SR'] and 'miou' not in rows['bicubic image']
    # the nearest-mask baseline, recomputed here from the val split by hand
    images, masks = (np.load(tmp / 'data' / 'tiny' / f'val_{a}.npy') for a in ['images', 'masks'])
    _, low = pairs.resize_pair(images, masks, 8)
    near = low.repeat(2, axis=1).repeat(2, axis=2)  # integer scale: nearest = block copy
    assert rows['bilinear image, nearest mask']['pixel_acc'] == pytest.approx((near == masks).mean())
    for r in rows.values():
        assert -1 <= r['ssim'] <= 1 and r['psnr'] > 0  # SSIM of noise can be below 0
    grid = Image.open(tmp / 'ev' / 'eval_grid.png')  # condition | G_SR | real, 6 panels of 20 px
    assert grid.size == (4 * 6 * 20, 20)
    # a dataset with other classes is refused, and nothing is written
    bad = tmp / 'data' / 'other'
    bad.mkdir()
    for f in ['val_images.npy', 'val_masks.npy']:
        (bad / f).write_bytes((tmp / 'data' / 'tiny' / f).read_bytes())
    (bad / 'meta.json').write_text(json.dumps(dict(meta, classes=['x', 'y', 'z'])))
    out = run(*common, '--dataset=other', f'--out_dir={tmp / "ev2"}', ok=False)
    assert 'classes' in out and str(bad) in out and not (tmp / 'ev2').exists()


def test_each_script_refuses_the_other_model(trained):
    tmp, _ = trained
    ck = tmp / 'A' / 'ckpt.pt'
    out = run(f'--ckpt={ck}', f'--out_dir={tmp / "s"}', '--num_samples=2', script='sample.py',
              ok=False)
    assert "cond='lowres'" in out and 'Traceback' not in out and not (tmp / 's').exists()
    out = run('--mode=train', ok=False)  # G_SR is trained by train_gen.py now
    assert 'train_gen.py --cond=lowres --scale=2' in out and 'Traceback' not in out
    assert out.strip().splitlines()[-1].startswith("superres.py: error: mode must be 'upsample'")


def test_the_checkpoints_cond_decides_and_old_checkpoints_still_upsample(trained):
    """superres.py goes by the checkpoint's `cond`: a G (cond 'none') is refused with one line
    and nothing written; a G_SR checkpoint from before `cond` existed (scale 2 only) still
    upsamples, to exactly the pairs the same weights give with cond='lowres' saved."""
    tmp, meta = trained
    lr = tmp / 'lr_cond'
    images, masks = pairs.resize_pair(*make_pairs(np.random.default_rng(2), 2), 8)
    for i, (image, mask) in enumerate(zip(images, masks)):
        pairs.save_pair(lr, i, image, mask, PALETTE)
    (lr / 'meta.json').write_text(json.dumps(dict(meta, source='sample.py')))
    a = torch.load(tmp / 'A' / 'ckpt.pt', weights_only=True)
    torch.save(dict(a, cond='none'), tmp / 'as_g.pt')
    torch.save({k: v for k, v in a.items() if k != 'cond'}, tmp / 'before_cond.pt')
    out = run('--mode=upsample', f'--ckpt={tmp / "as_g.pt"}', f'--in_dir={lr}',
              f'--out_dir={tmp / "up_g"}', ok=False)
    assert out.strip().splitlines()[-1] == (
        f"{tmp / 'as_g.pt'}: a generator with cond='none', not a G_SR (cond='lowres'); train one "
        "with train_gen.py --cond=lowres --scale=2")
    assert not (tmp / 'up_g').exists()
    for name in ['A/ckpt.pt', 'before_cond.pt']:
        run('--mode=upsample', f'--ckpt={tmp / name}', f'--in_dir={lr}',
            f'--out_dir={tmp / ("up_" + name[0])}', '--steps=3')
    for n in ['000000.png', '000001.png']:
        for part in ['images', 'masks']:
            new, old = (np.asarray(Image.open(tmp / d / part / n)) for d in ['up_A', 'up_b'])
            assert np.array_equal(new, old), (part, n)


def test_resume_checks_cond_and_accepts_a_checkpoint_from_before_it(trained):
    """train_gen.py --init_from=resume compares the checkpoint's cond with the run's: resuming a
    G_SR as a G is one line; a G_SR checkpoint without `cond` (scale 2 only) resumes as one."""
    tmp, _ = trained
    common = [f'--data_dir={tmp / "data"}', '--dataset=tiny', '--init_from=resume']
    out = run(*common, f'--out_dir={tmp / "A"}', script='train_gen.py', ok=False)
    assert out.strip().splitlines()[-1] == (f"{tmp / 'A' / 'ckpt.pt'} was trained with "
                                            "cond='lowres', this run has 'none'")
    a = torch.load(tmp / 'A' / 'ckpt.pt', weights_only=True)
    old = {k: v for k, v in a.items() if k != 'cond'}
    old['config'] = {k: v for k, v in a['config'].items() if k != 'cond'}
    (tmp / 'C').mkdir()
    torch.save(old, tmp / 'C' / 'ckpt.pt')
    run(*common, f'--out_dir={tmp / "C"}', '--cond=lowres', '--scale=2', '--max_iters=5',
        script='train_gen.py')
    c = torch.load(tmp / 'C' / 'ckpt.pt', weights_only=True)
    assert c['iter_num'] == 5 and c['cond'] == 'lowres'
