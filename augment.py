"""The training augmentations both trainers use, on uint8 batches of pairs: the random flip/rot90
of every training sample (train_gen.py, seg.py) and the paper's App. C baselines (Tab. 5: Cutout,
CutMix, Copy-Paste; seg.py's cutout / cutmix / copy_paste).

    images, masks = augment.augment(rng, images, masks)        # one flip/rot90 per pair
    images, masks = augment.apply_cutmix(images, masks, rng, p=0.5)

Images are (B, H, W, 3), masks (B, H, W) index masks (255 = ignore) of square tiles, as
pairs.load_dataset gives them; rng is a numpy Generator. Every function returns new arrays.
"""
import numpy as np
from scipy import ndimage


def augment(rng, *arrays):
    """The same random flip/rot90 (one of the 8 dihedral maps) for the i-th sample of every array.

    arrays: (N, H, W) masks or (N, H, W, 3) images of square tiles, e.g. images and masks, or a
    pair at two resolutions (G_SR's target and condition). Returns new arrays, in that order.
    """
    arrays = [np.array(a) for a in arrays]
    for i, k in enumerate(rng.integers(0, 8, size=len(arrays[0]))):
        for a in arrays:
            a[i] = np.rot90(a[i], k % 4, axes=(0, 1))  # square tiles keep their shape
            if k >= 4:
                a[i] = a[i][:, ::-1]
    return arrays


# The App. C baselines of the paper (Tab. 5), used by seg.py, on uint8 batches (B, H, W, 3) /
# (B, H, W): each hits a sample with probability p, keeps every pixel with the label it came with
# and returns new arrays. Partners come from the same batch; boxes are centred anywhere, so they
# may be clipped at the border.
MEAN_RGB = (124, 116, 104)  # round(255 x the ImageNet mean, fpn.IMAGENET_MEAN): 0 after preprocess


def apply_cutout(images, masks, rng, p, ignore_index=255):
    """Cutout (DeVries & Taylor 2017): a half-side square -> mean colour, ignore label."""
    images = images.copy()
    masks = masks.copy()
    B, H, W = masks.shape
    for i in np.flatnonzero(rng.random(B) < p):
        cy = rng.integers(H)  # the square's centre
        cx = rng.integers(W)
        ys = slice(max(cy - H // 4, 0), cy + H // 4)
        xs = slice(max(cx - W // 4, 0), cx + W // 4)
        images[i, ys, xs] = MEAN_RGB
        masks[i, ys, xs] = ignore_index
    return images, masks


def apply_cutmix(images, masks, rng, p, ignore_index=255):  # (ignore_index: same signature)
    """CutMix (Yun et al. 2019): a box of U(0, 1) of the area (lambda ~ Beta(1, 1)) is swapped."""
    out_images = images.copy()
    out_masks = masks.copy()
    partner = rng.permutation(len(masks))  # sample i takes its box from sample partner[i]
    B, H, W = masks.shape
    for i in np.flatnonzero(rng.random(B) < p):
        side = np.sqrt(rng.random())  # the box's side / the image's: its area ~ U(0, 1)
        cy = rng.integers(H)  # the box's centre
        cx = rng.integers(W)
        ys = slice(max(cy - int(H * side) // 2, 0), cy + int(H * side) // 2)
        xs = slice(max(cx - int(W * side) // 2, 0), cx + int(W * side) // 2)
        out_images[i, ys, xs] = images[partner[i], ys, xs]
        out_masks[i, ys, xs] = masks[partner[i], ys, xs]
    return out_images, out_masks


def apply_copy_paste(images, masks, rng, p, ignore_index=255, background=0):
    """Copy-Paste (Ghiasi et al. 2021): each connected region of a class other than the
    dataset's background (meta.json's background_class: 0 for iSAID and LoveDA, None for land
    cover sets such as OpenEarthMap and the toy data, where every class is pasted) of another
    sample is pasted with probability 1/2. Masks hold no instances, so a region stands in for an
    object; there is no scale jitter."""
    out_images = images.copy()
    out_masks = masks.copy()
    partner = rng.permutation(len(masks))  # sample i takes its regions from sample partner[i]
    for i in np.flatnonzero(rng.random(len(masks)) < p):
        source_mask = masks[partner[i]]
        paste = np.zeros(masks.shape[1:], bool)  # (H, W): the pixels pasted onto sample i
        for c in set(np.unique(source_mask)) - {background, ignore_index}:
            regions, n = ndimage.label(source_mask == c)  # (H, W) region ids 1..n, 0 elsewhere
            chosen = 1 + np.flatnonzero(rng.random(n) < 0.5)  # the ids of the pasted regions
            paste |= np.isin(regions, chosen)
        out_images[i][paste] = images[partner[i]][paste]
        out_masks[i][paste] = source_mask[paste]
    return out_images, out_masks
