"""End-to-end tests of train_gen.py on a tiny random dataset (configs/tiny.py, CPU, seconds).

Covers: the files a run writes, exact --init_from=resume (2 + 2 iters == 4 iters, bit for
bit), the learning-rate schedule, the image-only baseline and the x0 objective, the wall-clock
budget, clear errors on bad input, and a 2-process torchrun run with gloo. G_SR (--cond=lowres
--scale=2) has its own file, test_superres.py, and so do --cond=image / mask, test_conditional.py.
"""
import json
import math
import os
import re

import numpy as np
import torch

from conftest import make_dataset, run_script


def run(args, cwd, torchrun=False, check=True):
    """A stage script with the tiny config on the tiny dataset; returns stdout + stderr."""
    return run_script([args[0], 'configs/tiny.py', '--dataset=tiny'] + args[1:], cwd, torchrun,
                      check)


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
    assert a['diffusion'] == dict(timesteps=50, beta_schedule='linear', objective='eps',
                                  loss_weighting='none', snr_gamma=5.0, self_condition=False)
    assert a['label_encoding'] == 'bits' and a['meta']['classes'] == ['a', 'b', 'c']
    assert a['cond'] == 'none' and a['scale'] == 1 and a['model_args']['cond_channels'] == 0
    assert a['config']['image_size'] == 16 and a['config']['out_dir'] == 'a'
    # the logs: one line per log_interval, a val line per eval, all also in log.txt
    log = (tmp_path / 'a' / 'log.txt').read_text()
    assert re.search(r'^iter 3: loss \d\.\d{4}, lr \S+, [\d.]+ img/s, [\d.]+ min left$', log, re.M)
    assert log.count(': val loss') == 2  # at iter 0 and at the end
    assert json.loads((tmp_path / 'a' / 'config.json').read_text())['max_iters'] == 4
    assert {'grid_000000.png', 'grid_000004.png'} <= set(os.listdir(tmp_path / 'a'))
    assert not list((tmp_path / 'a').glob('*.tmp'))
    # a resume with a different data shape is refused instead of silently mixing
    out = run(['train_gen.py', '--out_dir=b', '--init_from=resume', '--image_size=32'], tmp_path,
              check=False)
    assert 'image_size' in out


def test_ignore_pixels_without_a_code_are_left_out_of_the_loss(tmp_path):
    """K = 4 classes, 255 without a code (as iSAID, OpenEarthMap): 4 codes in 2 bits whatever
    the ignore fraction, ignore pixels packed as code 0 but weighted 0. The same data with those
    pixels really labelled 0 gives the same x0 and would train identically, were the weight not
    applied; resume stays exact."""
    for name, ignore in [('x', 255), ('y', 0)]:
        meta = make_dataset(tmp_path / name / 'data')
        d = tmp_path / name / 'data' / 'tiny'
        for split in ('train', 'val'):
            masks = np.load(d / f'{split}_masks.npy')
            np.save(d / f'{split}_masks.npy', np.where(masks == 255, ignore, masks).astype('u1'))
        meta.update(classes=['a', 'b', 'c', 'd'], palette=meta['palette'] + [[9, 9, 9]],
                    num_classes=4, codes=dict(num_codes=4, ignore_code=None))
        (d / 'meta.json').write_text(json.dumps(meta))
        run(['train_gen.py', '--out_dir=a'], tmp_path / name)
    run(['train_gen.py', '--out_dir=b', '--max_iters=2'], tmp_path / 'x')
    run(['train_gen.py', '--out_dir=b', '--init_from=resume'], tmp_path / 'x')
    x, y, b = [load(tmp_path / p / 'ckpt.pt') for p in ('x/a', 'y/a', 'x/b')]
    assert x['model_args']['in_channels'] == 3 + 2 == y['model_args']['in_channels']  # no 3rd bit
    assert all(torch.equal(x['model'][k], b['model'][k]) for k in x['model'])  # exact resume
    assert not all(torch.equal(x['model'][k], y['model'][k]) for k in x['model'])  # the weight


def test_lr_warmup_then_constant_or_cosine(tmp_path):
    make_dataset(tmp_path / 'data')
    lrs = lambda out: [float(v) for v in re.findall(r'^iter \d+: loss \S+, lr (\S+),', out, re.M)]
    # warmup 2 of 8 iters: lr (it + 1) / 3, then constant (Ho et al.) ...
    out = run(['train_gen.py', '--out_dir=c', '--max_iters=8', '--eval_interval=1000'], tmp_path)
    want = [1e-3 / 3, 2e-3 / 3] + [1e-3] * 6
    assert lrs(out) == [float(f'{v:.2e}') for v in want]
    # ... or cosine from 1e-3 at iter 2 down to min_lr at lr_decay_iters = 6, then flat
    out = run(['train_gen.py', '--out_dir=d', '--max_iters=8', '--eval_interval=1000',
               '--decay_lr=True', '--lr_decay_iters=6', '--min_lr=1e-4'], tmp_path)
    cos = lambda it: 1e-4 + 0.5 * (1 + math.cos(math.pi * (it - 2) / 4)) * 9e-4
    want = [1e-3 / 3, 2e-3 / 3] + [cos(it) for it in range(2, 7)] + [1e-4]
    assert lrs(out) == [float(f'{v:.2e}') for v in want]


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


