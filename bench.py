"""Throughput and memory of the two networks, as nanoGPT's bench.py.

Timing (no data, no disk): training img/s of the generator (UNet + DDPM loss, AdamW) and of a
segmenter (any of segmenters.ARCHS, `--arch`, FPN-ResNet by default, or `--arch=all` for each in
turn; its own training loss through the segmenter interface, `logits, loss = model(x, y)`, so
PSPNet's auxiliary head and FarSeg's focal term are timed too; AdamW), the generator's sampling
network-evaluations/s, and peak memory (max RSS of the process on CPU, restarted at each table on
Linux; peak allocated CUDA memory per variant on GPU). Every variant is timed in interleaved
rounds (A, B, A, B, ...) inside ONE process and the median per variant is printed: on a shared,
noisy machine only same-process ratios mean anything.

    python bench.py                                   # both networks, the config's dtype/layout
    python bench.py --compare=True                    # fp32 vs bf16 autocast x channels_last off/on
    python bench.py --compare=True --compile=True     # ... each also compiled
    python bench.py --peers=True --dtype=bfloat16     # ours fp32 and bf16 vs the peers' fp32
    python bench.py configs/gen_paper.py --what=gen --device=cuda --dtype=bfloat16 --compile=True
    python bench.py --what=seg --seg_size=256 --seg_batch=8 --depth=50
    python bench.py --what=seg --arch=all --depth=18 --seg_size=64   # every segmenter, a summary

The peers are diffusers' UNet2DModel of the same shape (block_out_channels = n_ch x ch_mult,
layers_per_block = n_res_blocks, attention at the same resolutions) and segmentation_models_pytorch
(smp, encoder_weights=None) where it has the architecture: FPN('resnet<depth>'),
PSPNet('resnet<depth>'), Segformer('mit_b0') and Segformer('mit_b2',
decoder_segmentation_channels=768); smp has no FarSeg and no PFSegNet. All peers run in fp32, and
a peer segmenter's loss is seg.py's cross-entropy. Two of these compare different amounts of work,
and the printed ratio line says so beside both parameter counts: smp's PSPNet is a lighter model
than mmseg's, which ours follows (encoder depth 3, no dilation, no auxiliary head: ~24.4M vs ~49M
params at ResNet-50); smp's Segformer decoder width defaults to 256, B0's in the reference but not
B2's (768, passed here; the default would give 24.7M params, not the reference's 27.4M). The peers
are not project dependencies: a peer that does not import is skipped with one line saying how to
get it (e.g. `pip install --target /tmp/peers diffusers`, then PYTHONPATH=/tmp/peers). smp needs a
torchvision built for the very same torch, so it gets a venv of its own (docs/RESULTS.md, Speed),
run as `PYTHONPATH=<this repo> <that venv>/bin/python bench.py --peers=True ...`.

The one-command GPU check (every stage script once, as a subprocess, on a toy set) is
check.py, beside this file.
"""
import math
import resource
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch

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
peers = False  # also time diffusers' UNet2DModel and smp's segmenter (fp32), ours fp32 and as set
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
check_settings('bench.py', problems)
device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
torch.manual_seed(seed)
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


# --- timing: a variant is (label, 'ours' or 'peer', dtype, channels_last, compile) --------------
def autocast(dt):
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dt]
    return nullcontext() if dt == 'float32' else torch.amp.autocast(device_type, dtype=ptdtype)


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


def variant_label(dt, cl, comp):
    """'ours fp32', 'ours bf16+channels_last+compile', ...: how a variant of ours is printed."""
    short = {'float32': 'fp32', 'bfloat16': 'bf16', 'float16': 'fp16'}
    parts = [short[dt]]
    if cl:
        parts.append('channels_last')
    if comp:
        parts.append('compile')
    return 'ours ' + '+'.join(parts)


def variants(peer_label):
    """Ours as configured, or the compare grid; with peers also ours fp32, and the peer."""
    ours = [(dtype, channels_last, compile)]  # (dtype, channels_last, compile) per variant
    if compare:  # every dtype x layout, uncompiled, and compiled too with --compile=True
        ours = []
        for c in ([False, True] if compile else [False]):
            for cl in (False, True):
                for d in ('float32', 'bfloat16'):
                    ours.append((d, cl, c))
    if peers and ('float32', False, False) not in ours:
        ours.insert(0, ('float32', False, False))
    out = [(variant_label(d, cl, c), 'ours', d, cl, c) for d, cl, c in ours]
    if peer_label:
        out.append((peer_label, 'peer', 'float32', False, False))
    return out


