"""
Sample new (image, mask) training pairs from a generator checkpoint of train_gen.py (the D' of
SatSynth, paper Sec. 4.3 and Fig. 2). Sample i starts from the noise of its own generator,
seeded with seed + i, so any sample can be regenerated alone (up to float rounding, which may
differ with the batch it shares). Outputs that exist are skipped, so a killed run resumes.

Reads the checkpoint only (it carries the UNet args, the schedule and the dataset's meta.json).
Writes out_dir/images/{i:06d}.png, out_dir/masks/{i:06d}.png (index PNG with the dataset palette,
values 0..K-1 or 255; all 255 for an image-only generator), meta.json, config.json and grid.png;
with --save_margin also margins/{i:06d}.png, each pixel's distance to a label decision boundary
(bits.margin), which clean.py turns into ignore labels.

$ python sample.py --ratio 3                               # 3 x |train| pairs, DDPM (paper)
$ python sample.py configs/isaid.py --sampler=ddim --steps=50 --num_samples=1000
$ python sample.py configs/isaid.py --sampler=dpm++ --steps=10 --dtype=bfloat16  # fast, CPU too
$ torchrun --standalone --nproc_per_node=4 sample.py configs/isaid.py --ratio 3

References: Ho et al. 2020 (Algorithm 2), Song et al. 2021 (DDIM), Lu et al. 2022
(DPM-Solver++), karpathy/nanoGPT sample.py,
openai/improved-diffusion scripts/image_sample.py (sharded sampling).
"""
import os
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed import init_process_group, destroy_process_group

import bits
import pairs
from configurator import check_settings, configure
from diffusion import GaussianDiffusion
from unet import UNet, UNetConfig

# -----------------------------------------------------------------------------
out_dir = ''  # '' = out-sample-<dataset>
ckpt = ''  # '' = out-gen-<dataset>/ckpt.pt
data_dir = 'data'  # not read: the checkpoint carries the dataset's meta.json
dataset = 'toy'  # only names the default ckpt and out_dir
ratio = 1.0  # number of pairs = ratio x |train| (the paper's R) ...
num_samples = 0  # ... unless this is > 0
sampler = 'ddpm'  # 'ddpm': all T ancestral steps (paper); 'ddim' (Song et al.) or 'dpm++'
                  # (DPM-Solver++(2M), Lu et al.): `steps` steps
steps = 50  # DDIM / DPM-Solver++ steps (network evaluations per sample)
eta = 0.0  # DDIM noise: 0 = deterministic, 1 = DDPM-like
batch_size = 64  # pairs per forward pass, per process
seed = 1337  # sample i uses seed + i
save_margin = False  # also write margins/<i>.png: each pixel's bit margin, for clean.py --margin
backend = 'nccl' if torch.cuda.is_available() else 'gloo'
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'
compile = False  # torch.compile the UNet: pays off only for large runs on a GPU
# -----------------------------------------------------------------------------
config = configure(globals())
# -----------------------------------------------------------------------------
out_dir = out_dir or f'out-sample-{dataset}'
ckpt = ckpt or os.path.join(f'out-gen-{dataset}', 'ckpt.pt')
config.update(out_dir=out_dir, ckpt=ckpt)
problems = []  # one per bad setting, all reported (one line each) before anything is written
if sampler not in {'ddpm', 'ddim', 'dpm++'}:
    problems.append(f'sampler must be ddpm, ddim or dpm++, got {sampler!r}')
if steps < 1:
    problems.append(f'steps must be >= 1, got {steps}')
if batch_size < 1:
    problems.append(f'batch_size must be >= 1, got {batch_size}')
if eta < 0:
    problems.append(f'eta must be >= 0, got {eta}')
if dtype not in {'float32', 'bfloat16', 'float16'}:
    problems.append(f'dtype must be float32, bfloat16 or float16, got {dtype!r}')
if num_samples < 0:
    problems.append(f'num_samples must be >= 1 (or 0: ratio x the train pairs), got {num_samples}')
elif num_samples == 0 and not ratio > 0:
    problems.append(f'ratio must be > 0 with num_samples 0, got {ratio}')
check_settings('sample.py', problems)

