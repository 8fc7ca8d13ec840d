"""The label codec of SatSynth (paper Sec. 4.2, 4.5): class masks <-> analog bit channels.

A mask with K classes becomes ceil(log2 K) "analog bit" channels (Chen et al., Analog Bits, 2022):
class k is written in binary, most significant bit first, and each bit is mapped to {-1, +1} next
to the RGB channels, so one DDPM learns p(image, bin(mask)) on 3 + ceil(log2 K) channels.
Decoding (the paper's bin^-1) assigns every pixel the nearest valid code among bin(0..K-1): for a
point in [0, 1]^n the nearest hypercube vertex is the thresholded one, so this *is* thresholding
whenever that code is valid, and it never yields a class >= K when K is not a power of two.

Ignore pixels (255: LoveDA no-data, OpenEarthMap unknown, padding) must not be corrupted into a
real class, so when the training split has any, they get one extra code K of their own
(`num_codes(meta)` = K + 1); a decoded K becomes 255 again. Datasets without ignore pixels keep
the paper's ceil(log2 K) bits exactly.

Used by train_gen.py, sample.py and superres.py to turn uint8 pairs into the diffusion tensor
and back; everything else about pairs (resizing, augmentation, files) is in pairs.py.

    x = bits.pack(images, masks, meta)            # (B, 3 + nb, H, W) in [-1, 1]
    images, masks = bits.unpack(x, meta)          # uint8 (B, H, W, 3), (B, H, W)
"""
import math

import numpy as np
import torch
import torch.nn.functional as F


def n_bits(num_codes):
    return max(1, math.ceil(math.log2(num_codes)))


def num_codes(meta):
    """K, or K + 1 when the training split has ignore pixels (they get their own code K)."""
    return meta['num_classes'] + int(meta['ignore_fraction']['train'] > 0)


def label_channels(num_codes, encoding):
    assert encoding in {'bits', 'onehot', 'none'}, encoding
    return {'bits': n_bits(num_codes), 'onehot': num_codes, 'none': 0}[encoding]


def _codebook(num_codes, device):
    shifts = torch.arange(n_bits(num_codes) - 1, -1, -1, device=device)  # MSB first
    return ((torch.arange(num_codes, device=device)[:, None] >> shifts) & 1).float()  # (K, nb)


def encode(y, num_codes):
    """(B, H, W) long in [0, num_codes) -> (B, nb, H, W) float in {0, 1}."""
    return _codebook(num_codes, y.device)[y].permute(0, 3, 1, 2)  # (B, H, W, nb) -> (B, nb, H, W)


def decode(x, num_codes):
    """(B, nb, H, W) float in [0, 1] -> (B, H, W) long: the nearest valid code (Euclidean)."""
    book = _codebook(num_codes, x.device)  # (K, nb)
    # ||x - b||^2 = ||x||^2 - 2 x.b + ||b||^2; the ||x||^2 term is the same for every code
    dist = book.pow(2).sum(1)[None, :, None, None] - 2 * torch.einsum('bnhw,kn->bkhw', x.float(), book)
    return dist.argmin(1)


def onehot_encode(y, num_codes):
    return F.one_hot(y, num_codes).permute(0, 3, 1, 2).float()  # (B, K, H, W)


def onehot_decode(x, num_codes):
    return x.argmax(1)


def pack(images, masks, meta, encoding='bits'):
    """uint8 images (B, H, W, 3) and masks (B, H, W) -> the (B, 3 + C, H, W) tensor in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, H, W)
    if encoding == 'none':  # the image-only DDPM baseline of the paper's Tab. 1a
        return x
    n, K = num_codes(meta), meta['num_classes']
    y = torch.as_tensor(np.asarray(masks)).long()
    ignore = y == meta['ignore_index']
    if ignore.any():
        if n == K:
            raise ValueError('masks hold ignore pixels but meta says the train split has none')
        y = torch.where(ignore, torch.full_like(y, K), y)
    if (y >= n).any():
        raise ValueError(f'mask values outside 0..{K - 1} (and {meta["ignore_index"]})')
    y = encode(y, n) if encoding == 'bits' else onehot_encode(y, n)
    return torch.cat([x, y * 2 - 1], dim=1)


def unpack(x, meta, encoding='bits'):
    """(B, 3 + C, H, W) in [-1, 1] -> uint8 images (B, H, W, 3) and masks (B, H, W) (None if 'none')."""
    x = x.detach().float().clamp(-1, 1).cpu()
    images = ((x[:, :3] + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
    if encoding == 'none':
        return images, None
    n, K = num_codes(meta), meta['num_classes']
    y01 = (x[:, 3:] + 1) / 2
    y = decode(y01, n) if encoding == 'bits' else onehot_decode(y01, n)
    y[y == K] = meta['ignore_index']  # only possible when the ignore code exists
    return images, y.byte().numpy()
