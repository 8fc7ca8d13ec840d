"""The procedural toy dataset: aerial-looking 6-class scenes made from smooth random fields, so
that every stage runs on a laptop CPU with nothing downloaded (prepare.py's default reader).

    image, mask = toy_scene(np.random.default_rng(seed), 256)   # uint8 (S, S, 3), (S, S)

Split out of prepare.py (which imports TOY and toy_scene from here): the scene generator is a
responsibility of its own, beside prepare.py's readers and patching. Imports nothing from the
project.
"""
import numpy as np
from scipy import ndimage

TOY = dict(classes='bare_soil building road water tree agriculture'.split(), palette=[
    [190, 150, 100], [230, 25, 75], [255, 225, 25], [0, 90, 255], [20, 130, 40], [170, 255, 100]],
    background_class=None)  # every class is land cover: none is a background
ROOFS = [[178, 84, 62], [150, 150, 155], [205, 200, 190], [110, 95, 85], [190, 120, 80]]  # toy
CROPS = [[112, 146, 62], [172, 160, 92], [92, 128, 58], [190, 178, 118], [140, 160, 80]]  # toy


def smooth_noise(rng, S, scale):
    """A smooth random field (S, S), zero mean and unit std, with features of about `scale` px:
    coarse white noise upsampled by a separable cubic B-spline (no BLAS, no scipy: fast)."""
    z = rng.standard_normal((S // scale + 4,) * 2).astype(np.float32)
    x = np.arange(S, dtype=np.float32) / scale + 1
    i, f = x.astype(int), x % 1
    w = [(1 - f) ** 3 / 6, (3 * f ** 3 - 6 * f ** 2 + 4) / 6,
         (-3 * f ** 3 + 3 * f ** 2 + 3 * f + 1) / 6, f ** 3 / 6]
    z = sum(w[k][:, None] * z[i + k - 1] for k in range(4))  # (S, n): rows first
    z = sum(w[k][None, :] * z[:, i + k - 1] for k in range(4))  # (S, S)
    return (z - z.mean()) / (z.std() + 1e-6)


def toy_scene(rng, S=256):
    """One aerial-like scene: uint8 image (S, S, 3) and mask (S, S) with the 6 TOY classes, painted
    back to front (soil, fields, trees, water, roads, buildings). Sizes, in pixels of a 256 scene,
    let roads (>= 8 px) and buildings (>= 16 px) survive an 8x shrink (a CPU generator's 32x32)."""
    s, yy, xx = S / 256, *np.mgrid[0:S, 0:S].astype(np.float32)
    mask = np.zeros((S, S), np.uint8)  # 0 = bare soil everywhere to begin with
    img = np.array([160, 134, 96]) + rng.normal(0, 8, 3) + (
        10 * smooth_noise(rng, S, 24) + 5 * smooth_noise(rng, S, 3))[..., None]
    urban = rng.random() < 0.35  # more roads and buildings, fewer fields
    # agriculture: a rotated grid of parcels, each a crop with row texture or fallow soil
    th, n = rng.uniform(0, np.pi), 64 * 64  # grid angle; parcel ids are iu * 64 + iv < n
    iu = ((xx * np.cos(th) + yy * np.sin(th) + 2 * S) / (rng.uniform(50, 100) * s)).astype(int)
    iv = ((yy * np.cos(th) - xx * np.sin(th) + 2 * S) / (rng.uniform(50, 100) * s)).astype(int)
    parcel = iu * 64 + iv  # (S, S)
    crop = (rng.random(n) < (0.3 if urban else 0.7))[parcel]
    a = (rng.integers(0, 2, n) * np.pi / 2 + th)[parcel][crop]  # rows along or across the grid
    rows = np.sin((xx[crop] * np.cos(a) + yy[crop] * np.sin(a)) * 2 * np.pi
                  / (rng.uniform(5, 9, n) * s)[parcel][crop])
    colour = (rng.choice(CROPS, n) + rng.normal(0, 6, (n, 3)))[parcel][crop]
    img[crop], mask[crop] = colour + 12 * rows[:, None], 5
    # trees: medium blobs gated by a large-scale field, so canopies clump; bumpy crowns
    t = smooth_noise(rng, S, 10) + 1.2 * smooth_noise(rng, S, 48)
    trees = t > np.quantile(t, rng.uniform(0.84, 0.93))
    crowns = 14 * smooth_noise(rng, S, 3)[trees][:, None]
    img[trees], mask[trees] = [48, 78, 42] + rng.normal(0, 5, 3) + crowns, 4
    # water: a lake (a thresholded smooth field: smooth shores) and/or a river; light shallows
    w = smooth_noise(rng, S, 48)
    water = w > np.quantile(w, rng.uniform(0.88, 0.97) if rng.random() < 0.5 else 1)
    if rng.random() < 0.25:
        centre = rng.uniform(0.2, 0.8) * S + rng.uniform(10, 30) * s * np.sin(
            xx * 2 * np.pi / (rng.uniform(150, 300) * s) + rng.uniform(0, 6))
        river = np.abs(yy - centre) < (rng.uniform(8, 16) + 3 * smooth_noise(rng, S, 24)) * s
        water |= river.T if rng.random() < 0.5 else river
    depth = np.clip(ndimage.distance_transform_edt(water)[water] / (8 * s), 0, 1)[:, None]
    img[water], mask[water] = ([38, 66, 84] + rng.normal(0, 5, 3)) * (1.25 - 0.25 * depth), 3
    # roads: 1-2 through-roads and side roads branching off at right angles: a connected net
    segs = []
    for _ in range(1 + (urban and rng.random() < 0.7)):
        a, c = rng.uniform(0, np.pi), rng.uniform(0.25, 0.75, 2) * S
        d = np.array([np.sin(a), np.cos(a)])
        segs.append((c - 1.5 * S * d, c + 1.5 * S * d, rng.uniform(9, 13) * s))
    for _ in range(rng.integers(0, 2) + 2 * urban):
        p, q, _ = segs[rng.integers(len(segs))]
        d, start = (q - p) / np.linalg.norm(q - p), p + rng.uniform(0.4, 0.6) * (q - p)
        end = start + np.array([-d[1], d[0]]) * rng.choice([-1, 1]) * rng.uniform(60, 180) * s
        segs.append((start, end, rng.uniform(8, 10) * s))
    road = np.zeros((S, S), bool)
    for p, q, width in segs:  # the pixels closer to the segment p-q than width / 2
        d = q - p
        t = np.clip(((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / (d @ d), 0, 1)
        road |= np.hypot(yy - p[0] - t * d[0], xx - p[1] - t * d[1]) < width / 2
    asphalt = [128, 126, 122] + rng.normal(0, 6, 3)
    img[road], mask[road] = asphalt + 4 * smooth_noise(rng, S, 4)[road][:, None], 2
    # buildings: rotated rectangles beside the roads, facing them, with gable roofs (half darker)
    house, todo = np.zeros((S, S), bool), rng.integers(6, 14) if urban else rng.integers(0, 5)
    for _ in range(3 * todo):  # placement attempts
        p, q, width = segs[rng.integers(len(segs))]
        d = (q - p) / np.linalg.norm(q - p)
        nrm, (L, B) = np.array([-d[1], d[0]]) * rng.choice([-1, 1]), rng.uniform(16, 30, 2) * s
        c = p + rng.uniform() * (q - p) + nrm * (width / 2 + B / 2 + rng.uniform(3, 8) * s)
        r = int(L / 2 + B / 2) + 1
        y0, x0 = c.astype(int) - r
        if todo == 0 or min(y0, x0) < 0 or max(y0, x0) + 2 * r > S:
            continue
        win = np.s_[y0:y0 + 2 * r, x0:x0 + 2 * r]  # work in a window around the building only
        du = (yy[win] - c[0]) * d[0] + (xx[win] - c[1]) * d[1]
        dv = (yy[win] - c[0]) * nrm[0] + (xx[win] - c[1]) * nrm[1]
        b = (np.abs(du) < L / 2) & (np.abs(dv) < B / 2)
        if not (b & (road[win] | water[win] | house[win])).any():
            roof = rng.choice(ROOFS) + rng.normal(0, 6, 3)
            img[win][b], todo = roof * np.where(dv[b] > 0, 1.0, 0.8)[:, None], todo - 1
            house[win] |= b
    sun = rng.uniform(0, 2 * np.pi)  # shadows fall on the side away from the sun
    shadow = np.roll(house, (round(4 * s * np.sin(sun)), round(4 * s * np.cos(sun))), (0, 1))
    img[shadow & ~house] *= 0.55
    mask[house] = 1
    # per-scene illumination and colour jitter, a slow brightness gradient, sensor noise
    img *= rng.uniform(0.8, 1.15) * (1 + rng.normal(0, 0.03, 3)) * (
        1 + 0.08 * smooth_noise(rng, S, 64))[..., None]
    return np.clip(img + rng.normal(0, 3, (S, S, 3)), 0, 255).astype(np.uint8), mask
