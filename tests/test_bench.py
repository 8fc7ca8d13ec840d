"""bench.py: its settings' checks, the same-process comparisons and the FLOP counts of its
utilisation figures (the GPU check is check.py's: tests/test_check.py).

The peers (diffusers, smp) are not project dependencies, so the peer plumbing is tested with
stand-in modules on PYTHONPATH: one that checks the shape bench.py asks diffusers for, one that
fails to import as smp does beside a torch build without a matching torchvision, and one that
checks the models bench.py asks smp for. The FLOP counter is checked against hand counts, on
bench.py's own function (the script run in this process with runpy, which returns its globals).
"""
import math
import re
import runpy
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import segmenters
from conftest import ROOT, run_script

TINY = ['--iters=1', '--warmup=0', '--rounds=2', '--image_size=16', '--n_ch=16',
        '--ch_mult=(1, 2)', '--attn_res=(8,)', '--batch_size=2', '--depth=18', '--seg_size=32',
        '--seg_batch=2']


def rows(out, title):
    """{variant: the rest of its line} of the timing table that follows the line starting title."""
    block = out.split(title, 1)[1].split('\n')[1:]
    found = {}
    for line in block:
        m = re.match(r'  ((?:ours|diffusers|smp) \S+) +([\d.]+) img/s(.*)', line)
        if not m:
            break
        found[m.group(1)] = (float(m.group(2)), m.group(3))
    return found


def test_bad_settings_are_one_line_each_and_nothing_runs(tmp_path):
    out = run_script(['bench.py', '--what=all', '--arch=unet', '--rounds=0'], cwd=tmp_path,
                     check=False)
    lines = out.strip().splitlines()  # the configurator's override lines, then the problems
    assert lines[-3:] == ["bench.py: error: what must be 'gen', 'seg' or 'both', got 'all'",
                          "bench.py: error: arch must be 'all' or one of fpn, pspnet, farseg, "
                          "pfsegnet, segformer_b0, segformer_b2, got 'unet'",
                          'bench.py: error: rounds must be >= 1, got 0']
    assert 'Traceback' not in out and not any(line.startswith('device ') for line in lines)

def test_compare_times_dtype_and_layout_in_one_process(tmp_path):
    out = run_script(['bench.py', '--compare=True', *TINY], cwd=tmp_path)
    for title in ('generator training', 'segmenter training'):
        table = rows(out, title)
        assert list(table) == ['ours fp32', 'ours bf16', 'ours fp32+channels_last',
                               'ours bf16+channels_last'], table
        speed = table['ours fp32'][0]
        for name, (v, rest) in table.items():  # every other variant: its ratio to ours fp32
            assert v > 0
            if name != 'ours fp32':
                ratio = float(re.search(r'([\d.]+)x ours fp32', rest).group(1))
                assert ratio == pytest.approx(v / speed, rel=0.05, abs=0.01)
    assert out.count('max RSS (process)') == 2 and 'sample ' not in out  # train steps only


def test_peers_ratio_or_skip_line(tmp_path, monkeypatch):
    fake = tmp_path / 'fake'
    (fake / 'diffusers').mkdir(parents=True)
    (fake / 'segmentation_models_pytorch').mkdir()
    (fake / 'diffusers' / '__init__.py').write_text(textwrap.dedent('''
        import torch
        class UNet2DModel(torch.nn.Module):  # stand-in: asserts the shape, then one conv
            def __init__(self, **kw):
                super().__init__()
                assert kw['block_out_channels'] == (16, 32) and kw['layers_per_block'] == 1, kw
                assert kw['down_block_types'] == ('DownBlock2D', 'AttnDownBlock2D'), kw
                assert kw['up_block_types'] == ('AttnUpBlock2D', 'UpBlock2D'), kw
                assert kw['in_channels'] == kw['out_channels'] == 6 and kw['sample_size'] == 16
                self.conv = torch.nn.Conv2d(6, 6, 3, padding=1)
            def forward(self, x, t):
                return type('Output', (), {'sample': self.conv(x)})()
        '''))
    (fake / 'segmentation_models_pytorch' / '__init__.py').write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.setenv('PYTHONPATH', str(fake))
    out = run_script(['bench.py', '--peers=True', '--dtype=bfloat16', '--flops=True',
                      '--matmul_size=64', *TINY], cwd=tmp_path)
    gen = rows(out, 'generator training')
    assert list(gen) == ['ours fp32', 'ours bf16', 'diffusers fp32', 'diffusers bf16'], gen
    for dt in ('fp32', 'bf16'):  # ours over the peer in the SAME dtype, same process and batch
        mine, theirs = gen[f'ours {dt}'], gen[f'diffusers {dt}']
        ratio = float(re.search(rf'([\d.]+)x diffusers {dt}', mine[1]).group(1))
        assert ratio == pytest.approx(mine[0] / theirs[0], rel=0.05, abs=0.01)
    assert 'diffusers fp32' not in gen['ours bf16'][1]  # never across dtypes
    assert 'diffusers' not in gen['ours fp32'][1].replace('x diffusers fp32', '')
    assert re.search(r'[\d.]+x diffusers fp32', gen['diffusers bf16'][1])  # the peer's own gain
    # the peer's FLOPs are its own count (one conv), not ours
    work = dict(re.findall(r'^  ((?:ours|diffusers) \S+) +([\d.]+) GFLOP/step', out, re.M))
    assert set(work) == set(gen) and work['diffusers fp32'] < work['ours fp32']
    assert re.search(r"peer skipped: segmentation_models_pytorch not importable \(RuntimeError: "
                     r"operator torchvision::nms does not exist\); to time it: pip install "
                     r"segmentation-models-pytorch", out)
    assert list(rows(out, 'segmenter training')) == ['ours fp32', 'ours bf16']


