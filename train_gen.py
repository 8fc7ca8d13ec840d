"""
Train a generator of SatSynth: one DDPM over the joint (image, mask) tensor, i.e. 3 RGB channels
plus ceil(log2 K) "analog bit" label channels, all in [-1, 1] (paper Sec. 4.3, 4.5). What the
model is conditioned on is the `cond` setting, saved in the checkpoint. cond='none' trains G, whose
samples (sample.py) are new training pairs for the segmenter (seg.py). cond='lowres' with scale=2
trains the super-resolution model G_SR (Sec. 4.4, Eq. 5, App. B): the same UNet, with the pair at
image_size // scale, upsampled, concatenated to its input at every step (SR3; improved-
diffusion's SuperResModel), so image and mask bits are denoised jointly and stay aligned;
superres.py applies it to G's samples (e.g. 128 -> 256 on iSAID).

Two conditional variants learn one half of the pair given the other (the UNet denoises only the
target channels; pairs.target_and_condition_channels says which, pairs.condition builds the
condition, for training as for sampling). cond='image' generates the mask's label channels given
its image: SegDiff (Amit et al. 2021), the paper's Tab. 1b baseline, a diffusion segmenter. Where
we deviate: SegDiff encodes the image with a network of its own and adds its features to those of
the noisy mask; here the image is concatenated to the noisy input as G_SR's condition is (the
UNet's cond_channels), the simplest fit to the one UNet. cond='mask' generates the image given its
mask (the FreeMask / ControlNet family: new images for given layouts). Both work at image_size on
the pair itself (no scale). sample.py samples them given a pair folder (`in_dir`): new images for
its masks, or masks for its images scored against its own (SegDiff's evaluation); superres.py
refuses them. A limit of 'mask': ignore pixels without a code of their own (bits.py) are given
as class 0.

Reads data_dir/<dataset>/{train,val}_{images,masks}.npy and meta.json (written by prepare.py).
Writes out_dir/config.json, log.txt (every printed log line), ckpt.pt (one self-describing
checkpoint, written atomically) and grid_<iter>.png (EMA samples: image | colourised mask; for
G_SR and cond image / mask: condition | sample | target).

To run on a single CPU or GPU (the defaults train G on the toy data at 32x32 on a CPU):
$ python train_gen.py
$ python train_gen.py configs/toy.py configs/gen_toy.py --max_minutes=30
$ python train_gen.py configs/toy.py configs/sr_toy.py                       # G_SR, 32 -> 64
$ python train_gen.py configs/toy.py configs/gen_toy.py --cond=image    # masks given images
$ python train_gen.py configs/toy.py configs/gen_toy.py --cond=mask     # images given masks
To run the paper's 128x128 G, then its 128 -> 256 G_SR, with DDP on 4 GPUs on 1 node:
$ torchrun --standalone --nproc_per_node=4 train_gen.py configs/isaid.py configs/gen_paper.py
$ torchrun --standalone --nproc_per_node=4 train_gen.py configs/isaid.py configs/isaid_sr.py
Continue a run exactly where it stopped (iter, optimizer, EMA and the data/noise stream):
$ python train_gen.py configs/isaid.py configs/gen_paper.py --init_from=resume

References: Ho et al. 2020 (DDPM, Algorithm 1; hojonathanho/diffusion scripts/run_celebahq.py
for the recipe: Adam 2e-5, warmup 5000, grad clip 1, EMA 0.9999), Chen et al. 2022 (Analog Bits),
Saharia et al. 2021 (SR3), openai/improved-diffusion scripts/super_res_train.py, Amit et al. 2021
(SegDiff), karpathy/nanoGPT train.py (the structure of this file).
"""
import copy
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.distributed import init_process_group, destroy_process_group
import torch.distributed as dist

import augment
import bits
import pairs
from configurator import check_settings, configure
from diffusion import GaussianDiffusion, ema_update
from unet import UNet, UNetConfig

