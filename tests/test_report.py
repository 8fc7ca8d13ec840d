"""report.py: mean +- SE over seeds, per-class gains against the share of training patches that
contain each class (the paper's Fig. 7) and its pixel share, Pearson r over the foreground
classes, the PNG plot."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import plots
import report
from conftest import ROOT

CLASSES = ['background', 'ship', 'plane', 'harbour', 'road']


def masks_fixture():
    """4 patches of 8 x 8 in which the share of patches containing a class and its pixel share
    rank the classes differently: ship is in every patch but 1 pixel each, plane fills half of
    one patch. Patch 3 has 4 ignore pixels (255)."""
    m = np.zeros((4, 8, 8), np.uint8)  # background everywhere else
    m[:, 0, 0] = 1  # ship: 4 patches, 4 pixels
    m[0, 4:, :] = 2  # plane: 1 patch, 32 pixels
    m[0, 1, 1:5] = 3  # harbour: 2 patches, 4 + 8 pixels
    m[1, 2, :] = 3
    m[1:, 7, 5:7] = 4  # road: 3 patches, 6 pixels
    m[3, 3:5, 3:5] = 255
    return m


# what the fixture holds, counted by hand
IMAGE = [1.0, 1.0, 0.25, 0.5, 0.75]
PIXELS = np.array([256 - 4 - 4 - 32 - 12 - 6, 4, 32, 12, 6])  # 256 pixels, 4 of them ignore
PIXEL = (PIXELS / 252).tolist()


def write_run(folder, iou_by_class):
    folder.mkdir(parents=True)
    iou = dict(zip(CLASSES, iou_by_class))
    res = dict(miou=float(np.mean(iou_by_class)), mean_f1=0.5, iou=iou, classes=CLASSES)
    (folder / 'results.json').write_text(json.dumps(res))


BASE = [0.95, 0.3, 0.6, 0.5, 0.4]
GAIN = [0.0, 0.02, 0.12, 0.05, 0.01]  # plane (rare in patches, common in pixels) gains most


def make_sweep(sweep):
    for s, noise in enumerate([0.0, 0.02, -0.02]):
        write_run(sweep / 'R0' / f'seed{s}', [BASE[0] + noise, *BASE[1:]])
        write_run(sweep / 'R10' / f'seed{s}', [b + g for b, g in zip(BASE, GAIN)])
        write_run(sweep / 'R2' / f'seed{s}', BASE)  # no gain anywhere: r is NaN


def write_dataset(root, classes=CLASSES):
    root.mkdir(parents=True)
    (root / 'meta.json').write_text(json.dumps({
        'classes': classes, 'num_classes': len(classes), 'ignore_index': 255,
        'class_freq': {'train': [round(p, 6) for p in PIXEL]}}))
    np.save(root / 'train_masks.npy', masks_fixture())


def test_class_shares_images_vs_pixels():
    m = masks_fixture()
    for chunk in (1, 3, 256):  # read in chunks: the result must not depend on their size
        image, pixel = report.class_shares(m, 5, chunk=chunk)
        assert np.allclose(image, IMAGE) and np.allclose(pixel, PIXEL)
    # the two measures rank the classes differently (the point of Fig. 7's choice)
    assert np.argsort(IMAGE, kind='stable').tolist() != np.argsort(PIXEL, kind='stable').tolist()


def test_background_knob():
    assert report.background_classes_of('background', CLASSES) == ['background']
    assert report.background_classes_of('BG, background', ['bg', 'x']) == ['bg']
    assert report.background_classes_of('0,3', CLASSES) == ['background', 'harbour']
    assert report.background_classes_of('', CLASSES) == []
    toy = 'bare_soil building road water tree agriculture'.split()
    assert report.background_classes_of('background', toy) == []  # none: all classes count


def test_summary_r_is_over_foreground_image_share(tmp_path):
    make_sweep(tmp_path / 'sweep')
    runs = report.load_runs(str(tmp_path / 'sweep'))
    assert list(runs) == ['R0', 'R2', 'R10']  # natural order, not string order
    image, pixel = dict(zip(CLASSES, IMAGE)), dict(zip(CLASSES, PIXEL))
    rep = report.summarize_runs(runs, 'R0', image, pixel, background=['background'])
    miou = [np.mean([BASE[0] + n, *BASE[1:]]) for n in (0.0, 0.02, -0.02)]
    assert np.isclose(rep['rows']['R0']['miou'][0], np.mean(miou))
    assert np.isclose(rep['rows']['R0']['miou'][1], np.std(miou, ddof=1) / np.sqrt(3))
    g = rep['gains']['R10']
    assert np.isclose(g['gain']['plane'], 0.12) and np.isclose(g['gain']['background'], 0.0)
    fg = slice(1, None)  # the 4 foreground classes, background excluded
    r_image = np.corrcoef(IMAGE[fg], GAIN[fg])[0, 1]
    r_pixel = np.corrcoef(PIXEL[fg], GAIN[fg])[0, 1]
    assert np.isclose(g['pearson_r'], r_image) and np.isclose(g['pearson_r_pixel'], r_pixel)
    assert g['pearson_r'] < -0.5 < 0.5 < g['pearson_r_pixel']  # the two measures disagree here
    assert g['n_classes'] == 4 and rep['foreground'] == CLASSES[1:]
    # background included would be another r: it must not be what is reported
    assert not np.isclose(g['pearson_r'], np.corrcoef(IMAGE, GAIN)[0, 1])
    everything = report.summarize_runs(runs, 'R0', image, pixel, background=[])
    assert np.isclose(everything['gains']['R10']['pearson_r'], np.corrcoef(IMAGE, GAIN)[0, 1])
    assert rep['gains']['R2']['pearson_r'] != rep['gains']['R2']['pearson_r']  # no gains: NaN


def test_report_end_to_end(tmp_path):
    sweep = tmp_path / 'sweep'
    make_sweep(sweep)
    write_dataset(tmp_path / 'data' / 'toy')
    out = subprocess.run([sys.executable, str(ROOT / 'report.py'), f'--sweep_dir={sweep}',
                          f'--data_dir={tmp_path / "data"}'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rep = json.loads((sweep / 'report.json').read_text())
    r = rep['gains']['R10']['pearson_r']  # as Fig. 7: image share, 4 foreground classes
    assert np.isclose(r, np.corrcoef(IMAGE[1:], GAIN[1:])[0, 1]), (r, 'not', rep['gains'])
    assert np.allclose([rep['image_share'][c] for c in CLASSES], IMAGE)
    assert np.allclose([rep['pixel_share'][c] for c in CLASSES], PIXEL)
    assert rep['background'] == ['background']
    assert np.isclose(rep['gains']['R10']['pearson_r_pixel'],
                      np.corrcoef(PIXEL[1:], GAIN[1:])[0, 1])
    assert rep['gains']['R2']['pearson_r'] is None  # NaN -> null
    md = (sweep / 'report.md').read_text()
    assert '| R10 | 3 |' in out.stdout and md.strip() in out.stdout
    assert '| class | image share (%) | pixel share (%) | gain |' in md
    assert '| plane | 25.00 | 12.70 | 12.00 |' in md and f'{r:.3f}' in md
    assert 'background (excluded)' in md
    assert (sweep / 'gain_vs_frequency.png').stat().st_size > 1000

    # a dataset without a background class (the toy one): r over all classes, and said so
    toy = 'bare_soil building road water tree'.split()
    sweep2 = tmp_path / 'sweep2'
    for label, ious in (('R0', BASE), ('R1', [b + g for b, g in zip(BASE, GAIN)])):
        (sweep2 / label / 's0').mkdir(parents=True)
        (sweep2 / label / 's0' / 'results.json').write_text(json.dumps(dict(
            miou=0.5, mean_f1=0.5, iou=dict(zip(toy, ious)), classes=toy)))
    write_dataset(tmp_path / 'data' / 'toy2', toy)
    out = subprocess.run([sys.executable, str(ROOT / 'report.py'), f'--sweep_dir={sweep2}',
                          f'--data_dir={tmp_path / "data"}', '--dataset=toy2'],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rep = json.loads((sweep2 / 'report.json').read_text())
    assert rep['background'] == [] and rep['gains']['R1']['n_classes'] == 5
    assert np.isclose(rep['gains']['R1']['pearson_r'], np.corrcoef(IMAGE, GAIN)[0, 1])
    assert 'all 5 classes' in out.stdout

    bad = subprocess.run([sys.executable, str(ROOT / 'report.py'), f'--sweep_dir={tmp_path}/x'],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and 'no <label>' in bad.stderr


# --- issue 12: selected checkpoint, gains in SE units, captured fraction, learning curves -------
# 2 seeds m - d, m + d: SE = std(ddof=1) / sqrt(2) = d exactly, so every number below is by hand.
LOW = {  # label: (final mIoU per seed, selected mIoU per seed or None per seed)
    'R0': ((0.49, 0.51), (0.52, 0.54)),  # 50 +- 1; selected 53 +- 1
    'gen-R1': ((0.51, 0.55), (0.55, 0.57)),  # 53 +- 2; selected 56 +- 1
    'oracle-R1': ((0.55, 0.57), (0.60, 0.62)),  # 56 +- 1; selected 61 +- 1
    'gen-R3': ((0.45, 0.47), (0.60, None)),  # 46 +- 1, a drop; selected in one seed only
    'oracle-R3': ((0.51, 0.53), (None, None)),  # 52 +- 1; an older run: no selected, no history
}
HISTORY = {  # label: per seed [[iter, val mIoU, selection mIoU], ...]
    'R0': ([[100, 0.40, 0.4], [200, 0.50, 0.5], [300, 0.49, 0.5]],
           [[100, 0.42, 0.4], [200, 0.52, 0.5], [300, 0.51, 0.5]]),  # peaks at 200, then drops
    'gen-R1': ([[100, 0.30, 0.3], [200, 0.40, 0.4], [300, 0.50, 0.5]],
               [[100, 0.34, 0.3], [200, None, 0.4]]),  # seed 1 stopped early, a NaN -> null
}


def make_lowdata(sweep):
    for label, (finals, sels) in LOW.items():
        for s, (miou, sel) in enumerate(zip(finals, sels)):
            res = dict(miou=miou, mean_f1=miou + 0.1, iou={c: miou for c in CLASSES},
                       classes=CLASSES, iter_num=300)
            if sel is not None:
                res['selected'] = dict(iter_num=100 * (s + 1), miou=sel, mean_f1=sel + 0.1,
                                       iou={c: sel for c in CLASSES})
            if label in HISTORY:
                res['history'] = HISTORY[label][s]
            if label != 'oracle-R3':  # the older run has neither key at all
                res.setdefault('selected', None)
            (sweep / label / f'seed{s}').mkdir(parents=True)
            (sweep / label / f'seed{s}' / 'results.json').write_text(json.dumps(res))


def test_lowdata_summary_by_hand(tmp_path):
    make_lowdata(tmp_path / 'low')
    runs = report.load_runs(str(tmp_path / 'low'))
    rep = report.summarize_runs(runs, 'R0', dict(zip(CLASSES, IMAGE)), dict(zip(CLASSES, PIXEL)))
    rows, gains = rep['rows'], rep['gains']
    # final and selected side by side; SE = d with 2 seeds
    assert np.allclose(rows['R0']['miou'], (0.50, 0.01)) and np.allclose(rows['R0']['mean_f1'],
                                                                        (0.60, 0.01))
    assert np.allclose(rows['R0']['selected']['miou'], (0.53, 0.01))
    assert np.allclose(rows['R0']['selected']['mean_f1'], (0.63, 0.01))
    assert np.isclose(rows['R0']['selected']['iter_num'][0], 150)  # mean picked iteration
    assert rows['gen-R3']['selected']['n_seeds'] == 1  # over the seeds that have one
    assert np.allclose(rows['gen-R3']['selected']['miou'], (0.60, 0.0))
    assert rows['oracle-R3']['selected'] is None  # older results.json: no selected
    # gain in SE units: SE_diff = sqrt(SE_a^2 + SE_b^2)
    g = gains['oracle-R1']['miou_gain']['final']  # 6 points, SE sqrt(2): 4.24 SE
    assert np.isclose(g['points'], 6) and np.isclose(g['se_points'], np.sqrt(2))
    assert np.isclose(g['se_units'], 6 / np.sqrt(2)) and g['over_2se'] is True
    g = gains['gen-R1']['miou_gain']['final']  # 3 points, SE sqrt(1 + 4): 1.34 SE
    assert np.isclose(g['se_units'], 3 / np.sqrt(5)) and g['over_2se'] is False
    g = gains['gen-R1']['miou_gain']['selected']  # 3 points, SE sqrt(2): 2.12 SE
    assert np.isclose(g['points'], 3) and np.isclose(g['se_units'], 3 / np.sqrt(2))
    assert g['over_2se'] is True
    g = gains['gen-R3']['miou_gain']['final']  # a drop of 4 points, -2.83 SE
    assert np.isclose(g['se_units'], -4 / np.sqrt(2)) and g['over_2se'] is False
    g = gains['gen-R3']['miou_gain']['selected']  # one seed: no SE, so no verdict
    assert np.isclose(g['points'], 7) and g['se_units'] != g['se_units'] and g['over_2se'] is None
    assert gains['oracle-R3']['miou_gain']['selected'] is None
    # captured fraction: gain(gen-R) / gain(oracle-R)
    cap = rep['captured']
    assert set(cap) == {'gen-R1', 'gen-R3'} and cap['gen-R1']['oracle'] == 'oracle-R1'
    assert np.isclose(cap['gen-R1']['final']['fraction'], 3 / 6)
    assert cap['gen-R1']['final']['meaningful'] is True
    assert np.isclose(cap['gen-R1']['selected']['fraction'], 3 / 8)
    assert np.isclose(cap['gen-R3']['final']['fraction'], -4 / 2)  # printed, but flagged:
    assert cap['gen-R3']['final']['meaningful'] is False  # the oracle's 2 points are 1.41 SE
    assert cap['gen-R3']['selected'] is None and cap['gen-R3']['R'] == 3
    # learning curves: mean over seeds per iteration; missing / null points are skipped
    c = rep['curves']
    assert set(c) == {'R0', 'gen-R1'}  # the others have no history
    assert c['R0']['iters'] == [100, 200, 300] and np.allclose(c['R0']['miou'], [0.41, 0.51, 0.50])
    assert np.allclose(c['gen-R1']['miou'], [0.32, 0.40, 0.50])
    assert c['gen-R1']['n_seeds'] == [2, 1, 1]
    md = report.to_markdown(rep)
    assert '| R0 | 2 | 50.00 +- 1.00 | 60.00 +- 1.00 | 2 | 53.00 +- 1.00 | 63.00 +- 1.00 | 150 |' in md
    assert '| oracle-R3 | 2 | 52.00 +- 1.00 | 62.00 +- 1.00 | - | - | - | - |' in md
    assert '| oracle-R1 | +6.00 | 1.41 | +4.24 | yes | +8.00 | 1.41 | +5.66 | yes |' in md
    assert '| gen-R3 | -4.00 | 1.41 | -2.83 | no (a drop > 2 SE) | +7.00 | n/a | n/a | n/a |' in md
    assert '## lowdata: captured fraction' in md
    assert '| 1 | gen-R1 vs oracle-R1 | final | +3.00 | +6.00 | +4.24 | 0.50 |' in md
    assert '| 3 | gen-R3 vs oracle-R3 | final | -4.00 | +2.00 | +1.41 | -2.00 (!) oracle gain' in md
    assert '| run | it 100 | it 200 | it 300 | peak (iter) |' in md
    assert '| R0 | 41.00 | 51.00 | 50.00 | 51.00 (200) |' in md
    # the R-series of the plot: R0 at R = 0 shared by both arms; selected where present
    series = {(a, k): s for a, k, s in report.r_series(rep)}
    assert np.allclose(series['gen', 'final'], [(0, 50, 1), (1, 53, 2), (3, 46, 1)])
    assert np.allclose(series['oracle', 'final'], [(0, 50, 1), (1, 56, 1), (3, 52, 1)])
    assert np.allclose(series['oracle', 'selected'], [(0, 53, 1), (1, 61, 1)])


def test_lowdata_end_to_end_and_old_results(tmp_path):
    sweep = tmp_path / 'low'
    make_lowdata(sweep)
    write_dataset(tmp_path / 'data' / 'toy')
    out = subprocess.run([sys.executable, str(ROOT / 'report.py'), f'--sweep_dir={sweep}',
                          f'--data_dir={tmp_path / "data"}'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rep = json.loads((sweep / 'report.json').read_text())
    assert np.isclose(rep['captured']['gen-R1']['final']['fraction'], 0.5)
    assert rep['gains']['gen-R3']['miou_gain']['selected']['se_units'] is None  # NaN -> null
    assert rep['rows']['oracle-R3']['selected'] is None
    assert rep['curves']['R0']['iters'] == [100, 200, 300]
    assert '## lowdata' in (sweep / 'report.md').read_text() and 'miou_vs_r.png' in out.stdout
    with Image.open(sweep / 'miou_vs_r.png') as im:
        assert im.size == (640, 420) and len(im.getcolors(1 << 16)) > 3  # more than a frame

    # the older sweep (no selected, no history, no iter_num): no selected columns, no lowdata,
    # no learning curve; plain R<k> labels still get miou_vs_r.png
    old = tmp_path / 'old'
    make_sweep(old)
    out = subprocess.run([sys.executable, str(ROOT / 'report.py'), f'--sweep_dir={old}',
                          f'--data_dir={tmp_path / "data"}'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rep, md = json.loads((old / 'report.json').read_text()), (old / 'report.md').read_text()
    assert rep['captured'] == {} and rep['curves'] == {}
    assert all(r['selected'] is None for r in rep['rows'].values())
    assert rep['gains']['R10']['miou_gain']['selected'] is None
    assert rep['gains']['R10']['miou_gain']['final']['over_2se'] is True
    assert 'selected' not in md and 'lowdata' not in md and 'Learning curve' not in md
    assert (old / 'miou_vs_r.png').stat().st_size > 1000

    # labels with no R<k> (experiments.sh baselines): no miou_vs_r.png, and said so
    base = tmp_path / 'base'
    for label in ('none', 'cutout'):
        write_run(base / label / 's0', BASE)
    out = subprocess.run([sys.executable, str(ROOT / 'report.py'), f'--sweep_dir={base}',
                          f'--data_dir={tmp_path / "data"}', '--baseline=none'],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert not (base / 'miou_vs_r.png').exists() and 'miou_vs_r' not in out.stdout
    g = json.loads((base / 'report.json').read_text())['gains']['cutout']['miou_gain']['final']
    assert g['points'] == 0 and g['se_units'] is None and g['over_2se'] is None  # 1 seed: no SE


# --- issue 22: the tables of experiments.sh steps, clean and bf16, and demo.sh's metrics line ---
# (report.py --table=...; each folder laid out as experiments.sh leaves it, numbers by hand)

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
    rows, downstream = report.read_steps(str(tmp_path))
    assert [(s, k) for s, k, _ in rows] == [('ddim', 5), ('ddim', 50), ('ddpm', 1000),
                                            ('dpm++', 5), ('dpm++', 50)]  # 50 after 5: numbers
    assert downstream == {('dpm++', 5): [0.44, 0.02], ('ddim', 50): [0.45, 0.01]}
    assert report.steps_table(rows) == '\n'.join([
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
    assert report.read_steps(str(tmp_path))[1] == {('ddim', 50): [0.43, 0.0]}
    with pytest.raises(SystemExit, match='no metrics-<sampler>-<steps>'):
        report.read_steps(str(tmp_path / 'seg'))


def quadrant_colours(image, p, width=500, height=310):
    """The colours of panel p (0..3, row by row) of steps.png."""
    box = ((p % 2) * width, (p // 2) * height, (p % 2 + 1) * width, (p // 2 + 1) * height)
    return {colour for _, colour in image.crop(box).getcolors(1 << 16)}


def test_steps_command_prints_the_table_and_draws_four_panels(tmp_path):
    make_steps(tmp_path)
    out = subprocess.run([sys.executable, str(ROOT / 'report.py'), '--table=steps',
                          f'--exp_dir={tmp_path}'], capture_output=True, text=True)
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
    lines = report.clean_table(str(tmp_path)).splitlines()
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
    out = subprocess.run([sys.executable, str(ROOT / 'report.py'), '--table=clean',
                          f'--exp_dir={tmp_path}'], capture_output=True, text=True)
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
    assert report.bf16_table(str(tmp_path)).splitlines() == [
        '| G trained in | iterations | val loss / EMA val loss | class TVD | consistency mIoU % '
        '| FID | sFID |', '|---|---|---|---|---|---|---|',
        '| float32 | 300 | 0.2300 / 0.1300 | 0.0200 | 32.46 | 14.4 | 1.29 |',
        '| bfloat16 | 500 | 0.2500 / 0.1500 | 0.0300 | 32.46 | 14.4 | 1.29 |',
        '| bfloat16-iters | 300 | 0.2300 / 0.1300 | 0.0250 | 32.46 | 14.4 | 1.29 |']


def test_metrics_line_and_bad_table_settings(tmp_path):
    m = dict(n_fake=36, n_real=4, resolution=32, fid=89.224, sfid=None, consistency_miou=0.44237,
             class_freq_tvd=0.0213)
    assert report.metrics_line(m) == ('generated pairs (36 at 32x32) against 4 real: FID 89.22, '
                                      'sFID n/a, consistency mIoU 44.24, class-frequency TVD 0.021')
    write_json(tmp_path / 'metrics.json', m)
    out = subprocess.run([sys.executable, str(ROOT / 'report.py'), '--table=metrics',
                          f'--exp_dir={tmp_path}'], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == report.metrics_line(m)
    bad_settings = [(['--table=plot'],
                     "table must be sweep|steps|clean|bf16|metrics|segmenters, got 'plot'"),
                    (['--table=bf16', f'--exp_dir={tmp_path}/none'], 'not a folder')]
    for args, why in bad_settings:
        bad = subprocess.run([sys.executable, str(ROOT / 'report.py'), *args],
                             capture_output=True, text=True)
        assert bad.returncode != 0 and why in bad.stderr
        assert bad.stderr.startswith('report.py: error: ')
        assert len(bad.stderr.strip().splitlines()) == 1


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
    lines = report.segmenters_table(str(tmp_path)).splitlines()
    assert lines[0].startswith('| segmenter | R0 mIoU (%) | R0-long mIoU (%) | gen-R3 mIoU (%) |')
    assert lines[1] == '|' + '---|' * 9
    assert lines[2:] == [
        '| fpn | 40.00 +- 1.00 | 39.00 +- 1.00 | 42.00 +- 1.00 | 46.00 +- 1.00 | +2.00 (+2.1 SE) '
        '| +3.00 (+2.1 SE) | 0.33 /  | +1.13 |',
        '| pspnet | 30.00 +- 1.00 | 29.00 +- 1.00 | 33.00 +- 1.00 | 36.00 +- 1.00 | +3.00 (+2.1 SE) '
        '| - | 0.50 /  | +7.59 |']
    assert report.paper_gain('segformer_b2') == pytest.approx(62.13 - 60.95)
    assert report.paper_gain('unet') is None
