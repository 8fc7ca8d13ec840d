"""Summarise seg runs over seeds: the paper's Fig. 5 (mIoU vs R), Tab. 5 and Tab. 6 / Fig. 7.

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

The tables of experiments.sh's steps, clean, bf16 and segmenters experiments (and demo.sh's
metrics line) are tables.py's, which reads the report.json files written here and shares this
file's helpers (read_json, the table cells). The figures are drawn by plots.py, one set of PIL
helpers for every panel.
"""
import glob
import json
import math
import os
import re

import numpy as np

import pairs
import plots
from configurator import configure

# -----------------------------------------------------------------------------
sweep_dir = 'out-sweep-toy'
baseline = 'R0'  # the label the others are compared with (real data only)
data_dir = 'data'
dataset = 'toy'
background_classes = 'background'  # ','-separated names (any case) or indices left out of r;
# a name the dataset lacks is skipped (toy has no background: r over all classes); '' = none
# -----------------------------------------------------------------------------


def is_missing(value):
    """None (how report.json stores a NaN) or NaN: a number that is not there."""
    return value is None or math.isnan(value)


def read_json(path):
    """A JSON file, or exit with one line naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f'{path}: unreadable ({e})')


# --- the sweep report: seg runs over seeds --------------------------------------------------------

def natural_key(label):
    """A sort key that puts R2 before R10: the label's digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', label)]


def load_runs(folder):
    """{label: [results dicts]} from folder/<label>/**/results.json, labels in natural order."""
    runs = {}
    pattern = os.path.join(folder, '*', '**', 'results.json')
    for path in sorted(glob.glob(pattern, recursive=True)):
        label = os.path.relpath(path, folder).split(os.sep)[0]
        with open(path) as f:
            runs.setdefault(label, []).append(json.load(f))
    return {label: runs[label] for label in sorted(runs, key=natural_key)}


def mean_se(values):
    """(mean, standard error, n) of the values that are there (None and NaN are left out);
    SE = std(ddof=1) / sqrt(n), 0 for one value; (NaN, NaN, 0) for none."""
    present = np.array([np.nan if v is None else v for v in values], float)
    present = present[~np.isnan(present)]
    n = len(present)
    if n == 0:
        return float('nan'), float('nan'), 0
    if n == 1:
        return float(present.mean()), 0.0, 1
    return float(present.mean()), float(present.std(ddof=1) / math.sqrt(n)), n


