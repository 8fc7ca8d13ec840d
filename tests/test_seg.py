"""seg.py end to end on a tiny dataset written into tmp_path (configs/tiny.py, CPU, seconds):
smaller synthetic pairs refused unless upsampling is asked for, the real-data budget (R > 0 runs
see as many real samples as R = 0), every App. C augmentation on, exact checkpoint contents
(ckpt.pt the latest, best.pt the selected), bit-exact resume, non-finite steps never applied,
bad settings refused before out_dir is touched, and 2-process gloo DDP over val shards of unequal
size."""
import json

import numpy as np
import torch

import pairs
import segmenters
from conftest import make_dataset, run_script
from test_pairs import blob_batch


def run(args, cwd, ddp=False, check=True):
    return run_script(['seg.py', 'configs/tiny.py', '--image_size=0', '--batch_size=2',
                       '--max_iters=2', '--eval_interval=2', '--warmup_iters=1'] + args, cwd,
                      torchrun=ddp, check=check)


def test_synthetic_pairs_at_one_resolution_and_the_real_budget(tmp_path):
    meta = make_dataset(tmp_path / 'data')
    images, masks = blob_batch(3, 16, seed=5)  # generated pairs at 16 px, real patches 32 px
    for i in range(3):
        pairs.save_pair(str(tmp_path / 'syn'), i, images[i], masks[i] % 3, meta['palette'])
    (tmp_path / 'syn' / 'meta.json').write_text(json.dumps(meta))
    common = [f'--data_dir={tmp_path / "data"}', '--dataset=tiny', f'--out_dir={tmp_path / "out"}',
              '--cutmix=0.5', '--copy_paste=0.5', '--cutout=0.5',
              f'--synthetic_dir={tmp_path / "syn"}']
    # smaller pairs than the training resolution are refused, with the ways out named ...
    out = run_script(['seg.py', 'configs/tiny.py', '--image_size=0'] + common, tmp_path,
                     check=False)
    assert 'pairs of 16x16, but the segmenter trains at 32x32' in out and 'G_SR' in out
    assert '--image_size=16' in out and 'Traceback' not in out
    assert not (tmp_path / 'out').exists()
    # ... unless upsampling is asked for. The default budget: as many real samples as R = 0
    # would see in max_iters = 2 iterations, so with half of every batch synthetic, 4 iterations
    out = run(common + ['--synthetic_upsample=True'], tmp_path)
    assert '(synthetic_share 0.5)' in out and "4 iters (budget 'real')" in out
    res = json.loads((tmp_path / 'out' / 'results.json').read_text())
    assert res['iter_num'] == res['iters'] == 4 and res['budget'] == 'real'
    assert res['real_seen'] + res['synthetic_seen'] == 4 * 2 and res['resolution'] == 32
    assert res['n_synthetic'] == 3 and set(res['iou']) == {'a', 'b', 'c'}
    assert 0 <= res['miou'] <= 1 and np.array(res['confusion_matrix']).sum() == 4 * (32 * 32 - 4)
    ckpt = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)
    assert ckpt['iter_num'] == 4 and ckpt['meta']['classes'] == ['a', 'b', 'c']
    assert set(ckpt) == set('model optimizer model_args iter_num best_miou seen history selected '
                            'rng skipped config meta'.split())
    best = torch.load(tmp_path / 'out' / 'best.pt', weights_only=True)  # one evaluation: the same
    assert set(best) == set(ckpt) - {'optimizer', 'rng'} and best['iter_num'] == 4
    assert ckpt['seen'] == [res['real_seen'], res['synthetic_seen']]
    assert ckpt['model_args'] == dict(arch='fpn', num_classes=3, depth=18)
    model = segmenters.build(ckpt['model_args'])
    model.load_state_dict(ckpt['model'])  # rebuilt from model_args alone
    out = run(common + ['--synthetic_upsample=True', '--init_from=resume', '--max_iters=3'],
              tmp_path)
    assert 'resuming from' in out and 'iter 5:' in out and 'iter 4:' not in out
    res = json.loads((tmp_path / 'out' / 'results.json').read_text())
    assert res['iter_num'] == 6 and res['real_seen'] + res['synthetic_seen'] == 6 * 2
    # the fixed-iterations budget of the earlier experiments, on request
    out = run(common + ['--synthetic_upsample=True', f'--out_dir={tmp_path / "fixed"}',
                        '--budget=iters'], tmp_path)
    res = json.loads((tmp_path / 'fixed' / 'results.json').read_text())
    assert res['iter_num'] == 2 and res['budget'] == 'iters'


