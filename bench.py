"""Throughput and memory of the two networks, as nanoGPT's bench.py: no data, no disk, just timing.

Prints, for the generator (UNet + DDPM loss, AdamW) and the segmenter (FPN-ResNet, cross-entropy,
AdamW): training img/s, the generator's sampling network-evaluations/s (forward passes at the
sampling batch, which is what DDPM-1000 vs DDIM-50 costs), and peak memory (max RSS on CPU; peak
allocated CUDA memory on GPU).

    python bench.py                                   # both, at the toy CPU sizes
    python bench.py configs/gen_toy.py --what=gen
    python bench.py configs/gen_paper.py --what=gen --device=cuda --dtype=bfloat16 --compile=True
    python bench.py --what=seg --seg_size=256 --seg_batch=8 --depth=50
"""
import resource
import time
from contextlib import nullcontext
from dataclasses import asdict

import torch
import torch.nn.functional as F

from configurator import configure
from diffusion import GaussianDiffusion
from fpn import FPN
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
depth = 50
num_classes = 6
seg_size = 128  # square training crops
seg_batch = 8
# run
warmup = 2  # untimed iterations (allocator, autotuning, compile)
iters = 5  # timed iterations
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'
compile = False
seed = 1337
config = configure(globals())
# -----------------------------------------------------------------------------
assert what in {'gen', 'seg', 'both'}, what
torch.manual_seed(seed)
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = nullcontext() if dtype == 'float32' else torch.amp.autocast(device_type, dtype=ptdtype)
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def timed(step, n_images):
    """Run step() warmup + iters times; return images per second over the timed iterations."""
    for _ in range(warmup):
        step()
    if device_type == 'cuda':
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if device_type == 'cuda':
        torch.cuda.synchronize()
    return n_images * iters / (time.perf_counter() - t0)


def peak_memory():
    if device_type == 'cuda':
        return f'{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB CUDA peak allocated'
    return f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB max RSS (process)'


print(f'device {device}, dtype {dtype}, compile {compile}, torch {torch.__version__}, '
      f'{torch.get_num_threads()} CPU threads')
if what in ('gen', 'both'):
    C = 3 + label_channels
    ucfg = UNetConfig(image_size=image_size, in_channels=C, out_channels=C, n_ch=n_ch,
                      ch_mult=ch_mult, n_res_blocks=n_res_blocks, attn_res=attn_res,
                      n_heads=n_heads, dropout=dropout)
    model = UNet(ucfg).to(device)
    diffusion = GaussianDiffusion(timesteps=timesteps).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    net = torch.compile(model) if compile else model
    x0 = torch.rand(batch_size, C, image_size, image_size, device=device) * 2 - 1

    def gen_train_step():
        t = torch.randint(0, timesteps, (batch_size,), device=device)
        with ctx:
            loss = diffusion.training_loss(net, x0, t)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def gen_sample_step():  # one network evaluation of a sampling batch = one sampler step
        with ctx:
            net(xs, torch.full((sample_batch,), timesteps - 1, device=device))

    xs = torch.randn(sample_batch, C, image_size, image_size, device=device)
    print(f'generator: {model.get_num_params() / 1e6:.2f}M params, {asdict(ucfg)}')
    print(f'  train  {timed(gen_train_step, batch_size):8.1f} img/s  (batch {batch_size})')
    model.eval()
    evals = timed(gen_sample_step, sample_batch)
    print(f'  sample {evals:8.1f} network-evaluations/s (batch {sample_batch}): '
          f'DDIM-50 {evals / 50:.2f} pairs/s, DDPM-{timesteps} {evals / timesteps:.3f} pairs/s')
    print(f'  {peak_memory()}')
if what in ('seg', 'both'):
    model = FPN(num_classes, depth=depth).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    net = torch.compile(model) if compile else model
    x = torch.randn(seg_batch, 3, seg_size, seg_size, device=device)
    y = torch.randint(0, num_classes, (seg_batch, seg_size, seg_size), device=device)

    def seg_train_step():
        with ctx:
            loss = F.cross_entropy(net(x), y, ignore_index=255)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    n_params = sum(p.numel() for p in model.parameters())
    print(f'segmenter: FPN-ResNet{depth}, {n_params / 1e6:.2f}M params, {num_classes} classes')
    print(f'  train  {timed(seg_train_step, seg_batch):8.1f} img/s  ({seg_size}x{seg_size}, '
          f'batch {seg_batch})')
    print(f'  {peak_memory()}')
