"""Summarise segmentation runs over seeds: the paper's Fig. 5 (mIoU vs R), Tab. 5 and Tab. 6 / Fig. 7.

Reads  <sweep_dir>/<label>/<anything>/results.json, written by seg.py (one folder per seed), and
       data_dir/<dataset>/meta.json + train_masks.npy: the real training patches.
Writes <sweep_dir>/report.json, report.md (the tables below) and gain_vs_frequency.png.

    python report.py --sweep_dir=out-sweep-toy                  # labels R0..R5, baseline R0
    python report.py --sweep_dir=out-baselines-toy --baseline=none

For every label: mean +- standard error over seeds (SE = std / sqrt(n), ddof=1) of mIoU and mean
F1 of the final evaluation (not the best one: picking the best of many evaluations on the split
that is also reported would flatter every row). Then, for each label against the baseline, the
per-class IoU gain beside two shares of each class in the real training set: its image share,
the fraction of training patches that contain at least one of its pixels (the paper's "relative
class occurrence", App. A / Fig. 7), and its pixel share among labelled pixels (meta.json's
class_freq). Pearson r of gain against each is taken over the foreground classes only, as Fig. 7
does over iSAID's 15 (r = -0.47 there, PSPNet: rare classes gain most): `background_classes`
names the classes left out. pearson_r (against the image share) is the one comparable with the
paper; pearson_r_pixel stands beside it. The plot is gain against image share.
"""
import glob
import json
import math
import os
import re

import numpy as np
from PIL import Image, ImageDraw

import pairs
from configurator import configure

# -----------------------------------------------------------------------------
sweep_dir = 'out-sweep-toy'
baseline = 'R0'  # the label the others are compared with (real data only)
data_dir = 'data'
dataset = 'toy'
background_classes = 'background'  # ','-separated names (any case) or indices left out of r;
# a name the dataset lacks is skipped (toy has no background: r over all classes); '' = none
# -----------------------------------------------------------------------------