def test_ddp_two_processes_gloo(tmp_path):
    make_dataset(tmp_path, n_val=5)  # 5 val patches: the shards differ in size
    out = run([f'--data_dir={tmp_path}', '--dataset=tiny', f'--out_dir={tmp_path / "out"}',
               '--backend=gloo', '--device=cpu', '--gradient_accumulation_steps=2'], tmp_path,
              ddp=True)
    assert 'global batch 4 = 2 x 1 accumulation x 2 processes' in out
    res = json.loads((tmp_path / 'out' / 'results.json').read_text())
    assert np.array(res['confusion_matrix']).sum() == 5 * (32 * 32 - 4)  # both shards counted
    rng = torch.load(tmp_path / 'out' / 'ckpt.pt', weights_only=True)['rng']
    assert len(rng) == 2 and rng[0] != rng[1]  # each rank's batch generator, for an exact resume
    out = run([f'--data_dir={tmp_path}', '--dataset=tiny', f'--out_dir={tmp_path / "out"}',
               '--gradient_accumulation_steps=2', '--init_from=resume', '--max_iters=3'], tmp_path)
    assert 'generators of 2 processes, not 1: the batches will differ' in out


def test_checkpoint_picked_on_a_selection_split_not_the_reported_one(tmp_path):
    make_dataset(tmp_path / 'data')
    make_dataset(tmp_path / 'data', name='sel', n=4, n_val=3)  # another split: only picks
    out = run([f'--data_dir={tmp_path / "data"}', '--dataset=tiny', f'--out_dir={tmp_path / "o"}',
               '--max_iters=4', '--eval_interval=1', f'--select_data={tmp_path / "data" / "sel"}'],
              tmp_path)
    res = json.loads((tmp_path / 'o' / 'results.json').read_text())
    hist = np.array(res['history'])  # [iter, val mIoU, selection mIoU] per evaluation
    assert hist[:, 0].tolist() == [1, 2, 3, 4] and res['select_data'].endswith('sel')
    assert not np.array_equal(hist[:, 1], hist[:, 2])  # two different splits
    best = int(np.argmax(hist[:, 2]))  # the first best on the selection split ...
    assert res['selected']['iter_num'] == hist[best, 0] and res['best_miou'] == hist[best, 2]
    assert res['selected']['miou'] == hist[best, 1]  # ... reported with its val score
    assert torch.load(tmp_path / 'o' / 'best.pt', weights_only=True)['iter_num'] == hist[best, 0]
    assert torch.load(tmp_path / 'o' / 'ckpt.pt', weights_only=True)['iter_num'] == 4  # latest
    assert res['miou'] == hist[-1, 1]  # the final model's score is reported beside it
    assert 'selection miou' in out


def test_resume_from_ckpt_pt_continues_exactly(tmp_path):
    """ckpt.pt is the latest model with each rank's batch generator: 2 + 2 iterations give, bit
    for bit, the weights and results of 4 (a schedule without decay: the first run's max_iters
    would otherwise stretch it)."""
    make_dataset(tmp_path)
    common = [f'--data_dir={tmp_path}', '--dataset=tiny', '--decay_lr=False', '--cutmix=0.5',
              '--gradient_accumulation_steps=2']
    run(common + [f'--out_dir={tmp_path / "a"}', '--max_iters=4'], tmp_path)  # unbroken
    run(common + [f'--out_dir={tmp_path / "b"}'], tmp_path)  # 2 iterations, then 2 more
    out = run(common + [f'--out_dir={tmp_path / "b"}', '--max_iters=4', '--init_from=resume'],
              tmp_path)
    assert 'resuming from' in out and 'will differ' not in out
    a, b = (torch.load(tmp_path / d / 'ckpt.pt', weights_only=True) for d in 'ab')
    assert a['iter_num'] == b['iter_num'] == 4
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    ra, rb = (json.loads((tmp_path / d / 'results.json').read_text()) for d in 'ab')
    ra.pop('config'), rb.pop('config')
    assert ra == rb and ra['checkpoint'] == 'ckpt.pt' and ra['selected']['checkpoint'] == 'best.pt'
    assert [h[0] for h in ra['history']] == [2, 4]
    a, b = (torch.load(tmp_path / d / 'best.pt', weights_only=True) for d in 'ab')
    assert a['iter_num'] == b['iter_num'] == ra['selected']['iter_num']
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])