def test_v_min_snr_and_self_conditioning_resume_exactly_and_sample(tmp_path):
    """Issue 21's knobs together: 2 + 2 iterations == 4 (self-conditioning's coin and its extra
    pass are replayed), the checkpoint records them, a resume that changes one is refused, and
    sample.py feeds the estimate back (its UNet has the wider input)."""
    make_dataset(tmp_path / 'data')
    knobs = ['--objective=v', '--loss_weighting=min_snr', '--snr_gamma=4.0',
             '--self_condition=True']
    run(['train_gen.py', '--out_dir=a'] + knobs, tmp_path)
    run(['train_gen.py', '--out_dir=b', '--max_iters=2'] + knobs, tmp_path)
    run(['train_gen.py', '--out_dir=b', '--init_from=resume'] + knobs, tmp_path)
    a, b = load(tmp_path / 'a' / 'ckpt.pt'), load(tmp_path / 'b' / 'ckpt.pt')
    assert a['iter_num'] == b['iter_num'] == 4
    for key in ['model', 'ema']:
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert a['diffusion'] == dict(timesteps=50, beta_schedule='linear', objective='v',
                                  loss_weighting='min_snr', snr_gamma=4.0, self_condition=True)
    assert a['model_args']['self_condition'] and a['model']['conv_in.weight'].shape[1] == 2 * 5
    out = run(['train_gen.py', '--out_dir=b', '--init_from=resume', '--objective=v',
               '--loss_weighting=min_snr', '--snr_gamma=4.0'], tmp_path, check=False)
    assert 'self_condition' in out  # trained with it, resumed without: refused
    run(['sample.py', '--ckpt=a/ckpt.pt', '--out_dir=s', '--num_samples=2', '--sampler=ddim',
         '--steps=3'], tmp_path)
    assert len(os.listdir(tmp_path / 's' / 'masks')) == 2


def test_bad_input_is_a_clear_error(tmp_path):
    out = run(['train_gen.py', '--data_dir=nowhere'], tmp_path, check=False)
    assert 'nowhere' in out and 'prepare.py' in out and 'Traceback' not in out
    make_dataset(tmp_path / 'data')
    out = run(['train_gen.py', '--cond=lowres', '--scale=3'], tmp_path, check=False)  # 16 % 3
    assert out.strip().splitlines()[-1] == ('train_gen.py: error: image_size must be divisible by '
                                            'scale 3, got 16')
    # the condition is explicit: a scale without cond=lowres, cond=lowres without a scale, and an
    # unknown cond are each one line (before `cond`, --scale=2 alone meant G_SR)
    out = run(['train_gen.py', '--scale=2'], tmp_path, check=False)
    assert out.strip().splitlines()[-1] == ("train_gen.py: error: scale=2 is G_SR's factor: add "
                                            "--cond=lowres (or drop --scale for G)")
    out = run(['train_gen.py', '--cond=lowres'], tmp_path, check=False)
    assert out.strip().splitlines()[-1] == ('train_gen.py: error: cond=lowres (G_SR) needs '
                                            'scale >= 2, the factor it lifts by, got 1')
    out = run(['train_gen.py', '--cond=depth'], tmp_path, check=False)
    assert out.strip().splitlines()[-1] == ("train_gen.py: error: cond must be one of none, "
                                            "lowres, image, mask, got 'depth'")
    assert not (tmp_path / 'out-gen-tiny').exists() and not (tmp_path / 'out-sr-tiny').exists()
    out = run(['train_gen.py', '--init_from=resume'], tmp_path, check=False)
    assert 'out-gen-tiny/ckpt.pt: No such file' in out and 'Traceback' not in out
    out = run(['train_gen.py', '--dtype=fp8'], tmp_path, check=False)  # was a KeyError traceback
    assert out.strip().splitlines()[-1] == ('train_gen.py: error: dtype must be float32, bfloat16 '
                                            "or float16, got 'fp8'")
    # several bad settings: one line each, all of them before anything is written
    out = run(['train_gen.py', '--batch_size=0', '--objective=x1'], tmp_path, check=False)
    assert out.strip().splitlines()[-2:] == [
        "train_gen.py: error: objective must be eps, x0 or v, got 'x1'",
        'train_gen.py: error: batch_size must be >= 1, got 0'] and 'Traceback' not in out
    np.save(tmp_path / 'data' / 'tiny' / 'val_masks.npy', np.zeros((4, 8, 8), np.uint8))
    out = run(['train_gen.py'], tmp_path, check=False)
    assert 'val_*.npy: want uint8' in out and 'Traceback' not in out
    assert not (tmp_path / 'out-gen-tiny').exists()  # nothing half-written


def test_torchrun_two_processes_gloo(tmp_path):
    make_dataset(tmp_path / 'data')
    out = run(['train_gen.py', '--out_dir=d', '--backend=gloo', '--device=cpu', '--max_iters=2',
               '--gradient_accumulation_steps=2', '--max_minutes=10'], tmp_path, torchrun=True)
    # accumulation 2 over 2 ranks = 1 micro-step each; one global batch of 2 x 4
    assert 'global batch 8 = 4 x 1 accumulation x 2 processes' in out
    assert out.count('saving checkpoint') == 1  # only the master writes
    ck = load(tmp_path / 'd' / 'ckpt.pt')
    assert ck['iter_num'] == 2 and not any(k.startswith('module.') for k in ck['model'])
    log = (tmp_path / 'd' / 'log.txt').read_text()
    assert log.count('iter 2: loss') == 1  # one line, not one per rank