def load_runs(folder):
    """{label: [results dicts]} from folder/<label>/**/results.json, labels in natural order."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, '*', '**', 'results.json'), recursive=True)):
        label = os.path.relpath(path, folder).split(os.sep)[0]
        with open(path) as f:
            runs.setdefault(label, []).append(json.load(f))
    key = lambda s: [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', s)]
    return {k: runs[k] for k in sorted(runs, key=key)}


def mean_se(values):
    v = np.array([np.nan if x is None else x for x in values], float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float('nan'), float('nan'), 0
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0, len(v)


def pearson(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = ~(np.isnan(x) | np.isnan(y))
    if ok.sum() < 3 or x[ok].std() == 0 or y[ok].std() == 0:
        return float('nan')
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def class_shares(masks, num_classes, chunk=256):
    """(image share, pixel share), each (K,): the fraction of uint8 patches (N, P, P) that contain
    the class at least once, and its fraction of the labelled pixels (values >= K, i.e. the
    ignore index 255, are not counted). Read in chunks of patches, so a memmapped training set
    is never in memory whole."""
    present, pixels = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    for i in range(0, len(masks), chunk):
        m = np.asarray(masks[i:i + chunk])
        row = 256 * np.arange(len(m), dtype=np.int32)[:, None]  # one run of 256 bins per patch
        m = m.reshape(len(m), -1).astype(np.int32) + row
        counts = np.bincount(m.ravel(), minlength=256 * len(m)).reshape(-1, 256)[:, :num_classes]
        present += (counts > 0).sum(0)  # 255 = ignore (any value >= K) falls outside [:K]
        pixels += counts.sum(0)
    return present / max(1, len(masks)), pixels / max(1, pixels.sum())


def background_classes_of(spec, classes):
    """The class names that the knob `spec` (',' separated names, any case, or indices) leaves
    out of r. Names the dataset lacks are skipped; an index out of range is an error."""
    out = []
    for tok in (t.strip() for t in spec.split(',')):
        if tok.isdigit():
            if int(tok) >= len(classes):
                raise ValueError(f'background_classes: index {tok} but {len(classes)} classes')
            out.append(classes[int(tok)])
        elif tok:
            out += [c for c in classes if c.lower() == tok.lower()]
    return [c for c in classes if c in out]  # dataset order, no repeats


def summarize_runs(runs, baseline, image_share, pixel_share, background=()):
    """The whole report as a dict: per-label mean +- SE, per-class gains, and the correlation of
    gain with image share (pearson_r, as Fig. 7) and with pixel share (pearson_r_pixel) over
    the classes not in `background`. The shares are {class: fraction}."""
    rows = {}
    for label, results in runs.items():
        classes = results[0]['classes']
        rows[label] = dict(n_seeds=len(results),
                           miou=mean_se([r['miou'] for r in results])[:2],
                           mean_f1=mean_se([r['mean_f1'] for r in results])[:2],
                           iou={c: mean_se([r['iou'][c] for r in results])[0] for c in classes})
    gains, fg = {}, []
    if baseline in rows:
        base = rows[baseline]['iou']
        fg = [c for c in base if c not in background]
        for label, row in rows.items():
            if label == baseline:
                continue
            gain = {c: row['iou'][c] - base[c] for c in base}
            y = [gain[c] for c in fg]
            r = lambda share: pearson([share.get(c, float('nan')) for c in fg], y)
            gains[label] = dict(gain=gain, pearson_r=r(image_share), pearson_r_pixel=r(pixel_share),
                                n_classes=len(fg))
    return dict(baseline=baseline, background=list(background), foreground=fg,
                image_share=image_share, pixel_share=pixel_share, rows=rows, gains=gains)


def classes_used(rep):
    """A few words on which classes r is over."""
    if rep['background']:
        return (f"the {len(rep['foreground'])} foreground classes "
                f"({', '.join(rep['background'])} excluded)")
    return f"all {len(rep['foreground'])} classes (none is a background class)"


def to_markdown(rep):
    pct = lambda v: '-' if v != v else f'{100 * v:.2f}'
    num = lambda v: 'n/a' if v != v else f'{v:.3f}'
    share = lambda d, c: d.get(c, float('nan'))
    lines = ['| run | seeds | mIoU (%) | mean F1 (%) |', '|---|---|---|---|']
    for label, r in rep['rows'].items():
        lines.append(f"| {label} | {r['n_seeds']} | {pct(r['miou'][0])} +- {pct(r['miou'][1])} | "
                     f"{pct(r['mean_f1'][0])} +- {pct(r['mean_f1'][1])} |")
    for label, g in rep['gains'].items():
        lines += ['', f"Per-class IoU gain of {label} over {rep['baseline']} (points) against the "
                  f"class's share of the real training set. Pearson r over {classes_used(rep)}: "
                  f"{num(g['pearson_r'])} against the share of patches containing the class "
                  f"(as the paper's Fig. 7: -0.47 on iSAID), {num(g['pearson_r_pixel'])} against "
                  f"its pixel share.", '',
                  '| class | image share (%) | pixel share (%) | gain |', '|---|---|---|---|']
        for c, v in sorted(g['gain'].items(), key=lambda kv: share(rep['image_share'], kv[0])):
            name = f'{c} (excluded)' if c in rep['background'] else c
            lines.append(f"| {name} | {pct(share(rep['image_share'], c))} | "
                         f"{pct(share(rep['pixel_share'], c))} | {pct(v)} |")
    return '\n'.join(lines)


def plot_gains(rep, path, size=(640, 420), margin=60):
    """Scatter of per-class IoU gain (y) against image share (x, linear, as Fig. 7), one colour per
    label, the classes r is over only; the legend gives each label's r."""
    img = Image.new('RGB', size, 'white')
    d = ImageDraw.Draw(img)
    pts = [(rep['image_share'].get(c, float('nan')), 100 * v, label, c)
           for label, g in rep['gains'].items() for c, v in g['gain'].items()
           if c in rep['foreground'] and v == v]
    pts = [p for p in pts if p[0] == p[0]]
    if not pts:
        d.text((margin, margin), 'no gains to plot (baseline missing?)', fill='black')
        return pairs.save_png(img, path)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts] + [0.0]
    x0, x1 = max(0.0, min(xs) - 0.05), min(1.0, max(xs) + 0.05)
    x0, x1 = (x0, x1) if x1 > x0 else (x0 - 0.05, x1 + 0.05)
    y0, y1 = min(ys) - 0.5, max(ys) + 0.5
    W, H = size[0] - 2 * margin, size[1] - 2 * margin
    sx = lambda x: margin + (x - x0) / (x1 - x0) * W
    sy = lambda y: size[1] - margin - (y - y0) / (y1 - y0) * H
    d.rectangle([margin, margin, margin + W, margin + H], outline='black')
    d.line([margin, sy(0), margin + W, sy(0)], fill=(160, 160, 160))  # zero gain
    for v in sorted({y0, 0.0, y1}):
        if v == 0.0 or min(abs(sy(v) - sy(0.0)), 99) > 14:  # keep labels from overlapping
            d.text((4, sy(v) - 6), f'{v:+.1f}', fill='black')
    for v in (x0, x1):
        d.text((sx(v) - 20, size[1] - margin + 6), f'{100 * v:.3g}%', fill='black')
    d.text((margin, size[1] - 22), 'share of real training patches containing the class',
           fill='black')
    d.text((margin, 8), f"IoU gain (points) over {rep['baseline']} per class", fill='black')
    d.text((margin, 22), f"r over {classes_used(rep)}", fill='black')
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194)]
    labels = list(rep['gains'])
    for x, y, label, c in pts:
        col = colours[labels.index(label) % len(colours)]
        d.ellipse([sx(x) - 4, sy(y) - 4, sx(x) + 4, sy(y) + 4], fill=col)
        if label == labels[-1]:
            d.text((sx(x) + 6, sy(y) - 6), c, fill=col)
    for i, label in enumerate(labels):
        r = rep['gains'][label]['pearson_r']
        d.text((margin + W - 130, margin + 6 + 14 * i),
               f"o {label}  r = {'n/a' if r != r else f'{r:+.2f}'}", fill=colours[i % len(colours)])
    pairs.save_png(img, path)


