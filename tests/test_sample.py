"""End-to-end tests of sample.py with a tiny generator trained for 2 iterations (CPU, seconds).

Covers: the pair folder it writes, per-index seeds (a sample does not depend on its batch), a
killed run that resumes without partial files, refusing to mix sampler settings in one folder,
and 2 torchrun ranks writing disjoint index sets whose union is complete.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import PALETTE, ROOT, make_dataset
from test_train_gen import run


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    """A folder with the tiny dataset and a generator checkpoint in gen/ckpt.pt."""
    tmp = tmp_path_factory.mktemp('sample')
    make_dataset(tmp / 'data')
    run(['train_gen.py', '--out_dir=gen', '--max_iters=2'], tmp)
    return tmp


def sample(work, out, *args, torchrun=False, check=True):
    return run(['sample.py', '--ckpt=gen/ckpt.pt', f'--out_dir={out}'] + list(args), work,
               torchrun=torchrun, check=check)


def read(folder, kind, i):
    return np.array(Image.open(folder / kind / f'{i:06d}.png'))


def check_class_table(out, folder, n):
    """The printed 'generated' column equals a recount of all n masks on disk (to print rounding):
    pairs of an earlier run and of other ranks included."""
    masks = np.stack([read(folder, 'masks', i) for i in range(n)])
    counts = np.bincount(masks.ravel(), minlength=256)[:3]
    want = counts / max(1, counts.sum())
    rows = {l.split()[0]: float(l.split()[2].rstrip('%')) / 100 for l in out.splitlines()
            if len(l.split()) == 3 and l.split()[0] in ('a', 'b', 'c') and l.endswith('%')}
    assert list(rows) == ['a', 'b', 'c'], out
    np.testing.assert_allclose([rows[c] for c in 'abc'], want, atol=6e-5)


def test_pair_folder_and_per_index_seeds(work):
    out = sample(work, 'a', '--num_samples=6', '--batch_size=4')
    a = work / 'a'
    assert sorted(os.listdir(a / 'images')) == [f'{i:06d}.png' for i in range(6)]
    assert sorted(os.listdir(a / 'masks')) == sorted(os.listdir(a / 'images'))
    mask = Image.open(a / 'masks' / '000003.png')
    assert mask.mode == 'P' and mask.size == (16, 16)
    assert mask.getpalette()[:9] == sum(PALETTE, [])  # the dataset palette travels with the PNG
    assert set(np.unique(np.stack([read(a, 'masks', i) for i in range(6)]))) <= {0, 1, 2, 255}
    assert read(a, 'images', 0).shape == (16, 16, 3)
    meta = json.loads((a / 'meta.json').read_text())
    assert meta['classes'] == ['a', 'b', 'c'] and meta['palette'] == PALETTE
    assert (meta['num_classes'], meta['ignore_index'], meta['source']) == (3, 255, 'sample.py')
    assert (meta['sampler'], meta['steps'], meta['iter_num'], meta['image_size']) == \
        ('ddim', 5, 2, 16)
    # 6 samples x (image | mask) in one row, 16 px pairs shown at 8x (128 px) + 2 px pads
    grid = np.asarray(Image.open(a / 'grid.png').convert('RGB'))
    assert grid.shape == (132, 6 * 2 * 132, 3)
    assert np.array_equal(grid[2:130:8, 2:130:8], read(a, 'images', 0))
    assert 'total variation distance' in out and 'pairs/s' in out and 'network evaluations/s' in out
    assert not np.array_equal(read(a, 'images', 0), read(a, 'images', 1))

    # a folder sampled with other settings is not silently extended
    out = sample(work, 'a', '--num_samples=8', '--steps=7', check=False)
    assert 'meta.json' in out and 'steps' in out and not (a / 'images' / '000007.png').exists()


def test_dpm_solver_and_bf16_on_cpu(work):
    """The DPM-Solver++(2M) sampler under bf16 autocast on the CPU: valid pairs, 3 calls each."""
    out = sample(work, 'dpm', '--sampler=dpm++', '--steps=3', '--num_samples=2', '--dtype=bfloat16')
    meta = json.loads((work / 'dpm' / 'meta.json').read_text())
    assert (meta['sampler'], meta['steps'], meta['eta']) == ('dpm++', 3, None)
    assert 'dpm++, 3 steps' in out
    masks = np.stack([read(work / 'dpm', 'masks', i) for i in range(2)])
    assert set(np.unique(masks)) <= {0, 1, 2, 255} and masks.shape == (2, 16, 16)  # 255: coded


def test_save_margin_writes_one_margin_per_pair(work):
    """--save_margin: margins/<i>.png beside each pair (8-bit), recorded in meta.json; a folder
    with margins is not extended without them (clean.py --margin would miss the new pairs')."""
    sample(work, 'mg', '--num_samples=3', '--save_margin=True')
    folder = work / 'mg'
    assert json.loads((folder / 'meta.json').read_text())['margins'] is True
    margins = np.stack([read(folder, 'margins', i) for i in range(3)])
    assert margins.shape == (3, 16, 16) and margins.dtype == np.uint8 and margins.std() > 0
    out = sample(work, 'mg', '--num_samples=4', check=False)
    assert 'margins True there, None now' in out and not (folder / 'images' / '000003.png').exists()


def test_killed_run_resumes_without_partial_files(work):
    k = work / 'k'
    cmd = [sys.executable, str(ROOT / 'sample.py'), 'configs/tiny.py', '--dataset=tiny',
           '--ckpt=gen/ckpt.pt', '--out_dir=k', '--sampler=ddpm', '--num_samples=12',
           '--batch_size=1']
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (k / 'masks').is_dir() and len(os.listdir(k / 'masks')) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: like a preempted job
    proc.wait()
    names = lambda d: sorted(f for f in os.listdir(k / d) if f.endswith('.png'))
    done = sorted(set(names('images')) & set(names('masks')))
    assert 2 <= len(done) < 12, 'the run should have been killed part-way'
    for d in ['images', 'masks']:  # every finished file is a complete PNG
        for f in names(d):
            Image.open(k / d / f).load()
    stamps = {f: os.stat(k / 'images' / f).st_mtime_ns for f in done}

    out = sample(work, 'k', '--sampler=ddpm', '--num_samples=12', '--batch_size=5')
    assert f'rank 0: {12 - len(done)} of 12 indices to sample, {len(done)} already done' in out
    assert names('images') == names('masks') == [f'{i:06d}.png' for i in range(12)]
    assert all(os.stat(k / 'images' / f).st_mtime_ns == t for f, t in stamps.items())  # skipped
    check_class_table(out, k, 12)
    assert not list(k.rglob('*.tmp'))  # the interrupted pair was redone, its temp file replaced


def test_torchrun_ranks_split_the_indices(work):
    out = sample(work, 'd', '--num_samples=5', '--batch_size=2', '--backend=gloo',
                 '--device=cpu', torchrun=True)
    # range(rank, 5, 2): rank 0 gets 0, 2, 4 and rank 1 gets 1, 3 - disjoint, union complete
    assert 'rank 0: 3 of 3 indices to sample' in out and 'rank 1: 2 of 2 indices to sample' in out
    d = work / 'd'
    assert sorted(os.listdir(d / 'masks')) == [f'{i:06d}.png' for i in range(5)]
    assert (d / 'grid.png').exists() and out.count('total variation distance') == 1
    check_class_table(out, d, 5)
    # sample i is seeded with seed + i: one process, with other batches ([0, 1], [2, 3], [4]
    # instead of [0, 2], [4] and [1, 3]), gives the same pairs
    single = sample(work, 's', '--num_samples=5', '--batch_size=2')
    assert 'rank 0: 5 of 5' in single
    for i in range(5):
        diff = np.abs(read(d, 'images', i).astype(int) - read(work / 's', 'images', i))
        assert diff.max() <= 1  # float rounding may differ with the batch, nothing more
        assert (read(d, 'masks', i) == read(work / 's', 'masks', i)).mean() > 0.98
