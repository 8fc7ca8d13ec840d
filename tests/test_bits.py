"""bits.py: the paper's label codec, the shared resize/augment and the pair-folder layout."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bits  # noqa: E402


def meta(K, ignore=0.0):
    return {'num_classes': K, 'ignore_index': 255, 'ignore_fraction': {'train': ignore}}


@pytest.mark.parametrize('K', range(2, 21))
def test_bits_round_trip(K):
    y = torch.arange(K).repeat(3, 2, 1)  # (3, 2, K): every class appears
    x = bits.encode(y, K)
    assert x.shape == (3, bits.n_bits(K), 2, K) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert bits.n_bits(K) == int(np.ceil(np.log2(K)))
    assert torch.equal(bits.decode(x, K), y)
    assert torch.equal(bits.onehot_decode(bits.onehot_encode(y, K), K), y)


def test_decode_noisy_values_gives_nearest_valid_code():
    K = 6  # codes 000..101; 110 and 111 are invalid
    x = torch.tensor([0.9, 0.8, 0.1]).view(1, 3, 1, 1)  # thresholds to 110 (invalid)
    assert bits.decode(x, K).item() in (4, 5)  # 100 or 101 are the valid neighbours
    x = torch.tensor([0.9, 0.8, 0.7]).view(1, 3, 1, 1)  # 111 -> nearest valid 101 (dist .68 vs .74)
    assert bits.decode(x, K).item() == 5
    y = torch.randint(0, K, (2, 16, 16))
    noisy = (bits.encode(y, K) + 0.3 * torch.randn(2, 3, 16, 16)).clamp(0, 1)
    d = bits.decode(noisy, K)
    assert d.max() < K
    valid = (bits.encode(y, K) - 0.5).sign() == (noisy - 0.5).sign()
    assert torch.equal(d[valid.all(1)], y[valid.all(1)])  # where thresholding is right, so is decode


def test_pack_unpack_with_and_without_ignore():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    m = rng.integers(0, 6, (2, 8, 8)).astype(np.uint8)
    x = bits.pack(img, m, meta(6))
    assert x.shape == (2, 3 + 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    i2, m2 = bits.unpack(x, meta(6))
    assert np.array_equal(i2, img) and np.array_equal(m2, m)
    m[0, :2] = 255
    with pytest.raises(ValueError):
        bits.pack(img, m, meta(6))  # no ignore code reserved: refuse rather than corrupt
    x = bits.pack(img, m, meta(8, ignore=0.1))  # K = 8 + ignore code -> 4 bits
    assert x.shape[1] == 3 + 4
    assert np.array_equal(bits.unpack(x, meta(8, ignore=0.1))[1], m)
    assert bits.pack(img, m, meta(8, ignore=0.1), 'onehot').shape[1] == 3 + 9
    assert bits.pack(img, None, meta(6), 'none').shape[1] == 3
    m[1, 0, 0] = 7
    with pytest.raises(ValueError):
        bits.pack(img, np.where(m == 255, 0, m), meta(6))


def test_resize_pair_area_mode_and_alignment():
    m = np.zeros((1, 8, 8), np.uint8)
    m[0, :4, :4] = 1
    m[0, 0, 4] = 2  # a single minority pixel must not win its block
    img = np.repeat(m[..., None] * 100, 3, axis=3).astype(np.uint8)
    si, sm = bits.resize_pair(img, m, 2)
    assert sm.tolist() == [[[1, 0], [0, 0]]]
    assert si[0, 0, 0, 0] == 100 and si[0, 0, 1, 0] == round(200 / 16)  # area average
    ui, um = bits.resize_pair(si, sm, 8)
    assert np.array_equal(um[0, :4, :4], np.ones((4, 4))) and um[0, 4:, :].sum() == 0  # aligned


def test_augment_keeps_pairs_aligned():
    rng = np.random.default_rng(1)
    m = rng.integers(0, 5, (16, 6, 6)).astype(np.uint8)
    img = np.stack([m * 10, m * 20, m * 30], axis=-1).astype(np.uint8)
    ai, am = bits.augment(img, m, rng)
    assert np.array_equal(ai[..., 1], am * 20)
    assert not np.array_equal(am, m)  # something was transformed


def test_save_and_load_pairs(tmp_path):
    pal = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    rng = np.random.default_rng(2)
    for i in (3, 1):
        m = rng.integers(0, 3, (8, 8)).astype(np.uint8)
        m[0, 0] = 255
        bits.save_pair(str(tmp_path), i, np.full((8, 8, 3), i, np.uint8), m, pal)
    assert not [f for f in os.listdir(tmp_path / 'masks') if f.endswith('.tmp')]
    images, masks, stems = bits.load_pairs(str(tmp_path))
    assert stems == ['000001', '000003'] and images.shape == (2, 8, 8, 3)
    assert images[0, 0, 0, 0] == 1 and masks[0, 0, 0] == 255 and masks.max() == 255
    with pytest.raises(SystemExit, match='meta.json'):
        bits.read_classes(str(tmp_path))
    (tmp_path / 'masks' / '000001.png').write_bytes(b'\x89PNG broken')
    with pytest.raises(SystemExit, match='000001'):
        bits.load_pairs(str(tmp_path))


def test_colorize_and_grid():
    pal = [[10, 20, 30], [40, 50, 60]]
    c = bits.colorize(np.array([[0, 1, 255]]), pal)
    assert c.tolist() == [[[10, 20, 30], [40, 50, 60], list(bits.IGNORE_RGB)]]
    img = np.zeros((5, 8, 8, 3), np.uint8)
    img[1] = 100
    g = bits.make_grid(img, np.zeros((5, 8, 8), np.uint8), pal, nrow=2)
    assert g.shape == (3 * 12, 2 * 24, 3)
    assert (g[2:10, 26:34] == 100).all() and (g[2:10, 2:10] == 0).all()  # sample 1 at row 0, col 1
