"""report.py: mean +- SE over seeds, per-class gains against the share of training patches that
contain each class (the paper's Fig. 7) and its pixel share, Pearson r over the foreground
classes, the PNG plot. (The experiments' tables read these reports: tests/test_tables.py.)"""
import json

import numpy as np
from PIL import Image

import report
from conftest import run_python

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
    out = run_python(['report.py', f'--sweep_dir={sweep}', f'--data_dir={tmp_path / "data"}'])
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
    out = run_python(['report.py', f'--sweep_dir={sweep2}',
                      f'--data_dir={tmp_path / "data"}', '--dataset=toy2'])
    assert out.returncode == 0, out.stderr
    rep = json.loads((sweep2 / 'report.json').read_text())
    assert rep['background'] == [] and rep['gains']['R1']['n_classes'] == 5
    assert np.isclose(rep['gains']['R1']['pearson_r'], np.corrcoef(IMAGE, GAIN)[0, 1])
    assert 'all 5 classes' in out.stdout

    bad = run_python(['report.py', f'--sweep_dir={tmp_path}/x'])
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
    # its SE by the delta method: Var(g) = 2^2 + 1^2, Var(o) = 1 + 1, Cov(g, o) = 1 (the shared R0),
    # Var(f) = (5 - 2 * 0.5 * 1 + 0.5^2 * 2) / 6^2 = 0.125
    assert np.isclose(cap['gen-R1']['final']['se'], np.sqrt(0.125))
    # selected: A 56 +- 1, O 61 +- 1, B 53 +- 1, f = 3 / 8: (2 - 0.75 + 2 * 9 / 64) / 64
    assert np.isclose(cap['gen-R1']['selected']['se'], np.sqrt((2 - 0.75 + 18 / 64) / 64))
    assert cap['gen-R1']['final']['meaningful'] is True
    assert np.isclose(cap['gen-R1']['selected']['fraction'], 3 / 8)
    assert np.isclose(cap['gen-R3']['final']['fraction'], -4 / 2)  # printed, but flagged:
    assert cap['gen-R3']['final']['meaningful'] is False  # the oracle's 2 points are 1.41 SE
    assert cap['gen-R3']['selected'] is None and cap['gen-R3']['R'] == 3
    assert np.isclose(cap['gen-R3']['final']['se'], np.sqrt((2 + 4 * 1 + 4 * 2) / 4))  # f = -2
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
    assert '| 1 | gen-R1 vs oracle-R1 | final | +3.00 | +6.00 | +4.24 | 0.50 +- 0.35 |' in md
    assert '| 3 | gen-R3 vs oracle-R3 | final | -4.00 | +2.00 | +1.41 | -2.00 +- 1.87 (!) oracle' in md
    assert '| run | it 100 | it 200 | it 300 | peak (iter) |' in md
    assert '| R0 | 41.00 | 51.00 | 50.00 | 51.00 (200) |' in md
    # the R-series of the plot: R0 at R = 0 shared by both arms; selected where present
    series = {(a, k): s for a, k, s in report.r_series(rep)}
    assert np.allclose(series['gen', 'final'], [(0, 50, 1), (1, 53, 2), (3, 46, 1)])
    assert np.allclose(series['oracle', 'final'], [(0, 50, 1), (1, 56, 1), (3, 52, 1)])
    assert np.allclose(series['oracle', 'selected'], [(0, 53, 1), (1, 61, 1)])


def test_captured_fraction_se_matches_a_simulation():
    """The delta-method SE of (A - B) / (O - B) against the spread of that ratio over simulated
    means (independent normal errors per arm, the baseline's shared by both gains), for a small
    and a large shared baseline error (dropping the covariance would miss them by 11 % and 92 %)."""
    rng = np.random.default_rng(0)
    n = 400_000
    for se_a, se_o, se_b in ((0.004, 0.003, 0.002), (0.003, 0.003, 0.006)):
        a = 0.45 + se_a * rng.standard_normal(n)
        o = 0.47 + se_o * rng.standard_normal(n)
        b = 0.41 + se_b * rng.standard_normal(n)
        simulated = np.std((a - b) / (o - b))
        delta = report.ratio_se(0.04 / 0.06, 0.06, se_a, se_o, se_b)
        assert abs(delta / simulated - 1) < 0.05, (delta, simulated)
    assert np.isnan(report.ratio_se(0.5, 0.0, 0.01, 0.01, 0.01))
    assert np.isnan(report.ratio_se(0.5, 0.06, float('nan'), 0.01, 0.01))


def test_lowdata_end_to_end_and_old_results(tmp_path):
    sweep = tmp_path / 'low'
    make_lowdata(sweep)
    write_dataset(tmp_path / 'data' / 'toy')
    out = run_python(['report.py', f'--sweep_dir={sweep}', f'--data_dir={tmp_path / "data"}'])
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
    out = run_python(['report.py', f'--sweep_dir={old}', f'--data_dir={tmp_path / "data"}'])
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
    out = run_python(['report.py', f'--sweep_dir={base}',
                      f'--data_dir={tmp_path / "data"}', '--baseline=none'])
    assert out.returncode == 0, out.stderr
    assert not (base / 'miou_vs_r.png').exists() and 'miou_vs_r' not in out.stdout
    g = json.loads((base / 'report.json').read_text())['gains']['cutout']['miou_gain']['final']
    assert g['points'] == 0 and g['se_units'] is None and g['over_2se'] is None  # 1 seed: no SE
