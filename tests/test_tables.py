"""tables.py: the tables of experiments.sh steps, clean, bf16, segmenters and compute, and
demo.sh's metrics line (issue 22); each folder laid out as experiments.sh leaves it, numbers by
hand."""
import json

import numpy as np
import pytest
from PIL import Image

import plots
import tables
from conftest import run_python


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def seg_row(mean, se, n_seeds=3):
    return dict(miou=[mean, se], n_seeds=n_seeds)


def make_steps(folder):
    """metrics-<sampler>-<steps>/metrics.json for 5 sampler settings, seg/report.json with one
    <sampler>-<steps>-R3 run and lowdata's arms linked in (gen-R3 stands for DDIM-50)."""
    scores = {'ddim-5': 0.09, 'ddim-50': 0.04, 'dpm++-5': 0.08, 'dpm++-50': 0.03,
              'ddpm-1000': 0.05}
    for name, tvd in scores.items():
        write_json(folder / f'metrics-{name}' / 'metrics.json',
                   dict(class_freq_tvd=tvd, consistency_miou=1 - 10 * tvd, fid=1000 * tvd,
                        sfid=100 * tvd))
    write_json(folder / 'seg' / 'report.json', dict(rows={
        'R0': seg_row(0.40, 0.01), 'dpm++-5-R3': seg_row(0.44, 0.02), 'gen-R3': seg_row(0.45, 0.01),
        'oracle-R3': seg_row(0.47, 0.01)}))


def test_steps_table_and_downstream(tmp_path):
    make_steps(tmp_path)
    rows, downstream = tables.read_steps(str(tmp_path))
    assert [(s, k) for s, k, _ in rows] == [('ddim', 5), ('ddim', 50), ('ddpm', 1000),
                                            ('dpm++', 5), ('dpm++', 50)]  # 50 after 5: numbers
    assert downstream == {('dpm++', 5): [0.44, 0.02], ('ddim', 50): [0.45, 0.01]}
    assert tables.steps_table(rows) == '\n'.join([
        '| sampler | steps | class TVD | consistency mIoU | FID | sFID |',
        '|---|---|---|---|---|---|',
        '| ddim | 5 | 0.0900 | 0.1000 | 90.00 | 9.00 |',
        '| ddim | 50 | 0.0400 | 0.6000 | 40.00 | 4.00 |',
        '| ddpm | 1000 | 0.0500 | 0.5000 | 50.00 | 5.00 |',
        '| dpm++ | 5 | 0.0800 | 0.2000 | 80.00 | 8.00 |',
        '| dpm++ | 50 | 0.0300 | 0.7000 | 30.00 | 3.00 |'])
    # a DDIM-50 run of its own takes the place of lowdata's gen-R3
    write_json(tmp_path / 'seg' / 'report.json', dict(rows={
        'ddim-50-R3': seg_row(0.43, 0.0), 'gen-R3': seg_row(0.45, 0.01)}))
    assert tables.read_steps(str(tmp_path))[1] == {('ddim', 50): [0.43, 0.0]}
    with pytest.raises(SystemExit, match='no metrics-<sampler>-<steps>'):
        tables.read_steps(str(tmp_path / 'seg'))


