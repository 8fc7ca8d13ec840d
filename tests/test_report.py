"""report.py: mean +- SE over seeds, per-class gains vs class share, Pearson r, the PNG plot."""
import json
import subprocess
import sys

import numpy as np

import report
from conftest import ROOT

CLASSES = ['soil', 'building', 'road', 'water']
SHARE = [0.6, 0.05, 0.1, 0.25]


def write_run(folder, miou_by_class):
    folder.mkdir(parents=True)
    iou = dict(zip(CLASSES, miou_by_class))
    res = dict(miou=float(np.mean(miou_by_class)), mean_f1=0.5, iou=iou, classes=CLASSES)
    (folder / 'results.json').write_text(json.dumps(res))


def test_report_end_to_end(tmp_path):
    sweep = tmp_path / 'sweep'
    for s, noise in enumerate([0.0, 0.02, -0.02]):
        write_run(sweep / 'R0' / f'seed{s}', [0.9 + noise, 0.3, 0.5, 0.7])
        # rarer classes gain more: a negative correlation between share and gain
        write_run(sweep / 'R10' / f'seed{s}', [0.9 + noise, 0.4, 0.55, 0.72])
        write_run(sweep / 'R2' / f'seed{s}', [0.9, 0.3, 0.5, 0.7])
    runs = report.load_runs(str(sweep))
    assert list(runs) == ['R0', 'R2', 'R10']  # natural order, not string order
    rep = report.summarize_runs(runs, 'R0', dict(zip(CLASSES, SHARE)))
    miou = [np.mean([0.9 + n, 0.3, 0.5, 0.7]) for n in (0.0, 0.02, -0.02)]
    assert np.isclose(rep['rows']['R0']['miou'][0], np.mean(miou))
    assert np.isclose(rep['rows']['R0']['miou'][1], np.std(miou, ddof=1) / np.sqrt(3))
    g = rep['gains']['R10']
    assert np.isclose(g['gain']['building'], 0.1) and np.isclose(g['gain']['soil'], 0.0)
    assert g['pearson_r'] < -0.5
    assert rep['gains']['R2']['pearson_r'] != rep['gains']['R2']['pearson_r']  # no gains: NaN

    data = tmp_path / 'data' / 'toy'
    data.mkdir(parents=True)
    (data / 'meta.json').write_text(json.dumps({'classes': CLASSES,
                                                'class_freq': {'train': SHARE}}))
    out = subprocess.run([sys.executable, str(ROOT / 'report.py'), f'--sweep_dir={sweep}',
                          f'--data_dir={tmp_path / "data"}'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert '| R10 | 3 |' in out.stdout and 'Pearson r = ' in out.stdout
    assert (sweep / 'gain_vs_frequency.png').stat().st_size > 1000
    assert json.loads((sweep / 'report.json').read_text())['gains']['R2']['pearson_r'] is None
    bad = subprocess.run([sys.executable, str(ROOT / 'report.py'), f'--sweep_dir={tmp_path}/x'],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and 'no <label>' in bad.stderr
