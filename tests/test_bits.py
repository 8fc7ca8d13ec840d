"""bits.py: the paper's label codec (analog bits, nearest-valid-code decoding, pack/unpack)."""
import numpy as np
import pytest
import torch

import bits


def meta(K, ignore=0.0, codes=None):
    """A meta.json; codes = (num_codes, ignore_code) as prepare.py writes them; None: an old one."""
    m = {'num_classes': K, 'ignore_index': 255, 'ignore_fraction': {'train': ignore}}
    return m if codes is None else m | {'codes': dict(num_codes=codes[0], ignore_code=codes[1])}


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
    assert bits.loss_weight(m, meta(6)) is None  # nothing to leave out: the plain mean
    m[0, :2] = 255
    x = bits.pack(img, m, meta(8, ignore=0.1))  # an old meta.json: K = 8 + ignore code -> 4 bits
    assert x.shape[1] == 3 + 4
    assert np.array_equal(bits.unpack(x, meta(8, ignore=0.1))[1], m)
    assert bits.pack(img, m, meta(8, ignore=0.1), 'onehot').shape[1] == 3 + 9
    assert bits.pack(img, None, meta(6), 'none').shape[1] == 3
    m[1, 0, 0] = 7
    with pytest.raises(ValueError):
        bits.pack(img, np.where(m == 255, 0, m), meta(6))


def test_pack_is_its_image_channels_then_its_label_channels():
    """pack_images / pack_masks are pack's two halves (the target or condition of a conditional
    generator: pairs.condition), equal to its slices bit for bit, in every encoding."""
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    m = rng.integers(0, 5, (2, 8, 8)).astype(np.uint8)
    m[:, 0] = 255
    for encoding, codes in [('bits', (5, None)), ('bits', (6, 5)), ('onehot', (6, 5))]:
        x = bits.pack(img, m, meta(5, codes=codes), encoding)
        assert torch.equal(bits.pack_images(img), x[:, :bits.RGB])
        assert torch.equal(bits.pack_masks(m, meta(5, codes=codes), encoding), x[:, bits.RGB:])
    assert bits.pack_images(img).is_contiguous()  # NCHW, as the UNet trains fastest on
    assert torch.equal(bits.pack(img, None, meta(5), 'none'), bits.pack_images(img))
    with pytest.raises(ValueError, match="'none' has no label channels"):
        bits.pack_masks(m, meta(5), 'none')


def test_isaid_stray_ignore_pixel_gets_no_code():
    """iSAID: 16 codes, 4 bits, C = 7 (the paper's) even with off-palette pixels in train; they
    pack as code 0, weight 0 on their label channels, and 255 is never decoded."""
    m16 = meta(16, ignore=1e-6, codes=(16, None))
    assert bits.num_codes(m16) == 16 and bits.label_channels(16, 'bits') == 4
    img = np.zeros((1, 4, 4, 3), np.uint8)
    mask = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    mask[0, 0, 0] = 255
    x = bits.pack(img, mask, m16)
    assert x.shape == (1, 7, 4, 4) and bits.unpack(x, m16)[1][0, 0, 0] == 0
    w = bits.loss_weight(mask, m16)
    assert w.shape == x.shape and w[0, 3:, 0, 0].eq(0).all() and w[0, :3, 0, 0].eq(1).all()
    assert w.sum() == 7 * 16 - 4
    noise = torch.rand(8, 7, 4, 4) * 2 - 1  # any tensor decodes to real classes only
    assert bits.unpack(noise, m16)[1].max() < 16


def test_loveda_no_data_is_code_7_of_8():
    mlv = meta(7, ignore=0.3, codes=(8, 7))
    assert bits.num_codes(mlv) == 8 and bits.n_bits(8) == 3
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    mask = rng.integers(0, 7, (2, 8, 8)).astype(np.uint8)
    mask[:, :3] = 255
    x = bits.pack(img, mask, mlv)
    assert x.shape[1] == 3 + 3 and bits.loss_weight(mask, mlv) is None  # no-data is learned
    assert (x[:, 3:, :3] == 1).all()  # 255 -> code 7 = 111
    assert np.array_equal(bits.unpack(x, mlv)[1], mask)


def test_openearthmap_unknown_gets_no_code_and_no_loss():
    moem = meta(8, ignore=0.05, codes=(8, None))
    mask = np.full((1, 2, 2), 255, np.uint8)
    mask[0, 0, 0] = 7
    x = bits.pack(np.zeros((1, 2, 2, 3), np.uint8), mask, moem)
    assert x.shape[1] == 3 + 3  # C = 6 = 3 + ceil(log2 8), the paper's
    w = bits.loss_weight(mask, moem, 'onehot')
    assert w.shape == (1, 3 + 8, 2, 2) and w[0, 3:].sum() == 8 and w[0, :3].sum() == 12
    assert bits.unpack(torch.ones(1, 6, 2, 2), moem)[1].max() == 7  # 111 is class 7, not 255
    assert bits.loss_weight(mask, moem, 'none') is None
    for bad in [(9, None), (9, 0), (8, 8)]:  # only K without or K + 1 with ignore code K
        with pytest.raises(AssertionError):
            bits.num_codes(meta(8, codes=bad))


def test_old_meta_without_code_table_keeps_the_old_rule():
    assert bits.num_codes(meta(16, ignore=1e-6)) == 17 and bits.num_codes(meta(16)) == 16
    assert bits.codes(meta(7, ignore=0.3)) == (8, 7) and bits.codes(meta(6)) == (6, None)
