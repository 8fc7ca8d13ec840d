"""Image-mask pair data: what every stage does with pairs of uint8 images and index masks.

    meta, data = pairs.load_dataset('data/toy', size=32)   # {split: (images, masks)}, prepare.py's
    images, masks = pairs.resize_pair(images, masks, 64)  # THE resize (area/centre down, bilinear/
                                                          # nearest up); augment.py flips and mixes
    pairs.save_pair('out', 7, image, mask, palette)       # out/images/000007.png + masks/...
    images, masks, stems = pairs.load_pairs('out')        # a pair folder back into arrays
    pairs.save_png(pairs.make_grid(images, masks, palette), 'grid.png')
    ckpt = pairs.load_checkpoint('out/ckpt.pt', 'train_gen.py', ['ema'])  # any bad file: one line
    pairs.export_split('data/toy', 'out/real', 32)        # a prepared split -> a pair folder
    c = pairs.condition('lowres', low_images, low_masks, 64, meta)  # what G_SR is conditioned on
    target, given = pairs.target_and_condition_channels('image', 2)  # what a generator denoises

    python pairs.py export_split data/toy_split64_oracle out-exp/oracle 32   # the same, in a shell
    python pairs.py export_split data/toy out-val-toy-32 32 val   # SPLIT (default train): val

Two layouts (docs/DATASETS.md): a prepared dataset, data_dir/<name>/{train,val}_{images,masks}.npy
(uint8 (N, P, P, 3) and (N, P, P), memory-mapped) + meta.json, written by prepare.py; and a pair
folder, images/<stem>.png + masks/<stem>.png (index PNG, 0..K-1 and 255 = ignore) + meta.json,
written by sample.py and superres.py and readable by seg.py and metrics.py. Every file is written
to a temporary name and renamed, so a killed run never leaves a half-written one. bits.py turns
the pairs into the diffusion tensor; this module imports only it, to build a generator's condition
(`condition`) in one place for training and for sampling. Checkpoints are written and read here
too, so every stage refuses a bad one with the same line.
"""
import hashlib
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import bits

IGNORE_RGB = (255, 0, 255)  # colour of ignore pixels in previews (magenta is in no dataset palette)


