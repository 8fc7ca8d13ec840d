"""check.py: the CPU half of the GPU check, its verdict on a failing stage, its settings' checks
and its no-CUDA exit.

The check runs every stage script as a subprocess on a toy set it prepares itself; here at the
tiny sizes of configs/tiny.py (~60 s on 2 busy cores).
"""
import re
from pathlib import Path

import pytest
import torch

from conftest import run_script

STAGES = ['prepare', 'G', 'G_SR', 'sample ddim', 'sample dpm++', 'upsample', 'seg',
          'seg segformer_b0', 'metrics', 'G torchrun', 'seg torchrun']


def test_check_cpu_half_passes(tmp_path):
    out = run_script(['check.py', 'configs/tiny.py', '--device=cpu', '--num_samples=2',
                      '--num_scenes=4'], cwd=tmp_path, timeout=300)
    assert 'bf16 autocast, compile False' in out
    for stage in STAGES:  # each stage reports its wall time, in this order
        assert re.search(rf'^ *{re.escape(stage)} +[\d.]+ s', out, re.M), stage
    assert [m.strip() for m in re.findall(r'^ *(\S+(?: \S+)?) +[\d.]+ s ', out, re.M)] == STAGES
    assert re.search(r'^ *G +[\d.]+ s +[\d.]+ img/s', out, re.M)  # img/s from train_gen's log
    assert re.search(r'G: [\d.]+ GFLOP/img \(fwd\+bwd\) x [\d.]+ img/s = .*peak unknown', out)
    assert re.search(r'^PASS: 11 stages in \d+ s on CPU$', out, re.M)
    work = re.search(r'^check on CPU .* in (\S+)$', out, re.M).group(1)
    assert not Path(work).exists()  # its temp folder is removed after a PASS


def test_check_names_the_first_failing_stage(tmp_path):
    # no train scenes: prepare.py refuses, and the verdict must name it and keep the files
    out = run_script(['check.py', 'configs/tiny.py', '--device=cpu', '--num_scenes=0',
                      f'--check_dir={tmp_path / "w"}'], cwd=tmp_path, check=False)
    assert re.search(r'^FAIL: prepare: exit code 1 \(files kept in .*w\)$', out, re.M)
    assert 'no train scenes' in out and 'PASS' not in out and (tmp_path / 'w').is_dir()


def test_bad_settings_are_one_line_each_and_nothing_runs(tmp_path):
    out = run_script(['check.py', '--arch=unet', '--image_size=24', '--device=cpu'], cwd=tmp_path,
                     check=False)
    lines = out.strip().splitlines()  # the configurator's override lines, then the problems
    assert lines[-2:] == ["check.py: error: arch must be 'all' or one of fpn, pspnet, farseg, "
                          "pfsegnet, segformer_b0, segformer_b2, got 'unet'",
                          'check.py: error: image_size must be a multiple of 16 (seg trains at 2 '
                          'x image_size, a multiple of 32), got 24']
    assert 'Traceback' not in out and 'check on ' not in out and not list(tmp_path.iterdir())
    out = run_script(['bench.py', '--check=True'], cwd=tmp_path, check=False)  # check.py's now
    assert "config error (command line): unknown key 'check'" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine would run the GPU check')
def test_check_without_cuda_says_so_and_exits_0(tmp_path):
    out = run_script(['check.py'], cwd=tmp_path)
    assert 'no CUDA device on this machine' in out and '--device=cpu' in out
    assert 'PASS' not in out and 'prepare' not in out and not list(tmp_path.iterdir())
