"""Throughput and memory of the two networks, as nanoGPT's bench.py.

Timing (no data, no disk): training img/s of the generator (UNet + DDPM loss, AdamW) and of a
segmenter (any of segmenters.ARCHS, `--arch`, FPN-ResNet by default, or `--arch=all` for each in
turn; its own training loss through the segmenter interface, `logits, loss = model(x, y)`, so
PSPNet's auxiliary head and FarSeg's focal term are timed too; fused AdamW, as seg.py), the
generator's sampling network-evaluations/s, and peak memory (max RSS of the process on CPU, restarted at each table on
Linux; peak allocated CUDA memory per variant on GPU). Every variant is timed in interleaved
rounds (A, B, A, B, ...) inside ONE process and the median per variant is printed: on a shared,
noisy machine only same-process ratios mean anything. With --flops=True each table is followed by
its utilisation: the FLOPs of one training step (forward + backward, counted once per dtype by
torch.utils.flop_counter.FlopCounterMode, as check.py's MFU) x steps/s, over the machine's own
matmul peak in that dtype, measured here (timed n x n products on the same device and threads; on
CUDA fp32 means TF32, which this script turns on): MFU, on a CPU too, against a measured peak
rather than a datasheet's. It is off by default: at the defaults each dtype's peak takes 18
products of 17 GFLOP (n = 2048), several seconds on a CPU.

    python bench.py                                   # both networks, the config's dtype/layout
    python bench.py --compare=True                    # fp32 vs bf16 autocast x channels_last off/on
    python bench.py --compare=True --compile=True     # ... each also compiled
    python bench.py --peers=True --dtype=bfloat16     # ours and the peers, each fp32 and bf16
    python bench.py --flops=True --dtype=bfloat16     # + FLOP/s, % of the measured matmul peak
    python bench.py configs/gen_paper.py --what=gen --device=cuda --dtype=bfloat16 --compile=True
    python bench.py --what=seg --seg_size=256 --seg_batch=8 --depth=50
    python bench.py --what=seg --arch=all --depth=18 --seg_size=64   # every segmenter, a summary

The peers are diffusers' UNet2DModel of the same shape (block_out_channels = n_ch x ch_mult,
layers_per_block = n_res_blocks, attention at the same resolutions) and segmentation_models_pytorch
(smp, encoder_weights=None) where it has the architecture: FPN('resnet<depth>'),
PSPNet('resnet<depth>'), Segformer('mit_b0') and Segformer('mit_b2',
decoder_segmentation_channels=768); smp has no FarSeg and no PFSegNet. A peer runs under every
setting that ours runs under (dtype, channels_last, compile; each a copy of the same peer weights),
and every ratio to a peer is ours over the peer under the same setting: ours bf16 / peer bf16,
never across dtypes. A peer segmenter's loss is seg.py's cross-entropy. Two of these compare
different amounts of work, and the printed ratio line says so beside both parameter counts: smp's
PSPNet is a lighter model than mmseg's, which ours follows (encoder depth 3, no dilation, no
auxiliary head: ~24.4M vs ~49M params at ResNet-50); smp's Segformer decoder width defaults to
256, B0's in the reference but not B2's (768, passed here; the default would give 24.7M params,
not the reference's 27.4M). The peers are not project dependencies: a peer that does not import
is skipped with one line saying how to get it (e.g. `pip install --target /tmp/peers diffusers`,
then PYTHONPATH=/tmp/peers). smp needs a torchvision built for the very same torch, so it gets a
venv of its own (docs/RESULTS.md, Speed), run as `PYTHONPATH=<this repo> <that venv>/bin/python
bench.py --peers=True ...`.

The one-command GPU check (every stage script once, as a subprocess, on a toy set) is
check.py, beside this file.
"""
import copy
import math
import resource
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils import flop_counter

import bits
import segmenters
from configurator import check_settings, configure
from diffusion import GaussianDiffusion
from fpn import segmentation_loss
from unet import UNet, UNetConfig