def _centre_labels(masks, fy, fx):
    """The label at the centre of each fy x fx block of (N, H, W) masks: pixel (fy // 2, fx // 2)
    of the block. For an even factor the centre lies between the four central pixels and this is
    the lower-right one (0.5 px off the centre in each axis, the least possible), the pixel
    'nearest-exact' picks: floor((i + 0.5) * f) = i * f + f // 2. Returns a strided view."""
    return masks[:, fy // 2::fy, fx // 2::fx]


def resize_pair(images, masks, size, chunk=256):
    """THE resize used by every stage: (N, H, W, 3) uint8 images and (N, H, W) masks -> size.

    Shrinking averages areas for images; a mask takes, per output pixel, the label of the input
    pixel at the centre of the area that pixel averages (_centre_labels; for an even factor the
    lower-right of the central 2 x 2). That is 'nearest-exact', so masks follow one rule at every
    size, integer or not, up or down, and an integer upscale puts low-res pixel (i, j) back on the
    block it came from. Centre sampling keeps class shares: over object positions each class
    keeps its area share in expectation, whatever its size. A block majority (mode) is biased
    toward the majority class by construction: an object survives only where it holds >= half of
    a block, so small objects shrink and a 2 px line vanishes (at 2x at an odd offset, at 4x
    always): about -27% of each class of 3-10 px objects at 2x and 4x on iSAID-like masks (tests/
    test_pairs.py); breaking its ties toward the rarer class overshoots (+24% at 2x) instead. A
    random pixel per block keeps shares too, but frays every boundary. Enlarging is bilinear /
    nearest. `size` is an int or (H, W). Either images or masks may be None (and come back None).
    Works in chunks, so a large memmapped set is never copied whole into float.
    """
    reference = masks if images is None else images  # the array that says N, H and W
    H, W = reference.shape[1:3]
    if isinstance(size, int):
        h, w = size, size
    else:
        h, w = size
    if (h, w) == (H, W):  # nothing to resize (a copy only of an array that is not contiguous)
        same_images = None if images is None else np.ascontiguousarray(images)
        same_masks = None if masks is None else np.ascontiguousarray(masks)
        return same_images, same_masks
    shrink = h <= H and w <= W
    out_images = None if images is None else np.empty((len(reference), h, w, 3), np.uint8)
    out_masks = None if masks is None else np.empty((len(reference), h, w), np.uint8)
    for start in range(0, len(reference), chunk):
        part = slice(start, start + chunk)
        if images is not None:
            batch = torch.as_tensor(np.array(images[part]))  # (B, H, W, 3) uint8
            batch = batch.permute(0, 3, 1, 2).float()  # (B, 3, H, W)
            if shrink:
                batch = F.interpolate(batch, size=(h, w), mode='area')
            else:
                batch = F.interpolate(batch, size=(h, w), mode='bilinear', align_corners=False)
            batch = batch.round().clamp(0, 255).byte().permute(0, 2, 3, 1)  # (B, h, w, 3)
            out_images[part] = batch.numpy()
        if masks is None:
            continue
        if shrink and H % h == 0 and W % w == 0:  # integer factors: a strided read, no copy
            out_masks[part] = _centre_labels(masks[part], H // h, W // w)
        else:  # 'nearest-exact' samples pixel centres, so an integer upscale stays aligned
            mask_batch = torch.as_tensor(np.array(masks[part]))[:, None].float()  # (B, 1, H, W)
            mask_batch = F.interpolate(mask_batch, size=(h, w), mode='nearest-exact')
            out_masks[part] = mask_batch[:, 0].byte().numpy()  # (B, h, w)
    return out_images, out_masks


def colorize(mask, palette):
    """Index mask (..., H, W) -> uint8 RGB (..., H, W, 3); ignore (255) is magenta."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)
    lut[255] = IGNORE_RGB
    return lut[np.asarray(mask)]


def make_grid(images, masks, palette, nrow=8, extra=None, pad=2, min_tile=0):
    """A grid with nrow samples per row; each sample shows [*extra,] image | colourised mask.
    Panels smaller than min_tile pixels are enlarged by an integer factor, by nearest neighbour
    (each pixel a block), so that 32x32 pairs stay viewable: min_tile=128 shows them at 4x."""
    panels = list(extra or []) + [np.asarray(images)]
    if masks is not None:
        panels.append(colorize(masks, palette))
    zoom = max(1, -(-min_tile // panels[0].shape[1]))  # ceil(min_tile / height)
    panels = [p.repeat(zoom, axis=1).repeat(zoom, axis=2) for p in panels]
    N = len(panels[0])
    padded = [np.pad(p, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=255)
              for p in panels]  # a white border around every panel
    cell = np.concatenate(padded, axis=2)  # (N, H + 2 pad, len(panels) * (W + 2 pad), 3)
    ncol = min(nrow, N)
    blanks = np.full((-N % ncol,) + cell.shape[1:], 255, np.uint8)  # white, to fill the last row
    cell = np.concatenate([cell, blanks])
    R = len(cell) // ncol  # rows of the grid
    h, w = cell.shape[1:3]
    grid = cell.reshape(R, ncol, h, w, 3).transpose(0, 2, 1, 3, 4)  # (R, h, ncol, w, 3)
    return np.ascontiguousarray(grid.reshape(R * h, ncol * w, 3))


def save_png(image, path):
    """Write a PIL image or a uint8 array (H, W[, 3]) as PNG: to path.tmp, then renamed."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image, np.uint8))
    image.save(path + '.tmp', format='PNG')
    os.replace(path + '.tmp', path)


def save_text(text, path):
    """Write a text file atomically: to path.tmp, then renamed."""
    with open(path + '.tmp', 'w') as f:
        f.write(text)
    os.replace(path + '.tmp', path)


def save_npz(path, **arrays):
    """np.savez, atomically (to a file object: np.savez would append '.npz' to path.tmp)."""
    with open(path + '.tmp', 'wb') as f:
        np.savez(f, **arrays)
    os.replace(path + '.tmp', path)


def save_json(obj, path, indent=1):
    """Write strict JSON (NaN, e.g. the IoU of an absent class, becomes null) atomically."""
    text = json.dumps(obj)  # NaN and infinities come out as the bare words NaN, Infinity ...
    strict = json.loads(text, parse_constant=lambda word: None)  # ... which read back as None
    save_text(json.dumps(strict, indent=indent) + '\n', path)


def load_dataset(path, size=0, splits=('train', 'val')):
    """A prepared dataset (prepare.py) -> meta, {split: (images (N, S, S, 3), masks (N, S, S))}.

    The arrays stay memory-mapped at the prepared patch size P; with size > 0 and != P each split
    is resized once with resize_pair (read in chunks, so the full-size set is never in memory).
    Anything missing or malformed exits with one line naming the file.
    """
    try:
        with open(os.path.join(path, 'meta.json')) as f:
            meta = json.load(f)
        data = {}
        for s in splits:
            images = np.load(os.path.join(path, f'{s}_images.npy'), mmap_mode='r')
            masks = np.load(os.path.join(path, f'{s}_masks.npy'), mmap_mode='r')
            data[s] = (images, masks)
    except (OSError, ValueError) as e:  # missing, truncated or not an .npy
        raise SystemExit(f'{path}: not a prepared dataset, run prepare.py first ({e})')
    for s, (images, masks) in data.items():
        P = images.shape[1] if images.ndim == 4 else -1
        if images.dtype != np.uint8 or masks.dtype != np.uint8 or images.shape[1:] != (P, P, 3) \
                or masks.shape != images.shape[:3]:
            raise SystemExit(f'{path}/{s}_*.npy: want uint8 images (N, P, P, 3) and masks '
                             f'(N, P, P), got {images.dtype} {images.shape}, {masks.dtype} '
                             f'{masks.shape}; re-run prepare.py')
        if len(images) == 0:  # else a sampler fails far from here (rng.integers: high <= 0)
            raise SystemExit(f'{path}/{s}_images.npy: 0 patches, an empty {s} split; re-run '
                             'prepare.py, which says why')
        if size and size != P:
            data[s] = resize_pair(images, masks, size)
    return meta, data


def check_pair_folder(folder, info, keys, config, master_process=True):
    """Claim a pair folder for a (possibly resumed) run of sample.py or superres.py.

    An existing meta.json must agree with `info` on `keys` (the generator's weights_digest, the
    sampler and the seed), or the folder would silently mix two runs; then the master (re)writes
    meta.json and config.json.
    """
    path = os.path.join(folder, 'meta.json')
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diff = [f'{k} {old.get(k)!r} there, {info.get(k)!r} now' for k in keys
                if old.get(k) != info.get(k)]
        if diff:
            raise SystemExit(f"{path}: the folder holds pairs of another run ({'; '.join(diff)}); "
                             "use another --out_dir, or the same checkpoint and settings")
    if master_process:
        os.makedirs(folder, exist_ok=True)
        save_json(info, path)
        save_json(config, os.path.join(folder, 'config.json'))


def pair_done(folder, index):
    """Both files of pair `index` exist (each was written atomically, so each is complete)."""
    return all(os.path.exists(os.path.join(folder, d, f'{index:06d}.png'))
               for d in ('images', 'masks'))


def read_pair(folder, index):
    """uint8 image (H, W, 3) and mask (H, W) of pair `index` of a folder written by save_pair."""
    image = np.array(Image.open(os.path.join(folder, 'images', f'{index:06d}.png')))
    mask = np.array(Image.open(os.path.join(folder, 'masks', f'{index:06d}.png')))
    return image, mask


def read_margin(folder, stem):
    """The bit margin (H, W) in [0, 1] of pair `stem` (sample.py --save_margin), 8-bit steps."""
    path = os.path.join(folder, 'margins', f'{stem}.png')
    try:
        return np.array(Image.open(path)).astype(np.float32) / 255
    except OSError as e:
        raise SystemExit(f'{path}: unreadable ({e}); sample with --save_margin=True')


def save_pair(folder, index, image, mask, palette, margin=None):
    """Write images/{index:06d}.png and masks/{index:06d}.png (palette PNG), each atomically;
    with `margin` (H, W) in [0, 1] first margins/{index:06d}.png (round(255 x margin), 8 bit).
    A str index is used as the stem as it is."""
    name = f'{index}.png' if isinstance(index, str) else f'{index:06d}.png'
    if margin is not None:  # before the pair: a done pair (pair_done) then has its margin
        os.makedirs(os.path.join(folder, 'margins'), exist_ok=True)
        margin_8bit = np.clip(np.asarray(margin, np.float64), 0, 1) * 255
        margin_8bit = np.round(margin_8bit).astype(np.uint8)
        save_png(Image.fromarray(margin_8bit, 'L'), os.path.join(folder, 'margins', name))
    os.makedirs(os.path.join(folder, 'images'), exist_ok=True)
    os.makedirs(os.path.join(folder, 'masks'), exist_ok=True)
    image_png = Image.fromarray(np.asarray(image, np.uint8), 'RGB')
    save_png(image_png, os.path.join(folder, 'images', name))
    mask_png = Image.fromarray(np.asarray(mask, np.uint8), 'L').convert('P')  # 'P' keeps indices
    mask_png.putpalette(colorize(np.arange(256), palette).reshape(-1).tolist())  # for viewers
    save_png(mask_png, os.path.join(folder, 'masks', name))


def default_palette(K):
    """K distinct colours for classes given without a palette: PASCAL VOC's colour map (class 0
    black; bit 3 b + c of the index sets bit 7 - b of channel c), so never the ignore magenta."""
    palette = []
    for k in range(K):
        colour = [0, 0, 0]
        for b in range(8):  # the index's bits, three at a time, fill each channel from its top bit
            for c in range(3):
                bit = (k >> (3 * b + c)) & 1
                colour[c] += bit << (7 - b)
        palette.append(colour)
    return palette


def _is_palette(palette, num_classes):
    """A list of num_classes [r, g, b] lists of ints in 0..255."""
    if not isinstance(palette, list) or len(palette) != num_classes:
        return False
    for colour in palette:
        if not isinstance(colour, list) or len(colour) != 3:
            return False
        if not all(type(v) is int and 0 <= v < 256 for v in colour):
            return False
    return True


def read_classes(folder, names=('meta.json', 'classes.json')):
    """The class description of a pair folder: meta.json, else classes.json (the first of `names`
    that exists), with `classes`, `palette` and `ignore_index` (default 255). A class map
    {"0": "name", ...} or a list of names will do too; without a palette the classes get
    default_palette(K)."""
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            text = f.read()
        try:
            description = json.loads(text)
        except ValueError:
            description = None  # not JSON: reported below
        if isinstance(description, list):  # ["background", "tree"]
            description = {'classes': description}
        elif isinstance(description, dict) and set(description) == {
                str(k) for k in range(len(description))}:  # {"0": "background", "1": "tree"}
            description = {'classes': [description[str(k)] for k in range(len(description))]}
        class_names = None
        if isinstance(description, dict):
            class_names = description.get('classes')
        if isinstance(class_names, list) and class_names and all(
                isinstance(c, str) for c in class_names):
            palette = description.setdefault('palette', default_palette(len(class_names)))
            if _is_palette(palette, len(class_names)):
                description.setdefault('ignore_index', 255)
                description.setdefault('num_classes', len(class_names))
                return description
        want = ('{"classes": ["background", "tree"], "palette": [[0,0,0],[0,128,0]]} (palette '
                'optional), or {"0": "background", "1": "tree"}, or ["background", "tree"]')
        raise SystemExit(f'{path}: want {want}; got {" ".join(text.split())[:80]}')
    raise SystemExit(f'{folder}: no meta.json or classes.json describing the classes')


def load_pairs(folder):
    """All pairs of a pair folder -> uint8 images (N, H, W, 3), masks (N, H, W), stems."""
    mask_dir = os.path.join(folder, 'masks')
    image_dir = os.path.join(folder, 'images')
    if not os.path.isdir(mask_dir) or not os.path.isdir(image_dir):
        raise SystemExit(f'{folder}: expected images/ and masks/ sub-folders')
    image_file_of = {}  # {stem: its image's file name, any extension}
    for f in os.listdir(image_dir):
        if not f.endswith('.tmp'):  # (a .tmp is a file being written)
            image_file_of[os.path.splitext(f)[0]] = f
    mask_stems = sorted(os.path.splitext(f)[0] for f in os.listdir(mask_dir)
                        if not f.endswith('.tmp'))
    stems = [s for s in mask_stems if s in image_file_of]
    if not stems:
        raise SystemExit(f'{folder}: no image/mask pairs with matching stems')
    images = []
    masks = []
    for s in stems:
        image_path = os.path.join(image_dir, image_file_of[s])
        mask_path = os.path.join(mask_dir, s + '.png')
        try:
            mask_png = Image.open(mask_path)
            if mask_png.mode not in ('P', 'L'):
                raise SystemExit(f'{mask_path}: mask must be a single-channel index PNG, got '
                                 f'mode {mask_png.mode}')
            images.append(np.array(Image.open(image_path).convert('RGB')))
            masks.append(np.array(mask_png))
        except OSError as e:
            raise SystemExit(f'{image_path} / {mask_path}: unreadable ({e})')
        if images[-1].shape[:2] != masks[-1].shape or masks[-1].shape != masks[0].shape:
            raise SystemExit(f'{mask_path}: size {masks[-1].shape} differs from its image or the '
                             'folder')
    return np.stack(images), np.stack(masks), stems


# --- checkpoints: every stage writes and reads them through these -----------------------------

def nonfinite(state_dict):
    """Names of the floating-point tensors of a state dict that hold a NaN or an inf."""
    return [k for k, v in state_dict.items() if v.is_floating_point() and not v.isfinite().all()]


def weights_digest(state_dict):
    """A short sha256 of a state dict's names and values: what made a pair folder."""
    h = hashlib.sha256()
    for k, v in sorted(state_dict.items()):
        h.update(k.encode() + v.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _first_three(names):
    """'a, b, c, ...': the first three names, for an error line."""
    text = ', '.join(names[:3])
    if len(names) > 3:
        text += ', ...'
    return text


def save_checkpoint(checkpoint, path, nets=('model',)):
    """torch.save to path.tmp, then renamed: never a half-written file, and never a model with
    non-finite weights in place of the last good checkpoint (exits naming them instead)."""
    bad = [f'{n}.{k}' for n in nets for k in nonfinite(checkpoint[n])]
    if bad:
        raise SystemExit(f'{path}: not written: non-finite weights in {len(bad)} tensors '
                         f'({_first_three(bad)}); the last good checkpoint stays')
    torch.save(checkpoint, path + '.tmp')
    os.replace(path + '.tmp', path)


def load_checkpoint(path, what, keys, device='cpu'):
    """torch.load(weights_only=True) of a checkpoint dict with `keys`; whatever the file is
    (missing, empty, truncated, random bytes, another program's), one line naming it, or exit.
    The networks in it ('model', 'ema') must be finite."""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # (the loader's own text suggests weights_only=False: not here)
        if isinstance(e, OSError):  # missing, a folder, no permission
            why = e.strerror
        elif os.path.getsize(path) == 0:
            why = 'an empty file'
        else:
            why = f'truncated or not a checkpoint ({type(e).__name__})'
        raise SystemExit(f'{path}: {why}; want a {what} checkpoint') from None
    if isinstance(checkpoint, dict):
        missing = [k for k in keys if k not in checkpoint]
    else:
        missing = keys
    if missing:
        raise SystemExit(f'{path}: not a {what} checkpoint (no {", ".join(missing)})')
    bad = [f'{n}.{k}' for n in ('model', 'ema') if n in keys for k in nonfinite(checkpoint[n])]
    if bad:
        raise SystemExit(f'{path}: non-finite weights in {len(bad)} tensors ({_first_three(bad)}): '
                         'the run that wrote it diverged; use an earlier checkpoint')
    return checkpoint


# What a generator is conditioned on: train_gen.py's `cond`, saved in its checkpoint.
#   'none':   G, the joint generator of (image, mask) pairs (sample.py)
#   'lowres': G_SR, conditioned on the pair at image_size // scale (superres.py; paper Sec. 4.4)
#   'image':  masks given an image: SegDiff (Amit et al. 2021), the paper's Tab. 1b baseline
#   'mask':   images given a mask: new images for given layouts (FreeMask, ControlNet family)
CONDS = ('none', 'lowres', 'image', 'mask')


def target_and_condition_channels(cond, n_label):
    """Which channels of bits.pack's tensor (RGB image channels, then n_label label channels) a
    generator of kind `cond` denoises, and which it is given: (target, given), two slices of
    those channels, given None for G. G and G_SR denoise all of them (G_SR is given all of them
    too, of the low-res pair); 'image' denoises the label channels given the image channels of
    the same pair, 'mask' the other way round. The one table train_gen.py sizes its UNet by
    (in = out = the target's channels, cond_channels the given ones) and slices its batches by."""
    image = slice(0, bits.RGB)
    labels = slice(bits.RGB, bits.RGB + n_label)
    pair = slice(0, bits.RGB + n_label)
    if cond == 'none':
        return pair, None
    if cond == 'lowres':
        return pair, pair
    if cond == 'image':
        return labels, image
    if cond == 'mask':
        return image, labels
    raise ValueError(f'cond must be one of {CONDS}, got {cond!r}')


def condition(cond, images, masks, size, meta, encoding='bits'):
    """The condition a generator of kind `cond` is given, from uint8 pairs (B, h, w, 3),
    (B, h, w), as channels of bits.pack's tensor at size x size in [-1, 1] (the `given` slice of
    target_and_condition_channels): None for 'none'; for 'lowres' the low-res pair resized to
    size and packed whole (bits.pack: (B, RGB + label channels, size, size)); for 'image' the
    image alone (bits.pack_images: (B, RGB, size, size); masks may be None), for 'mask' the mask
    alone (bits.pack_masks: (B, label channels, size, size); images may be None), of the very
    pair the target comes from, resized only if not at size already. The UNet concatenates it to
    its noisy input at every step (SR3; improved-diffusion's SuperResModel).

    The one builder for training (train_gen.py) and upsampling (superres.py), so G_SR is fed at
    sampling time exactly what it learned from. Images go up bilinearly; masks by nearest
    neighbour on the class codes, which are written as bits only afterwards. Bilinear bit planes
    would blend codes 01 and 10 into (0.5, 0.5) along every boundary, a point as close to 00 and
    11 (other classes) as to either; nearest keeps the condition on valid codes, the kind of mask
    G's samples decode to. Both sample at pixel centres (align_corners=False, 'nearest-exact' in
    resize_pair), so with an integer scale low-res pixel (i, j) lands on the block it was averaged
    from: no shift.
    """
    if cond == 'none':
        return None
    if cond == 'lowres':
        return bits.pack(*resize_pair(images, masks, size), meta, encoding)
    if cond == 'image':
        return bits.pack_images(resize_pair(images, None, size)[0])
    if cond == 'mask':
        return bits.pack_masks(resize_pair(None, masks, size)[1], meta, encoding)
    raise ValueError(f'cond must be one of {CONDS}, got {cond!r}')


def pair_tensor(cond, x, given, n_label):
    """A generator's output x (B, target channels, H, W) as the whole pair it stands for, in
    bits.pack's layout (B, RGB + n_label, H, W), for bits.unpack: G's and G_SR's outputs are
    whole pairs already; for 'image' and 'mask' x fills the target channels and their condition
    `given` (pairs.condition) the others, e.g. the given image beside the sampled label channels."""
    if cond in ('none', 'lowres'):
        return x
    target, given_channels = target_and_condition_channels(cond, n_label)
    B, _, H, W = x.shape
    pair = torch.empty(B, bits.RGB + n_label, H, W, device=x.device)
    pair[:, target] = x
    pair[:, given_channels] = given
    return pair


def checkpoint_cond(checkpoint):
    """A train_gen.py checkpoint's `cond`; one from before the setting existed has only `scale`
    (1: G, > 1: G_SR), which decided it then."""
    if 'cond' in checkpoint:
        return checkpoint['cond']
    return 'lowres' if checkpoint.get('scale', 1) > 1 else 'none'


def export_split(dataset_dir, out_dir, size, split='train'):
    """Write a prepared dataset's split (prepare.py) as a pair folder at size x size (resize_pair,
    as every stage resizes), unless out_dir/meta.json exists: it is written last, so it marks a
    finished export. experiments.sh lowdata makes its oracle so: real pairs the generator never
    saw, at the generator's resolution as D is."""
    if os.path.exists(os.path.join(out_dir, 'meta.json')):
        return
    meta, data = load_dataset(dataset_dir, size=size, splits=(split,))
    images, masks = data[split]
    for index in range(len(images)):
        save_pair(out_dir, index, images[index], masks[index], meta['palette'])
    source = f'the {split} split of {dataset_dir} at {size}'
    save_json(dict(meta, source=source), os.path.join(out_dir, 'meta.json'))


if __name__ == '__main__':
    # One command, so that experiments.sh runs no Python of its own (no configurator here, which
    # the pair-data module does not import: three or four plain arguments). SPLIT val exports the
    # real val pairs, e.g. for sample.py's SegDiff evaluation (its in_dir)
    usage = ('usage: python pairs.py export_split DATASET_DIR OUT_DIR SIZE [SPLIT: train (the '
             'default) or val]')
    args = sys.argv[1:]
    if len(args) not in (4, 5) or args[0] != 'export_split' or not args[3].isdigit() \
            or args[4:] not in ([], ['train'], ['val']):
        raise SystemExit(f"{usage} (got: {' '.join(args) or 'no arguments'})")
    export_split(args[1], args[2], int(args[3]), *args[4:])
