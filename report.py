"""Summarise the experiments: seg runs over seeds (the paper's Fig. 5 mIoU vs R, Tab. 5, Tab. 6 /
Fig. 7), and the tables and figure of experiments.sh's steps, clean, bf16 and segmenters
experiments.

Reads  <sweep_dir>/<label>/<anything>/results.json, written by seg.py (one folder per seed), and
       data_dir/<dataset>/meta.json + train_masks.npy: the real training patches.
Writes <sweep_dir>/report.json, report.md (the tables below), gain_vs_frequency.png and, for
       labels <arm>-R<k> / R<k>, miou_vs_r.png.
With --table=steps|clean|bf16|metrics|segmenters it instead prints one experiment's table, read
from the experiment's folder exp_dir (see "The experiments' tables" below); steps also draws
steps.png.

    python report.py --sweep_dir=out-sweep-toy                  # labels R0..R5, baseline R0
    python report.py --sweep_dir=out-baselines-toy --baseline=none
    python report.py --table=steps --exp_dir=out-exp-toy-low64/steps   # the table + steps.png
    python report.py --table=metrics --exp_dir=out-demo-low64/lowdata/metrics   # one line

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

The experiments' tables (--table, each printed as markdown; exp_dir as experiments.sh makes it):
  steps    pair quality by sampler and steps, from exp_dir/metrics-<sampler>-<steps>/metrics.json;
           steps.png: each score and the downstream val mIoU at R = 3 (exp_dir/seg/report.json)
           against the number of steps
  clean    per seg run of exp_dir/seg/report.json: the gain over R0, the captured fraction, the
           difference from the plain pairs of the same R and what clean.py changed
           (exp_dir/<run>/clean.json)
  bf16     per generator (fp32, bf16, bf16 at fp32's iterations): its last val losses
           (exp_dir/gen-<run>/log.txt) and its pairs' quality (exp_dir/metrics-<run>/metrics.json)
  metrics  one line on a metrics.py folder's metrics.json (demo.sh prints it)
  segmenters  the paper's Tab. 2 at CPU scale, one row per exp_dir/<arch>/ (report.json and
           report-vs-R0-long.json of lowdata's arms for that architecture): each arm's mIoU, gen-R3
           over R0 and R0-long, the captured fraction, the paper's gain; also segmenters.md
The figures are drawn by plots.py, one set of PIL helpers for every panel.
"""
import glob
import json
import math
import os
import re

import numpy as np

import pairs
import plots
from configurator import check_settings, configure

# -----------------------------------------------------------------------------
table = 'sweep'  # 'sweep': the report of the seg runs in sweep_dir; steps|clean|bf16|metrics|
# segmenters: that experiment's table, read from exp_dir (module docstring)
sweep_dir = 'out-sweep-toy'
baseline = 'R0'  # the label the others are compared with (real data only)
data_dir = 'data'
dataset = 'toy'
background_classes = 'background'  # ','-separated names (any case) or indices left out of r;
# a name the dataset lacks is skipped (toy has no background: r over all classes); '' = none
exp_dir = ''  # --table other than sweep: the experiment's folder, e.g. out-exp-toy-low64/steps
# -----------------------------------------------------------------------------
TABLES = ('sweep', 'steps', 'clean', 'bf16', 'metrics', 'segmenters')


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


def captured_fractions(gains):
    """{label: ...} for each <arm>-R<k> whose oracle-R<k> is also compared with the baseline:
    gain(arm) / gain(oracle), final and selected; meaningful only if the oracle gain is > 2 SE."""
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
            captured[label][kind] = dict(
                fraction=fraction, gain=arm_gain['points'], oracle_gain=oracle_gain['points'],
                oracle_se_units=oracle_gain['se_units'],
                meaningful=oracle_gain['over_2se'] is True)
    return captured


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
                captured=captured_fractions(gains), curves=curves)


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
                  'means nothing.', '', '| R | run | kind | gain (pts) | oracle gain (pts) | '
                  'oracle gain / SE | captured |', '|---|---|---|---|---|---|---|']
        for label, captured in rep['captured'].items():
            for kind in ('final', 'selected'):
                entry = captured[kind]
                if not entry:
                    continue
                flag = '' if entry['meaningful'] else ' (!) oracle gain not > 2 SE'
                lines.append(f"| {captured['R']:g} | {label} vs {captured['oracle']} | {kind} | "
                             f"{signed(entry['gain'])} | {signed(entry['oracle_gain'])} | "
                             f"{signed(entry['oracle_se_units'])} | "
                             f"{signed(entry['fraction'], '.2f')}{flag} |")
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


# --- the experiments' tables (--table) -----------------------------------------------------------