# -----------------------------------------------------------------------------
# default config values: the toy recipe, sized so a 2-core CPU learns something in 30 minutes
# I/O
out_dir = ''  # '' = out-gen-<dataset> (G) or out-sr-<dataset> (G_SR)
eval_interval = 500  # every N iters: val loss, sample grid, checkpoint
log_interval = 20
eval_iters = 10  # val batches per evaluation
always_save_checkpoint = True  # if False, save only when the EMA val loss improves
init_from = 'scratch'  # 'scratch' or 'resume' (from out_dir/ckpt.pt)
max_minutes = 0.0  # wall-clock budget of this run: stop and save cleanly when exceeded; 0 = off
# data
data_dir = 'data'  # prepared datasets live in data_dir/<dataset>/
dataset = 'toy'  # name of the prepared dataset (prepare.py: the output name)
batch_size = 32  # per process; global batch = batch_size * gradient_accumulation_steps
gradient_accumulation_steps = 1  # total over all processes (divided by the world size below)
image_size = 32  # the model's side; patches are resized once, at start, with pairs.resize_pair
label_encoding = 'bits'  # 'bits' (paper), 'onehot' (ablation), 'none' (image-only DDPM, Tab. 1a)
cond = 'none'  # 'none': G, the joint generator; 'lowres': G_SR; 'image' / 'mask' (pairs.CONDS)
scale = 1  # cond='lowres' only: G_SR lifts image_size // scale to image_size (>= 2); G keeps 1
# model (UNet of Ho et al.; attn_res = feature-map sizes with self-attention)
n_ch = 64
ch_mult = (1, 2, 2)
n_res_blocks = 2
attn_res = (16,)
dropout = 0.1
# diffusion (the paper: T = 1000, linear betas 1e-4..2e-2, eps prediction)
timesteps = 1000
beta_schedule = 'linear'  # 'linear' or 'cosine'
objective = 'eps'  # 'eps' (paper, better for segmentation), 'x0' or 'v' (Salimans & Ho 2022)
loss_weighting = 'none'  # 'none' (L_simple) or 'min_snr' (Hang et al. 2023, weight min(SNR, gamma))
snr_gamma = 5.0  # min_snr's gamma (Hang et al.: 5)
self_condition = False  # the UNet also sees its own x0 estimate (Chen et al. 2022), 50 % of steps
grid_steps = 50  # DDIM steps for the eval grid (fast; sample.py can use all T steps)
# AdamW optimizer
learning_rate = 2e-4  # max learning rate
max_iters = 20000  # total number of training iterations
weight_decay = 0.0  # DDPMs are usually trained without it
beta1 = 0.9
beta2 = 0.999
grad_clip = 1.0  # clip gradients at this value, or disable if == 0.0
skip_nonfinite = 0  # batches with a non-finite loss or gradient skipped before the run stops
# learning rate decay settings
decay_lr = False  # False = constant lr after warmup, as Ho et al.
warmup_iters = 500  # how many steps to warm up for
lr_decay_iters = 20000  # should be ~= max_iters per Chinchilla-style cosine decay
min_lr = 2e-5  # minimum learning rate, ~= learning_rate/10
ema_decay = 0.999  # Ho et al. use 0.9999 for 800k iters; short runs need a shorter memory
# system
backend = 'nccl' if torch.cuda.is_available() else 'gloo'  # DDP backend
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'  # autocast dtype on GPU
compile = False  # torch.compile the model (PyTorch 2.0): faster on GPU, slow to start
seed = 1337
# -----------------------------------------------------------------------------
config = configure(globals())  # config files and --key=value overrides from the command line
# -----------------------------------------------------------------------------
# the default out_dir names the kind of generator: G, G_SR, a mask or an image generator
run_names = {'none': 'gen', 'lowres': 'sr', 'image': 'img2mask', 'mask': 'mask2img'}
out_dir = out_dir or f'out-{run_names.get(cond, cond)}-{dataset}'
config['out_dir'] = out_dir
problems = []  # one per bad setting, all reported (one line each) before anything is written
if label_encoding not in {'bits', 'onehot', 'none'}:
    problems.append(f'label_encoding must be bits, onehot or none, got {label_encoding!r}')
