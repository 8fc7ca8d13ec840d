"""The label codec of SatSynth (paper Sec. 4.2, 4.5): class masks <-> analog bit channels.

A mask with K classes becomes ceil(log2 K) "analog bit" channels (Chen et al., Analog Bits, 2022):
class k is written in binary, most significant bit first, and each bit is mapped to {-1, +1} next
to the RGB channels, so one DDPM learns p(image, bin(mask)) on 3 + ceil(log2 K) channels.
Decoding (the paper's bin^-1) assigns every pixel the nearest valid code among bin(0..K-1): for a
point in [0, 1]^n the nearest hypercube vertex is the thresholded one, so this *is* thresholding
whenever that code is valid, and it never yields a class >= K when K is not a power of two.

Ignore pixels (255: LoveDA no-data, OpenEarthMap unknown, iSAID off-palette, padding) are coded
as each dataset's meta.json says, a table prepare.py fixes per reader (docs/DATASETS.md), never by
whether a stray ignore pixel turned up: meta['codes'] = {num_codes, ignore_code}. With an
ignore_code (LoveDA: K = 7, so 8 codes in 3 bits) 255 is a code of its own and decodes back to
255. Without one (toy, iSAID, OpenEarthMap, folder by default: num_codes = K, the paper's bits)
an ignore pixel is packed as code 0, `loss_weight` gives its label channels weight 0 in the
generator's loss, and decoding never yields 255.

Used by train_gen.py, sample.py and superres.py to turn uint8 pairs into the diffusion tensor
and back; everything else about pairs (resizing, augmentation, files) is in pairs.py.

    x = bits.pack(images, masks, meta)            # (B, 3 + nb, H, W) in [-1, 1]
    x = bits.pack_images(images)                  # (B, 3, H, W): pack's image channels alone
    y = bits.pack_masks(masks, meta)              # (B, nb, H, W): its label channels alone
    w = bits.loss_weight(masks, meta)             # None, or (B, 3 + nb, H, W): 0 = not learned
    images, masks = bits.unpack(x, meta)          # uint8 (B, H, W, 3), (B, H, W)
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

# The layout of every generator tensor, stated once: (B, RGB + C, H, W), channels 0..RGB-1 the
# image, RGB.. the C label channels (label_channels). pack / unpack / loss_weight follow it, and
# so does every script that splits a tensor (sample.py's margins; pairs.py's table of what a
# conditional generator generates and is given, pairs.target_and_condition_channels).
RGB = 3


def n_bits(num_codes):
    return max(1, math.ceil(math.log2(num_codes)))


def codes(meta):
    """(num_codes, ignore_code or None): the label code table of a dataset's meta.json."""
    K = meta['num_classes']
    if 'codes' in meta:
        n, ignore = meta['codes']['num_codes'], meta['codes']['ignore_code']
    else:  # meta.json from before the table: the old rule, an extra code iff train has ignore
        n, ignore = (K + 1, K) if meta['ignore_fraction']['train'] > 0 else (K, None)
    assert (n, ignore) in ((K, None), (K + 1, K)), f'bad code table {n}, {ignore} for K = {K}'
    return n, ignore


def num_codes(meta):
    """K, or K + 1 when the dataset gives ignore pixels a code of their own (K)."""
    return codes(meta)[0]


def label_channels(num_codes, encoding):
    assert encoding in {'bits', 'onehot', 'none'}, encoding
    return {'bits': n_bits(num_codes), 'onehot': num_codes, 'none': 0}[encoding]


def _codebook(num_codes, device):
    shifts = torch.arange(n_bits(num_codes) - 1, -1, -1, device=device)  # MSB first
    return ((torch.arange(num_codes, device=device)[:, None] >> shifts) & 1).float()  # (K, nb)


def encode(y, num_codes):
    """(B, H, W) long in [0, num_codes) -> (B, nb, H, W) float in {0, 1}."""
    return _codebook(num_codes, y.device)[y].permute(0, 3, 1, 2)  # (B, H, W, nb) -> (B, nb, H, W)


def _distances(x, book):
    """(B, n, H, W) squared distances of x (B, nb, H, W) to each code of book (K, nb), less the
    ||x||^2 term, the same for every code: ||x - b||^2 = ||x||^2 - 2 x.b + ||b||^2."""
    return book.pow(2).sum(1)[None, :, None, None] - 2 * torch.einsum('bnhw,kn->bkhw', x.float(), book)