def read_steps(folder):
    """experiments.sh steps' folder -> (rows, downstream). rows: [(sampler, steps, metrics)] of
    folder/metrics-<sampler>-<steps>/metrics.json, by sampler then steps. downstream:
    {(sampler, steps): (mean, SE) val mIoU} of the seg runs <sampler>-<steps>-R3 in
    folder/seg/report.json, and lowdata's gen-R3 as ('ddim', 50): its pairs are DDIM-50's."""
    rows = []
    for path in glob.glob(os.path.join(folder, 'metrics-*', 'metrics.json')):
        name = os.path.basename(os.path.dirname(path))[len('metrics-'):]  # e.g. dpm++-20
        sampler, steps = name.rsplit('-', 1)
        rows.append((sampler, int(steps), read_json(path)))
    if not rows:
        raise SystemExit(f'{folder}: no metrics-<sampler>-<steps>/metrics.json (experiments.sh '
                         'steps writes them)')
    rows.sort(key=lambda row: (row[0], row[1]))
    seg_report = read_json(os.path.join(folder, 'seg', 'report.json'))
    downstream = {}
    for label, row in seg_report['rows'].items():
        if not label.endswith('-R3'):
            continue
        sampler, _, steps = label[:-len('-R3')].rpartition('-')  # gen-R3, oracle-R3: no steps
        if steps.isdigit():
            downstream[(sampler, int(steps))] = row['miou']
    if 'gen-R3' in seg_report['rows']:
        downstream.setdefault(('ddim', 50), seg_report['rows']['gen-R3']['miou'])
    return rows, downstream


def steps_table(rows):
    """The pair quality by sampler and steps, one markdown row per read_steps row."""
    lines = ['| sampler | steps | class TVD | consistency mIoU | FID | sFID |',
             '|---|---|---|---|---|---|']
    for sampler, steps, m in rows:
        lines.append(f"| {sampler} | {steps} | {m['class_freq_tvd']:.4f} | "
                     f"{m['consistency_miou']:.4f} | {m['fid']:.2f} | {m['sfid']:.2f} |")
    return '\n'.join(lines)


def blank_or(value, spec, scale=1):
    """A table cell: format(scale x value, spec), or '' for a missing number."""
    return '' if is_missing(value) else format(scale * value, spec)


