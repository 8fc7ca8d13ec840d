"""The tables of experiments.sh's steps, clean, bf16, segmenters and compute experiments, and
demo.sh's metrics line: each printed as markdown, read from one experiment's folder exp_dir as
experiments.sh leaves it. report.py (the seg runs over seeds) writes the report.json files they
read; its helpers (read_json, the table cells) serve here too.

Reads  exp_dir, by table:
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
           over R0 and R0-long, the captured fraction, the paper's gain
  compute  one row per generator it<k> of the curve (k training iterations), by k: its R = 3
           mIoU, gains over R0 and R0-long and captured fraction (exp_dir/seg/report.json and
           report-vs-R0-long.json, rows it<k>-R3) and its pairs' quality
           (exp_dir/metrics-it<k>/metrics.json)
Writes the table to stdout; exp_dir/steps.png for steps (drawn by plots.py), exp_dir/segmenters.md
       for segmenters, exp_dir/compute.md and compute.png (captured fraction and consistency
       against G's iterations) for compute.

    python tables.py --table=steps --exp_dir=out-exp-toy-low64/steps   # the table + steps.png
    python tables.py --table=segmenters --exp_dir=out-exp-toy-low64/segmenters
    python tables.py --table=compute --exp_dir=out-exp-toy-low64/compute   # + compute.png
    python tables.py --table=metrics --exp_dir=out-demo-low64/lowdata/metrics   # one line
"""
import glob
import os
import re

import pairs
import plots
from configurator import check_settings, configure
from report import is_missing, mean_pm_se, read_json, signed

# -----------------------------------------------------------------------------
table = ''  # steps|clean|bf16|metrics|segmenters|compute: the experiment's table (docstring)
exp_dir = ''  # the experiment's folder, e.g. out-exp-toy-low64/steps
# -----------------------------------------------------------------------------
TABLES = ('steps', 'clean', 'bf16', 'metrics', 'segmenters', 'compute')


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


def read_json_if_there(path):
    """read_json(path), or None where the file does not exist (a step not run yet)."""
    return read_json(path) if os.path.exists(path) else None


def entry_of(rep, key, label):
    """rep[key][label] of a report.py report (key: rows, gains or captured), or None where the
    report or its entry is missing."""
    return rep[key].get(label) if rep else None


def gain_cell(gain):
    """'+2.00 (+2.1 SE)': a report.py gain entry's final mIoU gain over the baseline, in points
    and in SE units; '-' for a missing gain."""
    if not gain or not gain['miou_gain']['final']:
        return '-'
    final = gain['miou_gain']['final']
    return f"{signed(final['points'])} ({signed(final['se_units'], '+.1f')} SE)"


def captured_cell(captured):
    """'0.40 +- 0.08 / 0.35 +- 0.09': a report.py captured entry's fraction of the oracle's gain
    and its SE, final / selected (the fraction alone from a report.json older than the SE; blank
    where undefined); '-' for a missing entry."""
    if not captured:
        return '-'
    fractions = []
    for kind in ('final', 'selected'):
        entry = captured[kind]  # None where a gain is missing (no selected checkpoints)
        cell = blank_or(entry['fraction'] if entry else None, '.2f')
        if cell and 'se' in entry:
            cell += ' +- ' + (blank_or(entry['se'], '.2f') or 'n/a')
        fractions.append(cell)
    return ' / '.join(fractions)


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
        rep_long = read_json_if_there(os.path.join(folder, arch, 'report-vs-R0-long.json'))
        cells = []
        for arm in arms:
            row = rep['rows'].get(arm)
            cells.append(mean_pm_se(row['miou']) if row else '-')
        cells.append(gain_cell(entry_of(rep, 'gains', 'gen-R3')))
        cells.append(gain_cell(entry_of(rep_long, 'gains', 'gen-R3')))
        cells.append(captured_cell(entry_of(rep, 'captured', 'gen-R3')))
        cells.append(signed(paper_gain(arch)))
        lines.append(f'| {arch} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def read_compute(folder):
    """experiments.sh compute's folder -> one point per generator it<k> of the curve, by k (the
    union of folder/gen-it<k>, folder/metrics-it<k> and the it<k>-R3 rows of
    folder/seg/report.json): dict(iters=k, miou=(mean, SE), gain and gain_long=its report.py
    gains over R0 and over R0-long (report-vs-R0-long.json), captured=its captured fraction
    entry, metrics=its metrics.json), each None where it is missing."""
    rep = read_json_if_there(os.path.join(folder, 'seg', 'report.json'))
    rep_long = read_json_if_there(os.path.join(folder, 'seg', 'report-vs-R0-long.json'))
    every_k = set()
    for name in os.listdir(folder):
        match = re.fullmatch(r'(?:gen|metrics)-it(\d+)', name)
        if match:
            every_k.add(int(match.group(1)))
    for label in (rep['rows'] if rep else {}):
        match = re.fullmatch(r'it(\d+)-R3', label)
        if match:
            every_k.add(int(match.group(1)))
    if not every_k:
        raise SystemExit(f'{folder}: no generator it<k> (experiments.sh compute writes gen-it<k>, '
                         'metrics-it<k> and seg/report.json)')
    points = []
    for k in sorted(every_k):  # by number: it10000 after it2500
        label = f'it{k}-R3'
        row = entry_of(rep, 'rows', label)
        points.append(dict(
            iters=k, miou=row['miou'] if row else None, gain=entry_of(rep, 'gains', label),
            gain_long=entry_of(rep_long, 'gains', label),
            captured=entry_of(rep, 'captured', label),
            metrics=read_json_if_there(os.path.join(folder, f'metrics-it{k}', 'metrics.json'))))
    return points


def compute_table(points):
    """experiments.sh compute's table, one row per read_compute point: G's iterations, the mIoU
    +- SE at R = 3, its gains over R0 and over R0-long, the captured fraction of the oracle's
    gain (final / selected), and its pairs' consistency mIoU, class TVD and FID."""
    columns = ['G iterations', 'gen-R3 mIoU (%)', 'vs R0 (pts, SE)', 'vs R0-long (pts, SE)',
               'captured final / selected', 'consistency mIoU (%)', 'class TVD', 'FID']
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for point in points:
        m = point['metrics'] or {}  # no metrics.json yet: blank cells
        cells = [str(point['iters']), mean_pm_se(point['miou']) if point['miou'] else '-',
                 gain_cell(point['gain']), gain_cell(point['gain_long']),
                 captured_cell(point['captured']),
                 blank_or(m.get('consistency_miou'), '.2f', scale=100),
                 blank_or(m.get('class_freq_tvd'), '.4f'), blank_or(m.get('fid'), '.2f')]
        lines.append('| ' + ' | '.join(cells) + ' |')
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
    elif not os.path.isdir(exp_dir):
        problems.append(f'--table={table} reads the experiment folder exp_dir, got {exp_dir!r} '
                        '(not a folder)')
    check_settings('tables.py', problems)

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
    else:  # compute
        points = read_compute(exp_dir)
        md = compute_table(points)
        print(md)
        pairs.save_text(md + '\n', os.path.join(exp_dir, 'compute.md'))
        plots.plot_compute(points, os.path.join(exp_dir, 'compute.png'))
