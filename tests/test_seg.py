"""seg.py end to end on a tiny dataset written into tmp_path (configs/tiny.py, CPU, seconds):
smaller synthetic pairs refused unless upsampling is asked for, the real-data budget (R > 0 runs
see as many real samples as R = 0), every App. C augmentation on, exact checkpoint contents,
resume, and 2-process gloo DDP over val shards of unequal size."""
import json

import numpy as np
import torch

import pairs
from conftest import make_dataset, run_script
from fpn import FPN
from test_pairs import blob_batch


def run(args, cwd, ddp=False):
    return run_script(['seg.py', 'configs/tiny.py', '--image_size=0', '--batch_size=2',
                       '--max_iters=2', '--eval_interval=2', '--warmup_iters=1'] + args, cwd,
                      torchrun=ddp)


def test_synthetic_pairs_at_one_resolution_and_the_real_budget(tmp_path):
    meta = make_dataset(tmp_path / 'data')
    images, masks = blob_batch(3, 16, seed=5)  # generated pairs at 16 px, real patches 32 px
    for i in range(3):
        pairs.save_pair(str(tmp_path / 'syn'), i, images[i], masks[i] % 3, meta['palette'])
    (tmp_path / 'syn' / 'meta.json').write_text(json.dumps(meta))
    common = [f'--data_dir={tmp_path / "data"}', '--dataset=tiny', f'--out_dir={tmp_path / "out"}',
              '--always_save_checkpoint=True', '--cutmix=0.5', '--copy_paste=0.5', '--cutout=0.5',
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
                            'config meta'.split())
    assert ckpt['seen'] == [res['real_seen'], res['synthetic_seen']]
    model = FPN(**ckpt['model_args'])
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
    assert torch.load(tmp_path / 'o' / 'ckpt.pt', weights_only=True)['iter_num'] == hist[best, 0]
    assert res['miou'] == hist[-1, 1]  # the final model's score is reported beside it
    assert 'selection miou' in out
