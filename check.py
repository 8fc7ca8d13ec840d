"""The one-command GPU check: every stage script once, as a subprocess, on a toy set it prepares.

The stages, in this order, in a temp folder (or check_dir): prepare -> train_gen G and G_SR ->
sample (ddim, dpm++) -> superres upsample -> seg (the FPN, then SegFormer-B0 for the other
architectures, or those --arch names) -> metrics, then train_gen and seg under `torchrun
--standalone --nproc_per_node=1`; on CUDA with bf16 autocast, torch.compile and nccl, on CPU with
bf16 and gloo. G trains at image_size, G_SR and seg at 2 x image_size. It asserts exit codes,
finite logged losses and valid class codes in the sampled masks, prints each stage's wall time and
img/s, the generator's MFU (FlopCounterMode FLOPs of one forward+backward x img/s / the GPU's peak
dense bf16 FLOP/s), and a final PASS / FAIL line; after a PASS the temp folder is removed, after
a FAIL it is kept and named. Without CUDA it says so and exits 0, unless --device=cpu (its CPU
half; tests/test_check.py runs it with configs/tiny.py). The settings carry the names of
train_gen.py and seg.py where they mean the same thing, so their config files apply (seg_batch is
seg.py's batch_size). Timing the networks alone is bench.py's.

Reads  nothing but the repo's stage scripts.
Writes only under its working folder (a new temp folder, or check_dir).

    python check.py                                  # one GPU: <= 8 min on an H100/H200 (est.)
    python check.py --arch=all                       # + a seg stage per architecture (est. +4 min)
    python check.py configs/tiny.py --device=cpu     # its CPU half, ~1 min
"""
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import pairs
import segmenters
from configurator import check_settings, configure
from unet import UNet, UNetConfig

# -----------------------------------------------------------------------------
# generator (the names of train_gen.py, so its config files apply)
image_size = 32  # G's; the prepared patches, G_SR's output and seg's crops are 2 x image_size
batch_size = 32  # generator training batch
n_ch = 32
ch_mult = (1, 2, 2)
n_res_blocks = 1
attn_res = (8,)
dropout = 0.0
timesteps = 1000
# segmenter (the names of seg.py where they mean the same thing)
arch = 'fpn'  # the seg stages beside the FPN's: 'fpn' adds segformer_b0, 'all' every other
# architecture of segmenters.ARCHS, any other key of segmenters.ARCHS that one
depth = 50  # the ResNet's, for the architectures built on it
seg_batch = 8
# the stages
max_iters = 50  # iterations of each training run (G, G_SR, seg)
num_samples = 16  # pairs per sampler
steps = 20  # DDIM / DPM-Solver++ steps of sample.py and superres.py
num_scenes = 16  # toy train scenes prepared (val: half as many)
check_dir = ''  # the check's working folder; '' = a new temp folder, removed after a PASS
device = ''  # '' = cuda if available; without CUDA the check runs only with --device=cpu
# -----------------------------------------------------------------------------
config = configure(globals())
problems = []  # every setting is checked before anything runs
if arch != 'all' and arch not in segmenters.ARCHS:
    problems.append(f"arch must be 'all' or one of {', '.join(segmenters.ARCHS)}, got {arch!r}")
if image_size % 16:
    problems.append(f'image_size must be a multiple of 16 (seg trains at 2 x image_size, a '
                    f'multiple of 32), got {image_size}')
check_settings('check.py', problems)
ROOT = Path(__file__).resolve().parent
if not torch.cuda.is_available() and not device.startswith('cpu'):
    print('check.py: no CUDA device on this machine (torch.cuda.is_available() is False); '
          'nothing checked. --device=cpu runs its CPU half')
    sys.exit(0)
device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
on_gpu = device.startswith('cuda')
# dense bf16 FLOP/s from NVIDIA's datasheets, matched in order against get_device_name()
PEAK_BF16 = [('H100 PCIe', 756e12), ('H100', 989e12), ('H200', 989e12), ('A100', 312e12)]

# --- the stages, and what each must show ------------------------------------------------------
work = check_dir or tempfile.mkdtemp(prefix='satsynth-check-')
os.makedirs(work, exist_ok=True)
hi = 2 * image_size  # the prepared patches, G_SR's output and seg's resolution
train = [f'--max_iters={max_iters}', f'--log_interval={max(1, max_iters // 5)}',
         f'--eval_interval={max_iters}', '--dataset=chk']