if __name__ == '__main__':
    config = configure(globals())
    runs = load_runs(sweep_dir)
    if not runs:
        raise SystemExit(f'{sweep_dir}: no <label>/**/results.json found (run seg.py first)')
    ddir = os.path.join(data_dir, dataset)
    for name in ('meta.json', 'train_masks.npy'):
        if not os.path.exists(os.path.join(ddir, name)):
            raise SystemExit(f'{ddir}/{name}: not found (set --data_dir / --dataset)')
    with open(os.path.join(ddir, 'meta.json')) as f:
        meta = json.load(f)
    classes = meta['classes']
    masks = np.load(os.path.join(ddir, 'train_masks.npy'), mmap_mode='r')
    image, pixel = class_shares(masks, len(classes))  # meta: ignore_index 255 >= K
    rep = summarize_runs(runs, baseline, dict(zip(classes, image.tolist())),
                         dict(zip(classes, pixel.tolist())),
                         background_classes_of(background_classes, classes))
    md = to_markdown(rep)
    print(md)
    pairs.save_json(rep, os.path.join(sweep_dir, 'report.json'))  # NaN -> null
    with open(os.path.join(sweep_dir, 'report.md'), 'w') as f:
        f.write(md + '\n')
    plot_gains(rep, os.path.join(sweep_dir, 'gain_vs_frequency.png'))
    print(f'wrote {sweep_dir}/report.json, report.md, gain_vs_frequency.png')