def test_every_segmenter_is_timed_beside_smp_where_smp_has_it(tmp_path, monkeypatch):
    fake = tmp_path / 'fake' / 'segmentation_models_pytorch'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text(textwrap.dedent('''
        import torch
        class Peer(torch.nn.Module):  # stand-in: asserts what bench.py asks for, then one conv
            def __init__(self, encoder, encoder_weights, classes, **kw):
                super().__init__()
                assert encoder_weights is None and classes == 6, (encoder_weights, classes)
                self.conv = torch.nn.Conv2d(3, classes, 3, padding=1)
            def forward(self, x):
                return self.conv(x)
        class FPN(Peer):
            def __init__(self, encoder, **kw):
                assert encoder == 'resnet18' and not {*kw} - {'encoder_weights', 'classes'}, kw
                super().__init__(encoder, **kw)
        PSPNet = FPN  # smp's defaults: nothing else is passed
        class Segformer(Peer):
            def __init__(self, encoder, decoder_segmentation_channels=256, **kw):
                width = {'mit_b0': 256, 'mit_b2': 768}[encoder]  # B2: the reference's head
                assert decoder_segmentation_channels == width, decoder_segmentation_channels
                super().__init__(encoder, **kw)
        '''))
    monkeypatch.setenv('PYTHONPATH', str(fake.parent))
    out = run_script(['bench.py', '--what=seg', '--arch=all', '--peers=True', '--iters=1',
                      '--warmup=0', '--rounds=1', '--depth=18', '--seg_size=32', '--seg_batch=2',
                      '--num_classes=6'], cwd=tmp_path)
    with_smp = ['fpn', 'pspnet', 'segformer_b0', 'segformer_b2']
    params = dict(re.findall(r'^segmenter: (\S+), ([\d.]+)M params', out, re.M))
    summary = out.split('segmenters, ours fp32, batch 2 of 32x32', 1)[1].splitlines()[2:]
    names = [segmenters.describe(segmenters.model_args(arch, 6, 18)) for arch in segmenters.ARCHS]
    assert len(summary) >= len(names)
    for arch, name, line in zip(segmenters.ARCHS, names, summary):  # one line each, in order
        m = re.match(rf'  {re.escape(name)} +([\d.]+)M +([\d.]+) +[\d.]+ GiB +(\S+) +(\S+)$',
                     line)
        assert m, line
        assert m.group(1) == params[name] and float(m.group(2)) > 0
        assert (m.group(3) != '-') == (m.group(4) != '-') == (arch in with_smp), line
    for arch, name in zip(segmenters.ARCHS, names):  # its table: ours, and smp if it has arch
        table = rows(out, f'segmenter training ({name})')
        assert list(table) == ['ours fp32'] + ['smp fp32'] * (arch in with_smp), (arch, table)
    assert 'peer: none (smp has no farseg)' in out and 'peer: none (smp has no pfsegnet)' in out
    ours_psp = re.escape(params['pspnet-ResNet18'])  # both sizes beside the ratio, and why
    assert re.search(rf'ours/smp, each in the same setting \(same process\): fp32 [\d.]+x at '
                     rf"{ours_psp}M params \(ours\) vs [\d.]+M \(smp\); smp's PSPNet is a lighter "
                     r"model than mmseg's.*~24\.4M vs ~49M params at ResNet-50\), so the ratio "
                     r'compares', out)
    assert '(ours/smp: over smp fp32, same process)' in out  # the summary's dtype, both sides