# --- DDP: identical in train_gen.py, superres.py, seg.py, sample.py (tests/test_style.py) ---
ddp = int(os.environ.get('RANK', -1)) != -1  # launched by torchrun?
if ddp:
    init_process_group(backend=backend)
    ddp_rank = int(os.environ['RANK'])
    ddp_local_rank = int(os.environ['LOCAL_RANK'])
    ddp_world_size = int(os.environ['WORLD_SIZE'])
    if device.startswith('cuda'):
        device = f'cuda:{ddp_local_rank}'
        torch.cuda.set_device(device)
else:
    ddp_rank, ddp_local_rank, ddp_world_size = 0, 0, 1
master_process = ddp_rank == 0  # the master logs, writes checkpoints and grids
torch.manual_seed(seed + ddp_rank)  # timesteps, noise and augmentations differ across ranks
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
# --- end DDP ---
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
# autocast unless float32 (bf16 is faster on CPUs with AVX-512 BF16 too; docs/RESULTS.md)
ctx = nullcontext() if dtype == 'float32' else torch.amp.autocast(device_type, dtype=ptdtype)

# the generator: its EMA weights, rebuilt from the checkpoint alone
checkpoint = pairs.load_checkpoint(ckpt, 'train_gen.py', ['model_args', 'ema', 'diffusion', 'meta',
                                                          'label_encoding', 'iter_num'])
cond = pairs.checkpoint_cond(checkpoint)
if cond != 'none':  # what that generator is, in the one line that refuses it
    role = {'lowres': 'G_SR upsamples pairs with superres.py',
            'image': 'masks given an image, SegDiff: sampling it is not built yet',
            'mask': 'images given a mask: sampling it is not built yet'}.get(cond, 'unknown')
    sys.exit(f"{ckpt}: a generator with cond={cond!r} ({role}); "
             "sample.py needs an unconditional G (train_gen.py, cond='none')")
try:
    model = UNet(UNetConfig(**checkpoint['model_args']))
    model.load_state_dict(checkpoint['ema'])  # Ho et al. sample from the EMA
    diffusion = GaussianDiffusion(**checkpoint['diffusion'])
except (RuntimeError, TypeError, ValueError) as e:
    sys.exit(f"{ckpt}: not a usable train_gen.py checkpoint ({type(e).__name__}: {e})")
meta, encoding, iter_num = checkpoint['meta'], checkpoint['label_encoding'], checkpoint['iter_num']
weights = pairs.weights_digest(checkpoint['ema'])  # what made the pairs, for a resumed run
checkpoint = None
model.eval().to(device)
if compile:
    model = torch.compile(model)
C, size = model.config.in_channels, model.config.image_size
num_samples = num_samples or round(ratio * meta['counts']['train'])
# the settings that depend on the checkpoint, checked as the others above
problems = []
if num_samples < 1:
    problems.append(f"ratio must give >= 1 pair, got {ratio} x {meta['counts']['train']} train "
                    f'pairs = {num_samples}')
if sampler != 'ddpm' and steps > diffusion.num_timesteps:
    problems.append(f'steps must be <= T = {diffusion.num_timesteps} (the diffusion steps of '
                    f'{ckpt}), got {steps}')
check_settings('sample.py', problems)
nfe = diffusion.num_timesteps if sampler == 'ddpm' else steps  # network evaluations per sample
print(f"{ckpt} (iter {iter_num}): {num_samples} pairs of {size}x{size}, {sampler} with {nfe} "
      f"steps, {ddp_world_size} process(es)")

# meta.json describes the pair folder (docs/DATASETS.md) and how it was made. A resumed run must
# use the same weights (by digest, not by path or iteration) and settings, or the folder would
# silently mix two generators or samplers.
info = {k: meta[k] for k in ['name', 'classes', 'palette', 'num_classes', 'ignore_index']}
info.update(source='sample.py', sampler=sampler, steps=nfe, eta=eta if sampler == 'ddim' else None,
            seed=seed, ckpt=ckpt, iter_num=iter_num, weights=weights, image_size=size,
            label_encoding=encoding, **({'margins': True} if save_margin else {}))
