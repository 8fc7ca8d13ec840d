"""clean.py: each option on hand-made pairs with a known answer, then the CLI end to end.

Known answers: a region one pixel under / at min_area, a pixel whose stored margin is one 8-bit
step under / over the threshold, a loss just over / under tol x the class's real loss, a pool
whose best selection is known; the bit margin against a brute-force nearest-two-codes search.
"""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import bits
import clean
import pairs
from conftest import PALETTE, make_dataset, run_script
from fpn import FPN


def test_cleanup_relabels_regions_under_the_area_to_their_ring_mode():
    m = np.zeros((8, 8), np.uint8)
    m[:, 4:] = 1  # the ring of anything on the border votes for both classes
    m[1:3, 1] = 2  # a 2-px region of class 2 inside class 0
    m[5:8, 5] = 2  # a 3-px region of class 2 inside class 1 (touching the border)
    out = clean.cleanup(m, min_area=3)
    assert (out[1:3, 1] == 0).all() and (out[5:8, 5] == 2).all()  # 2 < 3 relabelled, 3 kept
    assert (clean.cleanup(m, min_area=4)[5:8, 5] == 1).all()  # now under: its ring is class 1
    assert np.array_equal(np.delete(out, 1, axis=1), np.delete(m, 1, axis=1))  # nothing else moves
    # 4-connected: two diagonal pixels are two 1-px regions (8-connected they would be 2 px)
    d = np.zeros((5, 5), np.uint8)
    d[1, 1] = d[2, 2] = 2
    assert (clean.cleanup(d, min_area=2) == 0).all()
    # ignore pixels do not vote: a region whose ring is all ignore is left as it is
    e = np.full((5, 5), 255, np.uint8)
    e[2, 2] = 0
    assert clean.cleanup(e, min_area=2)[2, 2] == 0
    e[1, 1:4] = 1
    assert clean.cleanup(e, min_area=2)[2, 2] == 1


def test_margin_is_the_distance_to_the_runner_up_code():
    g = torch.Generator().manual_seed(0)
    for n, enc in [(8, 'bits'), (6, 'bits'), (5, 'onehot')]:
        C = bits.label_channels(n, enc)
        x = torch.rand(2, C, 4, 4, generator=g) * 2 - 1
        book = (bits._codebook(n, 'cpu') if enc == 'bits' else torch.eye(n)) * 2 - 1
        d = ((x[:, None] - book[None, :, :, None, None]) ** 2).sum(2)  # (B, n, H, W) brute force
        d = d.sort(1).values
        torch.testing.assert_close(bits.margin(x, n, enc), (d[:, 1] - d[:, 0]) / 4)
        if n == 8:  # every code valid: the smallest |bit|
            torch.testing.assert_close(bits.margin(x, n), x.abs().min(1).values)


def test_consistency_rule_is_freemasks():
    masks = np.array([[0, 0, 1, 255, 2]], np.uint8)
    loss = np.array([[1.24, 1.26, 9.0, 9.0, 9.0]])
    out = clean.consistency_ignore(loss, masks, ref=[1.0, 10.0, np.nan], tol=1.25)
    # class 0: 1.24 kept, 1.26 ignored; class 1 under 12.5 kept; ignore stays; class 2 has no
    # real pixels (NaN): kept
    assert out.tolist() == [[0, 255, 1, 255, 2]]
    ref = clean.class_mean_loss(np.array([[1.0, 3.0, 5.0]]), np.array([[0, 0, 255]]), 3)
    assert ref[0] == 2.0 and np.isnan(ref[1:]).all()


def test_selection_finds_the_known_best_pool():
    base = np.array([100.0, 0.0])  # D has only class 0
    pool = np.array([[10, 0], [0, 10], [5, 5], [0, 90], [0, 20]], np.float64)
    # target 50/50: keep 1 -> the 90-px class-1 pair; keep 2 -> then the 10 px that make
    # exactly 100 / 100 (the 20-px pair would overshoot)
    assert clean.select(pool, base, np.array([0.5, 0.5]), 1) == [3]
    assert clean.select(pool, base, np.array([0.5, 0.5]), 2) == [1, 3]
    # target = D's own shares: the pure class-0 pair
    assert clean.select(pool, base, np.array([1.0, 0.0]), 1) == [0]