def test_flops_block_and_the_counter_against_hand_counts(tmp_path, monkeypatch, capsys,
                                                         one_thread):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['bench.py', '--what=gen', '--compare=True', '--peers=True',
                                      '--flops=True', '--matmul_size=64', *TINY])
    bench = runpy.run_path(str(ROOT / 'bench.py'), run_name='__main__')  # its globals
    out = capsys.readouterr().out
    assert 'peer skipped: diffusers' in out or 'peer: diffusers' in out  # absent here: skipped
    peak = dict(re.findall(r'(fp32|bf16) ([\d.]+) GFLOP/s', out.split('matmul peak', 1)[1]
                           .splitlines()[0]))
    assert set(peak) == {'fp32', 'bf16'} and all(0 < float(v) < math.inf for v in peak.values())
    speed = rows(out, 'generator training')
    found = re.findall(r'^  (ours \S+) +([\d.]+) GFLOP/step +([\d.]+) GFLOP/s +([\d.]+) % of '
                       r'(\w+) peak$', out, re.M)
    assert [f[0] for f in found] == list(speed) == ['ours fp32', 'ours bf16',
                                                   'ours fp32+channels_last',
                                                   'ours bf16+channels_last']
    for name, gflop, achieved, pct, dt in found:  # FLOPs per step x steps/s; % of its dtype's peak
        assert dt == name.split(' ')[1][:4] and float(gflop) > 0 and float(achieved) > 0
        assert float(achieved) == pytest.approx(float(gflop) * speed[name][0] / 2, rel=0.02,
                                                abs=0.01)  # batch_size 2 img per step
        assert float(pct) == pytest.approx(100 * float(achieved) / float(peak[dt]), abs=0.1)
    assert re.search(r'the FLOPs of ours fp32 by op: convolution_backward \d+%, convolution', out)

    # one nn.Linear, x (m, k) -> (m, n): the forward is one (m, k) x (k, n) matmul, 2 m n k FLOPs;
    # the backward two more of the same size (the input's gradient, the weight's): 3 x 2 m n k,
    # and 2 x 2 m n k when the input needs no gradient (a network's first layer)
    step_flops = bench['step_flops']
    m, k, n = 8, 16, 4
    linear = torch.nn.Linear(k, n)
    forward = lambda net, x: net(x)
    loss = lambda fn, x: fn(x).sum()
    x = torch.randn(m, k, requires_grad=True)
    total, by_op = step_flops(linear, forward, loss, [x], 'float32')
    assert total == 3 * 2 * m * n * k and by_op == {'aten.addmm': 2 * m * n * k,
                                                    'aten.mm': 2 * 2 * m * n * k}
    assert step_flops(linear, forward, loss, [x.detach()], 'float32')[0] == 2 * 2 * m * n * k
    # SDPA's CPU kernel (FlopCounterMode alone counts it as 0) on (B, heads, L, d): q k^T and
    # (softmax) v, two matmuls of 2 B heads L^2 d FLOPs forward; backward q k^T recomputed, then
    # the gradients of scores, v, q and k: five more
    B, heads, L, d = 2, 3, 16, 8
    q = torch.randn(B, heads, L, d, requires_grad=True)
    attention = lambda net, q: F.scaled_dot_product_attention(q, q, q)
    total, by_op = step_flops(torch.nn.Identity(), attention, loss, [q], 'float32')
    assert total == (2 + 5) * 2 * B * heads * L**2 * d, by_op

    # the pairing: the peer runs under every setting of ours, and each ratio is between the two
    # labels of one setting
    assert bench['same_setting']('ours bf16+channels_last', 'smp') == 'smp bf16+channels_last'
    grid = bench['variants']('smp')  # --compare=True --peers=True: 4 settings, each twice
    ours = [v for v in grid if v[1] == 'ours']
    theirs = {v[0]: v[2:] for v in grid if v[1] == 'peer'}
    assert len(ours) == len(theirs) == 4
    for label, who, *setting in ours:
        assert theirs[bench['same_setting'](label, 'smp')] == tuple(setting)
