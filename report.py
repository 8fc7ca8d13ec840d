"""Summarise segmentation runs over seeds: the paper's Fig. 5 (mIoU vs R), Tab. 5 and Tab. 6 / Fig. 7.

Reads  <sweep_dir>/<label>/<anything>/results.json, written by seg.py (one folder per seed), and
       data_dir/<dataset>/meta.json + train_masks.npy: the real training patches.
Writes <sweep_dir>/report.json, report.md (the tables below), gain_vs_frequency.png and, for
       labels <arm>-R<k> / R<k>, miou_vs_r.png.

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

Also: seg.py's `selected` checkpoint (picked on a held-out split; '-' if absent); mIoU gains in SE
units, gain / sqrt(SE_a^2 + SE_b^2) (independent seeds), > 2 SE or not; for <arm>-R<k> and R<k>
labels, miou_vs_r.png and (oracle-R<k>, lowdata) the captured fraction gain(arm) / gain(oracle),
flagged if the oracle gain is not > 2 SE; learning curves (mean val mIoU per evaluated iteration).
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


def arm_of(label):
    """('gen', '1') for 'gen-R1', ('', '3') for 'R3', None for a label that is not R<k>."""
    m = re.match(r'^(?:(.+)-)?R(\d+(?:\.\d+)?)$', label)
    return (m.group(1) or '', m.group(2)) if m else None


def learning_curve(results):
    """Mean over seeds of val mIoU at each evaluated iteration (seg.py's history), else None."""
    by_iter = {}
    for r in results:
        for it, miou, *_ in r.get('history') or []:
            if miou is not None and miou == miou:
                by_iter.setdefault(int(it), []).append(miou)
    its = sorted(by_iter)
    return dict(iters=its, miou=[float(np.mean(by_iter[i])) for i in its],
                n_seeds=[len(by_iter[i]) for i in its]) if its else None


def compare(a, b):
    """mIoU gain of row a over row b (miou = (mean, SE), n_seeds): points, SE of the difference
    (independent seeds; NaN if either has < 2 seeds), gain / SE, > 2 (None where undefined)."""
    if a is None or b is None:
        return None
    diff, se = a['miou'][0] - b['miou'][0], math.hypot(a['miou'][1], b['miou'][1])
    se = se if min(a['n_seeds'], b['n_seeds']) > 1 else float('nan')
    z = diff / se if se > 0 else float('nan')
    return dict(points=100 * diff, se_points=100 * se, se_units=z,
                over_2se=bool(z > 2) if z == z else None)


def captured_fractions(gains):
    """{label: ...} for each <arm>-R<k> whose oracle-R<k> is also compared with the baseline:
    gain(arm) / gain(oracle), final and selected; meaningful only if the oracle gain is > 2 SE."""
    out = {}
    for label, g in gains.items():
        arm, k = arm_of(label) or ('', '')
        if arm in ('', 'oracle') or (oracle := f'oracle-R{k}') not in gains:
            continue
        out[label] = dict(oracle=oracle, R=float(k))
        for kind in ('final', 'selected'):
            a, o = g['miou_gain'][kind], gains[oracle]['miou_gain'][kind]
            out[label][kind] = None if a is None or o is None else dict(
                fraction=a['points'] / o['points'] if o['points'] else float('nan'),
                gain=a['points'], oracle_gain=o['points'], oracle_se_units=o['se_units'],
                meaningful=o['over_2se'] is True)
    return out


def summarize_runs(runs, baseline, image_share, pixel_share, background=()):
    """The whole report as a dict: per-label mean +- SE (final; selected: over the seeds that have
    it), per-class gains, the correlation of gain with image share (pearson_r, as Fig. 7) and with
    pixel share (pearson_r_pixel) over the classes not in `background`, the mIoU gain in SE
    units, captured fractions, learning curves. The shares are {class: fraction}."""
    rows, keys = {}, ('miou', 'mean_f1', 'iter_num')
    stats = lambda rs: dict(n_seeds=len(rs), **{k: mean_se([r.get(k) for r in rs])[:2]
                                                for k in keys})
    for label, results in runs.items():
        classes, sel = results[0]['classes'], [r['selected'] for r in results if r.get('selected')]
        rows[label] = dict(**stats(results), selected=stats(sel) if sel else None,
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
                                n_classes=len(fg), miou_gain=dict(
                                    final=compare(row, rows[baseline]),
                                    selected=compare(row['selected'], rows[baseline]['selected'])))
    return dict(baseline=baseline, background=list(background), foreground=fg,
                image_share=image_share, pixel_share=pixel_share, rows=rows, gains=gains,
                captured=captured_fractions(gains),
                curves={k: c for k, c in ((k, learning_curve(v)) for k, v in runs.items()) if c})


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
    pm = lambda ms: f'{pct(ms[0])} +- {pct(ms[1])}'
    has_sel = any(r['selected'] for r in rep['rows'].values())
    lines = ['| run | seeds | mIoU (%) | mean F1 (%) |' + (
        ' selected: seeds | mIoU (%) | mean F1 (%) | iter |' if has_sel else ''),
        '|---|---|---|---|' + ('---|---|---|---|' if has_sel else '')]
    for label, r in rep['rows'].items():
        q = r['selected']
        sel = (f" {q['n_seeds']} | {pm(q['miou'])} | {pm(q['mean_f1'])} | {q['iter_num'][0]:.0f} |"
               if q else ' - | - | - | - |') if has_sel else ''
        lines.append(f"| {label} | {r['n_seeds']} | {pm(r['miou'])} | {pm(r['mean_f1'])} |{sel}")
    if has_sel:
        lines += ['', 'Selected: the checkpoint picked on the held-out selection split, on val.']
    lines += extra_markdown(rep, has_sel)
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


fmt = lambda v, f='+.2f': 'n/a' if v != v else format(v, f)


def gain_cells(g):
    """gain, SE, gain / SE and the '> 2 SE' column."""
    flag = g and ('n/a' if g['over_2se'] is None else 'yes' if g['over_2se'] else
                  'no (a drop > 2 SE)' if g['se_units'] < -2 else 'no')
    return f" {fmt(g['points'])} | {fmt(g['se_points'], '.2f')} | {fmt(g['se_units'])} | {flag} |"\
        if g else ' - | - | - | - |'


def extra_markdown(rep, has_sel, n_cols=6):
    """mIoU gains in SE units, lowdata captured fractions, learning curves (<= n_cols iters)."""
    lines, curves = [], rep['curves']
    if rep['gains']:
        lines += ['', f"mIoU gain over {rep['baseline']}: points, SE of the difference "
                  'sqrt(SE_a^2 + SE_b^2) (independent seeds), gain / SE, whether > 2 SE.', '',
                  '| run | gain (pts) | SE (pts) | gain / SE | > 2 SE |' + (
                      ' selected: gain (pts) | SE (pts) | gain / SE | > 2 SE |' if has_sel else ''),
                  '|---|---|---|---|---|' + ('---|---|---|---|' if has_sel else '')]
        lines += [f"| {k} |" + ''.join(gain_cells(g['miou_gain'][kind]) for kind in (
            'final', 'selected')[:1 + has_sel]) for k, g in rep['gains'].items()]
    if rep['captured']:
        lines += ['', '## lowdata: captured fraction', '', 'gain(<arm>-R) / gain(oracle-R) over '
                  'the baseline, mIoU points; (!) = the oracle gain is not > 2 SE, so the fraction '
                  'means nothing.', '', '| R | run | kind | gain (pts) | oracle gain (pts) | '
                  'oracle gain / SE | captured |', '|---|---|---|---|---|---|---|']
        lines += [f"| {c['R']:g} | {k} vs {c['oracle']} | {kind} | {fmt(e['gain'])} | "
                  f"{fmt(e['oracle_gain'])} | {fmt(e['oracle_se_units'])} | "
                  f"{fmt(e['fraction'], '.2f')}"
                  f"{'' if e['meaningful'] else ' (!) oracle gain not > 2 SE'} |"
                  for k, c in rep['captured'].items() for kind in ('final', 'selected')
                  if (e := c[kind])]
    if curves:
        its = sorted({i for c in curves.values() for i in c['iters']})
        its = [its[int(round(j))] for j in np.linspace(0, len(its) - 1, min(n_cols, len(its)))]
        lines += ['', 'Learning curve: val mIoU (%), mean over seeds, at evaluated iterations; '
                  'peak = the best mean and its iteration.', '',
                  '| run | ' + ' | '.join(f'it {i}' for i in its) + ' | peak (iter) |',
                  '|---|' + '---|' * (len(its) + 1)]
    for label, c in curves.items():
        at, k = dict(zip(c['iters'], c['miou'])), int(np.argmax(c['miou']))
        lines.append(f'| {label} | ' + ' | '.join(f'{100 * at[i]:.2f}' if i in at else '-'
                     for i in its) + f" | {100 * c['miou'][k]:.2f} ({c['iters'][k]}) |")
    return lines


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


def r_series(rep):
    """[(arm, kind, [(R, mean %, SE %)])] for the arms of R<k> labels with a point at R > 0, kind
    final / selected; the baseline is R = 0 of each arm without its own R0."""
    arms, out = {}, []
    for label in rep['rows']:
        if arm_of(label):
            arm, k = arm_of(label)
            arms.setdefault(arm, {0.0: rep['baseline']})[float(k)] = label
    for arm, pts in ((a, p) for a, p in arms.items() if max(p) > 0):
        for kind in ('final', 'selected'):
            qs = [(R, rep['rows'].get(pts[R])) for R in sorted(pts)]
            qs = [(R, q if kind == 'final' else q['selected']) for R, q in qs if q]
            s = [(R, 100 * q['miou'][0], 100 * q['miou'][1]) for R, q in qs
                 if q and q['miou'][0] == q['miou'][0]]
            out += [(arm or 'R', kind, s)] if s else []
    return out


def plot_miou_vs_r(rep, path, size=(640, 420), margin=60):
    """mIoU (mean +- SE error bars) against R, one colour per arm; solid lines and filled dots:
    final evaluation, dashed lines and open dots: selected checkpoint. False if nothing to plot."""
    series = r_series(rep)
    if not series:
        return False
    img = Image.new('RGB', size, 'white')
    d = ImageDraw.Draw(img)
    xs = [p[0] for _, _, s in series for p in s]
    ys = [v for _, _, s in series for _, m, e in s for v in (m - e, m + e)]
    x0, x1, y0, y1 = -0.08 * max(xs), 1.08 * max(xs), min(ys) - 0.5, max(ys) + 0.5
    W, H = size[0] - 2 * margin, size[1] - 2 * margin
    sx = lambda x: margin + (x - x0) / (x1 - x0) * W
    sy = lambda y: size[1] - margin - (y - y0) / (y1 - y0) * H
    d.rectangle([margin, margin, margin + W, margin + H], outline='black')
    for v in (y0, (y0 + y1) / 2, y1):
        d.text((4, sy(v) - 6), f'{v:.1f}', fill='black')
    for v in sorted(set(xs)):
        d.text((sx(v) - 4, size[1] - margin + 6), f'{v:g}', fill='black')
    d.text((margin, size[1] - 22), 'R (synthetic pairs per real one)', fill='black')
    d.text((margin, 8), f"val mIoU (%), mean +- SE over seeds; R = 0: {rep['baseline']}", 'black')
    d.text((margin, 22), 'solid: final evaluation, dashed: selected checkpoint', fill='black')
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    arms = list(dict.fromkeys(a for a, _, _ in series))
    for i, (arm, kind, s) in enumerate(series):
        col, dx, on = colours[arms.index(arm) % 5], 4 * (i - (len(series) - 1) / 2), kind == 'final'
        pts = [(sx(R) + dx, sy(m), sy(m - e), sy(m + e)) for R, m, e in s]
        for (xa, ya, *_), (xb, yb, *_) in zip(pts, pts[1:]):
            n = 1 if on else max(1, int(math.hypot(xb - xa, yb - ya) / 10))
            at = lambda f: (xa + f * (xb - xa), ya + f * (yb - ya))
            for t in range(n):  # dashes: the first 60% of each n-th
                d.line([at(t / n), at((t + (1 if on else 0.6)) / n)], fill=col, width=2)
        for x, y, lo, hi in pts:
            for line in ([x, lo, x, hi], [x - 3, lo, x + 3, lo], [x - 3, hi, x + 3, hi]):
                d.line(line, fill=col)
            d.ellipse([x - 4, y - 4, x + 4, y + 4], outline=col, fill=col if on else 'white')
        d.text((margin + W - 150, margin + 6 + 14 * i), f'{arm} ({kind})', fill=col)
    pairs.save_png(img, path)
    return True


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
    pairs.save_text(md + '\n', os.path.join(sweep_dir, 'report.md'))
    plot_gains(rep, os.path.join(sweep_dir, 'gain_vs_frequency.png'))
    by_r = plot_miou_vs_r(rep, os.path.join(sweep_dir, 'miou_vs_r.png')) * ', miou_vs_r.png'
    print(f'wrote {sweep_dir}/report.json, report.md, gain_vs_frequency.png{by_r}')