def quadrant_colours(image, p, width=500, height=310):
    """The colours of panel p (0..3, row by row) of steps.png."""
    box = ((p % 2) * width, (p // 2) * height, (p % 2 + 1) * width, (p // 2 + 1) * height)
    return {colour for _, colour in image.crop(box).getcolors(1 << 16)}


def test_steps_command_prints_the_table_and_draws_four_panels(tmp_path):
    make_steps(tmp_path)
    out = run_python(['tables.py', '--table=steps', f'--exp_dir={tmp_path}'])
    assert out.returncode == 0, out.stderr
    assert '| dpm++ | 50 | 0.0300 | 0.7000 | 30.00 | 3.00 |' in out.stdout
    ddim, dpm, ddpm = plots.COLOURS[:3]
    with Image.open(tmp_path / 'steps.png') as im:
        assert im.size == (1000, 620)
        image = im.convert('RGB')
    for p in range(3):  # TVD, consistency, FID: every sampler in every panel
        assert {ddim, dpm, ddpm} <= quadrant_colours(image, p)
    # downstream: dpm++-5 and DDIM-50 (gen-R3) have seg runs, drawn inside the frame
    downstream_panel = image.crop((500, 310, 1000, 620))
    dots = [xy for xy in ((x, y) for x in range(500) for y in range(310))
            if downstream_panel.getpixel(xy) in (ddim, dpm)]
    assert dots and min(x for x, _ in dots) > 40  # inside the frame, not left of it


def test_clean_table_by_hand(tmp_path):
    write_json(tmp_path / 'seg' / 'report.json', dict(
        pixel_share={'soil': 0.6, 'building': 0.1, 'road': 0.2, 'water': 0.05, 'tree': 0.05},
        rows={'R0': seg_row(0.40, 0.01), 'gen-R1': seg_row(0.42, 0.03),
              'area-R1': seg_row(0.43, 0.04), 'gen-R3': seg_row(0.45, 0.02),
              'oracle-R3': seg_row(0.47, 0.01), 'select-R3': seg_row(0.46, 0.0)},
        gains={'gen-R1': dict(miou_gain=dict(final=dict(points=2.0, se_units=0.63)),
                              gain={'soil': 0.0, 'building': 0.01, 'road': 0.02, 'water': 0.03,
                                    'tree': None}),
               'area-R1': dict(miou_gain=dict(final=dict(points=3.0, se_units=None)),
                               gain={'soil': 0.0, 'building': 0.02, 'road': 0.0, 'water': -0.01,
                                     'tree': 0.05})},
        captured={'gen-R1': dict(final=dict(fraction=0.4)), 'area-R1': dict(final=None)}))
    write_json(tmp_path / 'area-R1' / 'clean.json', dict(
        n_in=64, ignore_out=0.0125, min_area=dict(relabelled=0.03), keep=dict(keep=64),
        classes=['soil']))
    write_json(tmp_path / 'select-R3' / 'clean.json', dict(ignore_out=0.0))
    lines = tables.clean_table(str(tmp_path)).splitlines()
    assert lines[0] == ('| run | mIoU (%) | gain (pts) | gain / SE | captured | vs plain (pts) | '
                        'ignore | changed | water gain | tree gain | building gain |')
    assert lines[1] == '|' + '---|' * 11
    assert lines[2:] == [  # R = 1 first, then R = 3, each by name
        '| R0 | 40.00 +- 1.00 |  |  |  |  |  |  |  |  |  |',
        '| area-R1 | 43.00 +- 4.00 | +3.00 |  |  | +1.00 +- 5.00 | 1.25% | 3.00% | -1.00 | +5.00 '
        '| +2.00 |',
        '| gen-R1 | 42.00 +- 3.00 | +2.00 | +0.6 | 0.40 |  |  |  | +3.00 |  | +1.00 |',
        '| gen-R3 | 45.00 +- 2.00 |  |  |  |  |  |  |  |  |  |',
        '| oracle-R3 | 47.00 +- 1.00 |  |  |  |  |  |  |  |  |  |',
        '| select-R3 | 46.00 +- 0.00 |  |  |  | +1.00 +- 2.00 | 0.00% | 0.00% |  |  |  |']


def test_clean_table_command_line(tmp_path):
    write_json(tmp_path / 'seg' / 'report.json', dict(
        pixel_share={'a': 0.5, 'b': 0.5}, rows={'R0': seg_row(0.5, 0.0)}, gains={},
        captured={}))
    out = run_python(['tables.py', '--table=clean', f'--exp_dir={tmp_path}'])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == '| R0 | 50.00 +- 0.00 |  |  |  |  |  |  |  |  |'


def test_bf16_table_reads_the_last_eval_line(tmp_path):
    for run, (first, last, tvd) in {'float32': (100, 300, 0.02), 'bfloat16': (100, 500, 0.03),
                                    'bfloat16-iters': (200, 300, 0.025)}.items():
        log = tmp_path / f'gen-{run}' / 'log.txt'
        log.parent.mkdir()
        log.write_text(f'start at iter 0: {run}\n'
                       f'step {first}: val loss 0.5000, ema val loss 0.6000\n'
                       f'iter {last}: loss 0.1000, lr 1.00e-04, time 84.2ms\n'
                       f'step {last}: val loss 0.2{last}, ema val loss 0.1{last}\n')
        write_json(tmp_path / f'metrics-{run}' / 'metrics.json',
                   dict(class_freq_tvd=tvd, consistency_miou=0.3246, fid=14.44, sfid=1.294))
    assert tables.bf16_table(str(tmp_path)).splitlines() == [
        '| G trained in | iterations | val loss / EMA val loss | class TVD | consistency mIoU % '
        '| FID | sFID |', '|---|---|---|---|---|---|---|',
        '| float32 | 300 | 0.2300 / 0.1300 | 0.0200 | 32.46 | 14.4 | 1.29 |',
        '| bfloat16 | 500 | 0.2500 / 0.1500 | 0.0300 | 32.46 | 14.4 | 1.29 |',
        '| bfloat16-iters | 300 | 0.2300 / 0.1300 | 0.0250 | 32.46 | 14.4 | 1.29 |']


def test_metrics_line_and_bad_table_settings(tmp_path):
    m = dict(n_fake=36, n_real=4, resolution=32, fid=89.224, sfid=None, consistency_miou=0.44237,
             class_freq_tvd=0.0213)
    assert tables.metrics_line(m) == ('generated pairs (36 at 32x32) against 4 real: FID 89.22, '
                                      'sFID n/a, consistency mIoU 44.24, class-frequency TVD 0.021')
    write_json(tmp_path / 'metrics.json', m)
    out = run_python(['tables.py', '--table=metrics', f'--exp_dir={tmp_path}'])
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == tables.metrics_line(m)
    bad_settings = [(['--table=plot'],
                     "table must be steps|clean|bf16|metrics|segmenters|compute, got 'plot'"),
                    (['--table=bf16', f'--exp_dir={tmp_path}/none'], 'not a folder')]
    for args, why in bad_settings:
        bad = run_python(['tables.py', *args])
        assert bad.returncode != 0 and why in bad.stderr
        assert bad.stderr.startswith('tables.py: error: ')
        assert len(bad.stderr.strip().splitlines()) == 1
    moved = run_python(['report.py', '--table=metrics', f'--exp_dir={tmp_path}'])
    assert moved.returncode != 0  # the tables are tables.py's: report.py has no such setting
    assert "config error (command line): unknown key 'table'" in moved.stderr


def test_segmenters_table_by_hand(tmp_path):
    """experiments.sh segmenters' table: one row per architecture folder, the FPN first; each arm's
    mIoU, gen-R3's gain over R0 and R0-long, the captured fraction and the paper's Tab. 2 gain."""
    def gain(points, se_units):
        return dict(miou_gain=dict(final=dict(points=points, se_units=se_units)))

    for arch, r0, long, gen, oracle in [('pspnet', 0.30, 0.29, 0.33, 0.36),
                                         ('fpn', 0.40, 0.39, 0.42, 0.46)]:
        rows = {'R0': seg_row(r0, 0.01), 'R0-long': seg_row(long, 0.01),
                'gen-R3': seg_row(gen, 0.01), 'oracle-R3': seg_row(oracle, 0.01)}
        captured = {'gen-R3': dict(final=dict(fraction=(gen - r0) / (oracle - r0)),
                                   selected=dict(fraction=None))}
        write_json(tmp_path / arch / 'report.json', dict(
            rows=rows, gains={'gen-R3': gain(100 * (gen - r0), 2.1)}, captured=captured))
        if arch == 'fpn':  # pspnet's comparison with R0-long is missing: '-'
            write_json(tmp_path / arch / 'report-vs-R0-long.json', dict(
                rows=rows, gains={'gen-R3': gain(100 * (gen - long), 2.1)}, captured={}))
    (tmp_path / 'not-a-run').mkdir()  # a folder without report.json is no row
    lines = tables.segmenters_table(str(tmp_path)).splitlines()
    assert lines[0].startswith('| segmenter | R0 mIoU (%) | R0-long mIoU (%) | gen-R3 mIoU (%) |')
    assert lines[1] == '|' + '---|' * 9
    assert lines[2:] == [
        '| fpn | 40.00 +- 1.00 | 39.00 +- 1.00 | 42.00 +- 1.00 | 46.00 +- 1.00 | +2.00 (+2.1 SE) '
        '| +3.00 (+2.1 SE) | 0.33 /  | +1.13 |',
        '| pspnet | 30.00 +- 1.00 | 29.00 +- 1.00 | 33.00 +- 1.00 | 36.00 +- 1.00 | +3.00 (+2.1 SE) '
        '| - | 0.50 /  | +7.59 |']
    assert tables.paper_gain('segformer_b2') == pytest.approx(62.13 - 60.95)
    assert tables.paper_gain('unet') is None


def gain(points, se_units):
    """A report.py gain entry with its final mIoU gain (points, SE units) only."""
    return dict(miou_gain=dict(final=dict(points=points, se_units=se_units)))


def captured(final, selected, final_se=None):
    """A report.py captured entry: the final and selected fractions (None: undefined), and the
    final one's SE where final_se is given (older report.json files have none)."""
    entry = dict(oracle='oracle-R3', R=3.0,
                 final=None if final is None else dict(fraction=final),
                 selected=None if selected is None else dict(fraction=selected))
    if final_se is not None:
        entry['final']['se'] = final_se
    return entry


def make_compute(folder):
    """experiments.sh compute's folder: G at 1,000, 2,500 and 10,000 iterations through seg
    (report.json over R0 and over R0-long; it2500 has no comparison with R0-long, no selected
    fraction and no metrics.json yet) and a G at 5,000 iterations that has not reached seg."""
    write_json(folder / 'seg' / 'report.json', dict(
        rows={'R0': seg_row(0.40, 0.01), 'R0-long': seg_row(0.39, 0.01),
              'oracle-R3': seg_row(0.46, 0.01), 'it1000-R3': seg_row(0.41, 0.01),
              'it2500-R3': seg_row(0.43, 0.02), 'it10000-R3': seg_row(0.45, 0.01)},
        gains={'it1000-R3': gain(1.0, 0.7), 'it2500-R3': gain(3.0, 1.3),
               'it10000-R3': gain(5.0, 3.5), 'oracle-R3': gain(6.0, 4.2)},
        captured={'it1000-R3': captured(1 / 6, 0.25), 'it2500-R3': captured(0.5, None),
                  'it10000-R3': captured(5 / 6, 0.9, final_se=0.123)}))
    write_json(folder / 'seg' / 'report-vs-R0-long.json', dict(
        rows={}, gains={'it1000-R3': gain(2.0, 1.4), 'it10000-R3': gain(6.0, 4.2)},
        captured={}))
    write_json(folder / 'metrics-it1000' / 'metrics.json',
               dict(consistency_miou=0.3012, class_freq_tvd=0.0456, fid=81.234))
    write_json(folder / 'metrics-it10000' / 'metrics.json',
               dict(consistency_miou=0.4, class_freq_tvd=0.02, fid=None))
    (folder / 'gen-it5000').mkdir()
    (folder / 'gen-it2500').mkdir()  # a point both trained and in the report is one row


COMPUTE_ROWS = [  # by iterations (10000 last, not between 1000 and 2500), each computed by hand
    '| 1000 | 41.00 +- 1.00 | +1.00 (+0.7 SE) | +2.00 (+1.4 SE) | 0.17 / 0.25 | 30.12 | 0.0456 '
    '| 81.23 |',
    '| 2500 | 43.00 +- 2.00 | +3.00 (+1.3 SE) | - | 0.50 /  |  |  |  |',
    '| 5000 | - | - | - | - |  |  |  |',
    '| 10000 | 45.00 +- 1.00 | +5.00 (+3.5 SE) | +6.00 (+4.2 SE) | 0.83 +- 0.12 / 0.90 | 40.00 | 0.0200 '
    '|  |']


def has_dot(image, colour):
    """Whether image holds a filled 5 x 5 square of colour: a series' dot (text has none)."""
    solid = (np.asarray(image) == colour).all(axis=-1)
    windows = np.lib.stride_tricks.sliding_window_view(solid, (5, 5))
    return bool(windows.all(axis=(-2, -1)).any())


def test_compute_table_by_hand(tmp_path):
    make_compute(tmp_path)
    points = tables.read_compute(str(tmp_path))
    assert [point['iters'] for point in points] == [1000, 2500, 5000, 10000]
    assert points[2] == dict(iters=5000, miou=None, gain=None, gain_long=None, captured=None,
                             metrics=None)
    lines = tables.compute_table(points).splitlines()
    assert lines[0] == ('| G iterations | gen-R3 mIoU (%) | vs R0 (pts, SE) | '
                        'vs R0-long (pts, SE) | captured final / selected | '
                        'consistency mIoU (%) | class TVD | FID |')
    assert lines[1] == '|' + '---|' * 8
    assert lines[2:] == COMPUTE_ROWS
    with pytest.raises(SystemExit, match='no generator it<k>'):
        tables.read_compute(str(tmp_path / 'seg'))


def test_compute_command_writes_the_table_and_the_curve(tmp_path):
    make_compute(tmp_path)
    out = run_python(['tables.py', '--table=compute', f'--exp_dir={tmp_path}'])
    assert out.returncode == 0, out.stderr
    table = out.stdout.strip().splitlines()[-6:]
    assert table[2:] == COMPUTE_ROWS
    assert (tmp_path / 'compute.md').read_text() == '\n'.join(table) + '\n'
    final, selected = plots.COLOURS[:2]
    with Image.open(tmp_path / 'compute.png') as im:
        assert im.size == (1000, 310)
        image = im.convert('RGB')
    captured_panel = image.crop((0, 0, 500, 310))
    consistency_panel = image.crop((500, 0, 1000, 310))
    assert has_dot(captured_panel, final) and has_dot(captured_panel, selected)
    assert has_dot(consistency_panel, final) and not has_dot(consistency_panel, selected)
    # no captured fraction anywhere (no oracle run): that panel says so, the other is drawn
    report = json.loads((tmp_path / 'seg' / 'report.json').read_text())
    report['captured'] = {}
    write_json(tmp_path / 'seg' / 'report.json', report)
    out = run_python(['tables.py', '--table=compute', f'--exp_dir={tmp_path}'])
    assert out.returncode == 0, out.stderr
    with Image.open(tmp_path / 'compute.png') as im:
        image = im.convert('RGB')
    assert not has_dot(image.crop((0, 0, 500, 310)), final)
    assert has_dot(image.crop((500, 0, 1000, 310)), final)