if objective not in {'eps', 'x0', 'v'}:
    problems.append(f'objective must be eps, x0 or v, got {objective!r}')
if init_from not in {'scratch', 'resume'}:
    problems.append(f"init_from must be 'scratch' or 'resume', got {init_from!r}")
if loss_weighting not in {'none', 'min_snr'}:
    problems.append(f'loss_weighting must be none or min_snr, got {loss_weighting!r}')
if snr_gamma <= 0:
    problems.append(f'snr_gamma must be > 0, got {snr_gamma}')
if cond not in pairs.CONDS:
    problems.append(f"cond must be one of {', '.join(pairs.CONDS)}, got {cond!r}")
elif cond == 'none' and scale != 1:
    problems.append(f"scale={scale} is G_SR's factor: add --cond=lowres (or drop --scale for G)")
elif cond in ('image', 'mask') and scale != 1:
    problems.append(f"scale={scale} is G_SR's factor: cond={cond} generates at image_size from "
                    'the pair itself, drop --scale')
elif cond == 'lowres' and scale < 2:
    problems.append(f'cond=lowres (G_SR) needs scale >= 2, the factor it lifts by, got {scale}')
elif cond == 'lowres' and image_size % scale:
    problems.append(f'image_size must be divisible by scale {scale}, got {image_size}')
if cond == 'lowres' and label_encoding == 'none':
    problems.append("label_encoding must give G_SR label channels (it denoises them), got 'none'")
elif cond == 'image' and label_encoding == 'none':
    problems.append("label_encoding must give cond=image label channels (it generates them), "
                    "got 'none'")
elif cond == 'mask' and label_encoding == 'none':
    problems.append("label_encoding must give cond=mask label channels (it is given them), "
                    "got 'none'")
if dtype not in {'float32', 'bfloat16', 'float16'}:
    problems.append(f'dtype must be float32, bfloat16 or float16, got {dtype!r}')
for name, value in [('batch_size', batch_size), ('eval_interval', eval_interval),
                    ('log_interval', log_interval), ('eval_iters', eval_iters),
                    ('max_iters', max_iters)]:
    if value < 1:
        problems.append(f'{name} must be >= 1, got {value}')
if skip_nonfinite < 0:
    problems.append(f'skip_nonfinite must be >= 0, got {skip_nonfinite}')
check_settings('train_gen.py', problems)

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
assert gradient_accumulation_steps % ddp_world_size == 0
gradient_accumulation_steps //= ddp_world_size
global_batch = batch_size * gradient_accumulation_steps * ddp_world_size
print(f'global batch {global_batch} = {batch_size} x {gradient_accumulation_steps} accumulation'
      f' x {ddp_world_size} processes')

torch.backends.cuda.matmul.allow_tf32 = True  # allow tf32 on matmul
torch.backends.cudnn.allow_tf32 = True  # allow tf32 on cudnn
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
# autocast unless float32: bf16 also on CPUs with AVX-512 BF16 (faster; docs/RESULTS.md)
ctx = nullcontext() if dtype == 'float32' else torch.amp.autocast(device_type, dtype=ptdtype)

