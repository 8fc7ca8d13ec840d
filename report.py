"""Summarise segmentation runs over seeds: the paper's Fig. 5 (mIoU vs R), Tab. 5 and Tab. 6 / Fig. 7.

Reads  <sweep_dir>/<label>/<anything>/results.json, written by seg.py (one folder per seed), and
       data_dir/<dataset>/meta.json for each class's pixel share in the real training set.
Writes <sweep_dir>/report.json, report.md (the tables below) and gain_vs_frequency.png.

    python report.py --sweep_dir=out-sweep-toy                  # labels R0..R5, baseline R0
    python report.py --sweep_dir=out-baselines-toy --baseline=none

For every label: mean +- standard error over seeds (SE = std / sqrt(n), ddof=1) of mIoU and mean
F1 of the final evaluation (not the best one: picking the best of many evaluations on the split
that is also reported would flatter every row). Then, for each label against the baseline, the
per-class IoU gain beside the class's pixel share in the real training set, with their Pearson
correlation: the paper (Tab. 6, Fig. 7) finds that rare classes gain most, i.e. r < 0.
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


def summarize_runs(runs, baseline, class_freq):
    """The whole report as a dict: per-label mean +- SE, per-class gains and their correlation."""
    rows = {}
    for label, results in runs.items():
        classes = results[0]['classes']
        rows[label] = dict(n_seeds=len(results),
                           miou=mean_se([r['miou'] for r in results])[:2],
                           mean_f1=mean_se([r['mean_f1'] for r in results])[:2],
                           iou={c: mean_se([r['iou'][c] for r in results])[0] for c in classes})
    gains = {}
    if baseline in rows:
        base = rows[baseline]['iou']
        for label, row in rows.items():
            if label == baseline:
                continue
            gain = {c: row['iou'][c] - base[c] for c in base}
            freq = [class_freq.get(c, float('nan')) for c in base]
            gains[label] = dict(gain=gain, pearson_r=pearson(freq, list(gain.values())),
                                pearson_r_log=pearson(np.log10(np.maximum(freq, 1e-9)),
                                                      list(gain.values())))
    return dict(baseline=baseline, class_freq=class_freq, rows=rows, gains=gains)


def to_markdown(rep):
    pct = lambda v: '-' if v != v else f'{100 * v:.2f}'
    lines = ['| run | seeds | mIoU (%) | mean F1 (%) |', '|---|---|---|---|']
    for label, r in rep['rows'].items():
        lines.append(f"| {label} | {r['n_seeds']} | {pct(r['miou'][0])} +- {pct(r['miou'][1])} | "
                     f"{pct(r['mean_f1'][0])} +- {pct(r['mean_f1'][1])} |")
    for label, g in rep['gains'].items():
        lines += ['', f"Per-class IoU gain of {label} over {rep['baseline']} (points) against the "
                  f"class's pixel share of the real training set; Pearson r = "
                  f"{g['pearson_r']:.3f} (r with log10 share: {g['pearson_r_log']:.3f})", '',
                  '| class | share (%) | gain |', '|---|---|---|']
        for c, v in sorted(g['gain'].items(), key=lambda kv: rep['class_freq'].get(kv[0], 0)):
            lines.append(f"| {c} | {pct(rep['class_freq'].get(c, float('nan')))} | {pct(v)} |")
    return '\n'.join(lines)


def plot_gains(rep, path, size=(640, 420), margin=60):
    """Scatter of per-class IoU gain (y) against log10 pixel share (x), one colour per label."""
    img = Image.new('RGB', size, 'white')
    d = ImageDraw.Draw(img)
    pts = [(math.log10(max(rep['class_freq'].get(c, 1e-9), 1e-9)), 100 * v, label, c)
           for label, g in rep['gains'].items() for c, v in g['gain'].items() if v == v]
    if not pts:
        d.text((margin, margin), 'no gains to plot (baseline missing?)', fill='black')
        return pairs.save_png(img, path)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts] + [0.0]
    x0, x1 = min(xs) - 0.1, max(xs) + 0.1
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
        d.text((sx(v) - 20, size[1] - margin + 6), f'{100 * 10 ** v:.2g}%', fill='black')
    d.text((margin, size[1] - 22), 'class pixel share in real train (log scale)', fill='black')
    d.text((margin, 8), f"IoU gain (points) over {rep['baseline']} per class", fill='black')
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194)]
    labels = list(rep['gains'])
    for x, y, label, c in pts:
        col = colours[labels.index(label) % len(colours)]
        d.ellipse([sx(x) - 4, sy(y) - 4, sx(x) + 4, sy(y) + 4], fill=col)
        if label == labels[-1]:
            d.text((sx(x) + 6, sy(y) - 6), c, fill=col)
    for i, label in enumerate(labels):
        d.text((margin + W - 120, margin + 6 + 14 * i), f'o {label}',
               fill=colours[i % len(colours)])
    pairs.save_png(img, path)


if __name__ == '__main__':
    config = configure(globals())
    runs = load_runs(sweep_dir)
    if not runs:
        raise SystemExit(f'{sweep_dir}: no <label>/**/results.json found (run seg.py first)')
    meta_path = os.path.join(data_dir, dataset, 'meta.json')
    if not os.path.exists(meta_path):
        raise SystemExit(f'{meta_path}: not found (set --data_dir / --dataset)')
    with open(meta_path) as f:
        meta = json.load(f)
    class_freq = dict(zip(meta['classes'], meta['class_freq']['train']))
    rep = summarize_runs(runs, baseline, class_freq)
    md = to_markdown(rep)
    print(md)
    pairs.save_json(rep, os.path.join(sweep_dir, 'report.json'))  # NaN -> null
    with open(os.path.join(sweep_dir, 'report.md'), 'w') as f:
        f.write(md + '\n')
    plot_gains(rep, os.path.join(sweep_dir, 'gain_vs_frequency.png'))
    print(f'wrote {sweep_dir}/report.json, report.md, gain_vs_frequency.png')
