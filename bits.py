"""The label codec of SatSynth (paper Sec. 4.2, 4.5) and the pair I/O every stage shares.

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

Also here, because train_gen.py, superres.py, sample.py, seg.py and metrics.py all need them once:
the one resize function (area for images, mode for masks), the one joint flip/rot90 augmentation,
colourising, sample grids, and the pair-folder layout (images/<stem>.png + masks/<stem>.png).
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IGNORE_RGB = (255, 0, 255)  # colour of ignore pixels in previews (magenta is in no dataset palette)


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


def _mode_pool(masks, f):
    """Majority label in each f x f block of (N, H, W) masks (ties: the smaller label)."""
    N, H, W = masks.shape
    blocks = masks.reshape(N, H // f, f, W // f, f)
    best = np.zeros((N, H // f, W // f), np.int32) - 1
    out = np.zeros((N, H // f, W // f), masks.dtype)
    for c in np.unique(masks):
        count = (blocks == c).sum(axis=(2, 4))
        out[count > best] = c
        best = np.maximum(best, count)
    return out


def resize_pair(images, masks, size, chunk=256):
    """THE resize used by every stage: (N, H, W, 3) uint8 images and (N, H, W) masks -> size.

    Shrinking averages areas for images and takes the block majority (mode) for masks, so thin
    rare structures survive as well as they can; enlarging is bilinear / nearest. `size` is an int
    or (H, W). Works in chunks so a large memmapped set is never copied whole into float.
    """
    H, W = images.shape[1:3]
    h, w = (size, size) if isinstance(size, int) else size
    if (h, w) == (H, W):
        return np.ascontiguousarray(images), None if masks is None else np.ascontiguousarray(masks)
    out_i = np.empty((len(images), h, w, 3), np.uint8)
    out_m = None if masks is None else np.empty((len(images), h, w), np.uint8)
    for s in range(0, len(images), chunk):
        x = torch.as_tensor(np.array(images[s:s + chunk])).permute(0, 3, 1, 2).float()
        shrink = h <= H and w <= W
        mode = 'area' if shrink else 'bilinear'
        x = F.interpolate(x, size=(h, w), mode=mode, **({} if shrink else {'align_corners': False}))
        out_i[s:s + chunk] = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        if masks is None:
            continue
        m = np.asarray(masks[s:s + chunk])
        if shrink and H % h == 0 and W % w == 0 and H // h == W // w:
            out_m[s:s + chunk] = _mode_pool(m, H // h)
        else:  # 'nearest-exact' samples pixel centres, so an integer upscale stays aligned
            t = torch.as_tensor(np.array(m))[:, None].float()
            out_m[s:s + chunk] = F.interpolate(t, size=(h, w), mode='nearest-exact')[:, 0].byte().numpy()
    return out_i, out_m


def augment(images, masks, rng):
    """The same random flip/rot90 (one of the 8 dihedral maps) for each image and its mask."""
    images, masks = np.array(images), None if masks is None else np.array(masks)
    for i, k in enumerate(rng.integers(0, 8, size=len(images))):
        images[i] = np.rot90(images[i], k % 4, axes=(0, 1))  # square tiles keep their shape
        if masks is not None:
            masks[i] = np.rot90(masks[i], k % 4, axes=(0, 1))
        if k >= 4:
            images[i] = images[i][:, ::-1]
            if masks is not None:
                masks[i] = masks[i][:, ::-1]
    return images, masks


def colorize(mask, palette):
    """Index mask (..., H, W) -> uint8 RGB (..., H, W, 3); ignore (255) is magenta."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)
    lut[255] = IGNORE_RGB
    return lut[np.asarray(mask)]


def make_grid(images, masks, palette, nrow=8, extra=None, pad=2):
    """A grid with nrow samples per row; each sample shows [*extra,] image | colourised mask."""
    panels = list(extra or []) + [np.asarray(images)]
    if masks is not None:
        panels.append(colorize(masks, palette))
    N, H, W = panels[0].shape[:3]
    cell = np.concatenate([np.pad(p, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=255)
                           for p in panels], axis=2)  # (N, H + 2 pad, len(panels) * (W + 2 pad), 3)
    ncol = min(nrow, N)
    cell = np.concatenate([cell, np.full((-N % ncol,) + cell.shape[1:], 255, np.uint8)])
    R, h, w = len(cell) // ncol, cell.shape[1], cell.shape[2]
    grid = cell.reshape(R, ncol, h, w, 3).transpose(0, 2, 1, 3, 4)  # (R, h, ncol, w, 3)
    return np.ascontiguousarray(grid.reshape(R * h, ncol * w, 3))


def _save_atomic(img, path):
    img.save(path + '.tmp', format='PNG')
    os.replace(path + '.tmp', path)


def save_pair(folder, index, image, mask, palette):
    """Write images/{index:06d}.png and masks/{index:06d}.png (palette PNG), each atomically."""
    name = f'{index:06d}.png'
    os.makedirs(os.path.join(folder, 'images'), exist_ok=True)
    os.makedirs(os.path.join(folder, 'masks'), exist_ok=True)
    _save_atomic(Image.fromarray(np.asarray(image, np.uint8), 'RGB'), os.path.join(folder, 'images', name))
    m = Image.fromarray(np.asarray(mask, np.uint8), 'L').convert('P')  # 'P' keeps indices as they are
    m.putpalette(colorize(np.arange(256), palette).reshape(-1).tolist())
    _save_atomic(m, os.path.join(folder, 'masks', name))


def read_classes(folder):
    """The class description of a pair folder: meta.json, else classes.json."""
    for name in ('meta.json', 'classes.json'):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path) as f:
                d = json.load(f)
            missing = {'classes', 'palette'} - set(d)
            if missing:
                raise SystemExit(f'{path}: missing keys {sorted(missing)}')
            d.setdefault('ignore_index', 255)
            d.setdefault('num_classes', len(d['classes']))
            return d
    raise SystemExit(f'{folder}: no meta.json or classes.json describing the classes')


def load_pairs(folder):
    """All pairs of a pair folder -> uint8 images (N, H, W, 3), masks (N, H, W), stems."""
    mdir, idir = os.path.join(folder, 'masks'), os.path.join(folder, 'images')
    if not os.path.isdir(mdir) or not os.path.isdir(idir):
        raise SystemExit(f'{folder}: expected images/ and masks/ sub-folders')
    images_by_stem = {os.path.splitext(f)[0]: f for f in os.listdir(idir) if not f.endswith('.tmp')}
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(mdir) if not f.endswith('.tmp'))
    stems = [s for s in stems if s in images_by_stem]
    if not stems:
        raise SystemExit(f'{folder}: no image/mask pairs with matching stems')
    images, masks = [], []
    for s in stems:
        ipath, mpath = os.path.join(idir, images_by_stem[s]), os.path.join(mdir, s + '.png')
        try:
            m = Image.open(mpath)
            if m.mode not in ('P', 'L'):
                raise SystemExit(f'{mpath}: mask must be a single-channel index PNG, got mode {m.mode}')
            images.append(np.array(Image.open(ipath).convert('RGB')))
            masks.append(np.array(m))
        except OSError as e:
            raise SystemExit(f'{ipath} / {mpath}: unreadable ({e})')
        if images[-1].shape[:2] != masks[-1].shape or masks[-1].shape != masks[0].shape:
            raise SystemExit(f'{mpath}: size {masks[-1].shape} differs from its image or the folder')
    return np.stack(images), np.stack(masks), stems