# data: the prepared patches, resized ONCE to image_size (40k x 128^2 RGB is 2 GB; the resize
# reads the memmap in chunks, and a split already at image_size stays memory-mapped). G_SR also
# keeps the same patches at image_size // scale: exactly what G trains on, so what it will be fed.
data_path = os.path.join(data_dir, dataset)
meta, data = pairs.load_dataset(data_path, size=image_size)
low = pairs.load_dataset(data_path, size=image_size // scale)[1] if cond == 'lowres' else None
n_label = bits.label_channels(bits.num_codes(meta), label_encoding)  # the mask's channels
# the channels of bits.pack's tensor (RGB, then n_label) the UNet denoises, and those it is given
# (pairs.target_and_condition_channels: all and none for G, the label channels given the image
# for cond='image', ...): C is the width of x_t and of the prediction, C_cond the condition's
target, given = pairs.target_and_condition_channels(cond, n_label)
C = target.stop - target.start
C_cond = 0 if given is None else given.stop - given.start
conditioned_on = {'none': '', 'lowres': f'; conditioned on {image_size // scale}^2 pairs',
                  'image': '; the label channels only, conditioned on the image',
                  'mask': f"; the image only, conditioned on the mask's {C_cond} label channels"}
print(f"{dataset}: {len(data['train'][0])} train / {len(data['val'][0])} val pairs at "
      f"{image_size}x{image_size}, {meta['num_classes']} classes -> {C} channels"
      f"{conditioned_on[cond]}")


def get_batch(split, rng):
    """A random batch: x0 (B, C, H, W) in [-1, 1], its condition (pairs.condition: None for G)
    and the loss weight (bits.loss_weight: None, or 0 on the label channels of ignore pixels
    without a code). x0 and the weight are the `target` channels of bits.pack's tensor: the
    whole pair for G and G_SR, the mask's label channels for cond='image', the image for 'mask'.

    Train batches get a random flip/rot90, the same for an image, its mask and its low-res pair.
    """
    ix = np.sort(rng.integers(len(data[split][0]), size=batch_size))
    arrays = [a[ix] for a in data[split] + (low[split] if cond == 'lowres' else ())]
    if split == 'train':
        arrays = augment.augment(rng, *arrays)
    images, masks = arrays[:2]
    if cond == 'lowres':  # G_SR's input: the same pair at image_size // scale
        cond_images, cond_masks = arrays[2:]
    else:  # cond image / mask: the pair itself gives the condition (G: none)
        cond_images, cond_masks = images, masks
    x = bits.pack(images, masks, meta, label_encoding)  # (B, RGB + n_label, H, W)
    w = bits.loss_weight(masks, meta, label_encoding)  # None, or as x
    batch = [x[:, target].contiguous(),  # (B, C, H, W): a view of x itself for G and G_SR
             pairs.condition(cond, cond_images, cond_masks, image_size, meta, label_encoding),
             None if w is None else w[:, target]]
    if device_type == 'cuda':  # pin, which lets us move it to the GPU asynchronously
        batch = [x if x is None else x.pin_memory().to(device, non_blocking=True) for x in batch]
    return [x if x is None else x.to(device) for x in batch]


# model init
iter_num = 0
best_val_loss = 1e9
model_args = dict(image_size=image_size, in_channels=C, out_channels=C, n_ch=n_ch,
                  ch_mult=ch_mult, n_res_blocks=n_res_blocks, attn_res=attn_res, dropout=dropout,
                  cond_channels=C_cond, self_condition=self_condition)
diffusion_args = dict(timesteps=timesteps, beta_schedule=beta_schedule, objective=objective,
                      loss_weighting=loss_weighting, snr_gamma=snr_gamma,
                      self_condition=self_condition)
ckpt_path = os.path.join(out_dir, 'ckpt.pt')
if init_from == 'scratch':
    print("initializing a new UNet from scratch")
elif init_from == 'resume':
    print(f"resuming training from {ckpt_path}")
    checkpoint = pairs.load_checkpoint(ckpt_path, 'train_gen.py', ['model', 'ema', 'optimizer',
                                       'model_args', 'iter_num', 'best_val_loss', 'config'], device)
    # the architecture comes from the checkpoint (nanoGPT); keys that also shape the data or the
    # noise schedule must match the command line, since the data above was prepared with them
    old = dict(scale=1, loss_weighting='none', snr_gamma=5.0, self_condition=False) | checkpoint[
        'config']  # (defaults for checkpoints from before G_SR and these knobs joined)
    old['cond'] = pairs.checkpoint_cond(checkpoint)  # (before `cond`: scale decided it)
    for k in ['image_size', 'cond', 'scale', 'label_encoding', 'timesteps', 'beta_schedule',
              'objective', 'loss_weighting', 'snr_gamma', 'self_condition']:
        if old[k] != config[k]:
            sys.exit(f"{ckpt_path} was trained with {k}={old[k]!r}, this run has {config[k]!r}")
    model_args = checkpoint['model_args']
    iter_num = checkpoint['iter_num']
    best_val_loss = checkpoint['best_val_loss']
model = UNet(UNetConfig(**model_args))
model_args = asdict(model.config)  # every UNetConfig field, so consumers rebuild it exactly
model.to(device)
diffusion = GaussianDiffusion(**diffusion_args)  # plain tensors, moved to t's device on use

# the EMA of the weights is what we evaluate and sample (Ho et al.). Every rank keeps one: DDP
# keeps the weights identical, so the copies agree, and each rank can evaluate its val shard.
ema = copy.deepcopy(model).eval().requires_grad_(False)
# AdamW; biases and norm gains (1-D) are never decayed
scaler = torch.amp.GradScaler(enabled=(dtype == 'float16'))  # no-op unless float16
params = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.AdamW([{'params': [p for p in params if p.dim() >= 2]},
                               {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}],
                              lr=learning_rate, betas=(beta1, beta2), weight_decay=weight_decay)
if init_from == 'resume':
    for obj, key in [(model, 'model'), (ema, 'ema'), (optimizer, 'optimizer'), (scaler, 'scaler')]:
        if key in checkpoint:  # 'scaler' only for float16 runs
            obj.load_state_dict(checkpoint[key])
checkpoint = None  # free up memory

raw_model = model  # saved and EMA-averaged: no '_orig_mod.' or 'module.' prefixes
if compile:
    print("compiling the model... (takes a ~minute)")
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)


