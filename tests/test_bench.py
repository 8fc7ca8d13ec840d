"""bench.py: its settings' checks and the same-process comparisons (the GPU check is check.py's:
tests/test_check.py).

The peers (diffusers, smp) are not project dependencies, so the peer plumbing is tested with
stand-in modules on PYTHONPATH: one that checks the shape bench.py asks diffusers for, one that
fails to import as smp does beside a torch build without a matching torchvision, and one that
checks the models bench.py asks smp for.
"""
import re
import textwrap

import pytest

import segmenters
from conftest import run_script

TINY = ['--iters=1', '--warmup=0', '--rounds=2', '--image_size=16', '--n_ch=16',
        '--ch_mult=(1, 2)', '--attn_res=(8,)', '--batch_size=2', '--depth=18', '--seg_size=32',
        '--seg_batch=2']


def rows(out, title):
    """{variant: the rest of its line} of the timing table that follows the line starting title."""
    block = out.split(title, 1)[1].split('\n')[1:]
    found = {}
    for line in block:
        m = re.match(r'  (ours \S+|\w+ fp32) +([\d.]+) img/s(.*)', line)
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
    out = run_script(['bench.py', '--peers=True', '--dtype=bfloat16', *TINY], cwd=tmp_path)
    gen = rows(out, 'generator training')
    assert list(gen) == ['ours fp32', 'ours bf16', 'diffusers fp32'], gen
    for name in ('ours fp32', 'ours bf16'):  # ours over the peer, same process, same batch
        ratio = float(re.search(r'([\d.]+)x diffusers fp32', gen[name][1]).group(1))
        assert ratio == pytest.approx(gen[name][0] / gen['diffusers fp32'][0], rel=0.05, abs=0.01)
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
    assert re.search(rf'ours/smp fp32 \(same process\): fp32 [\d.]+x at {ours_psp}M params '
                     r"\(ours\) vs [\d.]+M \(smp\); smp's PSPNet is a lighter model than mmseg's"
                     r'.*~24\.4M vs ~49M params at ResNet-50\), so the ratio compares', out)