def clean_table(folder):
    """experiments.sh clean's table, one row per seg run of folder/seg/report.json (over R0), R = 1
    first: mIoU, the gain and its SE units, the captured fraction, the difference from the plain
    pairs of the same R (gen-R<k>), and, for the pairs clean.py made (folder/<run>/clean.json),
    the share of ignore pixels and of relabelled ones; then the gains of the three classes with
    the smallest pixel shares."""
    rep = read_json(os.path.join(folder, 'seg', 'report.json'))
    rarest = sorted(rep['pixel_share'], key=rep['pixel_share'].get)[:3]
    columns = ['run', 'mIoU (%)', 'gain (pts)', 'gain / SE', 'captured', 'vs plain (pts)',
               'ignore', 'changed'] + [f'{c} gain' for c in rarest]
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for run in sorted(rep['rows'], key=lambda label: (label[-1], label)):  # by R, then name
        row = rep['rows'][run]
        gain = rep['gains'].get(run)  # None for R0, the baseline
        captured = rep['captured'].get(run, {}).get('final')
        clean_path = os.path.join(folder, run, 'clean.json')
        cleaned = read_json(clean_path) if os.path.exists(clean_path) else {}
        relabelled = 0
        for step in cleaned.values():  # each clean.py option that ran: {..., 'relabelled': share}
            if isinstance(step, dict):
                relabelled += step.get('relabelled', 0)
        cells = [f"{100 * row['miou'][0]:.2f} +- {100 * row['miou'][1]:.2f}"]
        if gain:
            cells.append(blank_or(gain['miou_gain']['final']['points'], '+.2f'))
            cells.append(blank_or(gain['miou_gain']['final']['se_units'], '+.1f'))
        else:
            cells += ['', '']
        cells.append(blank_or(captured['fraction'], '.2f') if captured else '')
        plain = None
        if cleaned:
            plain = rep['rows'].get('gen-R' + run.rsplit('-R', 1)[-1])
        if plain:
            diff = row['miou'][0] - plain['miou'][0]
            diff_se = (row['miou'][1] ** 2 + plain['miou'][1] ** 2) ** 0.5  # independent seeds
            cells.append(f'{100 * diff:+.2f} +- {100 * diff_se:.2f}')
        else:
            cells.append('')
        cells.append(f"{cleaned['ignore_out']:.2%}" if cleaned else '')
        cells.append(f'{relabelled:.2%}' if cleaned else '')
        for c in rarest:
            cells.append(blank_or(gain['gain'][c], '+.2f', scale=100) if gain else '')
        lines.append(f'| {run} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


# The paper's Tab. 2 (iSAID at 256, G + G_SR pairs): mIoU of D and of D + D' per segmenter, the
# gain being what generated pairs added. The paper does not say which SegFormer size it used.
PAPER_TAB2 = {'pfsegnet': (60.93, 63.71), 'farseg': (62.28, 62.95), 'segformer': (60.95, 62.13),
              'fpn': (59.52, 60.65), 'pspnet': (48.95, 56.54)}


def paper_gain(arch):
    """The paper's Tab. 2 gain (mIoU points) for arch ('segformer_b0' -> SegFormer's), or None."""
    before_after = PAPER_TAB2.get(arch.split('_')[0])
    return None if before_after is None else before_after[1] - before_after[0]


def segmenters_table(folder):
    """experiments.sh segmenters' table, one row per architecture folder/<arch>/ (the FPN first):
    the mIoU +- SE of each arm, gen-R3's gain over R0 and over R0-long in SE units (report.json
    and report-vs-R0-long.json), the captured fraction of the oracle's gain (final / selected),
    and the paper's Tab. 2 gain beside it."""
    arms = ['R0', 'R0-long', 'gen-R3', 'oracle-R3']
    columns = ['segmenter'] + [f'{arm} mIoU (%)' for arm in arms] + [
        'gen-R3 vs R0 (pts, SE)', 'vs R0-long (pts, SE)', 'captured final / selected',
        'paper Tab. 2 gain (pts)']
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    archs = sorted(a for a in os.listdir(folder)
                   if os.path.exists(os.path.join(folder, a, 'report.json')))
    archs.sort(key=lambda a: a != 'fpn')  # the paper's segmenter first, the rest by name
    for arch in archs:
        rep = read_json(os.path.join(folder, arch, 'report.json'))
        long_path = os.path.join(folder, arch, 'report-vs-R0-long.json')
        rep_long = read_json(long_path) if os.path.exists(long_path) else None
        cells = []
        for arm in arms:
            row = rep['rows'].get(arm)
            cells.append(mean_pm_se(row['miou']) if row else '-')
        for report in (rep, rep_long):
            gain = report['gains'].get('gen-R3') if report else None
            if gain:
                final = gain['miou_gain']['final']
                cells.append(f"{signed(final['points'])} ({signed(final['se_units'], '+.1f')} SE)")
            else:
                cells.append('-')
        captured = rep['captured'].get('gen-R3')
        if captured:
            cells.append(f"{blank_or(captured['final']['fraction'], '.2f')} / "
                         f"{blank_or(captured['selected']['fraction'], '.2f')}")
        else:
            cells.append('-')
        cells.append(signed(paper_gain(arch)))
        lines.append(f'| {arch} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def last_val_losses(log_path):
    """(iteration, 'val / EMA val') of the last eval line of a train_gen.py log.txt,
    'step N: val loss X, ema val loss Y'."""
    with open(log_path) as f:
        evals = [line for line in f if ' val loss ' in line]
    step, losses = evals[-1].split(': val loss ')
    iteration = step.split()[-1]
    return iteration, losses.strip().replace(', ema val loss ', ' / ')


def bf16_table(folder):
    """experiments.sh bf16's table: per generator its iterations, last val losses and the pair
    quality of its samples."""
    lines = ['| G trained in | iterations | val loss / EMA val loss | class TVD | '
             'consistency mIoU % | FID | sFID |', '|---|---|---|---|---|---|---|']
    for run in ('float32', 'bfloat16', 'bfloat16-iters'):
        iteration, losses = last_val_losses(os.path.join(folder, f'gen-{run}', 'log.txt'))
        m = read_json(os.path.join(folder, f'metrics-{run}', 'metrics.json'))
        lines.append(f"| {run} | {iteration} | {losses} | {m['class_freq_tvd']:.4f} | "
                     f"{100 * m['consistency_miou']:.2f} | {m['fid']:.1f} | {m['sfid']:.2f} |")
    return '\n'.join(lines)


def metrics_line(m):
    """One line on a metrics.py result (metrics.json): what demo.sh prints under its tables."""
    fid = 'n/a' if m['fid'] is None else f"{m['fid']:.2f}"
    sfid = 'n/a' if m['sfid'] is None else f"{m['sfid']:.2f}"
    return (f"generated pairs ({m['n_fake']} at {m['resolution']}x{m['resolution']}) against "
            f"{m['n_real']} real: FID {fid}, sFID {sfid}, consistency mIoU "
            f"{100 * m['consistency_miou']:.2f}, class-frequency TVD {m['class_freq_tvd']:.3f}")


if __name__ == '__main__':
    config = configure(globals())
    problems = []
    if table not in TABLES:
        problems.append(f"table must be {'|'.join(TABLES)}, got {table!r}")
    elif table != 'sweep' and not os.path.isdir(exp_dir):
        problems.append(f'--table={table} reads the experiment folder exp_dir, got {exp_dir!r} '
                        '(not a folder)')
    check_settings('report.py', problems)

    if table == 'steps':
        rows, downstream = read_steps(exp_dir)
        print(steps_table(rows))
        plots.plot_steps(rows, downstream, os.path.join(exp_dir, 'steps.png'))
    elif table == 'clean':
        print(clean_table(exp_dir))
    elif table == 'bf16':
        print(bf16_table(exp_dir))
    elif table == 'metrics':
        print(metrics_line(read_json(os.path.join(exp_dir, 'metrics.json'))))
    elif table == 'segmenters':
        md = segmenters_table(exp_dir)
        print(md)
        pairs.save_text(md + '\n', os.path.join(exp_dir, 'segmenters.md'))
    else:  # the sweep report
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