@torch.no_grad()
def evaluate():
    """Val loss of the model and its EMA, on the same batches, t and noise at every evaluation
    and for both nets, so the figures are comparable across a run."""
    rng = np.random.default_rng([seed, ddp_rank, 1])
    gen = torch.Generator().manual_seed(seed)  # draws t and the noise
    raw_model.eval()
    losses = torch.zeros(2, eval_iters, device=device)
    for k in range(eval_iters):
        x0, condition, w = get_batch('val', rng)
        t = torch.randint(0, timesteps, (len(x0),), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        for j, net in enumerate([raw_model, ema]):
            with ctx:
                # self_condition: always with the estimate, as sampling runs (deterministic)
                denoiser = lambda x, t, **kw: net(x, t, condition, **kw)
                losses[j, k] = diffusion.training_loss(denoiser, x0, t, noise, w,
                                                       self_condition_rate=1.0)
    raw_model.train()
    losses = losses.mean(1)
    if ddp:  # every rank evaluated its own shard
        dist.all_reduce(losses, op=dist.ReduceOp.AVG)
    return losses.tolist()


def get_lr(it):
    """Linear warmup, then constant (Ho et al.) or cosine decay down to min_lr (nanoGPT)."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if not decay_lr:
        return learning_rate
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # coeff ranges 0..1
    return min_lr + coeff * (learning_rate - min_lr)


def log(line):
    """Print a line on the master and append it to out_dir/log.txt."""
    if master_process:
        print(line, flush=True)
        with open(os.path.join(out_dir, 'log.txt'), 'a') as f:
            f.write(line + '\n')


# nothing is written before the data, the checkpoint and the settings have been checked
if master_process:
    os.makedirs(out_dir, exist_ok=True)
    pairs.save_json(config, os.path.join(out_dir, 'config.json'))
    if init_from == 'scratch':  # a fresh run starts a fresh log; a resumed one appends
        pairs.save_text('', os.path.join(out_dir, 'log.txt'))

# training loop. The grids show 16 samples of G (sample i from seed + i, as in sample.py), or
# what a conditional generator makes of 8 val pairs' conditions, the same ones at every evaluation.
grid_x0, grid_cond, _ = get_batch('val', np.random.default_rng([seed, ddp_rank, 2]))
grid_x0, grid_cond = (grid_x0[:8], grid_cond[:8]) if cond != 'none' else (grid_x0[:0], None)
n_grid = len(grid_x0) or 16
t_start = t_log = time.time()
iter_log, loss_sum, n_skipped = iter_num, torch.zeros((), device=device), 0
n_logged = 0  # applied iterations in loss_sum (skipped ones are left out of the logged mean)
log(f"start at iter {iter_num}: {raw_model.get_num_params() / 1e6:.2f}M parameters, {C} channels")
while True:
    # stop at max_iters, or when the wall-clock budget is spent (all ranks must agree on it)
    stop = torch.tensor(float(iter_num >= max_iters or
                              (max_minutes > 0 and time.time() - t_start > 60 * max_minutes)))
    if ddp and max_minutes > 0:
        dist.all_reduce(stop, op=dist.ReduceOp.MAX)
    stop = bool(stop)

    # evaluate, draw a grid of EMA samples and write the checkpoint (also on the way out)
    if iter_num % eval_interval == 0 or stop:
        t_eval = time.time()
        val_loss, ema_loss = evaluate()
        log(f"step {iter_num}: val loss {val_loss:.4f}, ema val loss {ema_loss:.4f}")
        if not math.isfinite(val_loss + ema_loss):  # finite weights, yet overflowing outputs
            sys.exit(f"step {iter_num}: non-finite val loss; {ckpt_path} keeps the last finite "
                     "model. Lower --learning_rate")
        if master_process:
            gens = [torch.Generator().manual_seed(seed + i) for i in range(n_grid)]
            with torch.no_grad(), ctx:
                x = diffusion.sample(lambda x_t, t, **kw: ema(x_t, t, grid_cond, **kw),
                                     (n_grid, C, image_size, image_size), 'ddim', grid_steps,
                                     generator=gens, device=device)
            if cond == 'none':  # image | colourised mask
                grid = pairs.make_grid(*bits.unpack(x, meta, label_encoding), meta['palette'])
            elif cond == 'lowres':  # the condition as the UNet sees it | G_SR's output | the target
                (ci, cm), (si, sm) = (bits.unpack(v, meta, label_encoding) for v in (grid_cond, x))
                grid = pairs.make_grid(*bits.unpack(grid_x0, meta, label_encoding),
                                       meta['palette'], extra=[ci, pairs.colorize(cm, meta[
                                           'palette']), si, pairs.colorize(sm, meta['palette'])])
            else:  # cond image / mask: the condition | the sample | the target. The sample and
                # the target go back beside their condition as whole pairs (pairs.pair_tensor),
                # which bits.unpack decodes
                sampled = pairs.pair_tensor(cond, x, grid_cond, n_label)
                real = pairs.pair_tensor(cond, grid_x0, grid_cond, n_label)
                sampled_images, sampled_masks = bits.unpack(sampled, meta, label_encoding)
                real_images, real_masks = bits.unpack(real, meta, label_encoding)
                sampled_colours = pairs.colorize(sampled_masks, meta['palette'])
                real_colours = pairs.colorize(real_masks, meta['palette'])
                # make_grid(panel, None, ...) shows the `extra` panels, then that one
                if cond == 'image':  # the real image | the sampled mask | the real mask
                    grid = pairs.make_grid(real_colours, None, meta['palette'],
                                           extra=[real_images, sampled_colours])
                else:  # the real mask | the sampled image | the real image
                    grid = pairs.make_grid(real_images, None, meta['palette'],
                                           extra=[real_colours, sampled_images])
            pairs.save_png(grid, os.path.join(out_dir, f'grid_{iter_num:06d}.png'))
        if ema_loss < best_val_loss or always_save_checkpoint:
            best_val_loss = min(best_val_loss, ema_loss)
            if iter_num > 0 and master_process:
                checkpoint = {
                    'model': raw_model.state_dict(), 'ema': ema.state_dict(),
                    'optimizer': optimizer.state_dict(), 'model_args': model_args,
                    'diffusion': diffusion_args, 'label_encoding': label_encoding,
                    'cond': cond, 'scale': scale, 'meta': meta, 'iter_num': iter_num,
                    'best_val_loss': best_val_loss, 'config': config,
                }
                if scaler.is_enabled():
                    checkpoint['scaler'] = scaler.state_dict()
                print(f"saving checkpoint to {ckpt_path}")  # atomic, and only if finite
                pairs.save_checkpoint(checkpoint, ckpt_path, nets=('model', 'ema'))
        t_log += time.time() - t_eval  # img/s and the time left measure training only
    if stop:
        break

    # all randomness of this iteration (batch, flips, t, noise, dropout) is derived from
    # (seed, rank, iter), so --init_from=resume replays exactly what an unbroken run would do
    rng = np.random.default_rng([seed, ddp_rank, 0, iter_num])
    torch.manual_seed(int(rng.integers(2**62)))
    lr = get_lr(iter_num)
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr

    # forward backward update, with optional gradient accumulation to simulate larger batch size
    iter_loss = torch.zeros((), device=device)  # this iteration's loss, logged if applied
    for micro_step in range(gradient_accumulation_steps):
        if ddp:  # only sync gradients at the last micro step (nanoGPT)
            model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
        x0, condition, w = get_batch('train', rng)  # condition (B, C_cond, H, W), None for G
        t = torch.randint(0, timesteps, (batch_size,), device=device)  # Algorithm 1, Ho et al.
        with ctx:  # the condition is concatenated to x_t inside the UNet (cond_channels)
            loss = diffusion.training_loss(lambda x, t, **kw: model(x, t, condition, **kw), x0, t,
                                           weight=w)
            loss = loss / gradient_accumulation_steps
        scaler.scale(loss).backward()
        iter_loss += loss.detach()
    scaler.unscale_(optimizer)  # (a no-op unless float16)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    if scaler.is_enabled():  # float16: the scaler skips a step with inf/NaN gradients itself
        scale_before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        applied = scaler.get_scale() >= scale_before  # a skipped step lowers the scale
    else:
        applied = bool(torch.isfinite(norm))
        if applied:
            optimizer.step()
    if applied:  # the EMA and the logged loss follow applied steps only
        ema_update(ema, raw_model, ema_decay)
        loss_sum += iter_loss
        n_logged += 1
    elif not scaler.is_enabled():  # a NaN/inf loss or gradient: never applied (every rank sees
        # the same all-reduced norm); float16's routine scale calibration skips are not counted
        n_skipped += 1
        log(f"iter {iter_num}: non-finite loss or gradient (grad norm {norm.item()}), update "
            f"skipped ({n_skipped} of --skip_nonfinite={skip_nonfinite})")
        if n_skipped > skip_nonfinite:
            sys.exit(f"iter {iter_num}: stopped on a non-finite loss or gradient; {ckpt_path} keeps "
                     "the last finite model. Lower --learning_rate, or --skip_nonfinite=N")
    optimizer.zero_grad(set_to_none=True)
    iter_num += 1

    # timing and logging: the loss is averaged over the interval and over all ranks
    if iter_num % log_interval == 0:
        if ddp:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        dt = (time.time() - t_log) / (iter_num - iter_log)  # seconds per iteration
        minutes_left = (max_iters - iter_num) * dt / 60
        if max_minutes > 0:
            minutes_left = min(minutes_left, max_minutes - (time.time() - t_start) / 60)
        interval_loss = f'{loss_sum.item() / n_logged:.4f}' if n_logged else 'n/a (all skipped)'
        log(f"iter {iter_num}: loss {interval_loss}, lr {lr:.2e}, "
            f"{global_batch / dt:.1f} img/s, {minutes_left:.1f} min left")
        t_log, iter_log = time.time(), iter_num
        loss_sum, n_logged = torch.zeros((), device=device), 0

if ddp:  # leave together: gloo aborts a rank that tears down while the master still works
    dist.barrier()
    destroy_process_group()
