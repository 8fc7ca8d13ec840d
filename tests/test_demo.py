"""The README's demo (demo.sh) end to end on tiny configs, and experiments.sh's sweep plumbing."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, tmp_path, **env):
    env = dict(os.environ, PY=sys.executable, DATA=str(tmp_path / 'data'), OMP_NUM_THREADS='1',
               **env)
    return subprocess.run(['bash'] + cmd, cwd=tmp_path, env=env, capture_output=True, text=True)


def test_demo_tiny_end_to_end(tmp_path):
    out = tmp_path / 'out'
    r = run([str(ROOT / 'demo.sh')], tmp_path, DEMO_TINY='1', OUT=str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the results table: mIoU / F1 on D and on D + D', then the generated-pair metrics
    assert '| D | 1 |' in r.stdout and '| D+Dsyn | 1 |' in r.stdout
    assert 'FID' in r.stdout and 'consistency mIoU' in r.stdout
    m = json.loads((out / 'metrics' / 'metrics.json').read_text())
    assert m['n_fake'] == 8 and m['n_real'] == 8 and m['fid'] is not None
    assert (out / 'sample' / 'grid.png').stat().st_size > 0
    syn = json.loads((out / 'seg' / 'D+Dsyn' / 'seed1337' / 'results.json').read_text())
    assert syn['n_synthetic'] == 8 and syn['n_real'] == 8


def test_experiments_sweep_tiny(tmp_path):
    """R = 0, 1, 2 with 2 seeds: subsets of the right size, a report with mean +- SE."""
    env = dict(DS='demo_tiny', OUT=str(tmp_path / 'exp'), SEEDS='1 2', RS='0 1 2',
               GEN='configs/tiny.py', SAMPLE='configs/tiny.py',
               SEG='configs/tiny.py --image_size=64')
    prep = subprocess.run([sys.executable, str(ROOT / 'prepare.py'), 'configs/toy.py',
                           f'--data_dir={tmp_path / "data"}', '--dataset=demo_tiny',
                           '--n_train=4', '--n_val=2'], cwd=tmp_path, capture_output=True, text=True)
    assert prep.returncode == 0, prep.stderr
    r = run([str(ROOT / 'experiments.sh'), 'sweep'], tmp_path, **env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    exp = tmp_path / 'exp'
    assert len(os.listdir(exp / 'sample-bits' / 'masks')) == 8  # R_max x |train| = 2 x 4
    assert len(os.listdir(exp / 'sample-bits-R1' / 'masks')) == 4
    rep = json.loads((exp / 'sweep' / 'report.json').read_text())
    assert list(rep['rows']) == ['R0', 'R1', 'R2'] and rep['rows']['R2']['n_seeds'] == 2
    assert set(rep['gains']) == {'R1', 'R2'} and (exp / 'sweep' / 'gain_vs_frequency.png').exists()
    done = exp / 'sweep' / 'R1' / 'seed2' / 'results.json'
    stamp = done.stat().st_mtime_ns
    again = run([str(ROOT / 'experiments.sh'), 'sweep'], tmp_path, **env)  # all done: skips
    assert again.returncode == 0 and done.stat().st_mtime_ns == stamp