# -----------------------------------------------------------------------------
what = 'both'  # 'gen' | 'seg' | 'both'
# generator (the names of train_gen.py, so its config files apply)
image_size = 32
batch_size = 32  # generator training batch
sample_batch = 64  # generator sampling batch (forward passes only)
label_channels = 3  # ceil(log2 K): 3 for the toy data (K = 6), 4 for iSAID (K = 16)
n_ch = 32
ch_mult = (1, 2, 2)
n_res_blocks = 1
attn_res = (8,)
n_heads = 4
dropout = 0.0
timesteps = 1000
# segmenter (the names of seg.py where they mean the same thing)
arch = 'fpn'  # a key of segmenters.ARCHS (fpn, pspnet, farseg, ...), or 'all': each in turn
depth = 50  # the ResNet's, for the architectures built on it
num_classes = 6
seg_size = 128  # square training crops
seg_batch = 8
# what to time
channels_last = False  # model and inputs in torch.channels_last (NHWC) memory format
compare = False  # time fp32 vs bf16 autocast x channels_last off/on (x compile if --compile=True)
peers = False  # also time diffusers' UNet2DModel and smp's segmenter under every setting of ours
flops = False  # also FLOPs per step, FLOP/s, and % of the measured matmul peak of each dtype
matmul_size = 0  # n of the timed n x n matmul of that peak; 0 = 2048 on CPU, 8192 on CUDA
warmup = 2  # untimed iterations per variant (allocator, autotuning, compile)
iters = 3  # timed iterations per variant and round
rounds = 5  # interleaved rounds; the median img/s per variant is printed
# run
device = ''  # '' = cuda if available, else cpu
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'
compile = False
seed = 1337
# -----------------------------------------------------------------------------
config = configure(globals())
problems = []  # every setting is checked before anything runs
if what not in {'gen', 'seg', 'both'}:
    problems.append(f"what must be 'gen', 'seg' or 'both', got {what!r}")
if arch != 'all' and arch not in segmenters.ARCHS:
    problems.append(f"arch must be 'all' or one of {', '.join(segmenters.ARCHS)}, got {arch!r}")
if dtype not in {'float32', 'bfloat16', 'float16'}:
    problems.append(f'dtype must be float32, bfloat16 or float16, got {dtype!r}')
if warmup < 0:
    problems.append(f'warmup must be >= 0, got {warmup}')
if iters < 1:
    problems.append(f'iters must be >= 1, got {iters}')
if rounds < 1:
    problems.append(f'rounds must be >= 1, got {rounds}')
if matmul_size < 0:
    problems.append(f'matmul_size must be >= 0 (0: 2048 on CPU, 8192 on CUDA), got {matmul_size}')
check_settings('bench.py', problems)
device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
# a CPU core does ~50-100 GFLOP/s: a 2048 product (17 GFLOP) takes ~0.1-0.2 s on 2 cores; a GPU
# needs a larger one (8192: ~1 ms on an H100 in bf16) before launch overheads stop mattering
matmul_size = matmul_size or (8192 if device_type == 'cuda' else 2048)
torch.manual_seed(seed)
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
PTDTYPE = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
SHORT = {'float32': 'fp32', 'bfloat16': 'bf16', 'float16': 'fp16'}  # as the labels print them


# --- timing: a variant is (label, 'ours' or 'peer', dtype, channels_last, compile) --------------
def autocast(dt):
    if dt == 'float32':
        return nullcontext()
    return torch.amp.autocast(device_type, dtype=PTDTYPE[dt])


