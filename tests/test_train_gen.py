"""End-to-end tests of train_gen.py on a tiny random dataset (configs/tiny_gen.py, CPU, seconds).

Covers: the files a run writes, exact --init_from=resume (2 + 2 iters == 4 iters, bit for
bit), the image-only baseline and the x0 objective, the wall-clock budget, clear errors on bad
input, and a 2-process torchrun run with gloo.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PALETTE = [[200, 50, 50], [50, 200, 50], [50, 50, 200]]


def make_dataset(root, name='tiny', n=8, p=32):
    """A prepared dataset in the COMMON.md layout: 3 classes in rectangles, a few ignore pixels."""
    rng = np.random.default_rng(0)
    d = Path(root) / name
    d.mkdir(parents=True)
    counts, freqs = {}, {}
    for split, m in [('train', n), ('val', n // 2)]:
        masks = np.zeros((m, p, p), np.uint8)
        for i in range(m):
            masks[i, :, rng.integers(4, p - 4):] = 1
            masks[i, rng.integers(4, p - 4):, :] = 2
        masks[:, :2, :2] = 255
        colours = np.array(PALETTE + [[0, 0, 0]], np.uint8)[np.minimum(masks, 3)]
        images = (colours * 0.8 + rng.integers(0, 50, (m, p, p, 3))).astype(np.uint8)
        np.save(d / f'{split}_images.npy', images)
        np.save(d / f'{split}_masks.npy', masks)
        labelled = masks[masks != 255]
        counts[split] = m
        freqs[split] = (np.bincount(labelled, minlength=3) / labelled.size).tolist()
    meta = dict(name=name, classes=['a', 'b', 'c'], palette=PALETTE, num_classes=3,
                ignore_index=255, patch_size=p, counts=counts, class_freq=freqs,
                ignore_fraction={'train': 4 / p**2, 'val': 4 / p**2}, source='test', border='drop',
                config={})
    (d / 'meta.json').write_text(json.dumps(meta))
    return Path(root)


def run(args, cwd, torchrun=False, check=True):
    """Run a stage script with the tiny config on the tiny dataset; return stdout + stderr."""
    cmd = [sys.executable] + (['-m', 'torch.distributed.run', '--standalone',
                               '--nproc_per_node=2'] if torchrun else [])
    cmd += [str(ROOT / args[0]), 'configs/tiny_gen.py', '--dataset=tiny'] + args[1:]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert (p.returncode == 0) == check, out
    return out


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)  # must work: plain types only


def test_end_to_end_and_exact_resume(tmp_path):
    make_dataset(tmp_path / 'data')
    straight = run(['train_gen.py', '--out_dir=a'], tmp_path)
    run(['train_gen.py', '--out_dir=b', '--max_iters=2'], tmp_path)
    assert load(tmp_path / 'b' / 'ckpt.pt')['iter_num'] == 2
    resumed = run(['train_gen.py', '--out_dir=b', '--init_from=resume'], tmp_path)
    assert 'start at iter 2' in resumed

    a, b = load(tmp_path / 'a' / 'ckpt.pt'), load(tmp_path / 'b' / 'ckpt.pt')
    assert a['iter_num'] == b['iter_num'] == 4
    for key in ['model', 'ema']:  # bit-identical weights: the data/noise/dropout stream replayed
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert a['optimizer']['state'][0]['step'] == b['optimizer']['state'][0]['step'] == 4
    assert not all(torch.equal(a['model'][k], a['ema'][k]) for k in a['model'])  # EMA lags
    # the same final loss line in both logs
    last = lambda s: re.findall(r'iter 4: loss (\d\.\d+)', s)
    assert last(straight) == last(resumed) and len(last(straight)) == 1

    # the checkpoint describes itself: enough to rebuild the UNet and the diffusion
    assert a['model_args']['in_channels'] == 3 + 2  # 3 classes + ignore code -> 2 bits
    assert a['diffusion'] == dict(timesteps=50, beta_schedule='linear', objective='eps')
    assert a['label_encoding'] == 'bits' and a['meta']['classes'] == ['a', 'b', 'c']
    assert a['config']['image_size'] == 16 and a['config']['out_dir'] == 'a'
    # the logs: one line per log_interval, a val line per eval, all also in log.txt
    log = (tmp_path / 'a' / 'log.txt').read_text()
    assert re.search(r'^iter 3: loss \d\.\d{4}, lr \S+, [\d.]+ img/s, eta [\d.]+ min$', log, re.M)
    assert log.count(': val loss') == 2  # at iter 0 and at the end
    assert json.loads((tmp_path / 'a' / 'config.json').read_text())['max_iters'] == 4
    assert {'grid_000000.png', 'grid_000004.png'} <= set(os.listdir(tmp_path / 'a'))
    assert not list((tmp_path / 'a').glob('*.tmp'))
    # a resume with a different data shape is refused instead of silently mixing
    out = run(['train_gen.py', '--out_dir=b', '--init_from=resume', '--image_size=32'], tmp_path,
              check=False)
    assert 'image_size' in out


def test_image_only_x0_and_time_budget(tmp_path):
    make_dataset(tmp_path / 'data')
    # the image-only DDPM baseline (Tab. 1a) with the x0 objective; a budget of 0.6 s stops the
    # run long before max_iters, and it still evaluates and saves a checkpoint
    out = run(['train_gen.py', '--out_dir=n', '--label_encoding=none', '--objective=x0',
               '--max_iters=1000', '--max_minutes=0.01'], tmp_path)
    ck = load(tmp_path / 'n' / 'ckpt.pt')
    assert ck['model_args']['in_channels'] == 3 and ck['diffusion']['objective'] == 'x0'
    assert 1 <= ck['iter_num'] < 1000 and f"step {ck['iter_num']}: val loss" in out
    assert (tmp_path / 'n' / f"grid_{ck['iter_num']:06d}.png").exists()


def test_bad_input_is_a_clear_error(tmp_path):
    out = run(['train_gen.py', '--data_dir=nowhere'], tmp_path, check=False)
    assert 'nowhere' in out and 'prepare.py' in out and 'Traceback' not in out
    make_dataset(tmp_path / 'data')
    out = run(['train_gen.py', '--init_from=resume'], tmp_path, check=False)
    assert 'cannot resume from out-gen-tiny/ckpt.pt' in out and 'Traceback' not in out
    np.save(tmp_path / 'data' / 'tiny' / 'val_masks.npy', np.zeros((4, 8, 8), np.uint8))
    out = run(['train_gen.py'], tmp_path, check=False)
    assert 'val_*.npy: expected' in out and 'Traceback' not in out
    assert not (tmp_path / 'out-gen-tiny').exists()  # nothing half-written


def test_torchrun_two_processes_gloo(tmp_path):
    make_dataset(tmp_path / 'data')
    out = run(['train_gen.py', '--out_dir=d', '--backend=gloo', '--device=cpu', '--max_iters=2',
               '--gradient_accumulation_steps=2', '--max_minutes=10'], tmp_path, torchrun=True)
    # accumulation 2 over 2 ranks = 1 micro-step each; one global batch of 2 x 4
    assert 'images per iteration: 8 = 4 batch x 1 accumulation x 2 processes' in out
    assert out.count('saving checkpoint') == 1  # only the master writes
    ck = load(tmp_path / 'd' / 'ckpt.pt')
    assert ck['iter_num'] == 2 and not any(k.startswith('module.') for k in ck['model'])
    log = (tmp_path / 'd' / 'log.txt').read_text()
    assert log.count('iter 2: loss') == 1  # one line, not one per rank
