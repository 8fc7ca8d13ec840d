"""bits.py: the paper's label codec (analog bits, nearest-valid-code decoding, pack/unpack)."""
import numpy as np
import pytest
import torch

import bits


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