def test_channels_last_trains_the_same_model(tmp_path):
    """--channels_last=True (NHWC weights and activations) changes the speed, not the run: the
    same weights up to float round-off after 2 AdamW steps, and a checkpoint a plain FPN loads."""
    make_dataset(tmp_path)
    for d, extra in (('a', []), ('c', ['--channels_last=True'])):
        run([f'--data_dir={tmp_path}', '--dataset=tiny', f'--out_dir={tmp_path / d}'] + extra,
            tmp_path)
    a, c = (torch.load(tmp_path / d / 'ckpt.pt', weights_only=True) for d in 'ac')
    lr, w = a['config']['learning_rate'], 'backbone.conv1.weight'
    assert c['model'][w].is_contiguous(memory_format=torch.channels_last)  # NHWC: it ran so
    assert a['model'][w].is_contiguous()
    # weights (not BN's running stats: batch 2 at 1x1 in layer4 amplifies any round-off)
    assert all((a['model'][k].float() - c['model'][k].float()).abs().max() <= 4 * lr
               for k in a['model'] if 'running_' not in k)  # an AdamW step moves <= ~lr
    segmenters.build(c['model_args']).load_state_dict(c['model'])


def test_nonfinite_gradients_stop_the_run_and_keep_the_last_finite_ckpt(tmp_path):
    make_dataset(tmp_path)
    common = [f'--data_dir={tmp_path}', '--dataset=tiny', f'--out_dir={tmp_path / "o"}']
    run(common, tmp_path)  # 2 good iterations: ckpt.pt at iter 2
    good = (tmp_path / 'o' / 'ckpt.pt').read_bytes()
    # lr 1e6: the first step (iter 3) makes the weights huge, the loss of iter 4 is NaN; one
    # such batch is skipped (--skip_nonfinite=1), the second stops the run before any evaluation
    out = run(common + ['--init_from=resume', '--max_iters=8', '--learning_rate=1e6',
                        '--skip_nonfinite=1', '--eval_interval=100'], tmp_path, check=False)
    assert 'iter 4: non-finite' in out and 'step skipped, 1 of 1 tolerated' in out
    assert 'iter 5: stopped' in out and 'keeps the last finite model' in out
    assert '--learning_rate' in out and 'Traceback' not in out
    assert (tmp_path / 'o' / 'ckpt.pt').read_bytes() == good
    assert 'iter 5: non-finite' in (tmp_path / 'o' / 'log.txt').read_text()


def test_bad_settings_leave_an_existing_run_untouched(tmp_path):
    """Every setting is checked before out_dir is written: one line, and the run found there (its
    config.json, a damaged ckpt.pt) stays byte for byte, with nothing added."""
    make_dataset(tmp_path)
    (tmp_path / 'o').mkdir()
    before = {'config.json': b'{"a": "run already here"}', 'ckpt.pt': bytes(range(256)) * 8}
    for name, data in before.items():
        (tmp_path / 'o' / name).write_bytes(data)
    for bad, why in [('--crop_size=40', 'seg.py: error: crop_size must be a multiple of 32'),
                     ('--batch_size=1', 'c5 holds 2 values per channel'),  # BatchNorm at 1x1
                     ('--eval_interval=0', 'seg.py: error: eval_interval must be >= 1, got 0'),
                     ('--synthetic_share=0.5', 'synthetic_share must be 0 with 0 synthetic'),
                     ('--init_from=resume', 'ckpt.pt: truncated or not a checkpoint')]:
        out = run([f'--data_dir={tmp_path}', '--dataset=tiny', f'--out_dir={tmp_path / "o"}',
                   bad], tmp_path, check=False)
        assert 'Traceback' not in out and why in out.splitlines()[-1], out[-2000:]
        assert {p.name: p.read_bytes() for p in (tmp_path / 'o').iterdir()} == before


def test_logged_loss_is_the_interval_mean(tmp_path):
    """log_interval=2 logs the mean of the two per-iteration losses that log_interval=1 logs
    (training is the same either way), as train_gen.py does; it used to log the last one."""
    import re
    make_dataset(tmp_path)
    common = [f'--data_dir={tmp_path}', '--dataset=tiny', '--max_iters=4', '--eval_interval=4',
              '--gradient_accumulation_steps=2']
    every = run(common + [f'--out_dir={tmp_path / "a"}', '--log_interval=1'], tmp_path)
    pairs_of = run(common + [f'--out_dir={tmp_path / "b"}', '--log_interval=2'], tmp_path)
    loss = lambda out: {int(i): float(v) for i, v in re.findall(r'iter (\d+): loss ([\d.]+)', out)}
    one, two = loss(every), loss(pairs_of)
    assert sorted(one) == [1, 2, 3, 4] and sorted(two) == [2, 4]
    for it in (2, 4):
        assert abs(two[it] - (one[it - 1] + one[it]) / 2) <= 1e-4, (one, two)
    assert abs(two[4] - one[4]) > 1e-3  # (else the test could not tell the two apart)