def make_step(model, forward, loss_fn, inputs, dt, cl, comp):
    """One training step (forward, backward, AdamW) of model on fixed inputs, as a function."""
    fmt = torch.channels_last if cl else torch.preserve_format
    model = model.to(device, memory_format=fmt)
    inputs = [x.contiguous(memory_format=fmt) if x.dim() == 4 else x for x in inputs]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    net = torch.compile(model) if comp else model
    ctx = autocast(dt)

    def step():
        with ctx:
            loss = loss_fn(lambda *a: forward(net, *a), *inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def training_steps(reference, make_ours, forward, loss_fn, inputs, peer, peer_label):
    """{label: step} for every variant (see variants): each of ours a fresh make_ours() with the
    weights of `reference`, so every variant starts from the same weights; then the peer, a
    (model, forward) pair or None (not timed), as peer_label."""
    steps = {}
    for label, who, dt, cl, comp in variants(peer_label if peer else None):
        if who == 'ours':
            model = make_ours()
            model.load_state_dict(reference.state_dict())
            steps[label] = make_step(model, forward, loss_fn, inputs, dt, cl, comp)
        else:
            peer_model, peer_forward = peer
            steps[label] = make_step(peer_model, peer_forward, loss_fn, inputs, dt, cl, comp)
    return steps


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
    # the ratio columns: every variant against ours fp32 and against each peer
    base = [k for k in med if k == 'ours fp32' or not k.startswith('ours')]
    print(f'{title}: median of {rounds} interleaved rounds x {iters} iterations (min-max)')
    for k, v in med.items():
        ratios = ''.join(f'  {v / med[b]:5.2f}x {b}' for b in base if b != k)
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
    """make()'s (model, forward), announced; None, with one line saying why, if unavailable."""
    peer = make()
    if isinstance(peer, str):
        print(f'  peer skipped: {peer}; to time it: pip install {package}{note} (not a project '
              f'dependency), or pip install --target /tmp/peers {package}, PYTHONPATH=/tmp/peers')
        return None
    print(f'  peer: {label}, {sum(p.numel() for p in peer[0].parameters()) / 1e6:.2f}M params')
    return peer


print(f'device {device}, dtype {dtype}, channels_last {channels_last}, compile {compile}, '
      f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads')
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

    model = UNet(unet_config)
    print(f'generator: {model.get_num_params() / 1e6:.2f}M params, {asdict(unet_config)}')
    peer = None
    if peers:
        peer = get_peer(lambda: peer_unet(C), 'diffusers UNet2DModel, fp32', 'diffusers')
    steps = training_steps(model, lambda: UNet(unet_config), lambda net, x, t: net(x, t),
                           gen_loss, [x0], peer, 'diffusers fp32')
    race(f'generator training, batch {batch_size} of {image_size}x{image_size}', steps, batch_size)
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

    configured = variant_label(dtype, channels_last, compile)  # the summary's column
    summary = []  # per architecture: (name, params, img/s, peak bytes, ours/smp, smp params)
    for name in (segmenters.ARCHS if arch == 'all' else [arch]):
        model_args = segmenters.model_args(name, num_classes, depth)
        model = segmenters.build(model_args)
        n_params = sum(p.numel() for p in model.parameters())
        described = segmenters.describe(model_args)  # e.g. 'fpn-ResNet50', 'segformer_b2'
        print(f'segmenter: {described}, {n_params / 1e6:.2f}M params, {num_classes} classes')
        peer = None
        if peers and name in SMP_PEERS:
            peer_name, peer_note = SMP_PEERS[name]
            peer_name = peer_name.format(depth=depth)
            peer = get_peer(lambda: peer_segmenter(name), f'smp {peer_name}, fp32',
                            'segmentation-models-pytorch',
                            ' and a torchvision built for this torch')
        elif peers:
            print(f'  peer: none (smp has no {name})')
        # rebinding `steps` frees the previous architecture's models before race() restarts
        # the max RSS (the allocator may keep some of their memory: a CPU figure is approximate)
        steps = training_steps(model, lambda: segmenters.build(model_args),
                               lambda net, x, y: net(x, y), seg_loss, [x, y], peer, 'smp fp32')
        med, mem = race(f'segmenter training ({described}), batch {seg_batch} of '
                        f'{seg_size}x{seg_size}', steps, seg_batch)
        shown = configured if configured in med else next(iter(med))  # (--compare, fp16)
        ratio = None
        peer_params = None
        if peer:  # ours over smp with both sizes beside it: the ratio is about that much work
            ratio = med[shown] / med['smp fp32']
            peer_params = sum(p.numel() for p in peer[0].parameters())
            ratios = ', '.join(f'{k[len("ours "):]} {v / med["smp fp32"]:.2f}x'
                               for k, v in med.items() if k.startswith('ours'))
            print(f'  ours/smp fp32 (same process): {ratios} at {n_params / 1e6:.2f}M params '
                  f'(ours) vs {peer_params / 1e6:.2f}M (smp); {peer_note}')
        summary.append((described, n_params, med[shown], mem[shown], ratio, peer_params))
    if arch == 'all':  # one line per architecture, the figures of the tables above
        memory = 'peak CUDA' if device_type == 'cuda' else 'max RSS'
        print(f'segmenters, {shown}, batch {seg_batch} of {seg_size}x{seg_size} (ours/smp: '
              f'over smp fp32, same process)')
        print(f'  {"arch":20s} {"params":>8s} {"img/s":>9s} {memory:>10s} {"ours/smp":>8s} '
              f'{"smp params":>10s}')
        for described, n_params, speed, peak, ratio, peer_params in summary:
            vs = f'{ratio:7.2f}x' if ratio else f'{"-":>8s}'
            smp_size = f'{peer_params / 1e6:9.2f}M' if peer_params else f'{"-":>10s}'
            print(f'  {described:20s} {n_params / 1e6:7.2f}M {speed:9.2f} {peak / 2**30:6.2f} GiB '
                  f'{vs} {smp_size}')