def make_pool(root, n=6, s=16):
    """A pair folder of n pairs (classes a, b, c) with margins, like sample.py --save_margin."""
    rng = np.random.default_rng(0)
    folder = root / 'pool'
    for i in range(n):
        mask = np.zeros((s, s), np.uint8)
        mask[:, s // 2:] = 1
        mask[i % s, i % s] = 2  # a 1-px region
        margin = np.full((s, s), 1.0)
        margin[0, 0], margin[0, 1] = 63 / 255, 64 / 255  # around --margin=0.25 (63.75 / 255)
        image = rng.integers(0, 255, (s, s, 3), dtype=np.uint8)
        pairs.save_pair(folder, i, image, mask, PALETTE, margin)
    meta = dict(name='pool', classes=['a', 'b', 'c'], palette=PALETTE, num_classes=3,
                ignore_index=255, source='sample.py', margins=True)
    (folder / 'meta.json').write_text(json.dumps(meta))
    return folder


def test_cli_end_to_end(tmp_path):
    make_dataset(tmp_path / 'data', p=16)
    make_pool(tmp_path)
    torch.manual_seed(0)  # an untrained segmenter is enough to exercise the filter's plumbing
    model_args = dict(num_classes=3, depth=18)
    ckpt = dict(model=FPN(**model_args).state_dict(), model_args=model_args,
                config=dict(image_size=16), iter_num=0)
    pairs.save_checkpoint(ckpt, str(tmp_path / 'seg.pt'))
    out = run_script(['clean.py', '--in_dir=pool', '--out_dir=c', '--min_area=2', '--margin=0.25',
                      '--seg_ckpt=seg.pt', '--tol=1.0', '--keep=4', '--dataset=tiny'], tmp_path)
    c = tmp_path / 'c'
    stems = sorted(p.name for p in (c / 'masks').iterdir())
    assert len(stems) == 4 and set(stems) <= {f'{i:06d}.png' for i in range(6)}
    rep = json.loads((c / 'clean.json').read_text())
    assert (rep['n_in'], rep['n_out']) == (6, 4) and 'keep 4' in out
    for name in stems:
        m = np.array(Image.open(c / 'masks' / name))
        assert m[0, 0] == 255 and 2 not in m  # margin 63/255 ignored; 1-px regions relabelled
        assert set(np.unique(m)) <= {0, 1, 255}
    assert 0 < rep['consistency']['ignored'] < 1 and rep['margin']['ignored'] > 0
    meta = json.loads((c / 'meta.json').read_text())
    assert meta['clean']['keep'] == 4 and 'margins' not in meta
    # margin only: the pixel one 8-bit step over the threshold is kept
    run_script(['clean.py', '--in_dir=pool', '--out_dir=m', '--margin=0.25'], tmp_path)
    m = np.array(Image.open(tmp_path / 'm' / 'masks' / '000000.png'))
    assert m[0, 0] == 255 and m[0, 1] == 0 and (m != 255).sum() == m.size - 1


@pytest.mark.parametrize('args, says', [
    (['--margin=0.1'], 'no margins/'),
    (['--keep=7'], 'cannot keep 7'),
    (['--out_dir=pool'], "clean.py: error: out_dir must be a new folder, got 'pool'"),
    (['--min_miou=0.5'], 'clean.py: error: min_miou needs seg_ckpt'),
    (['--temperature=0', '--keep=-1'], 'clean.py: error: keep must be >= 0, got -1\n'
                                       'clean.py: error: temperature must be > 0, got 0.0'),
    (['--seg_ckpt=missing.pt'], 'missing.pt'),
])
def test_bad_input_one_line_nothing_written(tmp_path, args, says):
    make_dataset(tmp_path / 'data', p=16)
    folder = make_pool(tmp_path)
    if args == ['--margin=0.1']:
        meta = json.loads((folder / 'meta.json').read_text())
        (folder / 'meta.json').write_text(json.dumps(dict(meta, margins=False)))
    out = run_script(['clean.py', '--in_dir=pool', '--out_dir=out', '--dataset=tiny'] + args,
                     tmp_path, check=False)
    assert says in out and 'Traceback' not in out
    assert not (tmp_path / 'out').exists() and not list(tmp_path.glob('.out.tmp-*'))


def test_pixel_loss_takes_its_batch_size_and_device_as_arguments():
    """(It read clean.py's module globals.) Any batch size gives the same per-pixel loss."""
    torch.manual_seed(0)
    model = FPN(3, depth=18).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (5, 32, 32), dtype=np.uint8)
    with torch.no_grad():
        loss2, pred2 = clean.pixel_loss(model, images, masks, 32, batch_size=2, device='cpu')
        loss5, pred5 = clean.pixel_loss(model, images, masks, 32, batch_size=5, device='cpu')
    assert loss2.shape == (5, 32, 32) and np.allclose(loss2, loss5, atol=1e-5)
    assert np.array_equal(pred2, pred5)
