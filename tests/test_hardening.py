"""A careless or hostile user, on the generator's side (issue 13): a diverging run never reaches a
checkpoint, a pair folder never mixes two generators, bad arguments and unreadable checkpoints get
one line naming the file or the knob, and a refused run leaves its out_dir as it found it.
(prepare.py and seg.py have their own cases in test_prepare.py and test_seg.py.)
"""
import re
import shutil

import pytest
import torch

from conftest import make_dataset
from test_train_gen import load, run


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    """The tiny dataset, generators ga and gb, 4 iterations each, seeds 1337 and 7."""
    tmp = tmp_path_factory.mktemp('hard')
    make_dataset(tmp / 'data')
    run(['train_gen.py', '--out_dir=ga'], tmp)
    run(['train_gen.py', '--out_dir=gb', '--seed=7'], tmp)  # the same iter_num as ga
    return tmp


def test_divergence_stops_the_run_and_keeps_the_last_finite_checkpoint(work):
    shutil.copytree(work / 'ga', work / 'nan')
    before = (work / 'nan' / 'ckpt.pt').read_bytes()
    out = run(['train_gen.py', '--out_dir=nan', '--init_from=resume', '--max_iters=12',
               '--learning_rate=1e30'], work, check=False)
    assert 'non-finite loss or gradient' in out and 'Traceback' not in out
    assert 'stopped on a non-finite loss or gradient' in out.splitlines()[-1]
    assert (work / 'nan' / 'ckpt.pt').read_bytes() == before  # iter 4, untouched
    # a tolerance skips bad updates instead; here the first step of lr 1e30 left finite but
    # useless weights, so the evaluation then stops the run: still nothing written
    out = run(['train_gen.py', '--out_dir=nan', '--init_from=resume', '--max_iters=7',
               '--learning_rate=1e30', '--skip_nonfinite=100'], work, check=False)
    assert 'update skipped (2 of --skip_nonfinite=100)' in out
    assert not re.search(r'iter \d+: loss nan', out)  # skipped steps: not averaged into the log
    assert re.search(r'iter \d+: loss n/a \(all skipped\)', out)
    assert 'step 7: non-finite val loss' in out.splitlines()[-1]
    assert (work / 'nan' / 'ckpt.pt').read_bytes() == before


def test_a_nonfinite_checkpoint_is_refused_before_anything_is_written(work):
    ck = load(work / 'ga' / 'ckpt.pt')
    next(v for v in ck['ema'].values() if v.is_floating_point())[0] = float('nan')
    torch.save(ck, work / 'bad.pt')
    out = run(['sample.py', '--ckpt=bad.pt', '--out_dir=s_bad', '--num_samples=2'], work,
              check=False)
    assert 'bad.pt: non-finite weights' in out and 'Traceback' not in out
    assert not (work / 's_bad').exists()


def test_a_pair_folder_never_mixes_two_generators(work):
    sample = lambda ckpt, n, *a, check=True: run(['sample.py', f'--ckpt={ckpt}', '--out_dir=mix',
                                                  f'--num_samples={n}', *a], work, check=check)
    sample('ga/ckpt.pt', 4)
    out = sample('gb/ckpt.pt', 8, check=False)  # same settings, another generator: refused
    assert 'mix/meta.json' in out and 'weights' in out and 'Traceback' not in out
    shutil.copy(work / 'ga' / 'ckpt.pt', work / 'ga_copy.pt')
    out = sample('ga_copy.pt', 8)  # the same weights under another path: the same generator
    assert '4 already done' in out
    out = sample('ga/ckpt.pt', 8, '--seed=1', check=False)
    assert 'seed 1337 there, 1 now' in out


@pytest.mark.parametrize('args', [['--ratio=0'], ['--ratio=-1'], ['--num_samples=-5'],
                                  ['--steps=0'], ['--batch_size=0']])
def test_bad_sample_arguments_are_one_line_and_write_nothing(work, args):
    out = run(['sample.py', '--ckpt=ga/ckpt.pt', '--out_dir=s_args', *args], work, check=False)
    last = out.strip().splitlines()[-1]
    assert last.startswith('sample.py: error: ') and 'must be' in last and 'Traceback' not in out
    assert not (work / 's_args').exists()


@pytest.mark.parametrize('content', [b'', b'\x80\x02garbage' * 100, b'{"a": 1}'])
def test_unreadable_checkpoints_are_one_line_in_every_stage(work, content):
    (work / 'junk').mkdir(exist_ok=True)
    (work / 'junk' / 'ckpt.pt').write_bytes(content)
    (work / 'junk' / 'config.json').write_text('{}')  # an earlier run's: must survive
    stages = (['sample.py', '--ckpt=junk/ckpt.pt', '--out_dir=s_junk', '--num_samples=2'],
              ['train_gen.py', '--out_dir=junk', '--init_from=resume'],
              ['superres.py', '--ckpt=junk/ckpt.pt', '--mode=eval', '--out_dir=s_junk'])
    for args in stages if content == b'' else stages[:1]:  # (the same loader in every stage)
        out = run(args, work, check=False)
        last = out.strip().splitlines()[-1]
        assert last.startswith('junk/ckpt.pt: ') and 'want a train_gen.py' in last, out
        assert 'Traceback' not in out and 'weights_only=False' not in out
        assert not (work / 's_junk').exists()
        assert (work / 'junk' / 'config.json').read_text() == '{}'
