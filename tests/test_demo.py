"""The README's demo (demo.sh) end to end on tiny configs, and experiments.sh's sweep plumbing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import pairs
from conftest import stage_python

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, tmp_path, **env):
    """bash CMD in tmp_path; every `$PY` a fork of the session's fork server (conftest.py)."""
    python, extra = stage_python()
    env = dict(os.environ, PY=' '.join(python), DATA=str(tmp_path / 'data'), OMP_NUM_THREADS='1',
               **extra, **env)
    return subprocess.run(['bash'] + cmd, cwd=tmp_path, env=env, capture_output=True, text=True)


def test_demo_tiny_end_to_end(tmp_path):
    out = tmp_path / 'out'
    r = run([str(ROOT / 'demo.sh')], tmp_path, DEMO_TINY='1', OUT=str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the results table: R0 vs generated and oracle pairs at R = 3, then the pair metrics
    for row in ('| R0 | 1 |', '| gen-R3 | 1 |', '| oracle-R3 | 1 |'):
        assert row in r.stdout, r.stdout[-3000:]
    assert 'FID' in r.stdout and 'consistency mIoU' in r.stdout and 'documented' in r.stdout
    low = tmp_path / 'out-low4'
    m = json.loads((low / 'lowdata' / 'metrics' / 'metrics.json').read_text())
    assert m['n_fake'] == 36 and m['n_real'] == 4 and m['fid'] is not None  # the pool: 3 x 12
    chosen = json.loads((low / 'bits-R3' / 'clean.json').read_text())  # 12 of the pool's 36
    assert (chosen['n_in'], chosen['n_out'], chosen['keep']['keep']) == (36, 12, 12)
    syn = json.loads((low / 'lowdata' / 'gen-R3' / 'seed1' / 'results.json').read_text())
    r0 = json.loads((low / 'lowdata' / 'R0' / 'seed1' / 'results.json').read_text())
    assert syn['n_synthetic'] == 12 and syn['n_real'] == 4 and syn['resolution'] == 32
    assert syn['real_seen'] + syn['synthetic_seen'] == 2 * (r0['real_seen'])  # the real budget
    # experiments.sh steps on the demo's G and protocol: every sampler/steps folder scored, seg
    # on one of them, report over R0 with lowdata's arms linked in
    r = run([str(ROOT / 'experiments.sh'), 'steps'], tmp_path, OUT=str(out), SEEDS='1', JOBS='2',
            N_D='4', SEG_LOW='configs/tiny.py', SEG_ITERS_LOW='4', STEPS='2',
            STEPS_SEG='dpm++-2')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for v in ('ddim-2', 'dpm++-2', 'ddpm-1000'):
        assert f"| {v.rsplit('-', 1)[0]} | {v.rsplit('-', 1)[1]} |" in r.stdout, r.stdout[-2000:]
        assert len(os.listdir(low / 'steps' / f'sample-{v}' / 'masks')) == 12
    rep = json.loads((low / 'steps' / 'seg' / 'report.json').read_text())
    assert sorted(rep['rows']) == ['R0', 'dpm++-2-R3', 'gen-R3', 'oracle-R3']
    # experiments.sh clean: a pool with margins, two of clean.py's options, seg, the table
    r = run([str(ROOT / 'experiments.sh'), 'clean'], tmp_path, OUT=str(out), SEEDS='1',
            JOBS='2', N_D='4', SEG_LOW='configs/tiny.py', SEG_ITERS_LOW='4', RS_CLEAN='3',
            CLEAN='margin --margin=0.25\narea-select --min_area=4 --keep=KEEP')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert len(os.listdir(low / 'clean' / 'pool' / 'margins')) == 36
    for row in ('| margin-R3 | ', '| area-select-R3 | ', '| gen-R3 | '):
        assert row in r.stdout, r.stdout[-2000:]


# tiny recipes for experiments.sh: G at 32 (the FPN needs a multiple of 32), G_SR 32 -> 64
TINY = dict(DS='demo_tiny', GEN='configs/tiny.py --image_size=32', SAMPLE='configs/tiny.py',
            SR='configs/tiny.py --cond=lowres --scale=2 --image_size=64', SEG='configs/tiny.py')


def prepare_tiny(tmp_path):
    prep = subprocess.run([sys.executable, str(ROOT / 'prepare.py'), 'configs/toy.py',
                           f'--data_dir={tmp_path / "data"}', '--dataset=demo_tiny',
                           '--n_train=4', '--n_val=2'], cwd=tmp_path, capture_output=True, text=True)
    assert prep.returncode == 0, prep.stderr


def test_experiments_sweep_tiny(tmp_path):
    """R = 0, 2 with 2 seeds: subsets of the right size, a report with mean +- SE."""
    env = dict(TINY, OUT=str(tmp_path / 'exp'), SEEDS='1 2', RS='0 2', JOBS='2')
    prepare_tiny(tmp_path)
    r = run([str(ROOT / 'experiments.sh'), 'sweep'], tmp_path, **env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    exp = tmp_path / 'exp'
    assert len(os.listdir(exp / 'sample-bits' / 'masks')) == 8  # R_max x |train| = 2 x 4
    assert len(os.listdir(exp / 'sample-bits-R2' / 'masks')) == 8
    rep = json.loads((exp / 'sweep' / 'report.json').read_text())
    assert list(rep['rows']) == ['R0', 'R2'] and rep['rows']['R2']['n_seeds'] == 2
    assert set(rep['gains']) == {'R2'} and (exp / 'sweep' / 'gain_vs_frequency.png').exists()
    done = exp / 'sweep' / 'R2' / 'seed2' / 'results.json'
    stamp = done.stat().st_mtime_ns
    again = run([str(ROOT / 'experiments.sh'), 'sweep'], tmp_path, **env)  # all done: skips
    assert again.returncode == 0 and done.stat().st_mtime_ns == stamp
    res = json.loads((exp / 'sweep' / 'R2' / 'seed1' / 'results.json').read_text())
    assert res['resolution'] == 32 and res['budget'] == 'real'  # at G's resolution, full budget


def test_experiments_ablation_and_superres_tiny(tmp_path):
    """Tab. 3 at R = 1 and R = 3; Tab. 2's chain G -> sample -> G_SR -> seg at 2x, beside real."""
    prepare_tiny(tmp_path)
    env = dict(TINY, OUT=str(tmp_path / 'exp'), SEEDS='1', JOBS='2')
    r = run([str(ROOT / 'experiments.sh'), 'ablation'], tmp_path, **env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((tmp_path / 'exp' / 'ablation' / 'report.json').read_text())
    assert sorted(rep['rows']) == sorted(['real'] + [f'{v}-R{R}' for v in
                                                      ('bits-eps', 'onehot-eps', 'bits-x0')
                                                      for R in (1, 3)])
    r = run([str(ROOT / 'experiments.sh'), 'superres'], tmp_path, **env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    up = tmp_path / 'exp' / 'sample-bits-sr'
    assert len(os.listdir(up / 'masks')) == 4 and json.loads((up / 'meta.json').read_text())[
        'image_size'] == 64
    for arm in ('real', 'synthetic'):
        res = json.loads((tmp_path / 'exp' / 'superres' / arm / 'seed1' / 'results.json').read_text())
        assert res['resolution'] == 64 and res['n_synthetic'] == (4 if arm == 'synthetic' else 0)


def test_experiments_bf16_tiny(tmp_path):
    """fp32 vs bf16 G in alternating chunks, bf16 again at fp32's count, pairs scored, one table."""
    prepare_tiny(tmp_path)
    env = dict(TINY, OUT=str(tmp_path / 'exp'), SEEDS='1', GEN_BF16='configs/tiny.py '
               '--image_size=32', CHUNKS='2', CHUNK='0.02', N_BF16='4')
    r = run([str(ROOT / 'experiments.sh'), 'bf16'], tmp_path, **env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    b = tmp_path / 'exp' / 'bf16'
    it = {}
    for v in ('float32', 'bfloat16', 'bfloat16-iters'):
        log = (b / f'gen-{v}' / 'log.txt').read_text()
        it[v] = int([line for line in log.splitlines() if ' val loss ' in line][-1].split()[1][:-1])
        assert f'| {v} | {it[v]} | ' in r.stdout, r.stdout[-2000:]
        assert len(os.listdir(b / f'sample-{v}' / 'masks')) == 4
        assert json.loads((b / f'metrics-{v}' / 'metrics.json').read_text())['n_fake'] == 4
    for v in ('float32', 'bfloat16'):  # two chunks each, the second resumed from the first
        assert (b / f'gen-{v}' / 'chunks').read_text().strip() == '2'
        starts = [line for line in (b / f'gen-{v}' / 'log.txt').read_text().splitlines()
                  if line.startswith('start at iter ')]
        assert len(starts) == 2 and starts[0].startswith('start at iter 0:')
        assert not starts[1].startswith('start at iter 0:')
    assert it['bfloat16-iters'] == it['float32'] > 0
    assert len(list((b / 'gen-bfloat16').glob('ckpt-*.pt'))) >= 1


def test_experiments_lowdata_on_a_prepared_dataset_tiny(tmp_path):
    """The generic low-data protocol (ORACLE=split, the default off the toy data): D, the oracle
    and the selection set drawn from the dataset's train patches and recorded; every arm runs."""
    prep = subprocess.run([sys.executable, str(ROOT / 'prepare.py'), 'configs/toy.py',
                           f'--data_dir={tmp_path / "data"}', '--dataset=mine', '--n_train=10',
                           '--n_val=2', '--patch_size=64'], cwd=tmp_path, capture_output=True,
                          text=True)
    assert prep.returncode == 0, prep.stderr
    env = dict(DS='mine', OUT=str(tmp_path / 'exp'), SEEDS='1', JOBS='2', RS_LOW='3', N_D='2',
               N_SELECT='2', GEN_LOW='configs/tiny.py --image_size=32', SAMPLE='configs/tiny.py',
               SEG_LOW='configs/tiny.py', SEG_ITERS_LOW='4')
    r = run([str(ROOT / 'experiments.sh'), 'lowdata'], tmp_path, **env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    record = json.loads((tmp_path / 'data' / 'mine_split2' / 'split.json').read_text())
    assert {k: len(v) for k, v in record['groups'].items()} == {'d': 2, 'oracle': 6, 'select': 2}
    low = tmp_path / 'exp-split2'
    rep = json.loads((low / 'lowdata' / 'report.json').read_text())
    assert sorted(rep['rows']) == ['R0', 'R0-long', 'gen-R3', 'oracle-R3']
    assert len(os.listdir(low / 'oracle' / 'masks')) == 6  # the oracle: real held-out patches
    syn = json.loads((low / 'lowdata' / 'oracle-R3' / 'seed1' / 'results.json').read_text())
    assert syn['n_synthetic'] == 6 and syn['n_real'] == 2 and syn['resolution'] == 32
    assert (low / 'lowdata' / 'metrics' / 'real_vs_generated.png').exists()
    # experiments.sh generators: one more G (self-conditioning) on the same protocol, beside
    # lowdata's arms
    r = run([str(ROOT / 'experiments.sh'), 'generators'], tmp_path, **env,
            GENS='selfcond --self_condition=True')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((low / 'generators' / 'seg' / 'report.json').read_text())
    assert sorted(rep['rows']) == ['R0', 'R0-long', 'oracle-R3', 'selfcond-R3', 'x0-R3']
    ck = torch.load(low / 'generators' / 'gen-selfcond' / 'ckpt.pt', weights_only=True)
    assert ck['diffusion']['self_condition'] and ck['iter_num'] == 4
    assert (low / 'generators' / 'metrics-selfcond' / 'metrics.json').exists()
    # experiments.sh compute (issue 25): G at 2, 4 and 6 iterations through the same steps; 4 is
    # lowdata's own G (tiny.py's max_iters), so its G, pairs and gen-R3 runs are lowdata's,
    # linked in, and neither sampled nor chosen again; 6 continues 4's G
    chosen = low / 'bits-R3' / 'clean.json'
    chosen_at = chosen.stat().st_mtime_ns
    r = run([str(ROOT / 'experiments.sh'), 'compute'], tmp_path, **env, ITERS_CURVE='2 4 6')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    c = low / 'compute'
    rep = json.loads((c / 'seg' / 'report.json').read_text())
    assert sorted(rep['rows']) == ['R0', 'R0-long', 'it2-R3', 'it4-R3', 'it6-R3', 'oracle-R3']
    assert sorted(rep['captured']) == ['it2-R3', 'it4-R3', 'it6-R3']
    for link, target in [('gen-it4', 'gen-bits'), ('pool-it4', 'pool-R3'), ('it4-R3', 'bits-R3'),
                         ('seg/it4-R3', 'lowdata/gen-R3')]:
        assert (c / link).is_symlink() and (c / link).resolve() == (low / target).resolve()
    assert chosen.stat().st_mtime_ns == chosen_at  # clean.py not run again on lowdata's pairs
    assert not (low / 'pool-R3' / 'config.json').exists()  # nor sample.py on its pool
    assert torch.load(c / 'gen-it2' / 'ckpt.pt', weights_only=True)['iter_num'] == 2
    six = torch.load(c / 'gen-it6' / 'ckpt.pt', weights_only=True)
    assert six['iter_num'] == 6 and six['config']['max_iters'] == 6
    assert (c / 'gen-it6' / 'log.txt').read_text().startswith('start at iter 4')  # from it4's G
    assert len(os.listdir(c / 'it2-R3' / 'masks')) == 6  # 3 x |D| chosen from its own pool of 18
    for k in (2, 4, 6):
        assert (c / f'metrics-it{k}' / 'metrics.json').exists()
    table = (c / 'compute.md').read_text().splitlines()
    assert [line.split(' | ')[0] for line in table[2:]] == ['| 2', '| 4', '| 6']
    assert (c / 'compute.png').exists()
    # experiments.sh segbf16 (issue 25): lowdata's R0 and gen-R3 again in bf16 + channels_last
    r = run([str(ROOT / 'experiments.sh'), 'segbf16'], tmp_path, **env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((low / 'segbf16' / 'report.json').read_text())
    assert sorted(rep['rows']) == ['R0', 'gen-R3'] and 'gen-R3' in rep['gains']
    for arm in ['R0', 'gen-R3']:
        config = json.loads((low / 'segbf16' / arm / 'seed1' / 'config.json').read_text())
        assert (config['dtype'], config['channels_last']) == ('bfloat16', True)
    bf16, fp32 = (json.loads((low / d / 'gen-R3' / 'seed1' / 'results.json').read_text())
                  for d in ('segbf16', 'lowdata'))
    assert bf16['n_synthetic'] == fp32['n_synthetic'] == 6  # the same pairs as fp32's gen-R3
    # a lowdata run that is not fp32 (the bf16 toy recipe) is no fp32 arm: one line, exit 2
    r0 = low / 'lowdata' / 'R0' / 'seed1' / 'config.json'
    fp32_config = r0.read_text()
    r0.write_text(json.dumps(dict(json.loads(fp32_config), dtype='bfloat16')))
    r = run([str(ROOT / 'experiments.sh'), 'segbf16'], tmp_path, **env)
    assert r.returncode == 2 and f'{r0}: not an fp32 run' in r.stdout, r.stdout[-3000:]
    r0.write_text(fp32_config)
    # experiments.sh segmenters: lowdata's arms for another architecture, the same pairs, and the
    # Tab. 2 table beside the FPN's (lowdata's own runs, linked)
    r = run([str(ROOT / 'experiments.sh'), 'segmenters'], tmp_path, **env, SEGS='pspnet')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for arm in ['R0', 'R0-long', 'gen-R3', 'oracle-R3']:
        ck = torch.load(low / 'segmenters' / 'pspnet' / arm / 'seed1' / 'ckpt.pt', weights_only=True)
        assert ck['model_args']['arch'] == 'pspnet'
    table = (low / 'segmenters' / 'segmenters.md').read_text().splitlines()
    assert [line.split(' | ')[0] for line in table[2:]] == ['| fpn', '| pspnet']
    assert table[3].endswith('| +7.59 |')  # the paper's PSPNet gain beside ours
    # experiments.sh conditional (issue 24): mask2img pairs for D's masks and for G's layouts,
    # SegDiff scored on val, beside lowdata's arms
    r = run([str(ROOT / 'experiments.sh'), 'conditional'], tmp_path, **env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    c = low / 'conditional'
    rep = json.loads((c / 'seg' / 'report.json').read_text())
    assert sorted(rep['rows']) == ['R0', 'R0-long', 'joint-R3', 'mask2img-layouts-R3',
                                   'mask2img-real-R3', 'oracle-R3', 'segdiff']
    assert len(os.listdir(c / 'mask2img-real-R3' / 'masks')) == 6  # 3 images per D mask
    d_masks = pairs.load_pairs(c / 'd')[1]
    assert (pairs.load_pairs(c / 'mask2img-real-R3')[1] == np.concatenate([d_masks] * 3)).all()
    layouts = pairs.load_pairs(low / 'bits-R3')[1]
    assert (pairs.load_pairs(c / 'mask2img-layouts-R3')[1] == layouts).all()  # G's masks kept
    segdiff = json.loads((c / 'seg' / 'segdiff' / 'seed1' / 'results.json').read_text())
    assert segdiff['pairs'] == 2 and 0 <= segdiff['miou'] <= 1  # the val split, each image once
    assert (c / 'metrics-mask2img-real' / 'metrics.json').exists()
    # experiments.sh direct2x (Tab. 4): lowdata again with G at 64 (OUT_2X), then G + G_SR
    env2 = dict(env, OUT=str(tmp_path / 'exp64'), GEN_LOW='configs/tiny.py --image_size=64')
    r = run([str(ROOT / 'experiments.sh'), 'lowdata'], tmp_path, **env2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = run([str(ROOT / 'experiments.sh'), 'direct2x'], tmp_path, **env,
            OUT_2X=str(tmp_path / 'exp64-split2'),
            SR_LOW='configs/tiny.py --cond=lowres --scale=2')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    t = low / 'direct2x' / 'seg'
    assert sorted(json.loads((t / 'report.json').read_text())['rows']) == [
        'R0', 'R0-long', 'direct-R3', 'gsr-R3', 'oracle-R3']
    res = json.loads((t / 'gsr-R3' / 'seed1' / 'results.json').read_text())
    assert res['resolution'] == 64 and res['n_synthetic'] == 6
    r = run([str(ROOT / 'experiments.sh'), 'direct2x'], tmp_path, **env)  # no OUT_2X: one line
    assert r.returncode == 2 and 'OUT_2X must be a lowdata folder' in r.stdout + r.stderr
