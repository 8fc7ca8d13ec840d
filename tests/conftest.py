"""Shared by every test: the project root on sys.path, one way to run a stage script (in a fresh
process forked from an interpreter that has imported torch once: tests/forkserver.py), and a tiny
prepared dataset made from scratch (a fresh clone has no ../shared and no data/)."""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PALETTE = [[200, 50, 50], [50, 200, 50], [50, 50, 200]]


FORKSERVER = ROOT / 'tests' / 'forkserver.py'
_server = {}


def stage_python():
    """(the command that stands for `python`, its environment variables): a client of this
    session's fork server, started on first use and stopped at exit (tests/forkserver.py)."""
    if not _server:
        folder = tempfile.mkdtemp(prefix='satsynth-forkserver-')
        sock = os.path.join(folder, 's')
        log = open(os.path.join(folder, 'log'), 'w+')  # the server's own errors, if any
        env = dict(os.environ, OMP_NUM_THREADS='1')  # numpy's BLAS threads: fixed at import
        server = subprocess.Popen([sys.executable, str(FORKSERVER), 'serve', sock], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        if server.stdout.readline() != b'ready\n':
            log.seek(0)
            raise RuntimeError(f'tests/forkserver.py did not start:\n{log.read()[-3000:]}')

        def stop():
            server.terminate()
            server.wait()
            log.close()
            shutil.rmtree(folder, ignore_errors=True)
        atexit.register(stop)
        _server.update(cmd=[sys.executable, '-S', str(FORKSERVER)],
                       env={'SATSYNTH_FORKSERVER': sock})
    return _server['cmd'], _server['env']


def run_script(args, cwd, torchrun=False, check=True, timeout=600, fresh=False):
    """python ROOT/<args[0]> args[1:] in cwd, one thread; returns stdout + stderr. check=True
    asserts exit code 0, check=False asserts a failure. A fork of the session's fork server
    (torchrun: the launcher and both ranks) unless fresh: a plain interpreter that imports
    everything itself."""
    python, extra = ([sys.executable], {}) if fresh else stage_python()
    cmd = list(python)
    if torchrun:  # 2 ranks, each `python SCRIPT` too (--no-python: torchrun takes the command)
        cmd += ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
        cmd += [] if fresh else ['--no-python', *python]
    cmd += [str(ROOT / args[0])] + list(args[1:])
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', **extra)
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    assert (p.returncode == 0) == check, f'{" ".join(map(str, args))}\n{out[-4000:]}'
    return out


def run_python(args, cwd=None, timeout=600):
    """`python ROOT/<args[0]> args[1:]` in cwd, one thread, as run_script runs it; the
    CompletedProcess (text), for tests that read stdout and stderr apart."""
    python, extra = stage_python()
    return subprocess.run(python + [str(ROOT / args[0])] + list(args[1:]), cwd=cwd,
                          env=dict(os.environ, OMP_NUM_THREADS='1', **extra),
                          capture_output=True, text=True, timeout=timeout)


def make_dataset(root, name='tiny', n=8, p=32, n_val=None):
    """A prepared dataset (docs/DATASETS.md) in root/name: 3 classes in rectangles, a 2x2 corner
    of ignore pixels per patch, images a noisy function of the mask. Returns its meta dict."""
    rng = np.random.default_rng(0)
    d = Path(root) / name
    d.mkdir(parents=True)
    counts, freqs = {}, {}
    for split, m in [('train', n), ('val', n // 2 if n_val is None else n_val)]:
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
    return meta


def run_prepare(tmp_path, **kw):
    """prepare.prepare() in-process with prepare.py's defaults, --key=value overrides and data in
    tmp_path/data; returns meta and the four arrays loaded."""
    import prepare
    from configurator import configure
    argv = [f'--{k}={v}' for k, v in kw.items()] + [f'--data_dir={tmp_path / "data"}']
    meta = prepare.prepare(configure(dict(vars(prepare)), argv))
    out = tmp_path / 'data' / meta['name']
    load = {f'{s}_{k}': np.load(out / f'{s}_{k}.npy') for s in ('train', 'val')
            for k in ('images', 'masks')}
    return meta, load


@pytest.fixture
def one_thread():
    # Tiny tensors: a second OpenMP thread cannot help, and on a busy shared CPU its barrier
    # waits made one 30-step test take minutes instead of ~1 s. Restored afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