def pearson(x, y):
    """Pearson r over the pairs where both are there; NaN for < 3 pairs or a constant side."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    both = ~(np.isnan(x) | np.isnan(y))
    if both.sum() < 3 or x[both].std() == 0 or y[both].std() == 0:
        return float('nan')
    return float(np.corrcoef(x[both], y[both])[0, 1])


def class_shares(masks, num_classes, chunk=256):
    """(image share, pixel share), each (K,): the fraction of uint8 patches (N, P, P) that contain
    the class at least once, and its fraction of the labelled pixels (values >= K, i.e. the
    ignore index 255, are not counted). Read in chunks of patches, so a memmapped training set
    is never in memory whole."""
    patches_with = np.zeros(num_classes, np.int64)  # per class: patches containing it
    pixels = np.zeros(num_classes, np.int64)  # per class: its pixels
    for start in range(0, len(masks), chunk):
        block = np.asarray(masks[start:start + chunk])  # (n, P, P)
        n = len(block)
        # one bincount for the whole chunk: patch i's values are moved to bins 256 i ... 256 i + 255
        offsets = 256 * np.arange(n, dtype=np.int32)[:, None]  # (n, 1)
        shifted = block.reshape(n, -1).astype(np.int32) + offsets  # (n, P * P)
        counts = np.bincount(shifted.ravel(), minlength=256 * n).reshape(n, 256)  # (n, 256)
        counts = counts[:, :num_classes]  # 255 = ignore (any value >= K) falls outside [:K]
        patches_with += (counts > 0).sum(0)
        pixels += counts.sum(0)
    return patches_with / max(1, len(masks)), pixels / max(1, pixels.sum())


def background_classes_of(spec, classes):
    """The class names that the knob `spec` (',' separated names, any case, or indices) leaves
    out of r. Names the dataset lacks are skipped; an index out of range is an error."""
    chosen = []
    for token in spec.split(','):
        token = token.strip()
        if token.isdigit():
            if int(token) >= len(classes):
                raise ValueError(f'background_classes: index {token} but {len(classes)} classes')
            chosen.append(classes[int(token)])
        elif token:
            chosen += [c for c in classes if c.lower() == token.lower()]
    return [c for c in classes if c in chosen]  # dataset order, no repeats


def arm_of(label):
    """('gen', '1') for 'gen-R1', ('', '3') for 'R3', None for a label that is not R<k>."""
    match = re.match(r'^(?:(.+)-)?R(\d+(?:\.\d+)?)$', label)
    if match is None:
        return None
    return match.group(1) or '', match.group(2)


def learning_curve(results):
    """Mean over seeds of val mIoU at each evaluated iteration (seg.py's history), else None."""
    mious_at = {}  # {iteration: [val mIoU of each seed that evaluated there]}
    for r in results:
        for iteration, miou, *_ in r.get('history') or []:
            if not is_missing(miou):
                mious_at.setdefault(int(iteration), []).append(miou)
    if not mious_at:
        return None
    iterations = sorted(mious_at)
    return dict(iters=iterations, miou=[float(np.mean(mious_at[i])) for i in iterations],
                n_seeds=[len(mious_at[i]) for i in iterations])


def compare(a, b):
    """mIoU gain of row a over row b (miou = (mean, SE), n_seeds): points, SE of the difference
    (independent seeds; NaN if either has < 2 seeds), gain / SE, > 2 (None where undefined)."""
    if a is None or b is None:
        return None
    diff = a['miou'][0] - b['miou'][0]
    se = math.hypot(a['miou'][1], b['miou'][1])
    if min(a['n_seeds'], b['n_seeds']) < 2:
        se = float('nan')
    se_units = diff / se if se > 0 else float('nan')
    over_2se = None if math.isnan(se_units) else bool(se_units > 2)
    return dict(points=100 * diff, se_points=100 * se, se_units=se_units, over_2se=over_2se)


def captured_fractions(gains, rows, baseline):
    """{label: ...} for each <arm>-R<k> whose oracle-R<k> is also compared with the baseline:
    gain(arm) / gain(oracle), final and selected, with its SE; meaningful only if the oracle gain
    is > 2 SE. rows: summarize_runs' per-label rows, for the SE of each arm's mean."""
    captured = {}
    for label, gain in gains.items():
        arm, k = arm_of(label) or ('', '')
        oracle = f'oracle-R{k}'
        if arm in ('', 'oracle') or oracle not in gains:
            continue
        captured[label] = dict(oracle=oracle, R=float(k))
        for kind in ('final', 'selected'):
            arm_gain = gain['miou_gain'][kind]
            oracle_gain = gains[oracle]['miou_gain'][kind]
            if arm_gain is None or oracle_gain is None:
                captured[label][kind] = None
                continue
            if oracle_gain['points']:
                fraction = arm_gain['points'] / oracle_gain['points']
            else:
                fraction = float('nan')
            ses = [row_of(rows[name], kind)['miou'][1] for name in (label, oracle, baseline)]
            if any(row_of(rows[name], kind)['n_seeds'] < 2 for name in (label, oracle, baseline)):
                ses = [float('nan')] * 3
            captured[label][kind] = dict(
                fraction=fraction, se=ratio_se(fraction, oracle_gain['points'] / 100, *ses),
                gain=arm_gain['points'], oracle_gain=oracle_gain['points'],
                oracle_se_units=oracle_gain['se_units'],
                meaningful=oracle_gain['over_2se'] is True)
    return captured


def row_of(row, kind):
    """A summarize_runs row's final statistics (kind 'final') or its selected ones."""
    return row if kind == 'final' else row['selected']


def ratio_se(fraction, oracle_gain, se_arm, se_oracle, se_baseline):
    """The SE of fraction = (arm - base) / (oracle - base), independent seeds per arm, by the
    delta method: the two gains share the baseline's mean, so they are correlated (covariance
    se_baseline^2). NaN where the oracle gain is 0 or an SE is undefined."""
    if not oracle_gain or any(math.isnan(se) for se in (se_arm, se_oracle, se_baseline)):
        return float('nan')
    var_arm_gain = se_arm ** 2 + se_baseline ** 2
    var_oracle_gain = se_oracle ** 2 + se_baseline ** 2
    variance = (var_arm_gain - 2 * fraction * se_baseline ** 2
                + fraction ** 2 * var_oracle_gain) / oracle_gain ** 2
    return math.sqrt(max(variance, 0.0))


def seed_stats(results):
    """n_seeds and (mean, SE) of mIoU, mean F1 and iter_num over one label's results."""
    stats = dict(n_seeds=len(results))
    for key in ('miou', 'mean_f1', 'iter_num'):
        mean, se, _ = mean_se([r.get(key) for r in results])
        stats[key] = (mean, se)
    return stats


def summarize_runs(runs, baseline, image_share, pixel_share, background=()):
    """The whole report as a dict: per-label mean +- SE (final; selected: over the seeds that have
    it), per-class gains, the correlation of gain with image share (pearson_r, as Fig. 7) and with
    pixel share (pearson_r_pixel) over the classes not in `background`, the mIoU gain in SE
    units, captured fractions, learning curves. The shares are {class: fraction}."""
    rows = {}
    for label, results in runs.items():
        classes = results[0]['classes']
        selected = [r['selected'] for r in results if r.get('selected')]
        rows[label] = dict(**seed_stats(results),
                           selected=seed_stats(selected) if selected else None,
                           iou={c: mean_se([r['iou'][c] for r in results])[0] for c in classes})
    gains = {}
    foreground = []
    if baseline in rows:
        base_iou = rows[baseline]['iou']
        foreground = [c for c in base_iou if c not in background]
        for label, row in rows.items():
            if label == baseline:
                continue
            gain = {c: row['iou'][c] - base_iou[c] for c in base_iou}
            foreground_gain = [gain[c] for c in foreground]
            r_image = pearson([image_share.get(c, float('nan')) for c in foreground],
                              foreground_gain)
            r_pixel = pearson([pixel_share.get(c, float('nan')) for c in foreground],
                              foreground_gain)
            miou_gain = dict(final=compare(row, rows[baseline]),
                             selected=compare(row['selected'], rows[baseline]['selected']))
            gains[label] = dict(gain=gain, pearson_r=r_image, pearson_r_pixel=r_pixel,
                                n_classes=len(foreground), miou_gain=miou_gain)
    curves = {}
    for label, results in runs.items():
        curve = learning_curve(results)
        if curve:
            curves[label] = curve
    return dict(baseline=baseline, background=list(background), foreground=foreground,
                image_share=image_share, pixel_share=pixel_share, rows=rows, gains=gains,
                captured=captured_fractions(gains, rows, baseline), curves=curves)


def classes_used(rep):
    """A few words on which classes r is over."""
    if rep['background']:
        return (f"the {len(rep['foreground'])} foreground classes "
                f"({', '.join(rep['background'])} excluded)")
    return f"all {len(rep['foreground'])} classes (none is a background class)"


# the cells of the markdown tables; a missing number is '-' in percent cells, 'n/a' elsewhere
def percent(value):
    return '-' if is_missing(value) else f'{100 * value:.2f}'


def mean_pm_se(mean_and_se):
    return f'{percent(mean_and_se[0])} +- {percent(mean_and_se[1])}'


def signed(value, spec='+.2f'):
    return 'n/a' if is_missing(value) else format(value, spec)


def to_markdown(rep):
    """report.md: the mean +- SE table, then extra_markdown's, then a per-class gain table per
    label."""
    has_selected = any(r['selected'] for r in rep['rows'].values())
    header = '| run | seeds | mIoU (%) | mean F1 (%) |'
    rule = '|---|---|---|---|'
    if has_selected:
        header += ' selected: seeds | mIoU (%) | mean F1 (%) | iter |'
        rule += '---|---|---|---|'
    lines = [header, rule]
    for label, row in rep['rows'].items():
        line = (f"| {label} | {row['n_seeds']} | {mean_pm_se(row['miou'])} | "
                f"{mean_pm_se(row['mean_f1'])} |")
        selected = row['selected']
        if has_selected and selected:
            line += (f" {selected['n_seeds']} | {mean_pm_se(selected['miou'])} | "
                     f"{mean_pm_se(selected['mean_f1'])} | {selected['iter_num'][0]:.0f} |")
        elif has_selected:
            line += ' - | - | - | - |'
        lines.append(line)
    if has_selected:
        lines += ['', 'Selected: the checkpoint picked on the held-out selection split, on val.']
    lines += extra_markdown(rep, has_selected)
    for label, gain in rep['gains'].items():
        r_image = 'n/a' if is_missing(gain['pearson_r']) else f"{gain['pearson_r']:.3f}"
        r_pixel = 'n/a' if is_missing(gain['pearson_r_pixel']) else f"{gain['pearson_r_pixel']:.3f}"
        lines += ['', f"Per-class IoU gain of {label} over {rep['baseline']} (points) against the "
                  f"class's share of the real training set. Pearson r over {classes_used(rep)}: "
                  f"{r_image} against the share of patches containing the class "
                  f"(as the paper's Fig. 7: -0.47 on iSAID), {r_pixel} against "
                  f"its pixel share.", '',
                  '| class | image share (%) | pixel share (%) | gain |', '|---|---|---|---|']
        by_image_share = sorted(gain['gain'], key=lambda c: rep['image_share'].get(c, float('nan')))
        for c in by_image_share:
            name = f'{c} (excluded)' if c in rep['background'] else c
            image_share = rep['image_share'].get(c, float('nan'))
            pixel_share = rep['pixel_share'].get(c, float('nan'))
            lines.append(f"| {name} | {percent(image_share)} | {percent(pixel_share)} | "
                         f"{percent(gain['gain'][c])} |")
    return '\n'.join(lines)


def gain_cells(gain):
    """The cells gain, SE, gain / SE and '> 2 SE' of one compare() result ('-' if None)."""
    if gain is None:
        return ' - | - | - | - |'
    if gain['over_2se'] is None:
        verdict = 'n/a'
    elif gain['over_2se']:
        verdict = 'yes'
    elif gain['se_units'] < -2:
        verdict = 'no (a drop > 2 SE)'
    else:
        verdict = 'no'
    return (f" {signed(gain['points'])} | {signed(gain['se_points'], '.2f')} | "
            f"{signed(gain['se_units'])} | {verdict} |")


def fraction_pm_se(entry):
    """'0.50 +- 0.35': a captured entry's fraction and its SE ('+- n/a' where undefined; a
    report.json from before the SE was reported has the fraction alone)."""
    if 'se' not in entry:
        return signed(entry['fraction'], '.2f')
    se = 'n/a' if is_missing(entry['se']) else f"{entry['se']:.2f}"
    return f"{signed(entry['fraction'], '.2f')} +- {se}"


def extra_markdown(rep, has_selected, n_cols=6):
    """mIoU gains in SE units, lowdata captured fractions, learning curves (<= n_cols iters)."""
    lines = []
    if rep['gains']:
        kinds = ['final', 'selected'] if has_selected else ['final']
        header = '| run | gain (pts) | SE (pts) | gain / SE | > 2 SE |'
        rule = '|---|---|---|---|---|'
        if has_selected:
            header += ' selected: gain (pts) | SE (pts) | gain / SE | > 2 SE |'
            rule += '---|---|---|---|'
        lines += ['', f"mIoU gain over {rep['baseline']}: points, SE of the difference "
                  'sqrt(SE_a^2 + SE_b^2) (independent seeds), gain / SE, whether > 2 SE.', '',
                  header, rule]
        for label, gain in rep['gains'].items():
            cells = [gain_cells(gain['miou_gain'][kind]) for kind in kinds]
            lines.append(f'| {label} |' + ''.join(cells))
    if rep['captured']:
        lines += ['', '## lowdata: captured fraction', '', 'gain(<arm>-R) / gain(oracle-R) over '
                  'the baseline, mIoU points; (!) = the oracle gain is not > 2 SE, so the fraction '
                  'means nothing. Its SE: the delta method, the two gains sharing the baseline '
                  '(n/a with fewer than 2 seeds in an arm).', '', '| R | run | kind | gain (pts) | '
                  'oracle gain (pts) | oracle gain / SE | captured |', '|---|---|---|---|---|---|---|']
        for label, captured in rep['captured'].items():
            for kind in ('final', 'selected'):
                entry = captured[kind]
                if not entry:
                    continue
                flag = '' if entry['meaningful'] else ' (!) oracle gain not > 2 SE'
                lines.append(f"| {captured['R']:g} | {label} vs {captured['oracle']} | {kind} | "
                             f"{signed(entry['gain'])} | {signed(entry['oracle_gain'])} | "
                             f"{signed(entry['oracle_se_units'])} | "
                             f"{fraction_pm_se(entry)}{flag} |")
    curves = rep['curves']
    if curves:
        every_iteration = sorted({i for curve in curves.values() for i in curve['iters']})
        n_shown = min(n_cols, len(every_iteration))  # evenly spread, first and last included
        shown = [every_iteration[int(round(j))]
                 for j in np.linspace(0, len(every_iteration) - 1, n_shown)]
        lines += ['', 'Learning curve: val mIoU (%), mean over seeds, at evaluated iterations; '
                  'peak = the best mean and its iteration.', '',
                  '| run | ' + ' | '.join(f'it {i}' for i in shown) + ' | peak (iter) |',
                  '|---|' + '---|' * (len(shown) + 1)]
        for label, curve in curves.items():
            miou_at = dict(zip(curve['iters'], curve['miou']))
            cells = [f'{100 * miou_at[i]:.2f}' if i in miou_at else '-' for i in shown]
            peak = int(np.argmax(curve['miou']))
            lines.append(f'| {label} | ' + ' | '.join(cells) +
                         f" | {100 * curve['miou'][peak]:.2f} ({curve['iters'][peak]}) |")
    return lines


# --- the R series of miou_vs_r.png (plots.plot_miou_vs_r draws it) -----------------------------

def r_series(rep):
    """[(arm, kind, [(R, mean %, SE %)])] for the arms of R<k> labels with a point at R > 0, kind
    final / selected; the baseline is R = 0 of each arm without its own R0."""
    arms = {}  # {arm: {R: label}}
    for label in rep['rows']:
        if arm_of(label):
            arm, k = arm_of(label)
            arms.setdefault(arm, {0.0: rep['baseline']})[float(k)] = label
    series = []
    for arm, label_at in arms.items():
        if max(label_at) == 0:
            continue
        for kind in ('final', 'selected'):
            points = []
            for R in sorted(label_at):
                row = rep['rows'].get(label_at[R])
                if row is None:
                    continue
                stats = row if kind == 'final' else row['selected']
                if stats and not is_missing(stats['miou'][0]):
                    points.append((R, 100 * stats['miou'][0], 100 * stats['miou'][1]))
            if points:
                series.append((arm or 'R', kind, points))
    return series


if __name__ == '__main__':
    config = configure(globals())
    runs = load_runs(sweep_dir)
    if not runs:
        raise SystemExit(f'{sweep_dir}: no <label>/**/results.json found (run seg.py first)')
    ddir = os.path.join(data_dir, dataset)
    for name in ('meta.json', 'train_masks.npy'):
        if not os.path.exists(os.path.join(ddir, name)):
            raise SystemExit(f'{ddir}/{name}: not found (set --data_dir / --dataset)')
    meta = read_json(os.path.join(ddir, 'meta.json'))
    classes = meta['classes']
    masks = np.load(os.path.join(ddir, 'train_masks.npy'), mmap_mode='r')
    image_share, pixel_share = class_shares(masks, len(classes))  # meta: ignore 255 >= K
    rep = summarize_runs(runs, baseline, dict(zip(classes, image_share.tolist())),
                         dict(zip(classes, pixel_share.tolist())),
                         background_classes_of(background_classes, classes))
    md = to_markdown(rep)
    print(md)
    pairs.save_json(rep, os.path.join(sweep_dir, 'report.json'))  # NaN -> null
    pairs.save_text(md + '\n', os.path.join(sweep_dir, 'report.md'))
    plots.plot_gains(rep, os.path.join(sweep_dir, 'gain_vs_frequency.png'),
                     subtitle=f'r over {classes_used(rep)}')
    written = ['report.json', 'report.md', 'gain_vs_frequency.png']
    miou_vs_r = os.path.join(sweep_dir, 'miou_vs_r.png')
    if plots.plot_miou_vs_r(r_series(rep), rep['baseline'], miou_vs_r):
        written.append('miou_vs_r.png')
    print(f"wrote {sweep_dir}/{', '.join(written)}")
