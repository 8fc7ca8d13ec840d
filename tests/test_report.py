"""report.py: mean +- SE over seeds, per-class gains against the share of training patches that
contain each class (the paper's Fig. 7) and its pixel share, Pearson r over the foreground
classes, the PNG plot."""
import json
import subprocess
import sys

import numpy as np

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