def peer_unet(C):
    """diffusers' UNet2DModel of our UNet's shape and its forward; or why it cannot be had."""
    try:
        from diffusers import UNet2DModel
    except Exception as e:  # not installed, or does not import beside this torch: say so, skip
        return f"diffusers' UNet2DModel not importable ({type(e).__name__}: {e})"
    attn = [image_size // 2**i in attn_res for i in range(len(ch_mult))]  # unet.py's levels
    model = UNet2DModel(
        sample_size=image_size, in_channels=C, out_channels=C, dropout=dropout,
        block_out_channels=tuple(n_ch * m for m in ch_mult), layers_per_block=n_res_blocks,
        down_block_types=tuple('AttnDownBlock2D' if a else 'DownBlock2D' for a in attn),
        up_block_types=tuple('AttnUpBlock2D' if a else 'UpBlock2D' for a in reversed(attn)),
        attention_head_dim=n_ch * ch_mult[-1] // n_heads,  # n_heads at the deepest level
        norm_num_groups=math.gcd(32, n_ch))  # unet.py's norm(): gcd(32, ch) groups
    return model, lambda net, x, t: net(x, t).sample


# smp's model of each architecture it has (smp 0.6 has no FarSeg and no PFSegNet), as
# (its name, what a reader must know about the ratio); peer_segmenter builds them
SMP_PEERS = {
    'fpn': ("FPN('resnet{depth}')", 'the same architecture'),
    'pspnet': ("PSPNet('resnet{depth}')",
               "smp's PSPNet is a lighter model than mmseg's, which ours follows: encoder depth 3, "
               'no dilation, no aux head (~24.4M vs ~49M params at ResNet-50), so the ratio '
               'compares different amounts of work'),
    'segformer_b0': ("Segformer('mit_b0')",
                     "smp's Segformer decoder width defaults to 256, the reference's for B0"),
    'segformer_b2': ("Segformer('mit_b2', decoder_segmentation_channels=768)",
                     "smp's Segformer decoder width defaults to 256 (24.7M params); 768 is passed "
                     "to match the reference's B2 head"),
}


def peer_segmenter(name):
    """segmentation_models_pytorch's model of the architecture `name` (a key of SMP_PEERS) at our
    backbone depth, untrained, and its forward in our interface; or why it cannot be had."""
    try:
        import segmentation_models_pytorch as smp
    except Exception as e:  # smp needs a torchvision built for this very torch
        return f"segmentation_models_pytorch not importable ({type(e).__name__}: {e})"
    if name == 'fpn':
        model = smp.FPN(f'resnet{depth}', encoder_weights=None, classes=num_classes)
    elif name == 'pspnet':  # smp's defaults: encoder_depth=3, psp_out_channels=512, upsampling=8
        model = smp.PSPNet(f'resnet{depth}', encoder_weights=None, classes=num_classes)
    elif name == 'segformer_b0':
        model = smp.Segformer('mit_b0', encoder_weights=None, classes=num_classes)
    else:  # segformer_b2, with the decoder width of the reference's B2 (segformer.MIT_SIZES)
        model = smp.Segformer('mit_b2', encoder_weights=None, classes=num_classes,
                              decoder_segmentation_channels=768)

    def forward(net, x, y):  # smp's model returns logits only: seg.py's cross-entropy beside it
        logits = net(x)
        return logits, segmentation_loss(logits, y)
    return model, forward


def variant_label(who, dt, cl, comp):
    """'ours fp32', 'smp bf16+channels_last', 'ours bf16+compile', ...: how a variant is printed;
    who is 'ours' or the peer's name ('diffusers', 'smp')."""
    parts = [SHORT[dt]]
    if cl:
        parts.append('channels_last')
    if comp:
        parts.append('compile')
    return f'{who} ' + '+'.join(parts)


def same_setting(label, who):
    """The label of `who` under the setting of the variant `label`: ('ours bf16', 'smp') -> 'smp
    bf16'. A ratio to a peer is always between two such labels."""
    return who + ' ' + label.split(' ', 1)[1]


def variants(peer_name):
    """Ours as configured, or the compare grid; with peers also ours fp32, and then the peer
    (peer_name, or None for no peer) under every setting of ours, in the same order."""
    ours = [(dtype, channels_last, compile)]  # (dtype, channels_last, compile) per variant
    if compare:  # every dtype x layout, uncompiled, and compiled too with --compile=True
        ours = []
        for c in ([False, True] if compile else [False]):
            for cl in (False, True):
                for d in ('float32', 'bfloat16'):
                    ours.append((d, cl, c))
    if peers and ('float32', False, False) not in ours:
        ours.insert(0, ('float32', False, False))
    out = [(variant_label('ours', d, cl, c), 'ours', d, cl, c) for d, cl, c in ours]
    if peer_name:
        out += [(variant_label(peer_name, d, cl, c), 'peer', d, cl, c) for d, cl, c in ours]
    return out


def make_step(model, forward, loss_fn, inputs, dt, cl, comp, fused):
    """One training step (forward, backward, AdamW: torch's fused kernel if fused) of model on
    fixed inputs, as a function."""
    fmt = torch.channels_last if cl else torch.preserve_format
    model = model.to(device, memory_format=fmt)
    inputs = [x.contiguous(memory_format=fmt) if x.dim() == 4 else x for x in inputs]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    net = torch.compile(model) if comp else model
    ctx = autocast(dt)

    def step():
        with ctx:
            loss = loss_fn(lambda *a: forward(net, *a), *inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def training_steps(reference, make_ours, forward, loss_fn, inputs, peer, peer_name, fused):
    """{label: step} for every variant (see variants): each of ours a fresh make_ours() with the
    weights of `reference`, so every variant starts from the same weights; then the peer, a
    (model, forward) pair or None (not timed), named peer_name, each variant a copy of its model
    (one module shared by the variants would share its layout and its optimizers' updates).
    fused: AdamW as the trainer has it (seg.py fused, train_gen.py not), the peer's the same."""
    steps = {}
    for label, who, dt, cl, comp in variants(peer_name if peer else None):
        if who == 'ours':
            model = make_ours()
            model.load_state_dict(reference.state_dict())
            steps[label] = make_step(model, forward, loss_fn, inputs, dt, cl, comp, fused)
        else:
            peer_model, peer_forward = peer
            steps[label] = make_step(copy.deepcopy(peer_model), peer_forward, loss_fn, inputs,
                                     dt, cl, comp, fused)
    return steps


# --- utilisation (--flops): FLOPs counted, matmul peak measured ---------------------------------
# FlopCounterMode (torch 2.13 and 2.14) has no formula for SDPA's CPU kernel and counts its
# attention as 0 FLOPs: it gets the counts of the GPU kernels, which do the same matmuls (five in
# the backward: these flash kernels recompute q k^T rather than keep it). The counter passes each
# formula the shapes of the op's tensor arguments (q, k, v, ...)
CPU_SDPA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *args, **kwargs: flop_counter.sdpa_flop_count(q, k, v),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda grad, q, k, v, *args, **kwargs: flop_counter.sdpa_backward_flop_count(grad, q, k, v),
}


def step_flops(model, forward, loss_fn, inputs, dt):
    """(FLOPs, {op: FLOPs}) of one training step of model in dtype dt: the forward and backward
    that autograd runs (no input gradient for the first layer, e.g.), counted by FlopCounterMode
    as check.py's MFU is: matmuls, convolutions, attention, the dense work. AdamW's elementwise
    update is left out of the count, but not of the timed step."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        with autocast(dt):
            loss = loss_fn(lambda *a: forward(model, *a), *inputs)
        loss.backward()
    model.zero_grad(set_to_none=True)
    by_op = {str(op): n for op, n in counter.get_flop_counts()['Global'].items()}
    return counter.get_total_flops(), by_op


def count_flops(reference, forward, loss_fn, inputs, peer, peer_name):
    """{label: (dtype, FLOPs per step, {op: FLOPs})} for every variant (see variants), counted on
    ours' reference model or the peer's, once per dtype: channels_last and compile change how the
    work is done, not how much of it (under CPU bf16 our attention is written out, not SDPA)."""
    counted = {}  # (who, dtype) -> (FLOPs, by op)
    work = {}
    for label, who, dt, cl, comp in variants(peer_name if peer else None):
        if (who, dt) not in counted:
            model, fwd = (reference, forward) if who == 'ours' else peer
            counted[who, dt] = step_flops(model, fwd, loss_fn, inputs, dt)
        work[label] = (dt, *counted[who, dt])
    return work


def matmul_peak(dt):
    """Measured FLOP/s of an n x n matmul in dt (n = matmul_size) on this device and these
    threads, the median of `rounds` timings of `iters` products: utilisation's 100 %. A matmul
    under bf16 autocast runs on bf16 tensors, as this one does."""
    a = torch.randn(matmul_size, matmul_size, device=device).to(PTDTYPE[dt])
    b = torch.randn(matmul_size, matmul_size, device=device).to(PTDTYPE[dt])
    timed(lambda: a @ b, warmup + 1)  # at least one: the first call picks and loads a kernel
    seconds = [timed(lambda: a @ b, iters) / iters for _ in range(rounds)]
    return 2 * matmul_size**3 / statistics.median(seconds)


def report_flops(med, work, n_images):
    """Under a timing table: per variant its FLOPs per step, FLOP/s (x steps/s) and the % of its
    dtype's matmul peak; then the share of each op in the first variant's count."""
    print(f'  utilisation: GFLOP of one step (forward + backward) x steps/s = {unit}, as a % of '
          f'the measured matmul peak of its dtype')
    for k, v in med.items():
        dt, total, by_op = work[k]
        achieved = total * v / n_images  # FLOPs per step x steps/s
        print(f'  {k:26s} {total / 1e9:9.3f} GFLOP/step {achieved / scale:9.2f} {unit} '
              f'{100 * achieved / matmul_peaks[dt]:5.1f} % of {SHORT[dt]} peak')
    first = next(iter(med))
    dt, total, by_op = work[first]
    by_share = sorted(by_op.items(), key=lambda kv: -kv[1])  # the largest first
    shares = ', '.join(f'{op.removeprefix("aten.")} {n / total:.0%}' for op, n in by_share)
    print(f'  the FLOPs of {first} by op: {shares}')


def timed(fn, n):
    """Seconds of n calls of fn."""
    if device_type == 'cuda':
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if device_type == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def reset_max_rss():
    """Restart the process's max RSS from its current RSS (Linux, proc(5): clear_refs 5), so that
    a table's figure is its own, not the largest of the tables before it; False where the kernel
    does not allow it."""
    try:
        Path('/proc/self/clear_refs').write_text('5')
    except OSError:
        return False
    return True


def race(title, steps, n_images):
    """Interleaved rounds of every step; prints the median img/s, the ratios, peak memory.
    Returns ({label: median img/s}, {label: peak bytes}): the process's max RSS on a CPU."""
    own_rss = reset_max_rss()  # every step's model is built: its weights count, from here on
    warm = {k: timed(step, warmup) for k, step in steps.items()}  # compile's cost shows here
    speed = {k: [] for k in steps}  # img/s of each round
    mem = dict.fromkeys(steps, 0)  # peak CUDA bytes
    for _ in range(rounds):
        for k, step in steps.items():
            if device_type == 'cuda':
                torch.cuda.reset_peak_memory_stats()
            speed[k].append(n_images * iters / timed(step, iters))
            if device_type == 'cuda':
                mem[k] = max(mem[k], torch.cuda.max_memory_allocated())
    med = {k: statistics.median(v) for k, v in speed.items()}
    # the ratio columns: every variant against its own fp32 (ours or the peer's), and each of
    # ours against the peer under the same setting (ours bf16 / peer bf16): never across dtypes
    peer_names = sorted({k.split(' ')[0] for k in med} - {'ours'})
    print(f'{title}: median of {rounds} interleaved rounds x {iters} iterations (min-max)')
    for k, v in med.items():
        who = k.split(' ')[0]
        base = [f'{who} fp32']
        if who == 'ours':
            base += [same_setting(k, name) for name in peer_names]
        ratios = ''.join(f'  {v / med[b]:5.2f}x {b}' for b in base if b != k and b in med)
        gib = f'  {mem[k] / 2**30:.2f} GiB peak' if device_type == 'cuda' else ''
        print(f'  {k:26s} {v:9.2f} img/s ({min(speed[k]):.2f}-{max(speed[k]):.2f}){ratios}{gib}'
              f'  (warm-up {warm[k]:.1f} s)')
    if device_type == 'cpu':  # one number for the process: RSS cannot be split by variant
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 2**10  # (Linux: KiB)
        mem = dict.fromkeys(steps, rss)
        since = '' if own_rss else ', since it started'
        print(f'  {rss / 2**30:.2f} GiB max RSS (process{since})')
    return med, mem


def get_peer(make, label, package, note=''):
    """make()'s (model, forward), announced, the model on the device (every timed variant is a
    copy of it); None, with one line saying why, if unavailable."""
    peer = make()
    if isinstance(peer, str):
        print(f'  peer skipped: {peer}; to time it: pip install {package}{note} (not a project '
              f'dependency), or pip install --target /tmp/peers {package}, PYTHONPATH=/tmp/peers')
        return None
    print(f'  peer: {label}, {sum(p.numel() for p in peer[0].parameters()) / 1e6:.2f}M params')
    peer[0].to(device)
    return peer


print(f'device {device}, dtype {dtype}, channels_last {channels_last}, compile {compile}, '
      f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads')
if flops:  # the peak of every dtype a variant runs in (a peer runs in ours' dtypes)
    unit, scale = ('TFLOP/s', 1e12) if device_type == 'cuda' else ('GFLOP/s', 1e9)
    matmul_peaks = {dt: matmul_peak(dt) for dt in dict.fromkeys(v[2] for v in variants(None))}
    tf32 = ' (TF32 on)' if device_type == 'cuda' else ''  # what fp32 means on CUDA here
    measured = ', '.join(f'{SHORT[dt]}{tf32 if dt == "float32" else ""} {f / scale:.2f} {unit}'
                         for dt, f in matmul_peaks.items())
    print(f'matmul peak (measured): {measured}; {matmul_size}x{matmul_size} products on '
          f'{device}, median of {rounds} rounds x {iters}')
if what in ('gen', 'both'):
    C = bits.RGB + label_channels  # RGB + the label channels, as train_gen.py packs a pair
    unet_config = UNetConfig(image_size=image_size, in_channels=C, out_channels=C, n_ch=n_ch,
                             ch_mult=ch_mult, n_res_blocks=n_res_blocks, attn_res=attn_res,
                             n_heads=n_heads, dropout=dropout)
    diffusion = GaussianDiffusion(timesteps=timesteps).to(device)
    x0 = torch.rand(batch_size, C, image_size, image_size, device=device) * 2 - 1

    def gen_loss(fn, x0):  # train_gen.py's DDPM loss at random timesteps
        t = torch.randint(0, timesteps, (batch_size,), device=device)
        return diffusion.training_loss(fn, x0, t)

    model = UNet(unet_config).to(device)  # the reference: every variant of ours starts from it
    print(f'generator: {model.get_num_params() / 1e6:.2f}M params, {asdict(unet_config)}')
    peer = None
    if peers:
        peer = get_peer(lambda: peer_unet(C), 'diffusers UNet2DModel', 'diffusers')
    unet_forward = lambda net, x, t: net(x, t)
    steps = training_steps(model, lambda: UNet(unet_config), unet_forward, gen_loss, [x0], peer,
                           'diffusers', fused=False)
    med, mem = race(f'generator training, batch {batch_size} of {image_size}x{image_size}', steps,
                    batch_size)
    if flops:
        work = count_flops(model, unet_forward, gen_loss, [x0], peer, 'diffusers')
        report_flops(med, work, batch_size)
    if not compare and not peers:  # sampling: forward passes of the configured variant
        fmt = torch.channels_last if channels_last else torch.preserve_format
        model = model.to(device, memory_format=fmt).eval()
        net = torch.compile(model) if compile else model
        xs = torch.randn(sample_batch, C, image_size, image_size, device=device)
        xs = xs.contiguous(memory_format=fmt)
        t = torch.full((sample_batch,), timesteps - 1, device=device)
        with torch.no_grad(), autocast(dtype):
            timed(lambda: net(xs, t), warmup)
            evals = sample_batch * iters * rounds / timed(lambda: net(xs, t), iters * rounds)
        print(f'  sample {evals:8.1f} network-evaluations/s (batch {sample_batch}): '
              f'DDIM-50 {evals / 50:.2f} pairs/s, DDPM-{timesteps} {evals / timesteps:.3f} pairs/s')
if what in ('seg', 'both'):
    x = torch.randn(seg_batch, 3, seg_size, seg_size, device=device)
    y = torch.randint(0, num_classes, (seg_batch, seg_size, seg_size), device=device)

    def seg_loss(fn, x, y):  # the architecture's own training loss, as seg.py trains it
        logits, loss = fn(x, y)
        return loss

    configured = variant_label('ours', dtype, channels_last, compile)  # the summary's column
    summary = []  # per architecture: (name, params, img/s, peak bytes, ours/smp, smp params)
    for name in (segmenters.ARCHS if arch == 'all' else [arch]):
        model_args = segmenters.model_args(name, num_classes, depth)
        model = segmenters.build(model_args).to(device)  # the reference, as the generator's
        n_params = sum(p.numel() for p in model.parameters())
        described = segmenters.describe(model_args)  # e.g. 'fpn-ResNet50', 'segformer_b2'
        print(f'segmenter: {described}, {n_params / 1e6:.2f}M params, {num_classes} classes')
        peer = None
        if peers and name in SMP_PEERS:
            peer_name, peer_note = SMP_PEERS[name]
            peer_name = peer_name.format(depth=depth)
            peer = get_peer(lambda: peer_segmenter(name), f'smp {peer_name}',
                            'segmentation-models-pytorch',
                            ' and a torchvision built for this torch')
        elif peers:
            print(f'  peer: none (smp has no {name})')
        # rebinding `steps` frees the previous architecture's models before race() restarts
        # the max RSS (the allocator may keep some of their memory: a CPU figure is approximate)
        seg_forward = lambda net, x, y: net(x, y)
        steps = training_steps(model, lambda: segmenters.build(model_args), seg_forward,
                               seg_loss, [x, y], peer, 'smp', fused=True)
        med, mem = race(f'segmenter training ({described}), batch {seg_batch} of '
                        f'{seg_size}x{seg_size}', steps, seg_batch)
        if flops:
            work = count_flops(model, seg_forward, seg_loss, [x, y], peer, 'smp')
            report_flops(med, work, seg_batch)
        shown = configured if configured in med else next(iter(med))  # (--compare, fp16)
        ratio = None
        peer_params = None
        if peer:  # ours over smp with both sizes beside it: the ratio is about that much work
            ratio = med[shown] / med[same_setting(shown, 'smp')]
            peer_params = sum(p.numel() for p in peer[0].parameters())
            ratios = ', '.join(f'{k.split(" ", 1)[1]} {v / med[same_setting(k, "smp")]:.2f}x'
                               for k, v in med.items() if k.startswith('ours '))
            print(f'  ours/smp, each in the same setting (same process): {ratios} at '
                  f'{n_params / 1e6:.2f}M params (ours) vs {peer_params / 1e6:.2f}M (smp); '
                  f'{peer_note}')
        summary.append((described, n_params, med[shown], mem[shown], ratio, peer_params))
    if arch == 'all':  # one line per architecture, the figures of the tables above
        memory = 'peak CUDA' if device_type == 'cuda' else 'max RSS'
        print(f'segmenters, {shown}, batch {seg_batch} of {seg_size}x{seg_size} (ours/smp: '
              f'over {same_setting(shown, "smp")}, same process)')
        print(f'  {"arch":20s} {"params":>8s} {"img/s":>9s} {memory:>10s} {"ours/smp":>8s} '
              f'{"smp params":>10s}')
        for described, n_params, speed, peak, ratio, peer_params in summary:
            vs = f'{ratio:7.2f}x' if ratio else f'{"-":>8s}'
            smp_size = f'{peer_params / 1e6:9.2f}M' if peer_params else f'{"-":>10s}'
            print(f'  {described:20s} {n_params / 1e6:7.2f}M {speed:9.2f} {peak / 2**30:6.2f} GiB '
                  f'{vs} {smp_size}')