def decode(x, num_codes):
    """(B, nb, H, W) float in [0, 1] -> (B, H, W) long: the nearest valid code (Euclidean)."""
    return _distances(x, _codebook(num_codes, x.device)).argmin(1)


def margin(x, num_codes, encoding='bits'):
    """(B, C, H, W) label channels in [-1, 1] -> (B, H, W): how far each pixel sits from a
    decision boundary, (d2^2 - d1^2) / 4 with d1, d2 the distances to the nearest and the
    second-nearest valid code on the +-1 scale (= d2^2 - d1^2 on decode's [0, 1] scale). For bits
    this is the smallest |bit| when the runner-up differs in that bit alone (always so when every
    code is valid); for one-hot, top-1 - top-2."""
    book = _codebook(num_codes, x.device) if encoding == 'bits' else torch.eye(num_codes, device=x.device)
    d = _distances((x.float().clamp(-1, 1) + 1) / 2, book).topk(2, dim=1, largest=False).values
    return d[:, 1] - d[:, 0]  # (B, H, W): second nearest - nearest


def onehot_encode(y, num_codes):
    return F.one_hot(y, num_codes).permute(0, 3, 1, 2).float()  # (B, K, H, W)


def onehot_decode(x, num_codes):
    return x.argmax(1)


def _labels(masks, meta):
    """uint8 masks (B, H, W) -> codes (B, H, W) long, and where they are real labels (bool)."""
    n, ignore_code = codes(meta)
    y = torch.as_tensor(np.asarray(masks)).long()
    ignore = y == meta['ignore_index']
    y = torch.where(ignore, 0 if ignore_code is None else ignore_code, y)  # uncoded: 0, weight 0
    if (y >= n).any():
        raise ValueError(f'mask values outside 0..{meta["num_classes"] - 1} (and '
                         f'{meta["ignore_index"]})')
    valid = ~ignore if ignore_code is None else torch.ones_like(ignore)  # a coded 255 is learned
    return y, valid


def pack_images(images):
    """uint8 images (B, H, W, 3) -> pack's image channels: (B, RGB, H, W) in [-1, 1]."""
    # contiguous NCHW: the permuted view is channels_last in memory, and a UNet fed that layout
    # keeps it in every conv, where on CPU bf16 it trains ~1.5x slower (docs/RESULTS.md, Speed)
    return torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1


def pack_masks(masks, meta, encoding='bits'):
    """uint8 masks (B, H, W) -> pack's label channels: (B, C, H, W) in {-1, +1}."""
    if encoding == 'none':
        raise ValueError("label_encoding 'none' has no label channels to pack a mask into")
    n, y = num_codes(meta), _labels(masks, meta)[0]
    y = encode(y, n) if encoding == 'bits' else onehot_encode(y, n)
    return y * 2 - 1


def pack(images, masks, meta, encoding='bits'):
    """uint8 images (B, H, W, 3) and masks (B, H, W) -> the (B, RGB + C, H, W) tensor in [-1, 1]:
    pack_images, then pack_masks (a conditional generator's target or condition is one of them)."""
    x = pack_images(images)
    if encoding == 'none':  # the image-only DDPM baseline of the paper's Tab. 1a
        return x
    return torch.cat([x, pack_masks(masks, meta, encoding)], dim=1)


def loss_weight(masks, meta, encoding='bits'):
    """The generator's per-element loss weight for pack's tensor: None when every element counts,
    else (B, 3 + C, H, W) float, 0 on the label channels of ignore pixels without a code."""
    if encoding == 'none':
        return None
    valid = _labels(masks, meta)[1]
    if valid.all():
        return None  # the plain mean: bit-identical to a run without ignore pixels
    B, H, W = valid.shape
    C = label_channels(num_codes(meta), encoding)
    return torch.cat([torch.ones(B, RGB, H, W), valid[:, None].float().expand(B, C, H, W)], 1)


def unpack(x, meta, encoding='bits'):
    """(B, 3 + C, H, W) in [-1, 1] -> uint8 images (B, H, W, 3) and masks (B, H, W) (None if 'none').

    Masks hold the nearest valid code's class; 255 only where the dataset has an ignore code."""
    x = x.detach().float().clamp(-1, 1).cpu()
    images = ((x[:, :RGB] + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
    if encoding == 'none':
        return images, None
    n, ignore_code = codes(meta)
    y01 = (x[:, RGB:] + 1) / 2
    y = decode(y01, n) if encoding == 'bits' else onehot_decode(y01, n)
    if ignore_code is not None:
        y[y == ignore_code] = meta['ignore_index']
    return images, y.byte().numpy()
