"""metrics.py: hand-computed segmentation scores, analytic FID / IS, pair consistency, the CLI."""
import json
import runpy
import sys

import numpy as np
import pytest
import torch

import metrics
import pairs
from conftest import ROOT, run_python
from fpn import FPN, preprocess

NAMES = ['bg', 'a', 'b', 'c']


def test_confusion_iou_f1_by_hand():
    truth = torch.tensor([[0, 0, 1, 255], [2, 1, 1, 0]])
    pred = torch.tensor([[0, 1, 1, 2], [0, 1, 1, 0]])  # the prediction under 255 is dropped
    cm = metrics.confusion_matrix(pred, truth, 4)
    assert cm.dtype == torch.long
    assert cm.tolist() == [[2, 1, 0, 0], [0, 3, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert metrics.confusion_matrix(pred.numpy(), truth.numpy(), 4).tolist() == cm.tolist()
    iou, f1 = metrics.iou_per_class(cm), metrics.f1_per_class(cm)
    # bg: TP 2, FP 1, FN 1; a: TP 3, FP 1, FN 0; b: TP 0, FN 1; c absent from truth and prediction
    assert iou[:3].tolist() == pytest.approx([2 / 4, 3 / 4, 0.0])
    assert f1[:3].tolist() == pytest.approx([4 / 6, 6 / 7, 0.0])
    assert torch.isnan(iou[3]) and torch.isnan(f1[3])
    s = metrics.summarize(cm, NAMES)
    assert s['miou'] == pytest.approx((2 / 4 + 3 / 4 + 0) / 3)  # the absent class is left out
    assert s['mean_f1'] == pytest.approx((4 / 6 + 6 / 7 + 0) / 3)
    assert s['pixel_acc'] == pytest.approx(5 / 7)
    assert s['iou']['a'] == pytest.approx(0.75) and np.isnan(s['iou']['c'])
    table = metrics.format_table(s)
    assert '41.67' in table and '75.00' in table and '85.71' in table
    assert [l for l in table.splitlines() if l.startswith('c ')][0].split()[1:] == ['-', '-']
    assert metrics.all_reduce_cm(cm.clone()).tolist() == cm.tolist()  # no process group: no-op


def test_confusion_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match='labels must lie'):
        metrics.confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match='labels must lie'):
        metrics.confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), 3)


def test_frechet_distance_analytic():
    rng = np.random.default_rng(0)
    mu, sigma = metrics.stats(rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8)))
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    d = rng.normal(size=8)  # equal covariances: only the squared mean difference remains
    assert metrics.frechet_distance(mu, sigma, mu + d, sigma) == pytest.approx(d @ d, rel=1e-6)
    # 1-D Gaussians N(m1, a^2), N(m2, b^2): (m1 - m2)^2 + (a - b)^2
    assert metrics.frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx(4 + 1)


def test_frechet_distance_matches_pytorch_fid():
    # reference from pytorch-fid 0.3.0 calculate_frechet_distance (scipy 1.17.1, numpy 2.4.6) on
    # exactly these statistics, computed in a scratch venv
    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 6)) @ rng.normal(size=(6, 6))
    b = np.maximum(rng.normal(size=(64, 6)) @ rng.normal(size=(6, 6)) + 0.5, 0)
    (m1, s1), (m2, s2) = metrics.stats(a), metrics.stats(b)
    assert metrics.frechet_distance(m1, s1, m2, s2) == pytest.approx(22.125146146844394, rel=1e-6)


def test_stats_refuses_rank_deficient_covariance():
    with pytest.raises(ValueError, match='at least 9 samples'):
        metrics.stats(np.ones((8, 8)), 'fid')


def test_inception_score_uniform_and_onehot():
    assert metrics.inception_score(np.full((100, 5), 0.2))[0] == pytest.approx(1.0)
    # confident and balanced over K = 4 classes: IS = K, identical in every one of the 10 splits
    mean, std = metrics.inception_score(np.tile(np.eye(4), (250, 1)))
    assert mean == pytest.approx(4.0) and std == pytest.approx(0.0, abs=1e-12)
    # confident but always the same class: no diversity, IS = 1
    assert metrics.inception_score(np.tile(np.eye(4)[:1], (60, 1)))[0] == pytest.approx(1.0)


def test_consistency_perfect_and_shuffled():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 4, size=(20, 16, 16)).astype(np.uint8)
    masks[:, 0] = 255  # ignore pixels of the generated mask are not scored
    preds = np.where(masks == 255, 0, masks)
    perfect = metrics.consistency(masks, preds, NAMES)
    assert perfect['miou'] == pytest.approx(1.0) and perfect['mean_f1'] == pytest.approx(1.0)
    shuffled = metrics.consistency(masks, np.roll(preds, 1, axis=0), NAMES)
    assert shuffled['miou'] < 0.3  # independent uniform labels: IoU ~ 1/7