pairs.check_pair_folder(out_dir, info, ['weights', 'sampler', 'steps', 'eta', 'seed', 'margins'],
                        config, master_process)

# this rank's share of the indices, minus those a previous run finished
mine = range(ddp_rank, num_samples, ddp_world_size)
todo = [i for i in mine if not pairs.pair_done(out_dir, i)]
print(f"rank {ddp_rank}: {len(todo)} of {len(mine)} indices to sample, "
      f"{len(mine) - len(todo)} already done")
# per-value pixel counts of this rank's masks, for the class-frequency table at the end (Fig. 2c):
# pairs from an earlier run are read back once here, new ones are counted as they are made
hist = np.zeros(256, np.int64)
for i in sorted(set(mine) - set(todo)):
    hist += np.bincount(pairs.read_pair(out_dir, i)[1].ravel(), minlength=256)
t0 = time.time()
for b in range(0, len(todo), batch_size):
    idx = todo[b:b + batch_size]
    gens = [torch.Generator().manual_seed(seed + i) for i in idx]  # sample i's own noise
    shape = (len(idx), C, size, size)
    with torch.no_grad(), ctx:
        x = diffusion.sample(model, shape, sampler, steps, eta=eta, generator=gens, device=device)
    images, masks = bits.unpack(x, meta, encoding)  # uint8 (B, H, W, 3), (B, H, W)
    if masks is None:  # image-only generator: all-ignore masks keep the shared folder layout
        masks = np.full(images.shape[:3], meta['ignore_index'], np.uint8)
    margins = bits.margin(x[:, bits.RGB:], bits.num_codes(meta), encoding).cpu().numpy() \
        if save_margin and encoding != 'none' else [None] * len(idx)
    for i, image, mask, m in zip(idx, images, masks, margins):
        pairs.save_pair(out_dir, i, image, mask, meta['palette'], m)  # atomic, image then mask
    hist += np.bincount(masks.ravel(), minlength=256)
    if master_process:
        n, dt = b + len(idx), time.time() - t0
        print(f"rank 0: {n}/{len(todo)} pairs, {n / dt:.2f} pairs/s, "
              f"eta {(len(todo) - n) * dt / n / 60:.1f} min", flush=True)
totals = torch.tensor([len(todo), *hist], dtype=torch.float64, device=device)
if ddp:  # waits for every rank, and totals the work and the class counts
    dist.all_reduce(totals)
elapsed = time.time() - t0

if master_process:
    missing = [i for i in range(num_samples) if not pairs.pair_done(out_dir, i)]
    if missing:
        sys.exit(f"{len(missing)} indices are missing (first: {missing[:5]}): run again")
    # grid of the first 16 pairs, read back from disk: what the segmenter will actually see
    images, masks = (np.stack(v) for v in zip(*[pairs.read_pair(out_dir, i)
                                                for i in range(min(16, num_samples))]))
    pairs.save_png(pairs.make_grid(images, masks, meta['palette']), f'{out_dir}/grid.png')
    # per-class pixel frequency of all generated masks beside the real train split (Fig. 2c)
    K = meta['num_classes']
    hist = totals[1:].cpu().numpy()  # every mask of the folder, over all ranks
    gen = hist[:K] / max(1, hist[:K].sum())  # fraction of labelled (non-ignore) pixels
    real = np.asarray(meta['class_freq']['train'])
    print(f"{'class':>20s} {'real':>7s} {'generated':>9s}")
    for name, r, g in zip(meta['classes'], real, gen):
        print(f"{name:>20s} {r:7.2%} {g:9.2%}")
    print(f"total variation distance {0.5 * np.abs(gen - real).sum():.4f}, ignore pixels "
          f"{hist[255] / hist.sum():.2%} generated vs {meta['ignore_fraction']['train']:.2%} real")
    n = int(totals[0].item())
    print(f"sampled {n} pairs in {elapsed:.1f} s: {n / elapsed:.3f} pairs/s, "
          f"{n * nfe / elapsed:.1f} network evaluations/s (one pair through the UNet once; "
          f"{sampler}, {nfe} steps)")

if ddp:  # leave together: gloo aborts a rank that tears down while the master still works
    dist.barrier()
    destroy_process_group()