gen = train + [f'--batch_size={batch_size}', f'--n_ch={n_ch}', f'--ch_mult={ch_mult}',
               f'--n_res_blocks={n_res_blocks}', f'--attn_res={attn_res}',
               f'--dropout={dropout}', f'--timesteps={timesteps}']
seg = train + [f'--image_size={hi}', '--crop_size=0', f'--depth={depth}',
               f'--batch_size={seg_batch}']
sampling = [f'--num_samples={num_samples}', f'--steps={steps}']
# seg.py for the other architectures. Each compiles graphs of its own on a GPU (est. ~1 min
# each), and the plain check should stay well under 10 min, so it adds one representative:
# SegFormer-B0, the one that shares no code with the FPN (no ResNet: patch embeddings, SDPA
# attention, LayerNorm) and the cheapest. --arch=all adds every architecture, --arch=<name>
# that one.
if arch == 'all':
    other_archs = [name for name in segmenters.ARCHS if name != 'fpn']
elif arch == 'fpn':
    other_archs = ['segformer_b0']
else:
    other_archs = [arch]
seg_others = [(f'seg {name}', ['seg.py', 'configs/tiny.py', *seg, f'--arch={name}',
                               f'--out_dir=seg_{name}'], 'losses') for name in other_archs]
ddp = [f"--backend={'nccl' if on_gpu else 'gloo'}"]
STAGES = [  # (name, script and arguments, what its output must show), run in this order
    ('prepare', ['prepare.py', 'configs/toy.py', '--dataset=chk', f'--patch_size={hi}',
                 f'--n_train={num_scenes}', f'--n_val={max(2, num_scenes // 2)}'], ''),
    ('G', ['train_gen.py', 'configs/tiny.py', *gen, f'--image_size={image_size}',
           '--out_dir=gen'], 'losses'),
    ('G_SR', ['train_gen.py', 'configs/tiny.py', *gen, '--cond=lowres', '--scale=2',
              f'--image_size={hi}', '--out_dir=sr'], 'losses'),
    ('sample ddim', ['sample.py', 'configs/tiny.py', '--ckpt=gen/ckpt.pt', '--out_dir=s_ddim',
                     '--sampler=ddim', *sampling], 's_ddim/'),
    ('sample dpm++', ['sample.py', 'configs/tiny.py', '--ckpt=gen/ckpt.pt', '--out_dir=s_dpm',
                      '--sampler=dpm++', *sampling], 's_dpm/'),
    ('upsample', ['superres.py', 'configs/tiny.py', '--mode=upsample', '--ckpt=sr/ckpt.pt',
                  '--in_dir=s_dpm', '--out_dir=s_up', '--sampler=dpm++', f'--steps={steps}'],
     's_up/'),
    ('seg', ['seg.py', 'configs/tiny.py', *seg, '--synthetic_dir=s_up', '--out_dir=seg'],
     'losses'),
    *seg_others,  # on the real toy set only: the FPN's stage covers the synthetic pairs
    ('metrics', ['metrics.py', '--dataset=chk', '--real=data/chk', '--fake=s_ddim',
                 '--seg_ckpt=seg/best.pt', '--out_dir=met'], 'met/metrics.json'),
    ('G torchrun', ['train_gen.py', 'configs/tiny.py', *gen, f'--image_size={image_size}',
                    '--out_dir=gen_ddp', *ddp], 'losses'),
    ('seg torchrun', ['seg.py', 'configs/tiny.py', *seg, '--out_dir=seg_ddp', *ddp], 'losses'),
]


def accelerate(script):
    """--device/--dtype/--compile, for those of the three knobs the script declares (R2)."""
    knobs = dict(device=device, dtype='bfloat16', compile=on_gpu)  # never compile on CPU
    src = (ROOT / script).read_text()
    return [f'--{k}={v}' for k, v in knobs.items() if re.search(rf'^{k} = ', src, re.M)]