def test_class_freq_and_tvd():
    masks = np.array([[[0, 0, 1, 255]], [[2, 2, 2, 255]]], np.uint8)
    freq = metrics.class_freq(masks, 3)
    assert freq.tolist() == pytest.approx([2 / 6, 1 / 6, 3 / 6])  # labelled pixels only
    assert metrics.tvd(freq, freq) == 0.0
    assert metrics.tvd([1, 0, 0], [0, 0.5, 0.5]) == pytest.approx(1.0)


@pytest.fixture
def tiny_setup(tmp_path):
    """A random FPN-ResNet18 checkpoint, a prepared dataset (64x64) and a pair folder (32x32)."""
    torch.manual_seed(0)
    meta = dict(name='tiny', classes=['bg', 'x', 'y'], palette=[[0, 0, 0], [255, 0, 0],
                [0, 255, 0]], num_classes=3, ignore_index=255)
    model_args = dict(num_classes=3, depth=18)
    ckpt = dict(model=FPN(**model_args).state_dict(), model_args=model_args, iter_num=7,
                best_miou=0.0, config={}, meta=meta)
    torch.save(ckpt, tmp_path / 'ckpt.pt')
    rng = np.random.default_rng(0)
    real = tmp_path / 'real'
    real.mkdir()
    np.save(real / 'train_images.npy', rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8))
    np.save(real / 'train_masks.npy', rng.integers(0, 3, (6, 64, 64), dtype=np.uint8))
    (real / 'meta.json').write_text(json.dumps(meta))
    fake = tmp_path / 'fake'
    for i in range(5):
        mask = rng.integers(0, 3, (32, 32), dtype=np.uint8)
        mask[0, 0] = 255
        pairs.save_pair(str(fake), i, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), mask,
                       meta['palette'])
    (fake / 'meta.json').write_text(json.dumps(meta))
    np.save(real / 'val_images.npy', rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    np.save(real / 'val_masks.npy', rng.integers(0, 3, (3, 64, 64), dtype=np.uint8))
    return tmp_path


def test_features_shapes(tiny_setup):
    model, ckpt = metrics.load_segmenter(str(tiny_setup / 'ckpt.pt'))
    images, masks, _ = pairs.load_pairs(str(tiny_setup / 'fake'))
    f = metrics.features(model, images, res=32, batch_size=2, with_pred=True)
    assert f['fid'].shape == (5, 512) and f['sfid'].shape == (5, 448)  # ResNet-18 c5; 7 * (128/16)^2
    assert f['probs'].shape == (5, 3) and np.allclose(f['probs'].sum(1), 1)
    assert f['pred'].shape == (5, 32, 32) and f['pred'].max() < 3
    # the segmenter sees images at its training resolution: seg.py's image_size, else patch size
    assert metrics.seg_input_size(32, {'config': {'image_size': 64}, 'meta': {}}) == 64
    assert metrics.seg_input_size(32, {'config': {}, 'meta': {'patch_size': 250}}) == 256
    assert metrics.seg_input_size(32, {'config': {}, 'meta': {}}) == 128
    (tiny_setup / 'bad.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(SystemExit, match='bad.pt: truncated or not a checkpoint'):
        metrics.load_segmenter(str(tiny_setup / 'bad.pt'))
    (tiny_setup / 'empty.pt').write_bytes(b'')  # one line naming the file, no pickle advice
    with pytest.raises(SystemExit, match='empty.pt: an empty file; want a seg.py checkpoint'):
        metrics.load_segmenter(str(tiny_setup / 'empty.pt'))


@pytest.mark.parametrize('size', [64, 128, 256])
def test_sfid_features_are_unpooled_c4(size):
    """sFID keeps, like the ADM evaluator (first 7 channels of Inception's 17x17 mixed_6/conv,
    flattened), the first 7 channels of the stride-16 map c4, NOT pooled: 7 * (S/16)^2 values."""
    torch.manual_seed(0)
    model = FPN(3, depth=18).eval()
    images = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    f = metrics.features(model, images, res=64, size=size, batch_size=2)
    assert f['sfid'].shape == (3, 7 * (size // 16) ** 2)  # 112-d at 64, 448 at 128, 1792 at 256
    x = preprocess(images)
    if size != 64:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode='bilinear',
                                            align_corners=False)
    with torch.no_grad():
        c4 = model.backbone(x)[2]  # (3, 256, S/16, S/16) for ResNet-18
    np.testing.assert_allclose(f['sfid'], c4[:, :7].flatten(1).numpy(), rtol=1e-4, atol=1e-5)


def same_report(a, b, rel=1e-6):
    """a and b hold the same keys, lists and strings, and floats equal to within rel."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            same_report(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(
            same_report(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float):
        return isinstance(b, float) and a == pytest.approx(b, rel=rel)
    return a == b


def test_cli_tiny_folders(tiny_setup, monkeypatch, capsys):
    out = tiny_setup / 'out'
    args = [f'--real={tiny_setup / "real"}', f'--fake={tiny_setup / "fake"}',
            f'--seg_ckpt={tiny_setup / "ckpt.pt"}', f'--out_dir={out}', '--device=cpu',
            '--batch_size=4']
    r = run_python(['metrics.py'] + args, cwd=tiny_setup)  # once as a command (1 thread) ...
    assert r.returncode == 0, r.stderr
    assert '(cached)' not in r.stdout and 'computed anyway' in r.stdout and 'consistency' in r.stdout
    first = json.loads((out / 'metrics.json').read_text())
    monkeypatch.chdir(tiny_setup)  # ... then in-process (no second torch import): cache reused
    monkeypatch.setattr(sys, 'argv', ['metrics.py'] + args)
    runpy.run_path(str(ROOT / 'metrics.py'), run_name='__main__')
    assert '(cached)' in capsys.readouterr().out
    rep = json.loads((out / 'metrics.json').read_text())
    assert same_report(rep, first)  # to round-off: the command ran on 1 thread, this on more
    # 5 fake images cannot give a 512-d full-rank covariance: computed as pytorch-fid does, finite
    # (never NaN), and flagged with the reason
    assert np.isfinite(rep['fid']) and rep['fid'] > 0 and np.isfinite(rep['sfid'])
    assert any('at least 513 samples' in n and 'computed anyway' in n for n in rep['notes'])
    assert rep['is_mean'] >= 1.0 and 0.0 <= rep['consistency_miou'] <= 1.0
    assert 0.0 <= rep['class_freq_tvd'] <= 1.0
    assert rep['resolution'] == 32 and rep['seg_input_size'] == 128
    assert rep['n_fake'] == 5 and rep['n_real'] == 6
    assert rep['feature_extractor']['ckpt'].endswith('ckpt.pt')
    assert rep['feature_extractor']['iter_num'] == 7 and '512-d' in rep['feature_extractor']['fid']
    mem = rep['memorisation']  # D = the 6 train images, reference = the 3 val images, at 32x32
    assert mem['space'].startswith('pixels at 32x32') and 'memorisation (pixels' in r.stdout
    assert (mem['n_train'], mem['n_val'], mem['n_fake']) == (6, 3, 5)
    assert 0 < mem['fake_p5'] <= mem['fake_median'] and 0 < mem['val_p1'] <= mem['val_median']
    assert mem['median_ratio'] > 0.5 and mem['near_copy_fraction'] == 0.0  # random noise
    # a pair folder as --real: it is D, and there is no held-out reference
    monkeypatch.setattr(sys, 'argv', ['metrics.py', f'--real={tiny_setup / "fake"}'] + args[1:])
    runpy.run_path(str(ROOT / 'metrics.py'), run_name='__main__')
    mem = json.loads((out / 'metrics.json').read_text())['memorisation']
    assert mem['n_train'] == 5 and mem['fake_median'] == 0.0 and 'val_median' not in mem
    assert 'no held-out' in mem['note'] and 'no held-out' in capsys.readouterr().out
    monkeypatch.setattr(sys, 'argv', ['metrics.py', f'--real={tiny_setup}'] + args[1:])
    with pytest.raises(SystemExit, match='neither a prepared dataset'):
        runpy.run_path(str(ROOT / 'metrics.py'), run_name='__main__')


def test_cli_bad_settings_are_one_line_each_before_anything_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['metrics.py', '--batch_size=0', '--is_splits=0',
                                      f'--seg_ckpt={tmp_path / "missing.pt"}',
                                      f'--out_dir={tmp_path / "m"}'])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / 'metrics.py'), run_name='__main__')
    assert str(e.value).splitlines() == ['metrics.py: error: batch_size must be >= 1, got 0',
                                         'metrics.py: error: is_splits must be >= 1, got 0']
    assert not (tmp_path / 'm').exists()  # (and the missing checkpoint was never opened)

def test_psnr_and_ssim_analytic():
    rng = np.random.default_rng(0)
    a = rng.integers(20, 236, (3, 24, 24, 3)).astype(np.uint8)
    assert metrics.psnr(a, a + 10) == pytest.approx(10 * np.log10(255 ** 2 / 100))  # MSE 100
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    # a constant offset keeps the structure and the contrast: only the luminance term drops
    mu = metrics.ssim(a, a + 10)
    assert 0.95 < mu < 1.0
    noisy = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert metrics.ssim(a, noisy) < 0.9 * mu and metrics.ssim(a, noisy) == pytest.approx(
        metrics.ssim(noisy, a))  # symmetric
    # a uniform image against itself shifted: SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1) exactly
    u, v, c1 = np.full((1, 16, 16, 3), 100, np.uint8), np.full((1, 16, 16, 3), 150, np.uint8), 6.5025
    assert metrics.ssim(u, v) == pytest.approx((2 * 100 * 150 + c1) / (100 ** 2 + 150 ** 2 + c1))


def dihedral(x, k):
    """The k-th of the 8 flips/rot90 of one (H, W, 3) image, as augment.augment applies them."""
    x = np.rot90(x, k % 4, axes=(0, 1))
    return np.ascontiguousarray(x[:, ::-1] if k >= 4 else x)


def blobs(rng, n, size=16):
    """Random images with structure: a random colour per 4x4 cell, plus pixel noise."""
    cells = rng.integers(30, 226, (n, size // 4, size // 4, 3)).repeat(4, 1).repeat(4, 2)
    return np.clip(cells + rng.normal(0, 25, cells.shape), 0, 255).astype(np.uint8)


def test_nn_distance_matches_brute_force():
    rng = np.random.default_rng(0)
    q, r = blobs(rng, 7, 8), blobs(rng, 11, 8)
    f = lambda x: x.astype(np.float64) / 255
    want = [min(np.sqrt(((f(dihedral(a, k)) - f(b)) ** 2).mean()) for k in range(8) for b in r)
            for a in q]
    for chunk in (2 ** 22, 500):  # one chunk; 2 queries x 2 refs a chunk
        np.testing.assert_allclose(metrics.nn_distance(q, r, 8, chunk=chunk), want, rtol=1e-5)


def test_memorisation_of_copies_and_of_fresh_samples():
    rng = np.random.default_rng(0)
    train, val = blobs(rng, 200, 32), blobs(rng, 200, 32)
    # (1) copies of training images, under each of the 8 flips/rot90, at half resolution: the
    # training set is shrunk to the generated resolution, so these are exact copies (distance 0)
    small = pairs.resize_pair(train, None, 16)[0]
    copies = np.stack([dihedral(small[i], i % 8) for i in range(0, 200, 5)])
    assert (metrics.nn_distance(copies, train, 16) == 0).all()
    m = metrics.memorisation(copies, train, val, res=16)
    assert m['fake_median'] == m['fake_p5'] == m['median_ratio'] == 0.0
    assert m['near_copy_fraction'] == 1.0 and m['val_p1'] > 0.05 and m['n_train'] == 200
    # a flipped copy is not a copy for a plain (map-blind) nearest neighbour
    plain = np.sqrt(((copies[1:2] / 255.0 - small / 255.0) ** 2).mean((1, 2, 3))).min()
    assert plain > 0.05
    # (2) fresh samples of the training distribution: as far from D as held-out val images are
    m = metrics.memorisation(blobs(rng, 200, 32), train, val, res=16)
    assert m['near_copy_fraction'] < 0.05 and 0.9 < m['median_ratio'] < 1.1
    assert m['fake_p5'] > m['val_p1'] / 2 and m['n_val'] == 200
    # no reference: the generated distances alone, and a note saying why
    m = metrics.memorisation(copies, train, res=16)
    assert m['fake_median'] == 0.0 and 'near_copy_fraction' not in m and 'no held-out' in m['note']


def test_colour_stats_known_answers():
    from metrics import colour_stats
    flat = np.full((2, 8, 8, 3), 120, np.uint8)
    assert colour_stats(flat) == dict(saturation=0.0, sharpness=0.0)  # grey and flat
    red = np.zeros((1, 8, 8, 3), np.uint8)
    red[..., 0] = 90  # max - min channel = 90 everywhere; flat: no Laplacian
    assert colour_stats(red) == dict(saturation=90.0, sharpness=0.0)
    spot = np.zeros((1, 5, 5, 3), np.uint8)
    spot[0, 2, 2] = 30  # grey 30 at the centre: |Laplacian| 120 there, 30 at its 4 neighbours
    stats = colour_stats(spot)  # over the 3 x 3 interior: (120 + 4 x 30) / 9
    assert stats['saturation'] == 0 and abs(stats['sharpness'] - 240 / 9) < 1e-12
    both = colour_stats(np.concatenate([red, red, red]), chunk=2)  # chunks: the same means
    assert both == dict(saturation=90.0, sharpness=0.0)