def problem(out, want):
    """'' if a stage shows what it must: 'losses' (all logged losses finite, at least one),
    'folder/' (a pair folder of num_samples pairs whose masks hold only the codes 0..K-1 and
    the ignore index) or 'a/file' (it exists)."""
    if want == 'losses':
        number = r'[-+]?(?:[\d.]+(?:e[-+]?\d+)?|nan|inf)'
        losses = [float(v) for v in re.findall(rf'\bloss ({number})', out)]
        bad = [v for v in losses if not math.isfinite(v)]
        if not losses:
            return 'no loss logged'
        if bad:
            return f'non-finite losses {bad[:3]}'  # (the first three)
        return ''
    if want.endswith('/'):
        folder = os.path.join(work, want)
        if not os.path.isdir(os.path.join(folder, 'masks')):
            return f'no pair folder {folder}'
        _, masks, stems = pairs.load_pairs(folder)
        info = pairs.read_classes(folder)
        valid = np.isin(masks, [*range(len(info['classes'])), info['ignore_index']])
        if len(stems) != num_samples:
            return f'{len(stems)} pairs in {folder}, expected {num_samples}'
        if not valid.all():
            return f'invalid class codes {np.unique(masks[~valid])[:8]}'  # (the first eight)
        return ''
    if want and not os.path.exists(os.path.join(work, want)):
        return f'no {want}'
    return ''


def text(output):  # a TimeoutExpired's partial output: None, bytes or str
    if isinstance(output, bytes):
        return output.decode()
    return output or ''


# --- the check: every stage script once, as a subprocess ---------------------------------------
name_gpu = torch.cuda.get_device_name() if on_gpu else 'CPU'
print(f'check on {name_gpu} ({device}, bf16 autocast, compile {on_gpu}) in {work}')
rates = {}  # stage -> its last logged img/s or pairs/s
t_all = time.time()
for name, (script, *args), want in STAGES:
    cmd = [sys.executable]
    if name.endswith('torchrun'):
        cmd += ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1']
    cmd += [str(ROOT / script), *args, *accelerate(script)]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
        out = p.stdout + p.stderr
        why = f'exit code {p.returncode}' if p.returncode else ''
    except subprocess.TimeoutExpired as e:
        out = text(e.stdout) + text(e.stderr)
        why = 'timed out after 600 s'
    why = why or problem(out, want)
    rate = re.findall(r'([\d.]+) (img/s|pairs/s)', out)  # [(number, unit), ...]
    rates[name] = float(rate[-1][0]) if rate else None  # the last interval: after compiling
    shown = f'{rate[-1][0]} {rate[-1][1]}' if rate else ''
    print(f'{name:>14s} {time.time() - t0:7.1f} s  {shown}', flush=True)
    if why:
        print(f'--- {" ".join(cmd)}\n' + '\n'.join(out.splitlines()[-30:]))
        print(f'FAIL: {name}: {why} (files kept in {work})')
        sys.exit(1)
    if name == 'G':  # MFU: FLOPs of one forward+backward of this very UNet, per image
        ckpt = pairs.load_checkpoint(os.path.join(work, 'gen/ckpt.pt'), 'train_gen.py',
                                     ['model_args'])
        unet = UNet(UNetConfig(**ckpt['model_args'])).to(device)
        x = torch.randn(1, unet.config.in_channels, image_size, image_size, device=device)
        with FlopCounterMode(display=False) as counter:
            unet(x, torch.zeros(1, dtype=torch.long, device=device)).square().mean().backward()
        flops = counter.get_total_flops()  # convs, matmuls, attention: the dense work
        peak = next((f for k, f in PEAK_BF16 if k in name_gpu), None)  # the first match
        achieved = flops * (rates['G'] or 0)
        if peak:
            mfu = f'{achieved / peak:.2%} of {peak / 1e12:.0f} TFLOP/s bf16'
        else:
            mfu = 'n/a: peak unknown'
        print(f'{"":>14s} G: {flops / 1e9:.3f} GFLOP/img (fwd+bwd) x {rates["G"]} img/s = '
              f'{achieved / 1e12:.3f} TFLOP/s, MFU {mfu}')
if not check_dir:
    shutil.rmtree(work)
print(f'PASS: {len(STAGES)} stages in {time.time() - t_all:.0f} s on {name_gpu}')
